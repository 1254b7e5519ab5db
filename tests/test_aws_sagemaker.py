"""`dogbreed sagemaker train|deploy|invoke|autoscale|delete` over HTTP against moto's server.

moto implements everything used here except `sagemaker.update_endpoint`: that one call goes to
a client under botocore's Stubber (fixture `update_stub`), every other call to moto.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_fake_container import running_container, write_jpeg
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from runtime_standin import running_standin

from dogbreed.aws.autoscale import check_variant
from dogbreed.aws.clients import Aws
from dogbreed.cli import main
from dogbreed.train.report import METRIC_DEFINITIONS, epoch_line

ROLE = "arn:aws:iam::123456789012:role/dogbreed-sagemaker-execution"
TRAIN_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dogbreed-train:git-abc"
SERVE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dogbreed-serve:git-abc"
TRAIN = ["sagemaker", "train", "--image", TRAIN_IMAGE, "--role", ROLE]
TRAIN += ["--output", "s3://dogbreed-bucket/jobs", "--poll-seconds", "1"]


def deploy_argv(endpoint: str = "dogs", *extra: str) -> list[str]:
    return [
        "sagemaker",
        "deploy",
        "--endpoint-name",
        endpoint,
        "--model-data",
        "s3://dogbreed-bucket/jobs/j/output/model.tar.gz",
        "--image",
        SERVE_IMAGE,
        "--role",
        ROLE,
        "--poll-seconds",
        "1",
        *extra,
    ]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every operation our commands call, in order (moto does not check the order)."""
    seen: list[str] = []
    original = Aws.client

    def client(self: Aws, service: str, **kwargs: Any) -> Any:
        made = original(self, service, **kwargs)
        made.meta.events.register(
            "before-parameter-build.*.*", lambda model, **_: seen.append(model.name)
        )
        return made

    monkeypatch.setattr(Aws, "client", client)
    return seen


@pytest.fixture()
def update_stub(
    moto_server: str, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stubber]:
    """moto has no UpdateEndpoint: only that method is taken from a client under the Stubber."""
    stubbed = boto3.client("sagemaker", region_name="us-east-1")
    stubbed.meta.events.register(
        "before-parameter-build.*.*", lambda model, **_: calls.append(model.name)
    )
    stubber = Stubber(stubbed)
    recording = Aws.client

    def client(self: Aws, service: str, **kwargs: Any) -> Any:
        made = recording(self, service, **kwargs)
        if service == "sagemaker":
            made.update_endpoint = stubbed.update_endpoint
        return made

    monkeypatch.setattr(Aws, "client", client)
    with stubber:
        yield stubber
    stubber.assert_no_pending_responses()


def test_every_action_has_help_and_aws_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("train", "tune", "deploy", "invoke", "autoscale", "delete", "transform"):
        with pytest.raises(SystemExit) as info:
            main(["sagemaker", action, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        for flag in ("--region", "--profile", "--dry-run", "--output"):
            assert flag in text, (action, flag)


def test_train_spot_vpc_job_on_moto(moto_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        *TRAIN,
        "--job-name",
        "dogbreed-test-1",
        "--data",
        "s3://dogbreed-bucket/dogImages",
        "--instance-count",
        "2",
        "--spot",
        "--max-run",
        "3600",
        "--checkpoint-s3",
        "s3://dogbreed-bucket/checkpoints/dogbreed-test-1",
        "--network-isolation",
        "--subnets",
        "subnet-1, subnet-2",
        "--security-groups",
        "sg-1",
        "--epochs",
        "3",
        "--backbone",
        "resnet18",
        "--tag",
        "project=dogbreed",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "status: Completed" in out
    assert "model artifact: s3://dogbreed-bucket/jobs/dogbreed-test-1/output/model.tar.gz" in out
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName="dogbreed-test-1")
    hps = job["HyperParameters"]
    assert json.loads(hps["epochs"]) == 3 and json.loads(hps["backbone"]) == "resnet18"
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["CheckpointConfig"]["S3Uri"] == "s3://dogbreed-bucket/checkpoints/dogbreed-test-1"
    assert job["VpcConfig"] == {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert job["EnableNetworkIsolation"] is True
    assert job["ResourceConfig"]["InstanceCount"] == 2
    channel = job["InputDataConfig"][0]
    assert channel["ChannelName"] == "training"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == "s3://dogbreed-bucket/dogImages"


def test_train_dry_run_sends_split_channels_and_metric_definitions(
    aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # No server: a real request would fail to connect.
    splits = [f"--{s}=s3://dogbreed-bucket/dogImages/{s}" for s in ("train", "valid", "test")]
    assert main([*TRAIN, *splits, "--dry-run"]) == 0
    (call,) = json_lines(capsys.readouterr().out)
    assert call["operation"] == "CreateTrainingJob"
    params = call["params"]
    assert [c["ChannelName"] for c in params["InputDataConfig"]] == ["train", "valid", "test"]
    definitions = params["AlgorithmSpecification"]["MetricDefinitions"]
    assert definitions == METRIC_DEFINITIONS
    line = epoch_line(
        3,
        {
            "train_loss": 0.512,
            "train_acc": 0.801,
            "valid_loss": 0.604,
            "valid_acc": 0.871,
            "lr": 0.000812,
            "images_per_sec": 123.4,
        },
    )
    found = {d["Name"]: re.search(d["Regex"], line) for d in definitions}
    assert found["valid_acc"] is not None and float(found["valid_acc"].group(1)) == 0.871
    assert re.match(r"^dogbreed-\d{8}-\d{6}-\d{3}$", params["TrainingJobName"])
    assert "MaxWaitTimeInSeconds" not in params["StoppingCondition"]


@pytest.mark.parametrize(
    ("extra", "message", "status"),
    [
        (["--data", "s3://dogbreed-bucket/d", "--spot"], "--spot needs --checkpoint-s3", 2),
        (
            "--data s3://dogbreed-bucket/d --spot --checkpoint-s3 s3://dogbreed-bucket/c "
            "--max-run 100 --max-wait 50".split(),
            "must be at least --max-run",
            2,
        ),
        (["--train", "s3://dogbreed-bucket/t"], "all three of --train", 2),
        (["--data", "/local/path"], "must be an S3 URI", 2),
        (["--data", "s3://dogbreed-bucket/d", "--subnets", "s-1"], "both --subnets", 2),
        # Hyperparameter errors keep status 1: `sagemaker tune` shares them and its tests pin 1.
        (["--data", "s3://dogbreed-bucket/d", "--epochs", "two"], "hyperparameters:", 1),
        (["--data", "s3://dogbreed-bucket/d", "--job-name", "bad_name"], "invalid training job", 2),
    ],
)
def test_train_rejects_bad_flags(
    aws_env: None, capsys: pytest.CaptureFixture[str], extra: list[str], message: str, status: int
) -> None:
    assert main([*TRAIN, *extra, "--dry-run"]) == status
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""  # nothing was (or would have been) sent


def test_deploy_creates_model_config_endpoint(
    moto_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = deploy_argv("dogs", "--workers", "2", "--batch-size", "4", "--env", "EXTRA=1")
    argv += ["--capture-s3", "s3://dogbreed-bucket/capture", "--capture-percent", "20"]
    assert main(argv) == 0
    assert "status: InService" in capsys.readouterr().out
    sm = boto3.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName="dogs")
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.m5.large" and variant["VariantName"] == "AllTraffic"
    assert config["DataCaptureConfig"]["InitialSamplingPercentage"] == 20
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "SAGEMAKER_MODEL_SERVER_BATCH_SIZE": "4",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "60",
        "EXTRA": "1",
    }
    tags = sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]
    assert {"Key": "dogbreed:endpoint", "Value": "dogs"} in tags


def test_deploy_rejects_bad_server_environment(
    aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's usage error, before any AWS call
        main([*deploy_argv("dogs", "--workers", "0"), "--dry-run"])
    assert exited.value.code == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    env = ["--env", "DOGBREED_MAX_BUFFERED_MB=1", "--dry-run"]  # below the 6 MB payload limit
    assert main([*deploy_argv("dogs"), *env]) == 2
    assert "model server environment: DOGBREED_MAX_BUFFERED_MB (1)" in capsys.readouterr().err


def test_redeploy_is_blue_green_and_keeps_autoscaling(
    update_stub: Stubber, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(deploy_argv("dogs")) == 0
    sm = boto3.client("sagemaker")
    first_config = sm.describe_endpoint(EndpointName="dogs")["EndpointConfigName"]
    autoscale = ["sagemaker", "autoscale", "--endpoint-name", "dogs", "--max", "4"]
    assert main([*autoscale, "--target", "900"]) == 0
    update_stub.add_response(
        "update_endpoint",
        {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/dogs"},
        {
            "EndpointName": "dogs",
            "EndpointConfigName": ANY,
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "WaitIntervalInSeconds": 120,
                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25},
                    },
                    "TerminationWaitInSeconds": 300,
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "dogs-5xx"}]},
            },
            "RetainAllVariantProperties": True,
            "ExcludeRetainedVariantProperties": [{"VariantPropertyType": "DataCaptureConfig"}],
        },
    )
    calls.clear()
    update = ["--instance-type", "ml.c5.xlarge", "--traffic-routing", "CANARY"]
    update += ["--traffic-percent", "25", "--wait-interval", "120", "--rollback-alarm", "dogs-5xx"]
    assert main(deploy_argv("dogs", *update)) == 1
    # The update was only stubbed, so moto's endpoint still serves the first config: exactly
    # what a blue/green rollback looks like, and deploy must not call that a success.
    assert f"not deployed: the endpoint still serves {first_config}" in capsys.readouterr().out
    # The instance type changes: deregister, update, then register the target before its policy.
    order = [c for c in calls if c in ("DeregisterScalableTarget", "UpdateEndpoint")]
    order += [c for c in calls if c in ("RegisterScalableTarget", "PutScalingPolicy")]
    assert order == [
        "DeregisterScalableTarget",
        "UpdateEndpoint",
        "RegisterScalableTarget",
        "PutScalingPolicy",
    ]
    assert calls.index("DeregisterScalableTarget") < calls.index("UpdateEndpoint")
    assert calls.index("UpdateEndpoint") < calls.index("RegisterScalableTarget")
    assert calls.index("RegisterScalableTarget") < calls.index("PutScalingPolicy")
    aas = boto3.client("application-autoscaling")
    rid = "endpoint/dogs/variant/AllTraffic"
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])[
        "ScalableTargets"
    ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)[
        "ScalingPolicies"
    ]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 900
    # The config the endpoint still used during the update was not deleted.
    sm.describe_endpoint_config(EndpointConfigName=first_config)
    assert "UpdateEndpoint" in calls and "CreateEndpoint" not in calls


def test_failed_update_puts_autoscaling_back(
    update_stub: Stubber, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(deploy_argv("dogs")) == 0
    assert main(["sagemaker", "autoscale", "--endpoint-name", "dogs", "--target", "600"]) == 0
    # moto does not enforce IAM: the refusal of the update is stubbed.
    update_stub.add_client_error("update_endpoint", "AccessDeniedException", "not authorized")
    capsys.readouterr()
    assert main(deploy_argv("dogs", "--instance-type", "ml.c5.large")) == 1
    assert "UpdateEndpoint failed (AccessDeniedException)" in capsys.readouterr().err
    assert calls.index("DeregisterScalableTarget") < calls.index("UpdateEndpoint")
    aas = boto3.client("application-autoscaling")
    rid = "endpoint/dogs/variant/AllTraffic"
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])[
        "ScalableTargets"
    ]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)
    assert len(policies["ScalingPolicies"]) == 1


def test_deploy_checks_flags_before_creating_anything(
    aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = deploy_argv("dogs", "--traffic-routing", "LINEAR", "--traffic-percent", "0")
    assert main([*argv, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "--traffic-percent must be between 10 and 50 for LINEAR" in captured.err
    assert captured.out == ""


def test_redeploy_same_instance_type_leaves_autoscaling_alone(
    update_stub: Stubber, calls: list[str]
) -> None:
    assert main(deploy_argv("dogs")) == 0
    assert main(["sagemaker", "autoscale", "--endpoint-name", "dogs", "--target", "600"]) == 0
    update_stub.add_response(
        "update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/dogs"}
    )
    calls.clear()
    assert main(deploy_argv("dogs", "--no-wait")) == 0
    assert "UpdateEndpoint" in calls
    assert "DeregisterScalableTarget" not in calls and "RegisterScalableTarget" not in calls


def test_autoscale_registers_target_before_policy(
    moto_server: str, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(deploy_argv("dogs")) == 0
    calls.clear()
    argv = ["sagemaker", "autoscale", "--endpoint-name", "dogs", "--min", "1", "--max", "4"]
    argv += ["--target", "1356", "--scale-in-cooldown", "600", "--scale-out-cooldown", "30"]
    assert main(argv) == 0
    # moto accepts a policy without a target; AWS does not: check the order ourselves.
    assert calls.index("DescribeEndpoint") < calls.index("RegisterScalableTarget")
    assert calls.index("RegisterScalableTarget") < calls.index("PutScalingPolicy")
    aas = boto3.client("application-autoscaling")
    rid = "endpoint/dogs/variant/AllTraffic"
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])
    assert targets["ScalableTargets"][0]["ScalableDimension"] == (
        "sagemaker:variant:DesiredInstanceCount"
    )
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)[
        "ScalingPolicies"
    ]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    assert (config["TargetValue"], config["ScaleInCooldown"], config["ScaleOutCooldown"]) == (
        1356,
        600,
        30,
    )
    assert main(["sagemaker", "autoscale", "--endpoint-name", "dogs", "--off"]) == 0
    assert (
        aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])[
            "ScalableTargets"
        ]
        == []
    )


def test_autoscale_reports_access_denied_as_such(aws_env: None) -> None:
    # moto does not enforce IAM by default: the AccessDenied answer is stubbed.
    sm = Aws(region="us-east-1").client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_client_error("describe_endpoint", "AccessDeniedException", "not authorized")
        with pytest.raises(ClientError, match="AccessDeniedException"):
            check_variant(sm, "dogs", "AllTraffic")


def test_autoscale_errors(moto_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["sagemaker", "autoscale", "--endpoint-name", "nowhere"]
    assert main(base) == 2
    assert "--target (or --loadtest-json) is required" in capsys.readouterr().err
    assert main([*base, "--target", "100", "--min", "5", "--max", "4"]) == 2
    assert "--min (5) <= --max (4)" in capsys.readouterr().err
    assert main([*base, "--target", "100"]) == 1
    assert "endpoint 'nowhere' not found" in capsys.readouterr().err


def test_autoscale_takes_the_target_from_loadtest_json(
    moto_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(deploy_argv("dogs")) == 0
    result = tmp_path / "loadtest.json"
    result.write_text(json.dumps({"max_rps": 6.6, "autoscaling_target": 198}))
    argv = ["sagemaker", "autoscale", "--endpoint-name", "dogs", "--loadtest-json"]
    assert main([*argv, str(result)]) == 0
    aas = boto3.client("application-autoscaling")
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 198
    result.write_text("{}")
    assert main([*argv, str(result)]) == 2
    assert "no loadtest result" in capsys.readouterr().err


def test_delete_removes_only_what_deploy_created_for_it(
    moto_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(deploy_argv("dogs")) == 0
    assert main(deploy_argv("dogs-v2")) == 0  # its names also contain "dogs"
    assert main(["sagemaker", "autoscale", "--endpoint-name", "dogs", "--target", "60"]) == 0
    capsys.readouterr()
    assert main(["sagemaker", "delete", "--endpoint-name", "dogs"]) == 0
    out = capsys.readouterr().out
    assert "deleted scalable target endpoint/dogs/variant/AllTraffic" in out
    assert "deleted endpoint dogs" in out
    sm = boto3.client("sagemaker")
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["dogs-v2"]
    configs = [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    models = [m["ModelName"] for m in sm.list_models()["Models"]]
    assert len(configs) == 1 and configs[0].startswith("dogs-v2-")
    assert len(models) == 1 and models[0].startswith("dogs-v2-")
    assert main(["sagemaker", "delete", "--endpoint-name", "dogs"]) == 0
    assert capsys.readouterr().out == "nothing to delete\n"


def test_delete_finds_what_deploy_made_for_a_long_endpoint_name(
    moto_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # deploy cuts the endpoint name to fit a timestamp into SageMaker's 63 characters.
    name = "dogbreed-production-endpoint-for-the-breed-classifier"  # 53 characters
    assert main(deploy_argv(name)) == 0
    assert main(["sagemaker", "delete", "--endpoint-name", name]) == 0
    sm = boto3.client("sagemaker")
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []


@pytest.fixture()
def jpeg(tmp_path: Path) -> Path:
    return write_jpeg(tmp_path / "dog.jpg")


def test_invoke_sends_the_image_and_prints_top_k(
    aws_env: None, jpeg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The runtime stand-in plays `POST /endpoints/<name>/invocations` (moto's is canned) and
    # forwards to a local container; the request crosses two real HTTP hops.
    with running_container() as container, running_standin("dogs", container.url) as runtime:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
        argv = ["sagemaker", "invoke", "--endpoint-name", "dogs", "--image", str(jpeg)]
        assert main([*argv, "--top-k", "3"]) == 0
        assert container.last_body == jpeg.read_bytes()
        assert container.last_headers["X-Amzn-SageMaker-Custom-Attributes"] == "top_k=3"
        answer = json.loads(capsys.readouterr().out)
        assert [p["label"] for p in answer["top_k"]] == ["Affenpinscher", "Beagle", "Collie"]
        assert main([*argv, "--top-k", "3", "--output", "json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["endpoint"] == "dogs" and document["result"] == answer
        container.status = 415
        assert main(argv) == 1
        error = capsys.readouterr().err
        assert error.startswith("error: InvokeEndpoint failed (ModelError)")
        assert "415" in error
        argv[3] = "cats"
        assert main(argv) == 1
        assert "InvokeEndpoint failed (ValidationError)" in capsys.readouterr().err


def test_invoke_bad_input(
    aws_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sagemaker", "invoke", "--endpoint-name", "dogs", "--dry-run", "--image"]
    assert main([*argv, str(tmp_path / "missing.jpg")]) == 2
    assert "no such file" in capsys.readouterr().err
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (6 * 1024 * 1024 + 1))
    assert main([*argv, str(big)]) == 2
    assert "at most 6291456" in capsys.readouterr().err


# --- updates that keep what autoscaling set, alarms, rolling, serverless, --output json ------


def endpoint_arn(name: str) -> dict[str, str]:
    return {"EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}"}


def test_model_only_update_keeps_the_running_instance_count(
    update_stub: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    # moto does not scale anything: the endpoint is created with 4 instances, as autoscaling
    # would have left it. Without RetainAllVariantProperties AWS would apply the new config's
    # InitialInstanceCount (1) to a variant serving under load.
    assert main(deploy_argv("dogs", "--instance-count", "4")) == 0
    update_stub.add_response(
        "update_endpoint",
        endpoint_arn("dogs"),
        {
            "EndpointName": "dogs",
            "EndpointConfigName": ANY,
            "DeploymentConfig": ANY,
            "RetainAllVariantProperties": True,
            # Data capture follows this deploy's flags; count and weight stay as they run.
            "ExcludeRetainedVariantProperties": [{"VariantPropertyType": "DataCaptureConfig"}],
        },
    )
    capsys.readouterr()
    assert main(deploy_argv("dogs", "--no-wait")) == 0
    out = capsys.readouterr().out
    assert "kept from the running variant: 4 instance(s)" in out
    assert "RetainAllVariantProperties" in out


def test_an_explicit_instance_count_is_applied_on_purpose(update_stub: Stubber) -> None:
    assert main(deploy_argv("dogs", "--instance-count", "4")) == 0
    update_stub.add_response(
        "update_endpoint",
        endpoint_arn("dogs"),
        {
            "EndpointName": "dogs",
            "EndpointConfigName": ANY,
            "DeploymentConfig": ANY,
            "RetainAllVariantProperties": True,
            "ExcludeRetainedVariantProperties": [
                {"VariantPropertyType": "DataCaptureConfig"},
                {"VariantPropertyType": "DesiredInstanceCount"},
            ],
        },
    )
    assert main(deploy_argv("dogs", "--instance-count", "2", "--no-wait")) == 0
    sm = boto3.client("sagemaker")
    newest = max(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"])
    (variant,) = sm.describe_endpoint_config(EndpointConfigName=newest)["ProductionVariants"]
    assert variant["InitialInstanceCount"] == 2


def test_alarms_roll_a_rolling_update_back_and_delete_removes_them(
    update_stub: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    alarm_flags = ["--create-alarms", "--alarm-5xx-rate", "0.02", "--alarm-latency-ms", "800"]
    assert main(deploy_argv("dogs", "--instance-count", "4", *alarm_flags)) == 0
    assert main(deploy_argv("dogs-v2", "--create-alarms")) == 0  # its alarms start "dogs-" too
    cloudwatch = boto3.client("cloudwatch")
    found = {a["AlarmName"]: a for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    errors, latency = found["dogs-AllTraffic-5xx"], found["dogs-AllTraffic-latency"]
    dimensions = [
        {"Name": "EndpointName", "Value": "dogs"},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/SageMaker", "Invocation5XXErrors")
    assert (errors["Statistic"], errors["Threshold"]) == ("Average", 0.02)
    assert (latency["MetricName"], latency["ExtendedStatistic"]) == ("ModelLatency", "p95")
    assert latency["Threshold"] == 800_000  # ModelLatency is in microseconds
    for alarm in (errors, latency):
        assert alarm["Dimensions"] == dimensions
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 2
    update_stub.add_response(
        "update_endpoint",
        endpoint_arn("dogs"),
        {
            "EndpointName": "dogs",
            "EndpointConfigName": ANY,
            "DeploymentConfig": {
                "RollingUpdatePolicy": {
                    "MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
                    "WaitIntervalInSeconds": 120,
                },
                "AutoRollbackConfiguration": {
                    "Alarms": [
                        {"AlarmName": "dogs-manual"},
                        {"AlarmName": "dogs-AllTraffic-5xx"},
                        {"AlarmName": "dogs-AllTraffic-latency"},
                    ]
                },
            },
            "RetainAllVariantProperties": True,
            "ExcludeRetainedVariantProperties": ANY,
        },
    )
    rolling = ["--update-policy", "rolling", "--rolling-batch-percent", "25"]
    rolling += ["--wait-interval", "120", "--rollback-alarm", "dogs-manual", "--no-wait"]
    assert main(deploy_argv("dogs", *rolling, *alarm_flags)) == 0
    capsys.readouterr()
    assert main(["sagemaker", "delete", "--endpoint-name", "dogs"]) == 0
    out = capsys.readouterr().out
    assert (
        "deleted alarm dogs-AllTraffic-5xx" in out
        and "deleted alarm dogs-AllTraffic-latency" in out
    )
    left = [a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]]
    assert sorted(left) == ["dogs-v2-AllTraffic-5xx", "dogs-v2-AllTraffic-latency"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--update-policy", "rolling", "--rolling-batch-percent", "60"], "between 5 and 50"),
        (["--wait-interval", "4000"], "--wait-interval must be between 0 and 3600"),
        (["--termination-wait", "4000"], "--termination-wait must be between 0 and 3600"),
        (
            [*[f"--rollback-alarm=a{i}" for i in range(9)], "--create-alarms"],
            "at most 10 alarms, not 11",
        ),
        # AWS's ranges, which moto does not check: a canary of at most half the new fleet.
        (["--traffic-routing", "CANARY", "--traffic-percent", "60"], "between 1 and 50"),
        (["--traffic-routing", "LINEAR", "--traffic-percent", "5"], "between 10 and 50"),
        (["--create-alarms", "--alarm-5xx-rate", "5"], "--alarm-5xx-rate must be a fraction"),
        (["--serverless-memory", "2048"], "needs both --serverless-memory"),
        (["--serverless-memory", "1500", "--serverless-concurrency", "2"], "must be one of"),
        (["--serverless-memory", "2048", "--serverless-concurrency", "500"], "between 1 and 200"),
    ],
)
def test_deploy_flag_errors_exit_2_before_any_call(
    aws_env: None, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main([*deploy_argv("dogs", *extra), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


SERVERLESS = ["--serverless-memory", "2048", "--serverless-concurrency", "5"]


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        (["--instance-type", "ml.c5.large"], "--instance-type"),
        (["--capture-s3", "s3://dogbreed-bucket/capture"], "data capture"),
        (["--network-isolation"], "--network-isolation"),
        (["--update-policy", "rolling"], "rolling"),
        (["--backend", "torch"], "no torch"),
    ],
)
def test_serverless_refuses_what_aws_does_not_offer_it(
    aws_env: None, capsys: pytest.CaptureFixture[str], extra: list[str], refused: str
) -> None:
    assert main([*deploy_argv("dogs", *SERVERLESS, *extra), "--dry-run"]) == 2
    assert refused in capsys.readouterr().err


def test_serverless_endpoint_and_autoscaling_refuses_it(
    moto_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(deploy_argv("dogs", *SERVERLESS)) == 0
    sm = boto3.client("sagemaker")
    config_name = sm.describe_endpoint(EndpointName="dogs")["EndpointConfigName"]
    (variant,) = sm.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    environment = sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"][
        "Environment"
    ]
    # One worker (each holds a model copy) on ONNX Runtime: fits 1-6 GB without a GPU.
    assert environment["SAGEMAKER_MODEL_SERVER_WORKERS"] == "1"
    assert environment["DOGBREED_BACKEND"] == "onnx"
    capsys.readouterr()
    assert main(["sagemaker", "autoscale", "--endpoint-name", "dogs", "--target", "100"]) == 1
    assert "is serverless: it has no instances to scale" in capsys.readouterr().err
    aas = boto3.client("application-autoscaling")
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_instances_cannot_become_serverless(
    moto_server: str, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(deploy_argv("dogs")) == 0
    calls.clear()
    assert main(deploy_argv("dogs", *SERVERLESS)) == 2
    assert "cannot turn an instance-based endpoint into a serverless one" in capsys.readouterr().err
    assert "CreateModel" not in calls and "CreateEndpointConfig" not in calls


def test_a_serverless_endpoint_is_not_updated_rolling(
    moto_server: str, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # AWS's deployment guardrails exclude serverless endpoints from rolling updates, also on
    # the way to instances: refused before anything is created.
    assert main(deploy_argv("dogs", *SERVERLESS)) == 0
    calls.clear()
    assert main(deploy_argv("dogs", "--update-policy", "rolling")) == 2
    assert "serverless: AWS updates it blue/green only" in capsys.readouterr().err
    assert "CreateModel" not in calls and "CreateEndpointConfig" not in calls


def test_an_update_keeps_the_variant_name(
    moto_server: str, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Blue/green and rolling updates need the new config to carry the running variant's name.
    assert main(deploy_argv("dogs")) == 0
    calls.clear()
    assert main(deploy_argv("dogs", "--variant-name", "Canary")) == 2
    err = capsys.readouterr().err
    assert "has no variant 'Canary' (it has ['AllTraffic'])" in err
    assert "CreateModel" not in calls


def test_output_json_is_one_document(moto_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*deploy_argv("dogs", "--create-alarms"), "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)  # the whole of stdout: one document
    assert document["endpoint"] == "dogs" and document["operation"] == "create"
    assert document["status"] == "InService" and document["deployed"] is True
    assert document["endpoint_arn"].endswith(":endpoint/dogs")
    assert document["alarms"] == ["dogs-AllTraffic-5xx", "dogs-AllTraffic-latency"]
    autoscale = ["sagemaker", "autoscale", "--endpoint-name", "dogs", "--target", "90"]
    assert main([*autoscale, "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["resource_id"] == "endpoint/dogs/variant/AllTraffic"
    assert document["TargetValue"] == 90
    assert main(["sagemaker", "delete", "--endpoint-name", "dogs", "--output", "json"]) == 0
    deleted = json.loads(capsys.readouterr().out)["deleted"]
    assert "endpoint dogs" in deleted and "alarm dogs-AllTraffic-5xx" in deleted


def test_output_json_dry_run_holds_the_calls(
    aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*deploy_argv("dogs"), "--dry-run", "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["dry_run"] is True
    operations = [c["operation"] for c in document["calls"]]
    assert operations == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    # train's --output is also its S3 output path: the value says which one is meant.
    splits = ["--data", "s3://dogbreed-bucket/dogImages", "--output", "json", "--dry-run"]
    assert main([*TRAIN, *splits]) == 0
    (call,) = json.loads(capsys.readouterr().out)["calls"]
    assert call["params"]["OutputDataConfig"] == {"S3OutputPath": "s3://dogbreed-bucket/jobs"}


def test_output_takes_text_or_json_only(aws_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*deploy_argv("dogs"), "--output", "yaml"])
    assert info.value.code == 2
    assert "choose text or json" in capsys.readouterr().err

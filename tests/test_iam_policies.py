"""iam/*.json: valid documents, least privilege, and enough for what our commands call."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import boto3
import pytest

from dogbreed.aws.clients import Aws
from dogbreed.cli import main

IAM = Path(__file__).resolve().parent.parent / "iam"
SAMPLE = {
    "PARTITION": "aws",
    "REGION": "us-east-1",
    "ACCOUNT_ID": "123456789012",
    "BUCKET": "dogbreed-data",
    "NAME_PREFIX": "dogbreed",
    "EXECUTION_ROLE": "dogbreed-sagemaker-execution",
    "ENDPOINT_NAME_LOWER": "dogbreed-prod",
    "FUNCTION_NAME": "dogbreed-classify",
    "ROLE_NAME": "dogbreed-classify-role",
}
# Actions for which AWS offers no resource-level permission: only these may use "*".
STAR_RESOURCE_ALLOWED = {
    "ecr:GetAuthorizationToken",
    "sts:GetCallerIdentity",  # needs no permission at all; listed by the deployer for clarity
    "cloudwatch:PutMetricData",
    "sagemaker:ListModels",
    "sagemaker:ListEndpointConfigs",
    "application-autoscaling:DescribeScalableTargets",
    "application-autoscaling:DescribeScalingPolicies",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
}
FILES = sorted(IAM.glob("*.json"))


def render(path: Path) -> dict[str, Any]:
    text = string.Template(path.read_text()).substitute(SAMPLE)  # KeyError: unknown placeholder
    return json.loads(text)


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allowed_actions(document: dict[str, Any]) -> set[str]:
    return {
        action
        for statement in document["Statement"]
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
    }


def test_expected_documents_exist() -> None:
    names = {p.name for p in FILES}
    for name in (
        "sagemaker-execution-trust-policy.json",
        "sagemaker-execution-policy.json",
        "sagemaker-execution-vpc-policy.json",
        "operator-policy.json",
        "ecr-push-policy.json",
    ):
        assert name in names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_least_privilege(path: Path) -> None:
    document = render(path)
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        assert "NotAction" not in statement and "NotResource" not in statement
        actions = as_list(statement["Action"])
        for action in actions:
            assert "*" not in action, f"{path.name}: wildcard action {action}"
        if "Principal" in statement:  # a trust policy: one service may assume the role
            assert actions == ["sts:AssumeRole"]
            assert set(statement["Principal"]) == {"Service"}
            continue
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                extra = set(actions) - STAR_RESOURCE_ALLOWED
                assert not extra, f"{path.name}: {extra} must name their resources"
            else:
                assert resource.startswith("arn:aws:"), resource
                # A wildcard may end a name prefix, never stand for a whole service or account.
                assert "::*" not in resource and ":*:" not in resource, resource


def test_pass_role_is_scoped_to_the_execution_role_and_sagemaker() -> None:
    document = render(IAM / "operator-policy.json")
    (statement,) = [s for s in document["Statement"] if "iam:PassRole" in as_list(s["Action"])]
    assert statement["Resource"].endswith(":role/dogbreed-sagemaker-execution")
    assert statement["Condition"]["StringEquals"]["iam:PassedToService"] == (
        "sagemaker.amazonaws.com"
    )


def test_documents_are_accepted_by_iam(moto_server: str) -> None:
    """moto's IAM validates policy grammar (actions, ARNs, conditions) like IAM does."""
    iam = boto3.client("iam")
    for path in FILES:
        document = json.dumps(render(path))
        if "trust" in path.name:
            iam.create_role(RoleName=path.stem[:64], AssumeRolePolicyDocument=document)
        else:
            iam.create_policy(PolicyName=path.stem, PolicyDocument=document)


def test_operator_policy_covers_every_call_of_our_commands(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: set[str] = set()
    original = Aws.client
    prefixes = {"sagemaker-runtime": "sagemaker"}

    def client(self: Aws, service: str, **kwargs: Any) -> Any:
        made = original(self, service, **kwargs)
        prefix = prefixes.get(service, service)
        made.meta.events.register(
            "before-parameter-build.*.*", lambda model, **_: seen.add(f"{prefix}:{model.name}")
        )
        return made

    monkeypatch.setattr(Aws, "client", client)
    # A log stream for the job, so that `train` reads it (GetLogEvents) while it waits.
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    logs.create_log_stream(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName="dogbreed-iam/algo-1-1"
    )
    role = "arn:aws:iam::123456789012:role/dogbreed-sagemaker-execution"
    common = ["--role", role, "--poll-seconds", "1"]
    assert main(["sagemaker", "train", "--image", "i", "--data", "s3://dogbreed-data/d",
                 "--output", "s3://dogbreed-data/o", "--job-name", "dogbreed-iam",
                 *common]) == 0  # fmt: skip
    deploy = ["sagemaker", "deploy", "--endpoint-name", "dogbreed-prod", "--image", "i"]
    deploy += ["--create-alarms"]
    assert main([*deploy, "--model-data", "s3://dogbreed-data/m.tar.gz", *common]) == 0
    autoscale = ["sagemaker", "autoscale", "--endpoint-name", "dogbreed-prod"]
    assert main([*autoscale, "--target", "100"]) == 0
    assert main([*autoscale, "--off"]) == 0
    assert main([*autoscale, "--target", "100"]) == 0
    transform = ["sagemaker", "transform", "--model-data", "s3://dogbreed-data/m.tar.gz"]
    transform += ["--image", "i", "--role", role, "--input", "s3://dogbreed-data/photos"]
    assert main([*transform, "--output", "s3://dogbreed-data/scored"]) == 0
    assert main(["sagemaker", "delete", "--endpoint-name", "dogbreed-prod"]) == 0
    capsys.readouterr()
    # Calls the moto flow above cannot make: the blue/green update (moto lacks it), invoke
    # (tested against the runtime stand-in) and the tuning helper's job calls.
    seen |= {
        "sagemaker:UpdateEndpoint",
        "sagemaker:InvokeEndpoint",
        "sagemaker:CreateHyperParameterTuningJob",
        "sagemaker:DescribeHyperParameterTuningJob",
        "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
    }
    assert "sagemaker:CreateTrainingJob" in seen and "sagemaker:ListTags" in seen
    assert "sagemaker:CreateTransformJob" in seen
    assert {"logs:GetLogEvents", "cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"} <= seen
    missing = seen - allowed_actions(render(IAM / "operator-policy.json"))
    assert not missing, f"operator-policy.json lacks {sorted(missing)}"


def test_ecr_push_policy_covers_the_script_and_docker_push() -> None:
    needed = {
        "ecr:DescribeRepositories",
        "ecr:CreateRepository",
        "ecr:GetLifecyclePolicy",
        "ecr:PutLifecyclePolicy",
        "ecr:GetAuthorizationToken",
        # What `docker push` calls through the registry API.
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
    }
    assert needed <= allowed_actions(render(IAM / "ecr-push-policy.json"))


def test_execution_role_may_read_the_rollback_alarms() -> None:
    """AWS: the execution role needs cloudwatch:DescribeAlarms on the auto-rollback alarms."""
    document = render(IAM / "sagemaker-execution-policy.json")
    (statement,) = [
        s for s in document["Statement"] if "cloudwatch:DescribeAlarms" in as_list(s["Action"])
    ]
    assert statement["Resource"] == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:dogbreed-*"

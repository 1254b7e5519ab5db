"""`dogbreed sagemaker transform` over HTTP against moto's server.

moto stores CreateTransformJob's request and answers DescribeTransformJob with it, the job
Completed at once. A job that ends Failed or Stopped cannot come from moto: a before-call hook
answers those DescribeTransformJob calls, and the test asserts what the waiter asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from dogbreed.aws.clients import Aws
from dogbreed.cli import main

ROLE = "arn:aws:iam::123456789012:role/dogbreed-sagemaker-execution"
SERVE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dogbreed-serve:git-abc"
PHOTOS = "s3://dogbreed-bucket/photos"
SCORED = "s3://dogbreed-bucket/scored"
TRANSFORM = ["sagemaker", "transform", "--poll-seconds", "1"]
BY_NAME = [*TRANSFORM, "--model-name", "dogbreed-prod-model", "--input", PHOTOS]
FROM_DATA = [*TRANSFORM, "--model-data", "s3://dogbreed-bucket/jobs/j/output/model.tar.gz"]
FROM_DATA += ["--image", SERVE_IMAGE, "--role", ROLE]
LINES = ["--split-type", "Line", "--strategy", "MultiRecord"]
UNSET_LIMITS = ("BatchStrategy", "MaxConcurrentTransforms", "MaxPayloadInMB")


@pytest.fixture()
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every SageMaker call our command makes, (operation, parameters), in order."""
    seen: list[tuple[str, dict[str, Any]]] = []
    original = Aws.client

    def client(self: Aws, service: str, **kwargs: Any) -> Any:
        made = original(self, service, **kwargs)
        made.meta.events.register(
            "before-parameter-build.sagemaker.*",
            lambda model, params, **_: seen.append((model.name, dict(params))),
        )
        return made

    monkeypatch.setattr(Aws, "client", client)
    return seen


@pytest.fixture()
def job_ends(
    moto_server: str, sent: list[Any], monkeypatch: pytest.MonkeyPatch
) -> Callable[[dict[str, Any]], None]:
    """Answer DescribeTransformJob with the given final state instead of moto's Completed."""

    def install(state: dict[str, Any]) -> None:
        recording = Aws.client

        def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
            return AWSResponse("scripted", 200, {}, None), state

        def client(self: Aws, service: str, **kwargs: Any) -> Any:
            made = recording(self, service, **kwargs)
            made.meta.events.register_first("before-call.sagemaker.DescribeTransformJob", answer)
            return made

        monkeypatch.setattr(Aws, "client", client)

    return install


def test_help_says_the_limits_come_from_execution_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The AWS flags every action has: test_aws_sagemaker.test_every_action_has_help..."""
    with pytest.raises(SystemExit) as info:
        main(["sagemaker", "transform", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--wait" in text and "--split-type" in text
    assert "SageMaker asks the container's GET /execution-parameters" in text


def test_folder_of_photos_one_image_per_object_on_moto(
    moto_server: str, sent: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*BY_NAME, "--output", SCORED, "--job-name", "dogbreed-photos-1"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "created transform job dogbreed-photos-1",
        out[1],
        "transform job: dogbreed-photos-1",
    ]
    assert "status: Completed" in out and f"output: {SCORED}" in out
    job = boto3.client("sagemaker").describe_transform_job(TransformJobName="dogbreed-photos-1")
    assert job["ModelName"] == "dogbreed-prod-model"
    assert job["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": PHOTOS}},
        "ContentType": "application/x-image",
        "SplitType": "None",
    }
    assert job["TransformOutput"] == {"S3OutputPath": SCORED, "Accept": "application/json"}
    assert job["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    # Left unset, SageMaker reads them from the container's GET /execution-parameters.
    assert not set(UNSET_LIMITS) & set(job)
    # No model was made; the waiter asked for the job by name.
    assert [op for op, _ in sent] == [
        "CreateTransformJob",
        "DescribeTransformJob",
        "DescribeTransformJob",
    ]
    assert sent[1][1] == {"TransformJobName": "dogbreed-photos-1"}


def test_model_data_creates_the_model_then_a_jsonlines_job_on_moto(
    moto_server: str, sent: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*FROM_DATA, "--input", "s3://dogbreed-bucket/test.jsonl", "--output", SCORED]
    argv += [*LINES, "--max-concurrent", "4", "--max-payload-mb", "6", "--workers", "2"]
    argv += ["--instance-type", "ml.c5.xlarge", "--instance-count", "2", "--tag", "team=vision"]
    assert main([*argv, "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)  # stdout is the one document
    name = document["transform_job"]
    assert name.startswith("dogbreed-transform-")
    assert document["model"] == name and document["model_created"] is True
    assert document["status"] == "Completed" and document["failure_reason"] is None
    assert document["output"] == SCORED
    assert document["arn"].endswith(f"transform-job/{name}")
    assert [op for op, _ in sent][:2] == ["CreateModel", "CreateTransformJob"]
    sm = boto3.client("sagemaker")
    container = sm.describe_model(ModelName=name)["PrimaryContainer"]
    assert container["Image"] == SERVE_IMAGE
    assert container["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "2"
    job = sm.describe_transform_job(TransformJobName=name)
    assert job["ModelName"] == name
    assert job["TransformInput"]["ContentType"] == "application/jsonlines"
    assert job["TransformInput"]["SplitType"] == "Line"
    assert job["TransformOutput"]["AssembleWith"] == "Line"
    assert job["TransformResources"] == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 2}
    assert (job["BatchStrategy"], job["MaxConcurrentTransforms"], job["MaxPayloadInMB"]) == (
        "MultiRecord",
        4,
        6,
    )
    assert {"Key": "team", "Value": "vision"} in sm.list_tags(ResourceArn=job["TransformJobArn"])[
        "Tags"
    ]


def test_dry_run_prints_the_model_and_the_job_requests(
    aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # No server: a real request would fail to connect.
    argv = [*FROM_DATA, "--input", PHOTOS, "--output", SCORED, *LINES, "--dry-run"]
    assert main(argv) == 0
    model, job = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert model["operation"] == "CreateModel" and job["operation"] == "CreateTransformJob"
    params = job["params"]
    assert params["ModelName"] == model["params"]["ModelName"] == params["TransformJobName"]
    assert params["BatchStrategy"] == "MultiRecord"
    assert params["TransformOutput"]["AssembleWith"] == "Line"
    assert not {"MaxConcurrentTransforms", "MaxPayloadInMB"} & set(params)


def test_no_wait_only_creates_the_job(
    moto_server: str, sent: list[tuple[str, dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*BY_NAME, "--output", SCORED, "--job-name", "dogbreed-nowait", "--no-wait"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "transform job: dogbreed-nowait (not waiting)"
    assert [op for op, _ in sent] == ["CreateTransformJob"]


@pytest.mark.parametrize(
    ("state", "line"),
    [
        (
            {"TransformJobStatus": "Failed", "FailureReason": "ClientError: 413 from the model"},
            "failure: ClientError: 413 from the model",
        ),
        ({"TransformJobStatus": "Stopped"}, "status: Stopped"),
    ],
)
def test_wait_reports_a_job_that_did_not_complete_and_fails(
    job_ends: Callable[[dict[str, Any]], None],
    sent: list[tuple[str, dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
    state: dict[str, Any],
    line: str,
) -> None:
    job_ends({"TransformJobName": "dogbreed-ends", **state})
    assert main([*BY_NAME, "--output", SCORED, "--job-name", "dogbreed-ends"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"status: {state['TransformJobStatus']}" in out and line in out
    assert ("DescribeTransformJob", {"TransformJobName": "dogbreed-ends"}) in sent


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*FROM_DATA[:6], "--input", PHOTOS, "--output", SCORED], "needs --image and --role"),
        ([*BY_NAME, "--output", SCORED, "--env", "A=1"], "--env: only with --model-data"),
        ([*BY_NAME, "--output", SCORED, "--workers", "2"], "model server flags: only with"),
        ([*BY_NAME, "--output", "json"], "--output s3://bucket/prefix"),
        ([*BY_NAME, "--output", "/local/scored"], "--output must be an S3 URI"),
        ([*BY_NAME[:-1], "photos/", "--output", SCORED], "--input must be an S3 URI"),
        ([*BY_NAME, "--output", SCORED, "--strategy", "MultiRecord"], "needs --split-type Line"),
        ([*BY_NAME, "--output", SCORED, "--max-payload-mb", "101"], "between 1 and 100"),
        (
            [
                *BY_NAME,
                "--output",
                SCORED,
                *LINES,
                "--max-concurrent",
                "20",
                "--max-payload-mb",
                "6",
            ],
            "must be at most 100",
        ),
        ([*BY_NAME, "--output", SCORED, "--job-name", "bad_name"], "invalid transform job name"),
    ],
)
def test_rejects_bad_flags_before_any_call(
    aws_env: None,
    sent: list[tuple[str, dict[str, Any]]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert sent == []

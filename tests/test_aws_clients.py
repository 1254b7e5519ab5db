"""dogbreed.aws.clients: dry run, error translation, against moto's HTTP server."""

from __future__ import annotations

import argparse
import io
import json

import pytest
from botocore.stub import Stubber

from dogbreed.aws.clients import Aws, AwsError, UsageError, aws_command, translate


def test_dry_run_prints_calls_and_sends_nothing(aws_env: None) -> None:
    # No server at all: a request would fail with a connection error.
    out = io.StringIO()
    aws = Aws(region="eu-west-1", dry_run=True, out=out)
    sm = aws.client("sagemaker")
    assert sm.describe_endpoint(EndpointName="dogs") == {}
    runtime = aws.client("sagemaker-runtime")
    runtime.invoke_endpoint(EndpointName="dogs", Body=b"\xff\xd8", ContentType="image/jpeg")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {
        "service": "sagemaker",
        "operation": "DescribeEndpoint",
        "params": {"EndpointName": "dogs"},
    }
    assert lines[1]["params"]["Body"] == "<2 bytes>"
    assert sm.meta.region_name == "eu-west-1"


def test_dry_run_still_validates_parameters(aws_env: None) -> None:
    sm = Aws(region="us-east-1", dry_run=True, out=io.StringIO()).client("sagemaker")
    with pytest.raises(Exception) as info:
        sm.describe_endpoint(Endpoint="dogs")
    message = str(translate(info.value))
    assert message.startswith("invalid request:")
    assert "EndpointName" in message


def test_missing_resource_against_moto(moto_server: str) -> None:
    sm = Aws().client("sagemaker")
    with pytest.raises(Exception) as info:
        sm.describe_endpoint(EndpointName="no-such-endpoint")
    message = str(translate(info.value))
    assert "DescribeEndpoint failed (ValidationException)" in message
    assert "not found; check the name and the region" in message


@pytest.mark.parametrize(
    ("code", "message", "hint"),
    [
        (
            "AccessDeniedException",
            "User: arn:aws:iam::1:user/x is not authorized to perform: sagemaker:CreateEndpoint",
            "permission denied; the IAM identity needs this action",
        ),
        (
            "ResourceLimitExceeded",
            "The account-level service limit 'ml.p3.2xlarge for spot training' is 0 Instances",
            "request an increase in Service Quotas",
        ),
        ("ThrottlingException", "Rate exceeded", "quota or rate limit reached"),
        ("ExpiredTokenException", "The security token has expired", "invalid or expired"),
    ],
)
def test_service_errors_are_explained(aws_env: None, code: str, message: str, hint: str) -> None:
    # moto does not enforce IAM by default and has no quotas: these answers are stubbed.
    sm = Aws(region="us-east-1").client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_client_error("create_endpoint", code, message, http_status_code=400)
        with pytest.raises(Exception) as info:
            sm.create_endpoint(EndpointName="e", EndpointConfigName="c")
    text = str(translate(info.value))
    assert text == f"CreateEndpoint failed ({code}): {message} -- {text.split(' -- ')[1]}"
    assert hint in text


def test_missing_region_and_profile(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(AwsError, match="pass --region"):
        Aws().client("sagemaker")
    with pytest.raises(AwsError, match="--profile"):
        Aws(profile="nobody").client("sagemaker")


def test_aws_command_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    @aws_command
    def failing(args: argparse.Namespace) -> int:
        raise AwsError("something clear")

    assert failing(argparse.Namespace()) == 1
    assert capsys.readouterr().err == "error: something clear\n"


def test_bad_input_exits_2_and_aws_failures_1(capsys: pytest.CaptureFixture[str]) -> None:
    @aws_command
    def refusing(args: argparse.Namespace) -> int:
        raise UsageError("--thing must be positive")

    assert refusing(argparse.Namespace()) == 2
    assert capsys.readouterr().err == "error: --thing must be positive\n"

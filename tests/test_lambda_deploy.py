"""`dogbreed lambda deploy` against moto's real HTTP server (the `moto_server` fixture).

moto 5 does not implement PutProvisionedConcurrencyConfig: that single call goes to a client
with botocore's Stubber (through `provisioned_concurrency_client`), everything else over HTTP.
moto accepts a function's LoggingConfig but does not keep it: the request is checked instead.
"""

from __future__ import annotations

import json
import os
import re
import string
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from dogbreed import cli
from dogbreed.aws import lambda_deploy
from dogbreed.aws.clients import Aws, UsageError
from dogbreed.aws.lambda_deploy import PUBLIC_URL_GRANTS, DeployOptions, deploy, execution_policy

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
REPO = Path(__file__).resolve().parent.parent
PAGE_FILE = REPO / "src" / "dogbreed" / "serve" / "assets" / "index.html"


def stubbed_provisioned(monkeypatch: pytest.MonkeyPatch, count: int) -> Stubber:
    client = boto3.client("lambda", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_response(
        "put_provisioned_concurrency_config",
        {"RequestedProvisionedConcurrentExecutions": count, "Status": "IN_PROGRESS"},
        {
            "FunctionName": "dogbreed-client",
            "Qualifier": "live",
            "ProvisionedConcurrentExecutions": count,
        },
    )
    stubber.activate()
    monkeypatch.setattr(lambda_deploy, "provisioned_concurrency_client", lambda aws: client)
    return stubber


def options(**changes: Any) -> DeployOptions:
    base = DeployOptions(function_name="dogbreed-client", endpoint_name="Dogbreed-Endpoint")
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def requests_of(monkeypatch: pytest.MonkeyPatch, operation: str) -> list[dict[str, Any]]:
    """The parameters of every `operation` call our clients make, as sent."""
    sent: list[dict[str, Any]] = []
    make_client = Aws.client

    def recording(self: Aws, service: str, **kwargs: Any) -> Any:
        client = make_client(self, service, **kwargs)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            if model.name == operation:
                sent.append(params)

        client.meta.events.register("provide-client-params.*.*", record)
        return client

    monkeypatch.setattr(Aws, "client", recording)
    return sent


def test_deploy_creates_everything(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stubber = stubbed_provisioned(monkeypatch, 2)
    created = requests_of(monkeypatch, "CreateFunction")
    summary = deploy(
        Aws(region=REGION),
        options(
            provisioned_concurrency=2,
            function_url=True,
            cors_allow_origin="https://app.example.com",
        ),
    )
    stubber.assert_no_pending_responses()
    assert summary["provisioned_status"] == "IN_PROGRESS"
    assert created[0]["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "INFO",
    }
    group = boto3.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/dogbreed")
    assert [(g["logGroupName"], g["retentionInDays"]) for g in group["logGroups"]] == [
        ("/aws/lambda/dogbreed-client", 30)
    ]

    lam = boto3.client("lambda", region_name=REGION)
    fn = lam.get_function(FunctionName="dogbreed-client")
    config = fn["Configuration"]
    assert config["Handler"] == "handler.handler"
    assert config["Runtime"] in ("python3.11", "python3.12")
    assert config["Timeout"] == 90 and config["MemorySize"] >= 256
    # One attempt of 3 s + 65 s (+ 2 s margin) fits in 90 s; two would not.
    assert config["Environment"]["Variables"] == {
        "ENDPOINT_NAME": "Dogbreed-Endpoint",
        "ENDPOINT_CONNECT_TIMEOUT": "3",
        "ENDPOINT_READ_TIMEOUT": "65",
        "ENDPOINT_MAX_ATTEMPTS": "1",
        "CORS_ALLOW_ORIGIN": "https://app.example.com",
    }
    assert summary["timeouts"]["worst_case_s"] == 70
    # A Function URL waits up to the function's timeout: the 90 s budget is what fits.
    assert summary["timeouts"]["behind"] == "Function URL"
    assert any(note.startswith("timeouts: 1 attempt(s)") for note in summary["notes"])
    assert config["Role"] == f"arn:aws:iam::{ACCOUNT}:role/dogbreed-client-role"
    alias = lam.get_alias(FunctionName="dogbreed-client", Name="live")
    assert alias["FunctionVersion"] == summary["version"] != "$LATEST"
    concurrency = lam.get_function_concurrency(FunctionName="dogbreed-client")
    assert concurrency["ReservedConcurrentExecutions"] == 2
    url = lam.get_function_url_config(FunctionName="dogbreed-client", Qualifier="live")
    assert url["AuthType"] == "AWS_IAM"
    assert url["Cors"]["AllowOrigins"] == ["https://app.example.com"]
    assert summary["function_url"] == url["FunctionUrl"]

    iam = boto3.client("iam", region_name=REGION)
    role = iam.get_role(RoleName="dogbreed-client-role")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "lambda.amazonaws.com"}]
    assert (
        iam.list_attached_role_policies(RoleName="dogbreed-client-role")["AttachedPolicies"] == []
    )  # no managed policy (the original attached SageMakerFullAccess)
    inline = iam.get_role_policy(
        RoleName="dogbreed-client-role", PolicyName=lambda_deploy.INLINE_POLICY_NAME
    )["PolicyDocument"]
    inline = json.loads(inline) if isinstance(inline, str) else inline
    assert inline == execution_policy("dogbreed-client", "Dogbreed-Endpoint", REGION, ACCOUNT)


def test_redeploy_updates_and_moves_the_alias(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    updated = requests_of(monkeypatch, "UpdateFunctionConfiguration")
    first = deploy(Aws(region=REGION), options())
    changes = {"memory": 512, "reserved_concurrency": 3, "application_log_level": "WARN"}
    second = deploy(Aws(region=REGION), options(log_retention_days=7, **changes))
    assert updated[0]["LoggingConfig"]["ApplicationLogLevel"] == "WARN"
    assert any("metrics stop" in note for note in second["notes"])
    (group,) = boto3.client("logs").describe_log_groups()["logGroups"]
    assert group["retentionInDays"] == 7
    assert int(second["version"]) > int(first["version"])
    lam = boto3.client("lambda", region_name=REGION)
    assert (
        lam.get_alias(FunctionName="dogbreed-client", Name="live")["FunctionVersion"]
        == (second["version"])
    )
    assert lam.get_function_configuration(FunctionName="dogbreed-client")["MemorySize"] == 512
    assert (
        lam.get_function_concurrency(FunctionName="dogbreed-client")["ReservedConcurrentExecutions"]
        == 3
    )


def test_provisioned_zero_removes_it_and_tolerates_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stubbed for the same reason: moto lacks the provisioned-concurrency calls.
    client = boto3.client(
        "lambda", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "delete_provisioned_concurrency_config",
            "ProvisionedConcurrencyConfigNotFoundException",
            http_status_code=404,
            expected_params={"FunctionName": "dogbreed-client", "Qualifier": "live"},
        )
        assert (
            lambda_deploy.set_provisioned_concurrency(client, options(provisioned_concurrency=0))
            == {}
        )
        stubber.assert_no_pending_responses()


def test_policy_grants_only_invoke_on_one_endpoint_and_own_logs() -> None:
    policy = execution_policy("dogbreed-client", "Dogbreed-Endpoint", "eu-west-1", ACCOUNT)
    grants = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "Principal", "Condition"} & statement.keys()
        actions = statement["Action"]
        resources = statement["Resource"]
        for action in [actions] if isinstance(actions, str) else actions:
            for resource in [resources] if isinstance(resources, str) else resources:
                grants.add((action, resource))
    log_group = f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/aws/lambda/dogbreed-client"
    assert grants == {
        # ARNs hold endpoint names in lower case.
        (
            "sagemaker:InvokeEndpoint",
            f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:endpoint/dogbreed-endpoint",
        ),
        ("logs:CreateLogGroup", log_group),
        ("logs:CreateLogStream", f"{log_group}:*"),
        ("logs:PutLogEvents", f"{log_group}:*"),
    }


def test_public_url_grants_everyone_and_a_redeploy_without_it_takes_that_back(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser does not sign: --public-url makes the URL AuthType NONE with the two grants
    AWS requires since October 2025 (lambda:InvokeFunctionUrl for AuthType NONE, and
    lambda:InvokeFunction via the URL)."""
    added = requests_of(monkeypatch, "AddPermission")
    deploy(Aws(region=REGION), options(function_url=True, public_url=True))
    lam = boto3.client("lambda", region_name=REGION)
    url = lam.get_function_url_config(FunctionName="dogbreed-client", Qualifier="live")
    assert url["AuthType"] == "NONE"
    assert sorted((a["StatementId"], a["Action"], a["Principal"]) for a in added) == [
        ("dogbreed-public-url", "lambda:InvokeFunctionUrl", "*"),
        ("dogbreed-public-url-invoke", "lambda:InvokeFunction", "*"),
    ]
    assert {a.get("FunctionUrlAuthType") for a in added} == {"NONE", None}
    invoke = [a for a in added if a["Action"] == "lambda:InvokeFunction"]
    assert [a.get("InvokedViaFunctionUrl") for a in invoke] == [True]
    assert {a["Qualifier"] for a in added} == {"live"}
    policy = json.loads(lam.get_policy(FunctionName="dogbreed-client", Qualifier="live")["Policy"])
    assert {s["Sid"] for s in policy["Statement"]} >= {
        "dogbreed-public-url",
        "dogbreed-public-url-invoke",
    }
    deploy(Aws(region=REGION), options(function_url=True))  # again, not public
    url = lam.get_function_url_config(FunctionName="dogbreed-client", Qualifier="live")
    assert url["AuthType"] == "AWS_IAM"
    try:
        policy = json.loads(
            lam.get_policy(FunctionName="dogbreed-client", Qualifier="live")["Policy"]
        )
    except lam.exceptions.ResourceNotFoundException:  # no statement left: no policy
        policy = {"Statement": []}
    assert not {s["Sid"] for s in policy["Statement"]} & set(PUBLIC_URL_GRANTS)


def test_public_url_needs_function_url() -> None:
    with pytest.raises(UsageError, match="--public-url goes with --function-url"):
        options(public_url=True).check()


def test_deployer_policy_covers_every_call_deploy_makes(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: set[str] = set()
    make_client = Aws.client

    def recording(self: Aws, service: str, **kwargs: Any) -> Any:
        client = make_client(self, service, **kwargs)
        prefix = client.meta.service_model.signing_name

        def record(model: Any, **_: Any) -> None:
            calls.add(f"{prefix}:{model.name}")

        client.meta.events.register("before-call.*.*", record)
        return client

    monkeypatch.setattr(Aws, "client", recording)
    for _ in range(2):  # create, then the update path
        stubbed_provisioned(monkeypatch, 1)
        deploy(Aws(region=REGION), options(provisioned_concurrency=1, function_url=True))
    # The stubbed client is not made by Aws.client: the dry-run test checks that call.
    calls.add("lambda:PutProvisionedConcurrencyConfig")
    assert {"lambda:CreateFunction", "lambda:UpdateFunctionCode", "lambda:UpdateAlias"} <= calls
    assert {"logs:CreateLogGroup", "logs:PutRetentionPolicy"} <= calls

    text = (REPO / "iam" / "lambda-deployer-policy.json").read_text()
    policy = json.loads(
        string.Template(text).substitute(
            PARTITION="aws",
            REGION=REGION,
            ACCOUNT_ID=ACCOUNT,
            ROLE_NAME="dogbreed-client-role",
            FUNCTION_NAME="dogbreed-client",
        )
    )
    allowed = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        allowed.update([actions] if isinstance(actions, str) else actions)
        assert "*" not in str(actions)
    assert calls <= allowed, calls - allowed
    # Tags on CreateRole/CreateFunction need the tagging actions too.
    assert {"iam:TagRole", "lambda:TagResource"} <= allowed


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"provisioned_concurrency": 3, "reserved_concurrency": 2}, "cannot exceed"),
        ({"reserved_concurrency": 0}, "at least 1"),
        ({"timeout": 30, "endpoint_read_timeout": 65}, "more than --timeout 30 s"),
        ({"endpoint_max_attempts": 2}, "2 attempt(s) x (3 s connect + 65 s read) needs up to 139"),
        ({"api_gateway": True, "timeout": 60}, "behind API Gateway"),
        ({"log_retention_days": 10}, "--log-retention-days must be one of"),
        ({"memory": 64}, "--memory"),
        ({"function_name": "bad name!"}, "invalid function name"),
        ({"endpoint_name": "bad_endpoint"}, "endpoint name"),
        ({"alias": "12"}, "invalid alias"),
    ],
)
def test_bad_options_are_refused_before_any_call(changes: dict, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        options(**changes).check()


def test_behind_api_gateway_the_timeouts_fit_its_29_s() -> None:
    opts = options(api_gateway=True)
    opts.check()
    assert (opts.timeout, opts.endpoint_read_timeout, opts.endpoint_max_attempts) == (29, 24, 1)
    assert opts.worst_case(1) == 29  # 3 s connect + 24 s read + 2 s margin
    # Short reads leave room for retries: 3 x (3 + 5) + back-off 1 + 2 + margin 2 = 29.
    shorter = options(timeout=30)  # a shorter function timeout: the read time-out follows
    shorter.check()
    assert (shorter.endpoint_read_timeout, shorter.endpoint_max_attempts) == (25, 1)
    quick = options(api_gateway=True, endpoint_read_timeout=5)
    quick.check()
    assert quick.endpoint_max_attempts == 3
    assert quick.timeouts()["behind"] == "API Gateway (29 s)"


def test_cli_dry_run_prints_the_calls_and_needs_no_aws(
    aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = (
        "lambda deploy --function-name dogbreed-client --endpoint-name Dogbreed-Endpoint "
        "--provisioned-concurrency 2 --function-url --dry-run --region us-east-1"
    ).split()
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    calls = [json.loads(line) for line in lines if line.startswith('{"')]
    operations = [c["operation"] for c in calls]
    assert operations == [
        "GetCallerIdentity",
        "CreateRole",
        "PutRolePolicy",
        "CreateFunction",
        "CreateLogGroup",
        "PutRetentionPolicy",
        "PublishVersion",
        "CreateAlias",
        "PutFunctionConcurrency",
        "PutProvisionedConcurrencyConfig",
        "CreateFunctionUrlConfig",
    ]
    create = calls[3]["params"]
    assert create["Timeout"] == 90 and create["Handler"] == "handler.handler"
    assert calls[5]["params"] == {
        "logGroupName": "/aws/lambda/dogbreed-client",
        "retentionInDays": 30,
    }
    assert calls[9]["params"] == {
        "FunctionName": "dogbreed-client",
        "Qualifier": "live",
        "ProvisionedConcurrentExecutions": 2,
    }


def test_cli_refuses_provisioned_above_reserved(
    aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = (
        "lambda deploy --function-name f --endpoint-name e --reserved-concurrency 1 "
        "--provisioned-concurrency 2 --dry-run --region us-east-1"
    ).split()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "cannot exceed" in err


def test_package_is_reproducible(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "fn.zip"
    assert cli.main(["lambda", "package", "--output", str(target)]) == 0
    assert target.read_bytes() == lambda_deploy.package()
    with zipfile.ZipFile(target) as archive:
        assert archive.namelist() == ["handler.py", "index.html", "webpage.py"]
        sources = {name: archive.read(name).decode() for name in ("handler.py", "webpage.py")}
        # The links' targets, not links: the page and its loader travel with the handler.
        assert archive.read("index.html") == PAGE_FILE.read_bytes()
    assert "def handler(event" in sources["handler.py"]
    assert "def load(path" in sources["webpage.py"]
    for source in sources.values():
        assert "dogbreed" not in [
            line.split()[1].split(".")[0]
            for line in source.splitlines()
            if line.startswith(("import ", "from "))
        ]


def test_wrapper_script_passes_every_flag(aws_env: None) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = REPO / "scripts" / "deploy_lambda.sh"
    argv = "--function-name fn --endpoint-name ep --alias prod --dry-run --region us-east-1"
    done = subprocess.run(
        [str(script), *argv.split()], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    alias = next(json.loads(line) for line in done.stdout.splitlines() if "CreateAlias" in line)
    assert alias["params"]["Name"] == "prod"
    failed = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "--function-name" in failed.stderr

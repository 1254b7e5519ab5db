"""`dogbreed lambda deploy|package`: ship lambda/handler.py in front of a SageMaker endpoint.

deploy: zip -> execution role (trust lambda.amazonaws.com; InvokeEndpoint on ONE endpoint ARN
and the function's own log group) -> create or update the function -> publish a version ->
point the alias at it -> reserved concurrency (function) and provisioned concurrency (alias)
-> optional Function URL with AWS_IAM auth. Every step is idempotent: run it again to update.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import string
import sys
import time
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

from dogbreed.aws.clients import Aws, AwsError, add_aws_arguments, aws_command, aws_from_args
from dogbreed.aws.common import check_name, comma_list

REPO = Path(__file__).resolve().parents[3]
HANDLER_FILE = REPO / "lambda" / "handler.py"
TRUST_POLICY_FILE = REPO / "iam" / "lambda-trust-policy.json"
EXECUTION_POLICY_FILE = REPO / "iam" / "lambda-execution-policy.json"
INLINE_POLICY_NAME = "invoke-endpoint-and-own-logs"
RUNTIMES = ("python3.12", "python3.11", "python3.13")
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ALIAS_NAME = re.compile(r"^(?!^[0-9]+$)[a-zA-Z0-9_-]{1,128}$")
# A fixed timestamp makes the zip byte-identical for the same handler: same CodeSha256.
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
# A new role takes a few seconds before Lambda may assume it.
ROLE_PROPAGATION_S = 60.0


@dataclass
class DeployOptions:
    function_name: str
    endpoint_name: str
    alias: str = "live"
    role_name: str | None = None
    runtime: str = "python3.12"
    architecture: str = "arm64"
    memory: int = 256
    timeout: int = 90
    endpoint_read_timeout: int = 65
    reserved_concurrency: int | None = 2
    provisioned_concurrency: int | None = None
    function_url: bool = False
    cors_allow_origin: str = ""

    def check(self) -> None:
        if not FUNCTION_NAME.match(self.function_name):
            raise AwsError(
                f"invalid function name {self.function_name!r}: letters, digits, - and _, "
                "at most 64 characters"
            )
        check_name(self.endpoint_name, "endpoint name")
        if not ALIAS_NAME.match(self.alias):
            raise AwsError(
                f"invalid alias {self.alias!r}: letters, digits, - and _, not all digits"
            )
        if not 128 <= self.memory <= 10240:
            raise AwsError("--memory must be between 128 and 10240 MB")
        if not 1 <= self.timeout <= 900:
            raise AwsError("--timeout must be between 1 and 900 seconds")
        if self.timeout <= self.endpoint_read_timeout:
            raise AwsError(
                f"--timeout ({self.timeout} s) must exceed --endpoint-read-timeout "
                f"({self.endpoint_read_timeout} s), or a slow endpoint kills the function "
                "instead of answering 504"
            )
        if self.reserved_concurrency is not None and self.reserved_concurrency < 1:
            raise AwsError("--reserved-concurrency must be at least 1 (0 would block every call)")
        provisioned = self.provisioned_concurrency or 0
        if provisioned < 0:
            raise AwsError("--provisioned-concurrency must be 0 or more")
        if self.reserved_concurrency is not None and provisioned > self.reserved_concurrency:
            raise AwsError(
                f"--provisioned-concurrency ({provisioned}) cannot exceed "
                f"--reserved-concurrency ({self.reserved_concurrency})"
            )

    @property
    def role(self) -> str:
        return self.role_name or f"{self.function_name}-role"[:64]

    def environment(self) -> dict[str, str]:
        env = {
            "ENDPOINT_NAME": self.endpoint_name,
            "ENDPOINT_READ_TIMEOUT": str(self.endpoint_read_timeout),
        }
        if self.cors_allow_origin:
            env["CORS_ALLOW_ORIGIN"] = ",".join(comma_list(self.cors_allow_origin))
        return env


def package(handler_file: Path = HANDLER_FILE) -> bytes:
    """The deployment zip: handler.py at the root, reproducible bytes."""
    if not handler_file.is_file():
        raise AwsError(f"{handler_file} not found: run from a dogbreed source checkout")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("handler.py", date_time=ZIP_DATE)
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, handler_file.read_bytes())
    return buffer.getvalue()


def _template(path: Path, values: dict[str, str]) -> dict[str, Any]:
    try:
        text = string.Template(path.read_text()).substitute(values)
    except FileNotFoundError:
        raise AwsError(f"{path} not found: run from a dogbreed source checkout") from None
    return json.loads(text)


def trust_policy() -> dict[str, Any]:
    return _template(TRUST_POLICY_FILE, {})


def execution_policy(
    function_name: str, endpoint_name: str, region: str, account: str, partition: str = "aws"
) -> dict[str, Any]:
    """InvokeEndpoint on one endpoint (ARNs hold the name in lower case) + own log group."""
    return _template(
        EXECUTION_POLICY_FILE,
        {
            "PARTITION": partition,
            "REGION": region,
            "ACCOUNT_ID": account,
            "ENDPOINT_NAME_LOWER": endpoint_name.lower(),
            "FUNCTION_NAME": function_name,
        },
    )


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _exists(call: Any, **params: Any) -> dict[str, Any] | None:
    """The resource's description, or None when AWS says it does not exist."""
    try:
        return call(**params)
    except Exception as exc:
        if _error_code(exc) in ("NoSuchEntity", "ResourceNotFoundException"):
            return None
        raise


def ensure_role(iam: Any, opts: DeployOptions, policy: dict[str, Any], dry_run: bool) -> str:
    """The execution role's ARN; the inline policy is (re)written every time."""
    existing = None if dry_run else _exists(iam.get_role, RoleName=opts.role)
    if existing is None:
        created = iam.create_role(
            RoleName=opts.role,
            AssumeRolePolicyDocument=json.dumps(trust_policy()),
            Description=f"Lambda {opts.function_name}: invoke endpoint {opts.endpoint_name}",
            Tags=[{"Key": "dogbreed:function", "Value": opts.function_name}],
        )
        arn = created.get("Role", {}).get("Arn", f"arn:aws:iam::ACCOUNT_ID:role/{opts.role}")
    else:
        arn = existing["Role"]["Arn"]
        iam.update_assume_role_policy(RoleName=opts.role, PolicyDocument=json.dumps(trust_policy()))
    iam.put_role_policy(
        RoleName=opts.role, PolicyName=INLINE_POLICY_NAME, PolicyDocument=json.dumps(policy)
    )
    return arn


def _create_function(lam: Any, params: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    """create_function, retried while a new role is not yet assumable (IAM propagation)."""
    deadline = time.monotonic() + ROLE_PROPAGATION_S
    delay = 2.0
    while True:
        try:
            return lam.create_function(**params)
        except Exception as exc:
            message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
            propagating = _error_code(exc) == "InvalidParameterValueException" and (
                "cannot be assumed" in message
            )
            if dry_run or not propagating or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def ensure_function(
    lam: Any, opts: DeployOptions, role_arn: str, code: bytes, dry_run: bool
) -> None:
    config = {
        "Role": role_arn,
        "Handler": "handler.handler",
        "Runtime": opts.runtime,
        "Timeout": opts.timeout,
        "MemorySize": opts.memory,
        "Environment": {"Variables": opts.environment()},
        "Description": f"dogbreed client for SageMaker endpoint {opts.endpoint_name}",
    }
    existing = None if dry_run else _exists(lam.get_function, FunctionName=opts.function_name)
    if existing is None:
        _create_function(
            lam,
            {
                "FunctionName": opts.function_name,
                "Code": {"ZipFile": code},
                "Architectures": [opts.architecture],
                "Publish": False,
                "Tags": {"dogbreed:endpoint": opts.endpoint_name},
                **config,
            },
            dry_run,
        )
        if not dry_run:
            lam.get_waiter("function_active_v2").wait(FunctionName=opts.function_name)
        return
    lam.update_function_configuration(FunctionName=opts.function_name, **config)
    lam.get_waiter("function_updated_v2").wait(FunctionName=opts.function_name)
    lam.update_function_code(
        FunctionName=opts.function_name, ZipFile=code, Architectures=[opts.architecture]
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=opts.function_name)


def ensure_alias(lam: Any, opts: DeployOptions, version: str, dry_run: bool) -> str:
    params = {"FunctionName": opts.function_name, "Name": opts.alias, "FunctionVersion": version}
    existing = (
        None
        if dry_run
        else _exists(lam.get_alias, FunctionName=opts.function_name, Name=opts.alias)
    )
    answer = lam.create_alias(**params) if existing is None else lam.update_alias(**params)
    return answer.get("AliasArn", f"{opts.function_name}:{opts.alias}")


def provisioned_concurrency_client(aws: Aws) -> Any:
    """Its own client: the tests stub this one call (moto does not implement it)."""
    return aws.client("lambda")


def set_provisioned_concurrency(client: Any, opts: DeployOptions) -> dict[str, Any]:
    if opts.provisioned_concurrency:
        return client.put_provisioned_concurrency_config(
            FunctionName=opts.function_name,
            Qualifier=opts.alias,
            ProvisionedConcurrentExecutions=opts.provisioned_concurrency,
        )
    try:  # an explicit 0: remove it
        client.delete_provisioned_concurrency_config(
            FunctionName=opts.function_name, Qualifier=opts.alias
        )
    except Exception as exc:
        if _error_code(exc) != "ProvisionedConcurrencyConfigNotFoundException":
            raise
    return {}


def ensure_function_url(lam: Any, opts: DeployOptions, dry_run: bool) -> str:
    params: dict[str, Any] = {
        "FunctionName": opts.function_name,
        "Qualifier": opts.alias,
        "AuthType": "AWS_IAM",  # callers sign with SigV4; never a public URL
    }
    origins = comma_list(opts.cors_allow_origin)
    if origins:
        params["Cors"] = {
            "AllowOrigins": origins,
            "AllowMethods": ["POST"],
            "AllowHeaders": [
                "content-type",
                "authorization",
                "x-amz-date",
                "x-amz-security-token",
                "x-amz-content-sha256",
            ],
            "MaxAge": 600,
        }
    existing = (
        None
        if dry_run
        else _exists(
            lam.get_function_url_config, FunctionName=opts.function_name, Qualifier=opts.alias
        )
    )
    if existing is None:
        answer = lam.create_function_url_config(**params)
    else:
        answer = lam.update_function_url_config(**params)
    return answer.get("FunctionUrl", "")


def deploy(aws: Aws, opts: DeployOptions, out: IO[str] = sys.stdout) -> dict[str, Any]:
    """Run every step; returns a summary (also printed as JSON)."""
    opts.check()
    code = package()
    dry_run = aws.dry_run
    region = aws.session.region_name
    if not region:
        raise AwsError("no AWS region: pass --region or set AWS_REGION")
    partition = aws.session.get_partition_for_region(region)
    identity = aws.client("sts").get_caller_identity()
    account = identity.get("Account", "ACCOUNT_ID")
    policy = execution_policy(opts.function_name, opts.endpoint_name, region, account, partition)

    role_arn = ensure_role(aws.client("iam"), opts, policy, dry_run)
    lam = aws.client("lambda")
    ensure_function(lam, opts, role_arn, code, dry_run)
    published = lam.publish_version(
        FunctionName=opts.function_name,
        Description=f"code sha256 {hashlib.sha256(code).hexdigest()[:12]}",
    )
    version = published.get("Version", "1")
    alias_arn = ensure_alias(lam, opts, version, dry_run)
    if opts.reserved_concurrency is not None:
        lam.put_function_concurrency(
            FunctionName=opts.function_name,
            ReservedConcurrentExecutions=opts.reserved_concurrency,
        )
    provisioned: dict[str, Any] = {}
    if opts.provisioned_concurrency is not None:
        provisioned = set_provisioned_concurrency(provisioned_concurrency_client(aws), opts)
    url = ensure_function_url(lam, opts, dry_run) if opts.function_url else ""
    summary = {
        "function": opts.function_name,
        "version": version,
        "alias": alias_arn,
        "role": role_arn,
        "reserved_concurrency": opts.reserved_concurrency,
        "provisioned_concurrency": opts.provisioned_concurrency,
        "provisioned_status": provisioned.get("Status"),
        "function_url": url or None,
        "dry_run": dry_run,
    }
    print(json.dumps(summary, indent=2), file=out)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lambda_command", required=True, metavar="ACTION")
    pkg = sub.add_parser("package", help="write the deployment zip (handler.py at its root)")
    pkg.add_argument("--output", "-o", default="lambda.zip", help="zip path (default lambda.zip)")

    dep = sub.add_parser(
        "deploy", help="create or update the function, its role, alias, concurrency and URL"
    )
    dep.add_argument("--function-name", required=True, help="Lambda function name")
    dep.add_argument("--endpoint-name", required=True, help="SageMaker endpoint to invoke")
    dep.add_argument("--alias", default="live", help="alias pointed at the new version (live)")
    dep.add_argument("--role-name", help="execution role name (default FUNCTION-role)")
    dep.add_argument("--runtime", default="python3.12", choices=RUNTIMES, help="(python3.12)")
    dep.add_argument(
        "--architecture",
        default="arm64",
        choices=("arm64", "x86_64"),
        help="pure-Python handler: arm64 is cheaper (default arm64)",
    )
    dep.add_argument("--memory", type=int, default=256, help="MB (default 256)")
    dep.add_argument(
        "--timeout",
        type=int,
        default=90,
        help="seconds; must exceed --endpoint-read-timeout (default 90)",
    )
    dep.add_argument(
        "--endpoint-read-timeout",
        type=int,
        default=65,
        help="seconds the handler waits for the endpoint (default 65 > its 60 s)",
    )
    dep.add_argument(
        "--reserved-concurrency",
        type=int,
        default=2,
        help="cap on concurrent executions of the function (default 2)",
    )
    dep.add_argument(
        "--provisioned-concurrency",
        type=int,
        default=None,
        help="warm environments on the alias, <= reserved; 0 removes (default: leave as is)",
    )
    dep.add_argument(
        "--function-url",
        action="store_true",
        help="create a Function URL on the alias with AWS_IAM auth",
    )
    dep.add_argument(
        "--cors-allow-origin",
        default="",
        help="comma-separated origins allowed by CORS (default: none)",
    )
    add_aws_arguments(dep)


def options_from_args(args: argparse.Namespace) -> DeployOptions:
    """Every DeployOptions field comes from the `deploy` flag of the same name."""
    return DeployOptions(**{f.name: getattr(args, f.name) for f in fields(DeployOptions)})


@aws_command
def main(args: argparse.Namespace) -> int:
    if args.lambda_command == "package":
        Path(args.output).write_bytes(package())
        print(f"wrote {args.output}")
        return 0
    deploy(aws_from_args(args), options_from_args(args))
    return 0

"""`dogbreed lambda deploy|package`: ship the Lambda client (lambda/handler.py) in front of a
SageMaker endpoint.

deploy: zip -> execution role (trust lambda.amazonaws.com; InvokeEndpoint on ONE endpoint ARN
and the function's own log group) -> create or update the function (JSON logs at a level,
timeouts that fit the path in front of it) -> its log group's retention -> publish a version ->
point the alias at it -> reserved concurrency (function) and provisioned concurrency (alias)
-> optional Function URL with AWS_IAM auth. Every step is idempotent: run it again to update.
The handler and the policy documents are package data (dogbreed/aws/assets), so an installed
wheel deploys as a checkout does.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import string
import time
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dogbreed.aws.clients import (
    Aws,
    AwsError,
    UsageError,
    add_aws_arguments,
    aws_command,
    aws_from_args,
    emit,
)
from dogbreed.aws.flags import comma_list
from dogbreed.aws.names import check_name

ASSETS = Path(__file__).resolve().parent / "assets"
FUNCTION_DIR = ASSETS / "lambda-function"
# What the zip holds, at its root: the handler, and the page it serves on GET with the module
# that loads it (links to dogbreed/serve's files: one source for both servers).
FUNCTION_FILES = ("handler.py", "index.html", "webpage.py")
TRUST_POLICY_FILE = ASSETS / "iam" / "lambda-trust-policy.json"
EXECUTION_POLICY_FILE = ASSETS / "iam" / "lambda-execution-policy.json"
INLINE_POLICY_NAME = "invoke-endpoint-and-own-logs"
RUNTIMES = ("python3.12", "python3.11", "python3.13")
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ALIAS_NAME = re.compile(r"^(?!^[0-9]+$)[a-zA-Z0-9_-]{1,128}$")
# A fixed timestamp makes the zip byte-identical for the same handler: same CodeSha256.
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
# A new role takes a few seconds before Lambda may assume it.
ROLE_PROPAGATION_S = 60.0
# API Gateway ends an integration after 29 s, whatever the function does.
API_GATEWAY_LIMIT_S = 29
# Time the handler needs besides the endpoint call (a cold start's boto3 import, parsing).
HANDLER_MARGIN_S = 2
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
# The values CloudWatch Logs accepts for a log group's retention.
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                  2192, 2557, 2922, 3288, 3653)  # fmt: skip


def retry_backoff_s(attempts: int) -> int:
    """The longest total wait between `attempts` tries in botocore's standard retry mode: at
    most min(2**(n-1), 20) s after try n (throttling scale; jitter only shortens it)."""
    return sum(min(2 ** (n - 1), 20) for n in range(1, attempts))


def worst_case_s(connect: int, read: int, attempts: int) -> int:
    """How long the handler can spend on an endpoint that never answers, margin included."""
    return attempts * (connect + read) + retry_backoff_s(attempts) + HANDLER_MARGIN_S


@dataclass
class DeployOptions:
    function_name: str
    endpoint_name: str
    alias: str = "live"
    role_name: str | None = None
    runtime: str = "python3.12"
    architecture: str = "arm64"
    memory: int = 256
    timeout: int | None = None  # 90, or 29 behind API Gateway
    endpoint_read_timeout: int | None = None  # 65, or what fits behind API Gateway
    endpoint_connect_timeout: int = 3
    endpoint_max_attempts: int | None = None  # as many as fit in the timeout
    api_gateway: bool = False
    reserved_concurrency: int | None = 2
    provisioned_concurrency: int | None = None
    function_url: bool = False
    public_url: bool = False
    cors_allow_origin: str = ""
    application_log_level: str = "INFO"
    log_retention_days: int = 30

    def check(self) -> None:
        if self.public_url and not self.function_url:
            raise UsageError("--public-url goes with --function-url")
        if not FUNCTION_NAME.match(self.function_name):
            raise UsageError(
                f"invalid function name {self.function_name!r}: letters, digits, - and _, "
                "at most 64 characters"
            )
        check_name(self.endpoint_name, "endpoint name")
        if not ALIAS_NAME.match(self.alias):
            raise UsageError(
                f"invalid alias {self.alias!r}: letters, digits, - and _, not all digits"
            )
        if not 128 <= self.memory <= 10240:
            raise UsageError("--memory must be between 128 and 10240 MB")
        if self.log_retention_days not in RETENTION_DAYS:
            raise UsageError(f"--log-retention-days must be one of {RETENTION_DAYS}")
        self.fit_timeouts()
        if self.reserved_concurrency is not None and self.reserved_concurrency < 1:
            raise UsageError("--reserved-concurrency must be at least 1 (0 would block every call)")
        provisioned = self.provisioned_concurrency or 0
        if provisioned < 0:
            raise UsageError("--provisioned-concurrency must be 0 or more")
        if self.reserved_concurrency is not None and provisioned > self.reserved_concurrency:
            raise UsageError(
                f"--provisioned-concurrency ({provisioned}) cannot exceed "
                f"--reserved-concurrency ({self.reserved_concurrency})"
            )

    def fit_timeouts(self) -> None:
        """Fill in the unset timeouts so that the worst case (every attempt waiting out its
        connect and read time-outs, with back-off) ends inside the function's timeout, and that
        one inside API Gateway's 29 s when the function sits behind it; refuse set values that
        do not fit."""
        limit = API_GATEWAY_LIMIT_S if self.api_gateway else 900
        self.timeout = self.timeout or (API_GATEWAY_LIMIT_S if self.api_gateway else 90)
        if not 1 <= self.timeout <= limit:
            where = " behind API Gateway (its integration limit)" if self.api_gateway else ""
            raise UsageError(f"--timeout must be between 1 and {limit} seconds{where}")
        if not 1 <= self.endpoint_connect_timeout <= 60:
            raise UsageError("--endpoint-connect-timeout must be between 1 and 60 seconds")
        if self.endpoint_read_timeout is None:
            room = self.timeout - self.endpoint_connect_timeout - HANDLER_MARGIN_S
            self.endpoint_read_timeout = min(65, room)  # 65: above the endpoint's own 60 s
        if self.endpoint_max_attempts is None:
            fitting = [a for a in (3, 2, 1) if self.worst_case(a) <= self.timeout]
            self.endpoint_max_attempts = fitting[0] if fitting else 1
        if self.endpoint_read_timeout < 1 or self.endpoint_max_attempts < 1:
            raise UsageError("--endpoint-read-timeout and --endpoint-max-attempts must be >= 1")
        worst = self.worst_case(self.endpoint_max_attempts)
        if worst > self.timeout:
            raise UsageError(
                f"{self.timing()} needs up to {worst} s, more than --timeout {self.timeout} s: "
                "a slow endpoint would kill the function instead of getting a 504"
            )

    def worst_case(self, attempts: int) -> int:
        read = self.endpoint_read_timeout or 0
        return worst_case_s(self.endpoint_connect_timeout, read, attempts)

    def timing(self) -> str:
        return (
            f"{self.endpoint_max_attempts} attempt(s) x ({self.endpoint_connect_timeout} s "
            f"connect + {self.endpoint_read_timeout} s read)"
        )

    def timeouts(self) -> dict[str, Any]:
        """The summary's account of the time budget (after check())."""
        worst = self.worst_case(self.endpoint_max_attempts or 1)
        behind = "API Gateway (29 s)" if self.api_gateway else None
        return {
            "function_s": self.timeout,
            "endpoint_connect_s": self.endpoint_connect_timeout,
            "endpoint_read_s": self.endpoint_read_timeout,
            "endpoint_max_attempts": self.endpoint_max_attempts,
            "worst_case_s": worst,
            "behind": behind or ("Function URL" if self.function_url else None),
            "fits": f"{self.timing()} + back-off + {HANDLER_MARGIN_S} s margin = {worst} s "
            f"<= {self.timeout} s function timeout",
        }

    @property
    def role(self) -> str:
        return self.role_name or f"{self.function_name}-role"[:64]

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def logging_config(self) -> dict[str, str]:
        # JSON lets Lambda filter the handler's lines by their "level"; INFO system logs keep
        # the START/END/REPORT lines (duration, memory).
        return {
            "LogFormat": "JSON",
            "ApplicationLogLevel": self.application_log_level,
            "SystemLogLevel": "INFO",
        }

    def environment(self) -> dict[str, str]:
        env = {
            "ENDPOINT_NAME": self.endpoint_name,
            "ENDPOINT_CONNECT_TIMEOUT": str(self.endpoint_connect_timeout),
            "ENDPOINT_READ_TIMEOUT": str(self.endpoint_read_timeout),
            "ENDPOINT_MAX_ATTEMPTS": str(self.endpoint_max_attempts),
        }
        if self.cors_allow_origin:
            env["CORS_ALLOW_ORIGIN"] = ",".join(comma_list(self.cors_allow_origin))
        return env


def package(function_dir: Path = FUNCTION_DIR) -> bytes:
    """The deployment zip: FUNCTION_FILES at the root (links followed), reproducible bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in FUNCTION_FILES:
            path = function_dir / name
            if not path.is_file():
                raise AwsError(f"{path} not found: the dogbreed installation is incomplete")
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def _template(path: Path, values: dict[str, str]) -> dict[str, Any]:
    try:
        text = string.Template(path.read_text()).substitute(values)
    except FileNotFoundError:
        raise AwsError(f"{path} not found: the dogbreed installation is incomplete") from None
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
        "LoggingConfig": opts.logging_config(),
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
        # AWS_IAM: callers sign with SigV4. NONE (--public-url): anyone, e.g. a browser.
        "AuthType": "NONE" if opts.public_url else "AWS_IAM",
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
    if opts.public_url or (existing or {}).get("AuthType") == "NONE":
        set_public_access(lam, opts, opts.public_url)
    return answer.get("FunctionUrl", "")


# A URL with AuthType NONE admits only what the function's resource policy allows; since
# October 2025 a new URL needs both grants (AWS Lambda guide, "Control access to function URLs").
PUBLIC_URL_GRANTS = {
    "dogbreed-public-url": {"Action": "lambda:InvokeFunctionUrl", "FunctionUrlAuthType": "NONE"},
    "dogbreed-public-url-invoke": {
        "Action": "lambda:InvokeFunction",
        "InvokedViaFunctionUrl": True,
    },
}


def set_public_access(lam: Any, opts: DeployOptions, public: bool) -> None:
    """Grant everyone the call through the alias's URL, or take the grants back (a redeploy
    without --public-url). Both are idempotent: a grant already there, or one already gone, is
    what was wanted."""
    for statement_id, grant in PUBLIC_URL_GRANTS.items():
        target = {"FunctionName": opts.function_name, "Qualifier": opts.alias}
        try:
            if public:
                lam.add_permission(**target, StatementId=statement_id, Principal="*", **grant)
            else:
                lam.remove_permission(**target, StatementId=statement_id)
        except Exception as exc:
            if _error_code(exc) not in ("ResourceConflictException", "ResourceNotFoundException"):
                raise


def set_log_retention(logs: Any, opts: DeployOptions) -> None:
    """The function's log group, made now (Lambda would make it on the first call, kept
    forever) so that it has a retention from the start."""
    try:
        logs.create_log_group(logGroupName=opts.log_group)
    except Exception as exc:
        if _error_code(exc) != "ResourceAlreadyExistsException":
            raise
    logs.put_retention_policy(logGroupName=opts.log_group, retentionInDays=opts.log_retention_days)


def notes(opts: DeployOptions) -> list[str]:
    """What the person deploying should know about the settings chosen."""
    said = [f"timeouts: {opts.timeouts()['fits']}"]
    if opts.api_gateway:
        said.append(
            "behind API Gateway: the function answers within its 29 s integration limit; grant "
            "it lambda:InvokeFunction on the alias (docs/lambda.md)"
        )
    if LOG_LEVELS.index(opts.application_log_level) > LOG_LEVELS.index("INFO"):
        said.append(
            f"application log level {opts.application_log_level}: Lambda drops the INFO "
            "request and metric lines, so the function's CloudWatch metrics stop"
        )
    return said


def deploy(aws: Aws, opts: DeployOptions) -> dict[str, Any]:
    """Run every step; returns a summary."""
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
    set_log_retention(aws.client("logs"), opts)
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
    return {
        "function": opts.function_name,
        "version": version,
        "alias": alias_arn,
        "role": role_arn,
        "reserved_concurrency": opts.reserved_concurrency,
        "provisioned_concurrency": opts.provisioned_concurrency,
        "provisioned_status": provisioned.get("Status"),
        "function_url": url or None,
        "timeouts": opts.timeouts(),
        "logging": {
            **opts.logging_config(),
            "log_group": opts.log_group,
            "retention_days": opts.log_retention_days,
        },
        "notes": notes(opts),
        "dry_run": dry_run,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lambda_command", required=True, metavar="ACTION")
    pkg = sub.add_parser(
        "package", help="write the deployment zip (handler.py and its page at its root)"
    )
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
    add_timeout_arguments(dep.add_argument_group("time budget"))
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
        "--public-url",
        action="store_true",
        help="with --function-url: auth NONE and a resource policy letting anyone call the URL "
        "(a browser can open the page); a redeploy without it takes that back",
    )
    dep.add_argument(
        "--cors-allow-origin",
        default="",
        help="comma-separated origins allowed by CORS (default: none)",
    )
    logs = dep.add_argument_group("logs")
    logs.add_argument(
        "--application-log-level",
        default="INFO",
        choices=LOG_LEVELS,
        help="lowest level of the handler's JSON lines Lambda keeps (default INFO; above INFO "
        "the metric lines go too)",
    )
    logs.add_argument(
        "--log-retention-days",
        type=int,
        default=30,
        help="retention of /aws/lambda/FUNCTION (default 30; CloudWatch's values: 1, 3, 5, 7, "
        "14, 30, 60, 90, ... 3653)",
    )
    add_aws_arguments(dep)


def add_timeout_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--api-gateway",
        action="store_true",
        help="the function sits behind API Gateway: size the timeouts for its 29 s limit",
    )
    group.add_argument(
        "--timeout",
        type=int,
        help="function timeout in seconds (default 90; 29 with --api-gateway)",
    )
    group.add_argument(
        "--endpoint-read-timeout",
        type=int,
        help="seconds the handler waits for the endpoint's answer (default 65, above its 60 s; "
        "what fits with --api-gateway)",
    )
    group.add_argument(
        "--endpoint-connect-timeout",
        type=int,
        default=3,
        help="seconds to connect to the SageMaker runtime (default 3)",
    )
    group.add_argument(
        "--endpoint-max-attempts",
        type=int,
        help="tries per request incl. retries (default: the most, up to 3, whose worst case "
        "fits the function timeout)",
    )


def options_from_args(args: argparse.Namespace) -> DeployOptions:
    """Every DeployOptions field comes from the `deploy` flag of the same name."""
    return DeployOptions(**{f.name: getattr(args, f.name) for f in fields(DeployOptions)})


@aws_command
def main(args: argparse.Namespace) -> int:
    if args.lambda_command == "package":
        Path(args.output).write_bytes(package())
        print(f"wrote {args.output}")
        return 0
    aws = aws_from_args(args)
    summary = deploy(aws, options_from_args(args))
    if args.output_format == "json":
        emit(args, aws, summary, [])
    else:  # the summary is JSON already: indented for people
        print(json.dumps(summary, indent=2))
    return 0

"""boto3 clients for every `dogbreed` AWS command: session, retries, dry run, clear errors.

API (import nothing heavy: boto3 is imported only when a client is made):

    add_aws_arguments(parser)      adds --region, --profile, --dry-run and --output to a subcommand
    aws_from_args(args) -> Aws     the session those flags describe
    OutputFlag                     the `--output text|json` action (train/tune: also the S3 path)
    emit(args, aws, doc, lines)    a command's result: text lines, or ONE JSON document
    progress_out(args)             where progress lines go (stderr with --output json)
    Aws(region, profile, dry_run, out).client("sagemaker", read_timeout=...) -> botocore client
        With dry_run the client makes no request at all: each call is validated against the
        service model as usual, printed to `out` as one JSON line
        {"service": ..., "operation": ..., "params": {...}} and answered with `{}`.
        `Aws.dry_run` tells callers to skip waits and existence checks (nothing exists).
    AwsError                       one-line message meant for the user (exit status 1)
    UsageError                     a bad flag or value, found before any call (exit status 2)
    translate(exc) -> AwsError     botocore/boto3 exception -> AwsError (permissions,
                                   missing resources, quotas, credentials, region, waiters)
    aws_command(main)              decorator for `main(args) -> int`: prints `error: ...` to
                                   stderr and returns 2 on UsageError, 1 on AwsError or a
                                   botocore exception
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

# Retries: botocore's "standard" mode retries throttling and transient errors with back-off.
MAX_ATTEMPTS = 5
CONNECT_TIMEOUT = 10
# Above SageMaker's 60 s /invocations limit, so that a slow model answers rather than retries.
READ_TIMEOUT = 70

ACCESS_DENIED_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "NotAuthorized",
}
NOT_FOUND_CODES = {
    "ResourceNotFound",
    "ResourceNotFoundException",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchEntity",
    "RepositoryNotFoundException",
    "ObjectNotFoundException",
    "404",
}
QUOTA_CODES = {
    "ResourceLimitExceeded",
    "LimitExceededException",
    "ServiceQuotaExceededException",
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
}
CREDENTIAL_CODES = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
}


OUTPUT_FORMATS = ("text", "json")


class AwsError(RuntimeError):
    """An AWS failure explained in one line for the person at the terminal."""


class UsageError(AwsError):
    """Bad input (a flag, a value, a file), found before anything is sent: exit status 2."""


class OutputFlag(argparse.Action):
    """`--output text|json`: how the result is printed, as the AWS CLI spells it.

    Where `--output` already names something else (`train`/`tune`: the job's S3 output path),
    the one flag takes both, `--output s3://b/jobs --output json`: a format word is never an
    S3 URI, so the value says which it is.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if values in OUTPUT_FORMATS:
            namespace.output_format = values
        elif self.dest == "output_format":
            parser.error(f"argument --output: choose text or json, not {values!r}")
        else:
            setattr(namespace, self.dest, values)


def add_aws_arguments(parser: argparse.ArgumentParser, *, output_flag: bool = True) -> None:
    """--region, --profile, --dry-run, and --output unless the command defines its own
    (`output_flag=False`: it then uses OutputFlag itself)."""
    parser.set_defaults(output_format="text")
    group = parser.add_argument_group("AWS")
    group.add_argument(
        "--region", help="AWS region (default: AWS_DEFAULT_REGION, AWS_REGION, the profile's)"
    )
    group.add_argument("--profile", help="named profile from ~/.aws (default: AWS_PROFILE)")
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="print the API calls as JSON lines instead of making them (needs no credentials)",
    )
    if output_flag:
        group.add_argument(
            "--output",
            dest="output_format",
            action=OutputFlag,
            metavar="{text,json}",
            help="json: one JSON document on stdout (names, ARNs, status, URIs) for scripts",
        )


@dataclass
class Aws:
    region: str | None = None
    profile: str | None = None
    dry_run: bool = False
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    # Dry run: every call is kept here too; printed as it happens only when `echo` is set.
    echo: bool = True
    calls: list[dict[str, Any]] = field(default_factory=list)

    @functools.cached_property
    def session(self) -> Any:
        import boto3
        import botocore.exceptions

        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            # botocore logs "Found credentials ..." at INFO on every run: noise at the terminal.
            logging.getLogger("botocore").setLevel(logging.WARNING)
        try:
            session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
            if session.region_name is None and os.environ.get("AWS_REGION"):
                # botocore reads only AWS_DEFAULT_REGION; Lambda and containers set AWS_REGION.
                session = boto3.session.Session(
                    profile_name=self.profile, region_name=os.environ["AWS_REGION"]
                )
            return session
        except botocore.exceptions.BotoCoreError as exc:
            raise translate(exc) from None

    def client(self, service: str, *, read_timeout: int = READ_TIMEOUT) -> Any:
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=read_timeout,
            user_agent_extra="dogbreed",
        )
        try:
            client = self.session.client(service, config=config)
        except Exception as exc:
            raise translate(exc) from None
        if self.dry_run:
            self._make_dry(client)
        return client

    def _make_dry(self, client: Any) -> None:
        """Answer every call locally: botocore still validates the parameters first."""
        from botocore.awsrequest import AWSResponse

        service = client.meta.service_model.service_name

        def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            context["dogbreed_params"] = params

        def answer(model: Any, context: dict[str, Any], **_: Any) -> tuple[Any, dict]:
            record = {
                "service": service,
                "operation": model.name,
                "params": context.get("dogbreed_params", {}),
            }
            self.calls.append(record)
            if self.echo:
                print(json.dumps(record, default=_json_default, sort_keys=True), file=self.out)
            return AWSResponse("dry-run", 200, {}, None), {}

        client.meta.events.register("before-parameter-build.*.*", remember)
        client.meta.events.register_first("before-call.*.*", answer)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if hasattr(value, "read"):
        return "<stream>"
    return str(value)


def aws_from_args(args: argparse.Namespace) -> Aws:
    # With --output json the dry run's calls go into the one document instead of JSON lines.
    return Aws(
        region=args.region,
        profile=args.profile,
        dry_run=args.dry_run,
        echo=args.output_format != "json",
    )


def progress_out(args: argparse.Namespace) -> IO[str]:
    """Status and log lines while a command runs: stderr when stdout is for the JSON result."""
    return sys.stderr if args.output_format == "json" else sys.stdout


def emit(
    args: argparse.Namespace, aws: Aws, document: dict[str, Any], lines: Iterable[str]
) -> None:
    """The result: `lines` for people (none in a dry run: its calls were the output), or
    `document` as ONE JSON document with `--output json` (a dry run adds its calls)."""
    if args.output_format == "json":
        if aws.dry_run:
            document = {**document, "dry_run": True, "calls": aws.calls}
        print(json.dumps(document, default=_json_default, sort_keys=True))
    elif not aws.dry_run:
        for line in lines:
            print(line)


def _hint_for(code: str, message: str) -> str | None:
    lowered = message.lower()
    if code in ACCESS_DENIED_CODES or code.startswith("AccessDenied"):
        return "permission denied; the IAM identity needs this action (see iam/)"
    if code in CREDENTIAL_CODES:
        return "the AWS credentials are invalid or expired"
    if code in NOT_FOUND_CODES or (
        code in ("ValidationException", "ValidationError")
        and ("could not find" in lowered or "does not exist" in lowered)
    ):
        return "not found; check the name and the region"
    if code in QUOTA_CODES or "quota" in lowered or "limit exceeded" in lowered:
        return "quota or rate limit reached; request an increase in Service Quotas or retry later"
    return None


def translate(exc: BaseException) -> AwsError:
    """One line that says what failed and what to do about it."""
    import botocore.exceptions as bex

    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "")).strip() or code
        text = f"{exc.operation_name} failed ({code}): {message}"
        hint = _hint_for(code, message)
        return AwsError(f"{text} -- {hint}" if hint else text)
    if isinstance(exc, bex.WaiterError):
        reason = exc.last_response.get("FailureReason") if exc.last_response else None
        return AwsError(f"{exc}" + (f": {reason}" if reason else ""))
    if isinstance(exc, bex.NoCredentialsError):
        return AwsError(
            "no AWS credentials found: use --profile, AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY (--dry-run needs none)"
        )
    if isinstance(exc, bex.NoRegionError):
        return AwsError("no AWS region: pass --region or set AWS_REGION")
    if isinstance(exc, bex.ProfileNotFound):
        return AwsError(f"{exc}: check --profile / AWS_PROFILE against ~/.aws/config")
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError):
        return AwsError(f"cannot reach AWS: {exc}")
    if isinstance(exc, bex.ReadTimeoutError):
        return AwsError(f"AWS did not answer in time: {exc}")
    if isinstance(exc, bex.ParamValidationError):
        return AwsError(f"invalid request: {' '.join(str(exc).split())}")
    return AwsError(f"{type(exc).__name__}: {exc}")


def aws_command(main: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn failures into `error: <one line>` on stderr: exit status 2 for bad input, 1 for
    AWS failures."""

    @functools.wraps(main)
    def wrapper(args: argparse.Namespace) -> int:
        import botocore.exceptions as bex

        try:
            return main(args)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (AwsError, bex.BotoCoreError, bex.ClientError) as exc:
            print(f"error: {translate(exc)}", file=sys.stderr)
            return 1

    return wrapper


def describe_endpoint(sm: Any, endpoint: str) -> dict[str, Any] | None:
    """DescribeEndpoint, or None when it does not exist (other errors, e.g. AccessDenied, raise)."""
    import botocore.exceptions

    try:
        return sm.describe_endpoint(EndpointName=endpoint)
    except botocore.exceptions.ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", "")
        if "Could not find" in message or "does not exist" in message:
            return None
        raise

"""Small helpers shared by the `dogbreed sagemaker` commands: names, tags, S3 URIs, flags."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from dogbreed.aws.clients import UsageError

# SageMaker resource names: letters, digits and single hyphens, at most 63 characters.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MAX_NAME = 63
# Every resource a command creates carries this tag, so that `delete` finds exactly those.
TAG_KEY = "dogbreed:endpoint"


def check_name(name: str, what: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"invalid {what} {name!r}: use letters, digits and hyphens, at most {MAX_NAME} "
            "characters, starting and ending with a letter or digit"
        )
    return name


def unique_name(base: str, now: float | None = None) -> str:
    """`base-YYYYmmdd-HHMMSS-mmm` (UTC) cut to SageMaker's 63 characters."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{int(now * 1000) % 1000:03d}"
    return f"{base[: MAX_NAME - len(stamp) - 1].rstrip('-')}-{stamp}"


# The one definition of an S3 URI here: s3://bucket, or s3://bucket/key (bucket: 3-63 characters).
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/(?P<key>.*))?$")


def split_s3_uri(uri: str, what: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> ("bucket", "some/key"), key "" when absent; UsageError (naming
    `what`) if `uri` is not an S3 URI."""
    match = S3_URI.match(uri)
    if not match:
        raise UsageError(
            f"{what} must be an S3 URI like s3://bucket/prefix (bucket: 3-63 characters), "
            f"not {uri!r}"
        )
    return match["bucket"], match["key"] or ""


def check_s3_uri(uri: str, what: str) -> str:
    """`uri` itself once it is a valid S3 URI (see split_s3_uri)."""
    split_s3_uri(uri, what)
    return uri


def parse_pairs(items: list[str] | None, what: str) -> dict[str, str]:
    """`KEY=VALUE` flags (repeated) to a dict."""
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must look like KEY=VALUE, not {item!r}")
        pairs[key] = value
    return pairs


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_wait_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"wait for the {what} to finish and report it (default: --wait)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=int,
        default=30,
        metavar="S",
        help="seconds between status checks while waiting (default 30)",
    )


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

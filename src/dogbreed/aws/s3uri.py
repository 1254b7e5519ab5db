"""S3 URIs, checked where a command takes one."""

from __future__ import annotations

import re

from dogbreed.aws.clients import UsageError

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

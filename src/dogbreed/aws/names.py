"""SageMaker resource names and the tag that marks the resources our commands create."""

from __future__ import annotations

import re
import time

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


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]

"""Command-line flags the `dogbreed sagemaker` commands share (beyond clients.add_aws_arguments)."""

from __future__ import annotations

import argparse

from dogbreed.aws.clients import UsageError


def parse_pairs(items: list[str] | None, what: str) -> dict[str, str]:
    """`KEY=VALUE` flags (repeated) to a dict."""
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must look like KEY=VALUE, not {item!r}")
        pairs[key] = value
    return pairs


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

"""`dogbreed data sample|check|fetch|upload`.

`upload` is aws's code (boto3, dogbreed.aws.s3): data sits below aws and never imports it;
dogbreed.cli supplies the action through `add_action`, and data parses and runs it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

Actions = argparse._SubParsersAction  # what `add_arguments` returns: the ACTION subparsers


def add_arguments(parser: argparse.ArgumentParser) -> Actions:
    from dogbreed.data.fetch import DATASET_URL, DOWNLOAD_TIMEOUT

    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    sample = sub.add_parser("sample", help="generate a small synthetic dataset (dogImages layout)")
    sample.add_argument("out", type=Path, help="folder to create (OUT/train, OUT/valid, OUT/test)")
    sample.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    sample.add_argument(
        "--per-class", type=int, default=30, help="train images per class (default 30)"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--force", action="store_true", help="replace a non-empty OUT")

    check = sub.add_parser("check", help="validate a dataset folder and print its summary")
    check.add_argument("root", type=Path, help="folder holding train/ valid/ test/")

    fetch = sub.add_parser("fetch", help="download, verify and unpack dogImages.zip")
    fetch.add_argument("out", type=Path, help="folder to unpack into")
    fetch.add_argument("--url", default=DATASET_URL, help=f"zip URL (default {DATASET_URL})")
    fetch.add_argument("--sha256", help="expected SHA-256 of the zip (hex)")
    fetch.add_argument(
        "--timeout",
        type=float,
        default=DOWNLOAD_TIMEOUT,
        help=f"seconds without data before giving up (default {DOWNLOAD_TIMEOUT:g})",
    )
    return sub


def add_action(
    actions: Actions,
    name: str,
    help_text: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """An ACTION that a higher package supplies (dogbreed.cli adds aws's `upload`); `main`
    runs it like the others."""
    action = actions.add_parser(name, help=help_text)
    add_arguments(action)
    action.set_defaults(data_action=run)


def _sample(args: argparse.Namespace) -> int:
    from dogbreed.data.sample import generate_sample

    print(generate_sample(args.out, args.classes, args.per_class, args.seed, overwrite=args.force))
    return 0


def _check(args: argparse.Namespace) -> int:
    from dogbreed.data.layout import find_splits

    print(find_splits(args.root).summary())
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from dogbreed.data.fetch import fetch

    terminal = sys.stderr if sys.stderr.isatty() else None  # the progress line is for people
    splits = fetch(args.out, args.url, args.sha256, args.timeout, terminal)
    print(f"{args.out}: {splits.summary()}")
    return 0


ACTIONS = {"sample": _sample, "check": _check, "fetch": _fetch}


def main(args: argparse.Namespace) -> int:
    try:
        run = ACTIONS.get(args.data_command) or args.data_action  # data_action: add_action's
        return run(args)
    except (ValueError, OSError) as exc:  # DataError, ImageError, FileExistsError, disk full
        print(f"error: {exc}", file=sys.stderr)
        return 1

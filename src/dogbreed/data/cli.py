"""`dogbreed data sample|check|fetch|upload`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # aws sits above data: imported here, when the parser is built, never by the data package.
    from dogbreed.aws.clients import add_aws_arguments
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

    upload = sub.add_parser(
        "upload",
        help="upload a folder to S3, keeping relative paths; skips objects already there",
    )
    upload.add_argument("directory", type=Path, help="local folder, e.g. the dataset root")
    upload.add_argument("uri", help="destination, s3://bucket/prefix")
    add_aws_arguments(upload)


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


def _upload(args: argparse.Namespace) -> int:
    from dogbreed.aws.s3 import upload_main  # lazily: aws sits above data

    return upload_main(args)


ACTIONS = {"sample": _sample, "check": _check, "fetch": _fetch, "upload": _upload}


def main(args: argparse.Namespace) -> int:
    try:
        return ACTIONS[args.data_command](args)
    except (ValueError, OSError) as exc:  # DataError, ImageError, FileExistsError, disk full
        print(f"error: {exc}", file=sys.stderr)
        return 1

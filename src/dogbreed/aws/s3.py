"""`dogbreed data upload`: a dataset folder to S3 with boto3's managed transfer.

Many files go at once and files above 8 MB in parallel parts (multipart), as `aws s3 cp` does.
An object already there with the same size and checksum is skipped: the checksum is S3's ETag,
the MD5 of the bytes, or for a multipart upload the MD5 of the parts' MD5s with `-<parts>`,
computed locally with the part size used here (8 MB, also boto3's and the AWS CLI's default).
A re-run of an interrupted upload therefore sends only what is missing or changed. Objects
whose ETag is not an MD5 (SSE-KMS buckets) never match: they are sent again.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dogbreed.aws.clients import (
    Aws,
    UsageError,
    add_aws_arguments,
    aws_command,
    aws_from_args,
    emit,
)
from dogbreed.aws.s3uri import split_s3_uri
from dogbreed.data.fetch import CHUNK, Progress

PART_BYTES = 8 * 1024 * 1024  # multipart threshold and part size
CONCURRENCY = 10  # transfers at once: small files are latency-bound


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> ("bucket", "some/prefix"); UsageError if not an S3 URI."""
    bucket, prefix = split_s3_uri(uri, "the destination")
    return bucket, prefix.strip("/")


def s3_etag(path: Path, size: int, part: int = PART_BYTES) -> str:
    """The ETag S3 gives `path` once uploaded here (single part below `part` bytes)."""
    digests = []
    with path.open("rb") as f:
        while block := f.read(part):
            digests.append(hashlib.md5(block, usedforsecurity=False).digest())
    if size < part:
        return digests[0].hex() if digests else hashlib.md5(b"", usedforsecurity=False).hexdigest()
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(digests)}"


@dataclass
class Plan:
    bucket: str
    send: list[tuple[Path, str, int]] = field(default_factory=list)  # (file, key, size)
    skipped: int = 0

    @property
    def bytes(self) -> int:
        return sum(size for _, _, size in self.send)


def existing_objects(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """key -> (size, ETag) of what is under the prefix already (one listing, no HEADs)."""
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""
    )
    return {
        o["Key"]: (o["Size"], o["ETag"].strip('"'))
        for page in pages
        for o in page.get("Contents", [])
    }


def plan_upload(s3: Any, directory: Path, uri: str) -> Plan:
    """Which files to send: those missing under `uri` or differing in size or checksum."""
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    bucket, prefix = parse_s3_uri(uri)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UsageError(f"{directory} holds no files to upload")
    there = existing_objects(s3, bucket, prefix)
    plan = Plan(bucket)
    for path in files:
        key = "/".join(filter(None, (prefix, path.relative_to(directory).as_posix())))
        size = path.stat().st_size
        found = there.get(key)
        # Only a same-sized object is worth reading the file for.
        if found and found[0] == size and found[1] == s3_etag(path, size):
            plan.skipped += 1
        else:
            plan.send.append((path, key, size))
    return plan


def transfer(s3: Any, plan: Plan, progress: Progress) -> None:
    """Send the plan's files with boto3's managed transfer; the first failure raises."""
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    from s3transfer.subscribers import BaseSubscriber

    class Counter(BaseSubscriber):
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            progress.add(bytes_transferred)

        def on_done(self, future: Any, **kwargs: Any) -> None:
            progress.add(0, files=1)

    config = TransferConfig(
        multipart_threshold=PART_BYTES,
        multipart_chunksize=PART_BYTES,
        max_concurrency=CONCURRENCY,
        io_chunksize=CHUNK,
    )
    with create_transfer_manager(s3, config) as manager:
        futures = [
            manager.upload(str(path), plan.bucket, key, subscribers=[Counter()])
            for path, key, _ in plan.send
        ]
        for future in futures:
            future.result()


def upload(aws: Aws, directory: Path, uri: str, out: IO[str] | None = None) -> Plan:
    """Upload what is missing under `uri`; progress lines go to `out` (a terminal) if given."""
    s3 = aws.client("s3")
    plan = plan_upload(s3, Path(directory), uri)
    if aws.dry_run:
        # No transfer manager: it needs real answers (upload ids). One call per file instead.
        for _, key, size in plan.send:
            s3.put_object(Bucket=plan.bucket, Key=key, ContentLength=size)
        return plan
    progress = Progress(out, plan.bytes, len(plan.send), "uploaded")
    transfer(s3, plan, progress)
    progress.done()
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dogbreed data upload`'s flags (dogbreed.cli adds the action to `dogbreed data`)."""
    parser.add_argument("directory", type=Path, help="local folder, e.g. the dataset root")
    parser.add_argument("uri", help="destination, s3://bucket/prefix")
    add_aws_arguments(parser)


@aws_command
def main(args: argparse.Namespace) -> int:
    aws = aws_from_args(args)
    terminal = sys.stderr if sys.stderr.isatty() else None  # progress only for people
    plan = upload(aws, args.directory, args.uri, terminal)
    document = {
        "uri": args.uri,
        "uploaded": len(plan.send),
        "uploaded_bytes": plan.bytes,
        "skipped": plan.skipped,
    }
    line = (
        f"uploaded {len(plan.send)} files ({plan.bytes} bytes) to {args.uri}, "
        f"skipped {plan.skipped} already there"
    )
    emit(args, aws, document, [line])
    return 0

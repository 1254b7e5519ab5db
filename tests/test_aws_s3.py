"""`dogbreed data upload`'s progress line, over HTTP against moto's S3 (the skip of identical
objects and multipart uploads: tests/test_data_fetch.py)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import boto3
import pytest

from dogbreed.aws import s3
from dogbreed.aws.clients import Aws
from dogbreed.cli import main


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "d"
    for i in range(3):
        (root / f"{i:03d}.Breed").mkdir(parents=True)
        (root / f"{i:03d}.Breed" / "a.jpg").write_bytes(bytes([i]) * 400_000)
    return root


def test_progress_counts_files_and_bytes_on_a_terminal(moto_server: str, folder: Path) -> None:
    boto3.client("s3").create_bucket(Bucket="dogs")
    terminal = io.StringIO()
    plan = s3.upload(Aws(), folder, "s3://dogs/set", terminal)
    assert len(plan.send) == 3
    # Every byte the transfer manager reported, and every finished file, reached the line.
    last = terminal.getvalue().split("\r")[-1]
    assert re.fullmatch(r"uploaded 3/3 files, 1\.2 of 1\.2 MB, \d+\.\d MB/s\x1b\[K\n", last), last


def test_no_progress_without_a_terminal(
    moto_server: str, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3").create_bucket(Bucket="dogs")
    assert main(["data", "upload", str(folder), "s3://dogs/set"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # stderr is not a terminal here: no redrawn line in a log
    assert (
        captured.out
        == "uploaded 3 files (1200000 bytes) to s3://dogs/set, skipped 0 already there\n"
    )

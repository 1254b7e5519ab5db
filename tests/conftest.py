"""Shared fixtures: generated sample data, a model trained on it, a real moto server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_http import running_moto_server

from dogbreed import hostcpu

# The real model server fixtures (`model_server`, `running_server`): tests/serving.py.
pytest_plugins = ["serving"]

REPO = Path(__file__).resolve().parent.parent

# Small enough for 2 CPU cores, large enough that the model clearly learns.
SAMPLE_CLASSES = 5
SAMPLE_PER_CLASS = 24
TINY_TRAIN_FLAGS = (
    "--backbone resnet18 --image-size 64 --epochs 4 --batch-size 16 --learning-rate 0.003 "
    "--workers 0 --seed 0"
).split()


@pytest.fixture(autouse=True)
def _signal_stack_holds_nested_frames() -> Iterator[None]:
    """Fail the test after which pytest's main thread has a small alternate signal stack: a
    library gave it one (OpenVINO's CPU plugin does) and, with AMX state, nested signals would
    overflow it and kill the whole run later, with no traceback (hostcpu.ensure_signal_stack)."""
    yield
    size = hostcpu.signal_stack_size()
    assert size is None or size >= hostcpu.SIGNAL_STACK_BYTES, (
        f"this test left pytest's main thread a {size}-byte alternate signal stack"
    )


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated dataset in the dogImages layout (train/ valid/ test/)."""
    from dogbreed.data.sample import generate_sample

    root = tmp_path_factory.mktemp("sample") / "dogImages"
    generate_sample(root, classes=SAMPLE_CLASSES, per_class=SAMPLE_PER_CLASS, seed=0)
    return root


@pytest.fixture(scope="session")
def trained_model_dir(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory produced by the real trainer (`dogbreed train`) on the sample data."""
    work = tmp_path_factory.mktemp("trained")
    model_dir = work / "model"
    cmd = [
        sys.executable,
        "-m",
        "dogbreed",
        "train",
        "--data",
        str(sample_data),
        "--model-dir",
        str(model_dir),
        "--output-dir",
        str(work / "output"),
        "--checkpoint-dir",
        str(work / "checkpoints"),
        *TINY_TRAIN_FLAGS,
    ]
    subprocess.run(cmd, check=True, timeout=900)
    return model_dir


@pytest.fixture()
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region, so that nothing can reach a real AWS account."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture()
def moto_server(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real moto HTTP server on loopback, empty for every test; boto3 and the AWS CLI reach it
    via AWS_ENDPOINT_URL."""
    with running_moto_server() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        yield url

"""One GPU count for training and serving (dogbreed.hostgpu).

No GPU or NVIDIA driver exists on the build machines, so a stand-in `nvidia-smi` on PATH prints
what the real one prints for `--query-gpu=index,uuid --format=csv,noheader` on a 2-GPU host.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dogbreed import hostgpu
from dogbreed.serve import backends
from dogbreed.train.environment import training_env

TWO_GPUS = (
    "0, GPU-1a2b3c4d-0000-1111-2222-333344445555\n1, GPU-9f8e7d6c-0000-1111-2222-333344445555\n"
)


def fake_nvidia_smi(
    folder: Path, monkeypatch: pytest.MonkeyPatch, output: str, rc: int = 0
) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\nexit {rc}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def two_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, TWO_GPUS)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.parametrize(
    ("visible", "count"),
    [
        (None, 2),
        ("1,0", 2),
        ("1", 1),
        ("0,7,1", 1),  # CUDA stops at the first entry that names no GPU
        ("", 0),
        ("-1", 0),
        ("GPU-9f8e", 1),  # a UUID prefix
        ("0,0", 1),
        ("MIG-0f1e2d3c-aaaa-bbbb-cccc-ddddeeeeffff", 1),
    ],
)
def test_cuda_visible_devices_narrows_what_nvidia_smi_lists(
    two_gpus: None, visible: str | None, count: int
) -> None:
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert hostgpu.gpu_count(environ) == count


def test_no_driver_or_a_failing_nvidia_smi_means_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    assert hostgpu.gpu_count({}) == 0
    fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA-SMI has failed: driver not loaded", rc=9)
    assert hostgpu.gpu_count({}) == 0


def test_training_and_serving_read_the_same_count(
    two_gpus: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SM_NUM_GPUS", raising=False)
    monkeypatch.delenv("SM_HOSTS", raising=False)
    monkeypatch.delenv("SM_CURRENT_HOST", raising=False)
    assert training_env(tmp_path).num_gpus == 2
    assert backends.resolve_backend("auto") == "torch"  # a GPU, and torch is installed here
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert training_env(tmp_path).num_gpus == 0
    assert backends.resolve_backend("auto") == "onnx"

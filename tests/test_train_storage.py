"""A training job that cannot write says which file, why and how much space it needed.

Real file systems: a tiny tmpfs (mounting needs root, as CI has; skipped otherwise) that fills
up, and one mounted read-only. Every mount is removed again, whatever the test did.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from test_train_e2e import run_train, sagemaker_job

from dogbreed.data.sample import generate_sample
from dogbreed.model.files import StorageError, storage_reason, write_text
from dogbreed.train.checkpoint import save_checkpoint

Mount = Callable[[Path, str], Path]
TINY = {"backbone": "resnet18", "image_size": 32, "epochs": 1, "batch_size": 4, "workers": 0}
RESNET18_MIB = 42  # resnet18's weights.pt (3 classes) is 42.7 MiB


@pytest.fixture()
def tmpfs() -> Iterator[Mount]:
    """mount(path, options): a tmpfs at `path` (e.g. "size=4m"), unmounted after the test."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (root needed): {proc.stderr.strip()}")
        mounted.append(path)
        return path

    try:
        yield mount
    finally:
        for path in reversed(mounted):
            # --lazy: detached at once even if a killed trainer's file is still open there.
            subprocess.run(["umount", "--lazy", str(path)], check=True)


def test_a_full_model_volume_names_the_file_and_the_space(tmp_path: Path, tmpfs: Mount) -> None:
    data = generate_sample(tmp_path / "data", classes=3, per_class=8, seed=3)
    base = sagemaker_job(tmp_path / "job", data, TINY)
    model = tmpfs(base / "model", "size=4m")
    proc = run_train(base, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    reason = (base / "output" / "failure").read_text()
    assert reason.startswith(f"no space left on device writing {model / 'weights.pt'} ("), reason
    needed, free = map(float, re.search(r"needs ([\d.]+) MiB, ([\d.]+) MiB free", reason).groups())
    assert needed > RESNET18_MIB and free == 4.0  # the partial file was removed again
    assert "VolumeSizeInGB" in reason
    assert "enforce fail" not in reason and "\n" not in reason and len(reason) <= 1024
    assert list(model.iterdir()) == []  # no half model left for SageMaker to upload


def test_a_full_checkpoint_volume_keeps_the_last_checkpoint(tmp_path: Path, tmpfs: Mount) -> None:
    folder = tmpfs(tmp_path / "checkpoints", "size=1m")
    save_checkpoint(folder, {"weights": torch.zeros(1000)})
    with pytest.raises(StorageError) as caught:
        save_checkpoint(folder, {"weights": torch.zeros(1_000_000)})  # 3.8 MiB
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.needed > 4_000_000
    assert caught.value.filename == str(folder / ".last.pt.tmp")
    assert [p.name for p in folder.iterdir()] == ["last.pt"]  # the previous one, intact
    assert torch.load(folder / "last.pt", weights_only=True)["weights"].shape == (1000,)
    reason = storage_reason(caught.value)
    assert reason.startswith(f"no space left on device writing {folder / '.last.pt.tmp'} (needs")


def test_a_read_only_volume_is_named(tmp_path: Path, tmpfs: Mount) -> None:
    folder = tmpfs(tmp_path / "model", "ro,size=1m")
    with pytest.raises(StorageError) as caught:
        write_text(folder / "classes.json", "[]")
    assert storage_reason(caught.value) == (
        f"read-only file system writing {folder / 'classes.json'}: "
        "mount it read-write or use another folder"
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/opt/ml/input/data/train"),
            "permission denied: /opt/ml/input/data/train: check the owner and mode",
        ),
        (
            FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/opt/ml/input/data/x.jpg"),
            "no such file or directory: /opt/ml/input/data/x.jpg: check that the path exists",
        ),
    ],
)
def test_reading_errors_name_the_path(error: OSError, reason: str) -> None:
    # As root no local file system answers EACCES, so this one is built by hand.
    assert storage_reason(error).startswith(reason)


def test_other_errors_are_not_storage_problems() -> None:
    assert storage_reason(RuntimeError("boom")) is None
    assert storage_reason(OSError(errno.EIO, "I/O error")) is None

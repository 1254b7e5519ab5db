"""Managed-spot behaviour: a killed job restarts from its checkpoint, not from scratch.

SIGTERM (SageMaker stop / spot interruption / `docker stop`) finishes the current step, writes a
checkpoint and exits 143 with output/failure; SIGKILL leaves the last epoch's checkpoint. Either
way the rerun of the same command continues where the checkpoint says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dogbreed.data.sample import generate_sample
from dogbreed.train.checkpoint import load_checkpoint

EPOCHS = 3
FLAGS = f"--backbone resnet18 --image-size 64 --epochs {EPOCHS} --batch-size 8 --workers 0"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "data"
    generate_sample(root, classes=3, per_class=16, seed=1)
    return root


def _command(data: Path, work: Path) -> list[str]:
    return [
        sys.executable, "-m", "dogbreed", "train",
        "--data", str(data),
        "--model-dir", str(work / "model"),
        "--output-dir", str(work / "output"),
        "--checkpoint-dir", str(work / "checkpoints"),
        *FLAGS.split(),
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SM_")}


def _start(data: Path, work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _command(data, work),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=work,
    )


def _wait_for_checkpoint(proc: subprocess.Popen, path: Path, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within the time limit")
        time.sleep(0.2)


def _finish_run(data: Path, work: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(data, work), env=_env(), capture_output=True, text=True, timeout=600, cwd=work
    )


def _check_completed(work: Path, proc: subprocess.CompletedProcess, epoch: int, step: int) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from checkpoint: epoch {epoch} step {step}" in proc.stdout
    trained = [int(line.split()[0].split("=")[1]) for line in proc.stdout.splitlines()
               if line.startswith("epoch=")]  # fmt: skip
    assert trained == list(range(epoch, EPOCHS + 1))  # the finished epochs were not redone
    history = json.loads((work / "output" / "data" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert (work / "model" / "model.onnx").is_file()
    assert not (work / "output" / "failure").exists()


def test_sigterm_checkpoints_mid_epoch_and_the_rerun_resumes(
    small_data: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    proc = _start(small_data, tmp_path)
    _wait_for_checkpoint(proc, checkpoint)  # epoch 1 done: now inside epoch 2
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - stopped_at < 60, "SIGTERM must end the job well inside 120 s"
    assert proc.returncode == 143, stderr[-3000:]
    reason = (tmp_path / "output" / "failure").read_text()
    assert "stopped by SIGTERM" in reason and "rerun to resume" in reason
    assert not (tmp_path / "model").exists()
    state = load_checkpoint(checkpoint.parent)["state"]  # weights_only=True, as on resume
    assert state["epoch"] >= 2
    assert [h["epoch"] for h in state["history"]] == list(range(1, state["epoch"]))
    assert list(checkpoint.parent.iterdir()) == [checkpoint]  # no temporary file left over
    # The interrupted epoch's train totals so far travel in the checkpoint (8 images a step).
    assert state["partial"][2] == 8 * state["step"]
    assert (state["partial_seconds"] > 0) == (state["step"] > 0)

    _check_completed(tmp_path, _finish_run(small_data, tmp_path), state["epoch"], state["step"])
    history = json.loads((tmp_path / "output" / "data" / "metrics.json").read_text())["history"]
    # Every epoch's train_* cover the whole epoch, the resumed one included (48 images, 6 steps).
    assert all(h["train_loss"] > 0 and h["images_per_sec"] > 0 for h in history)


def test_sigkill_loses_at_most_the_current_epoch(small_data: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    proc = _start(small_data, tmp_path)
    _wait_for_checkpoint(proc, checkpoint)
    proc.kill()  # no chance to write anything: the per-epoch checkpoint is all there is
    proc.communicate(timeout=60)
    state = load_checkpoint(checkpoint.parent)["state"]
    assert state["step"] == 0  # epoch-boundary checkpoint

    _check_completed(tmp_path, _finish_run(small_data, tmp_path), state["epoch"], 0)

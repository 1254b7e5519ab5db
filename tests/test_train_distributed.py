"""Data-parallel training for real: torchrun starts two CPU processes (gloo) on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dogbreed.data.sample import generate_sample


def test_two_processes_train_one_model(tmp_path: Path) -> None:
    generate_sample(tmp_path / "data", classes=3, per_class=8, seed=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "DOGBREED_"))}
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small machine
    env["PYTHONUNBUFFERED"] = "1"  # as in the training image
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "dogbreed", "train",
        "--data", str(tmp_path / "data"),
        "--model-dir", str(tmp_path / "model"),
        "--output-dir", str(tmp_path / "output"),
        "--checkpoint-dir", str(tmp_path / "checkpoints"),
        *"--backbone resnet18 --image-size 32 --epochs 2 --batch-size 4 --workers 0".split(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    # Whole lines even with PYTHONUNBUFFERED=1 and two ranks writing to one pipe.
    assert any(line.startswith("world_size=2 rank=0") for line in lines), proc.stdout
    assert any(line.startswith("world_size=2 rank=1") for line in lines), proc.stdout
    # Metrics are all-reduced; only rank 0 prints them and writes files.
    assert [line.split()[0] for line in lines if line.startswith("epoch=")] == [
        "epoch=1",
        "epoch=2",
    ]
    assert sum(line.startswith("final ") and "test_loss=" in line for line in lines) == 1
    metrics = json.loads((tmp_path / "output" / "data" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # Evaluation shards without padding: each test image is counted exactly once over both ranks.
    test_images = sum(1 for p in (tmp_path / "data" / "test").rglob("*") if p.is_file())
    assert sum(map(sum, metrics["confusion_matrix"])) == test_images
    assert (tmp_path / "model" / "model.onnx").is_file()
    assert (tmp_path / "checkpoints" / "last.pt").is_file()

"""Training checkpoints: one file, written atomically each epoch (and on SIGTERM).

SageMaker syncs `/opt/ml/checkpoints` with S3 both ways; a restarted spot job finds the file
and resumes from it. The file holds everything needed to continue exactly: model, optimizer and
scheduler state, the position (epoch, step within it), the best weights so far, the early-stop
counter, the metric history and the RNG states.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "last.pt"


def checkpoint_path(checkpoint_dir: Path) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_FILE


def save_checkpoint(checkpoint_dir: Path, state: dict[str, Any]) -> Path:
    """Write via a temporary file and rename: a kill mid-write never leaves a torn checkpoint."""
    path = checkpoint_path(checkpoint_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The saved state, or None when this job has no checkpoint yet."""
    path = checkpoint_path(checkpoint_dir)
    if not path.is_file():
        return None
    # weights_only=False: the file holds RNG states and plain Python objects we wrote ourselves.
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device as well

"""Training checkpoints: one file, written atomically each epoch (and on SIGTERM).

SageMaker syncs `/opt/ml/checkpoints` with S3 both ways; a restarted spot job finds the file
and resumes from it. The file holds everything needed to continue exactly: model, optimizer and
scheduler state, the position (epoch, step within it), the best weights so far, the early-stop
counter, the metric history and the RNG states.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogbreed.config import ConfigError
from dogbreed.model.files import write_file

CHECKPOINT_FILE = "last.pt"
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "state", "rng"})
_REMEDY = "remove it or use another --checkpoint-dir"


class CheckpointError(ConfigError):
    """A checkpoint that this job must not or cannot resume from (exit 2, like bad config)."""


def checkpoint_path(checkpoint_dir: Path) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_FILE


def save_checkpoint(checkpoint_dir: Path, state: dict[str, Any]) -> Path:
    """Write via a temporary file and rename: a kill mid-write never leaves a torn checkpoint."""
    path = checkpoint_path(checkpoint_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write_file(tmp, lambda f: torch.save(state, f), sync=True)
    os.replace(tmp, path)
    return path


def load_checkpoint(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The saved state, or None when this job has no checkpoint yet.

    weights_only=True: SageMaker syncs the folder from S3, so whoever can write that prefix
    could otherwise run code here. Our checkpoints hold tensors and plain containers only (see
    `rng_state`), which torch's default allow-list covers; anything else is refused.
    """
    path = checkpoint_path(checkpoint_dir)
    if not path.is_file():
        return None
    if not zipfile.is_zipfile(path):  # what torch.save writes; empty or truncated otherwise
        raise CheckpointError(f"{path} is not a complete torch.save archive: {_REMEDY}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        unsafe = ", ".join(sorted(found)) or "content outside torch's allow-list"
        raise CheckpointError(
            f"{path} holds objects a dogbreed checkpoint never holds ({unsafe}); refused to "
            f"load it, as it could run code: {_REMEDY}"
        ) from None
    except (RuntimeError, EOFError, ValueError) as exc:  # a damaged archive
        raise CheckpointError(f"{path} cannot be read ({exc}): {_REMEDY}") from None
    missing = CHECKPOINT_KEYS - saved.keys() if isinstance(saved, dict) else CHECKPOINT_KEYS
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(sorted(missing))}: {_REMEDY}")
    return saved


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain Python values: loadable with weights_only."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), position, has_gauss, gauss),  # no ndarray in the file
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device as well

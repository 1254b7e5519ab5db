"""Training checkpoints: one file, written atomically each epoch (and on SIGTERM).

SageMaker syncs `/opt/ml/checkpoints` with S3 both ways; a restarted spot job finds the file
and resumes from it. The file holds everything needed to continue exactly: model, optimizer and
scheduler state, the position (epoch, step within it), the best weights so far, the early-stop
counter, the metric history and the RNG states.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogbreed.config import ConfigError, TrainConfig
from dogbreed.model.files import write_file

CHECKPOINT_FILE = "last.pt"
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "state", "rng"})
_REMEDY = "remove it or use another --checkpoint-dir"


class CheckpointError(ConfigError):
    """A checkpoint that this job must not or cannot resume from (exit 2, like bad config)."""


@dataclass
class TrainState:
    """Where the loop is and what it has learnt so far: the checkpoint's `state` entry."""

    epoch: int = 1  # the epoch to train next (or the interrupted one)
    step: int = 0  # steps of `epoch` already trained (> 0 only after a mid-epoch SIGTERM)
    best_loss: float = math.inf
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0  # epochs since the best valid_loss
    history: list[dict[str, float]] = field(default_factory=list)
    done: bool = False  # early stopping decided
    # The interrupted epoch's train totals so far (all ranks: loss sum, correct, count) and
    # rank 0's seconds, so that the resumed epoch's train_* cover the whole epoch.
    partial: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    partial_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        # Shallow (not dataclasses.asdict): no deep copy of the best weights at each save.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


# A resumed job must match these, or it would silently train something else (or crash: another
# optimizer or freeze has other optimizer state; another world size another number of steps per
# epoch, so another position and LR schedule). A changed `epochs` only reshapes the schedule.
_MUST_MATCH = ("backbone", "image_size", "batch_size", "optimizer", "freeze", "world_size")


def check_compatible(
    saved: dict[str, Any],
    cfg: TrainConfig,
    classes: list[str],
    checkpoint_dir: Path,
    world_size: int,
) -> None:
    """Raise ConfigError when the checkpoint `saved` comes from another job."""
    old = {**saved.get("config", {}), "world_size": saved.get("world_size")}
    new = {**asdict(cfg), "world_size": world_size}
    for key in _MUST_MATCH:
        if old.get(key) != new[key]:
            raise ConfigError(
                f"checkpoint in {checkpoint_dir} is from a run with {key}={old.get(key)!r}, "
                f"this run has {new[key]!r}: use another --checkpoint-dir or remove it"
            )
    if saved.get("classes") != classes:
        raise ConfigError(f"checkpoint in {checkpoint_dir} was trained on other classes")


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

"""The NVIDIA GPUs this process may use: one count for training and serving (stdlib only).

Counted with nvidia-smi, not torch: the CPU serving image has no torch, MMS hands each worker a
GPU by nvidia-smi's index, and the sagemaker-training toolkit counts the same way (its
SM_NUM_GPUS). CUDA_VISIBLE_DEVICES narrows the list as the CUDA runtime narrows it, so the count
is also what torch then sees.

Below `config` in the dependency order: nothing here imports the rest of the package.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

NVIDIA_SMI_TIMEOUT_S = 30  # a wedged driver can hang nvidia-smi; no GPU is a safe answer then


def listed_gpus() -> list[tuple[str, str]]:
    """(index, UUID) of each GPU nvidia-smi lists; empty without a driver or when it fails."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = (line.split(",") for line in listing.splitlines() if line.strip())
    return [(row[0].strip(), row[-1].strip()) for row in rows]


def _visible_count(visible: str, listed: list[tuple[str, str]]) -> int:
    """How many GPUs a CUDA_VISIBLE_DEVICES value leaves: CUDA takes indexes and (prefixes of)
    UUIDs up to the first entry that names no GPU, so "-1" and "" hide them all."""
    accepted: set[str] = set()
    for entry in (item.strip() for item in visible.split(",")):
        if entry.startswith("MIG-") and listed:  # a MIG slice; nvidia-smi lists only its parent
            accepted.add(entry)
            continue
        index = next(
            (
                index
                for index, uuid in listed
                if entry == index or (entry.startswith("GPU-") and uuid.startswith(entry))
            ),
            None,
        )
        if index is None:
            break
        accepted.add(index)
    return len(accepted)


def gpu_count(environ: Mapping[str, str] = os.environ) -> int:
    """GPUs this process may use (0 without a driver)."""
    listed = listed_gpus()
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    return len(listed) if visible is None else _visible_count(visible, listed)

"""The agreement gate: measure each reduced-precision path against fp32 with serving's own
backends and preprocessing, and record the verdicts in metadata.json (the record's format and
the thresholds: dogbreed.model.precision).

`python -m dogbreed.serve.precision_gate MODEL_DIR` (the image paths one per line on stdin) is
how training runs it, in a child process (model.precision.gate_in_subprocess). Torch-free.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed import hostcpu
from dogbreed.model.artifact import ArtifactError, read_metadata, write_metadata
from dogbreed.model.precision import (
    MIN_AGREEMENT,
    REDUCED_PRECISIONS,
    compare,
    cpu_model,
    unavailable,
)
from dogbreed.serve.backends import cpu_backend
from dogbreed.serve.preprocess import Preprocessor

log = logging.getLogger(__name__)
BATCH = 32  # images per forward pass while measuring: bounds memory on large splits


def measure(model_dir: Path, images: Sequence[Path], precision: str, threads: int) -> dict:
    """Run fp32 and `precision` over `images` with serving's own preprocessing and compare."""
    preprocess = Preprocessor(read_metadata(model_dir))
    fp32 = cpu_backend(model_dir, "fp32", threads)
    reduced = cpu_backend(model_dir, precision, threads)
    outputs: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    for start in range(0, len(images), BATCH):
        batch = np.stack([preprocess(p.read_bytes()) for p in images[start : start + BATCH]])
        outputs[0].append(fp32.run(batch))
        outputs[1].append(reduced.run(batch))
    flags = sorted(hostcpu.FAST_BF16_FLAGS & hostcpu.cpu_flags())
    return {
        **compare(np.concatenate(outputs[0]), np.concatenate(outputs[1])),
        "runtime": reduced.description,
        "measured_on": f"{cpu_model()} ({', '.join(flags)})",
    }


def gate(model_dir: Path, images: Sequence[Path], threads: int | None = None) -> dict:
    """Measure every reduced-precision path, record the verdicts in metadata.json, return them."""
    model_dir = Path(model_dir)
    if not images:
        raise ArtifactError("the agreement gate needs at least one validation image")
    meta = read_metadata(model_dir)
    flags = hostcpu.cpu_flags()
    for precision in REDUCED_PRECISIONS:
        reason = unavailable(precision, flags)
        if reason:
            result: dict[str, Any] = {"passed": False, "measured": False, "reason": reason}
            log.warning("%s agreement not measured: %s; serving keeps fp32", precision, reason)
        else:
            threads = threads or hostcpu.available_cpus()
            result = {**measure(model_dir, images, precision, threads), "measured": True}
            _log_verdict(precision, result)
        meta.precisions[precision] = result
    write_metadata(model_dir, meta)
    return meta.precisions


def _log_verdict(precision: str, result: dict) -> None:
    text = (
        f"{precision} vs fp32 on {result['images']} validation images: top-1 agreement "
        f"{result['top1_agreement']:.2%}, largest probability difference "
        f"{result['max_prob_diff']:.4f}"
    )
    if result["passed"]:
        log.info("%s: usable", text)
    else:
        log.warning(
            "%s: below %.0f%%, %s is not used (fp32 stays)", text, MIN_AGREEMENT * 100, precision
        )


if __name__ == "__main__":  # gate_in_subprocess: MODEL_DIR, the image paths one per line on stdin
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    gate(Path(sys.argv[1]), [Path(line) for line in sys.stdin.read().splitlines() if line])

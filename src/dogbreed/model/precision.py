"""Reduced-precision serving paths: what the gate that lets serving use them records and how.

A reduced-precision path (bf16: OpenVINO reading model.onnx) is used only when its top-1 agrees
with the fp32 path (ONNX Runtime, same file) on at least 99% of the validation images. The
measurement (top-1 agreement, largest softmax probability difference, image count, the CPU it
ran on) goes into metadata.json under `precisions`. bf16 can only be measured on a CPU that
computes it (AMX or AVX512-BF16): elsewhere OpenVINO quietly runs fp32 and the figure would be
fp32 against itself, so the record says "not measured" and why, and serving keeps fp32 until
`dogbreed export MODEL_DIR --data DIR` is run on such a CPU. Torch-free.

The measuring itself needs serving's backends and preprocessing: dogbreed.serve.precision_gate.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed import hostcpu
from dogbreed.data.images import is_image_file
from dogbreed.model.artifact import ArtifactError

log = logging.getLogger(__name__)
REDUCED_PRECISIONS = ("bf16",)
MIN_AGREEMENT = 0.99
# The gate measures with serving's runtimes and preprocessing: it lives in serve/ and runs in a
# child process (a module name here, not an import: model sits below serve).
GATE_MODULE = "dogbreed.serve.precision_gate"
GATE_TIMEOUT_S = 1800  # the whole validation split twice (fp32 and bf16) on a CPU


def cpu_model() -> str:
    """`model name` of the first processor in /proc/cpuinfo ("unknown CPU" where absent)."""
    try:
        text = hostcpu.CPUINFO.read_text()
    except OSError:
        return "unknown CPU"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def unavailable(precision: str, flags: frozenset[str]) -> str | None:
    """Why this machine cannot run `precision` fast, or None when it can."""
    if precision != "bf16":
        raise ValueError(f"no reduced-precision CPU path {precision!r}")
    if hostcpu.FAST_BF16_FLAGS.isdisjoint(flags):
        return f"this CPU ({cpu_model()}) has neither amx_bf16 nor avx512_bf16"
    for runtime in ("onnxruntime", "openvino"):  # fp32 and bf16
        if importlib.util.find_spec(runtime) is None:
            return f"{runtime} (needed to compare fp32 and bf16) is not installed"
    return None


def validation_images(data_dir: Path) -> list[Path]:
    """The image files of `data_dir/valid`, sorted; ArtifactError when there are none."""
    files = sorted(p for p in (Path(data_dir) / "valid").rglob("*") if is_image_file(p))
    if not files:
        raise ArtifactError(f"no validation images under {Path(data_dir) / 'valid'}")
    return files


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def compare(fp32_logits: np.ndarray, reduced_logits: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement and the largest probability difference of two runs on the same images."""
    agreement = float(np.mean(fp32_logits.argmax(1) == reduced_logits.argmax(1)))
    diff = float(np.abs(_softmax(fp32_logits) - _softmax(reduced_logits)).max())
    return {
        "top1_agreement": round(agreement, 6),
        "max_prob_diff": round(diff, 6),
        "images": len(fp32_logits),
        "passed": agreement >= MIN_AGREEMENT,
    }


def gate_in_subprocess(model_dir: Path, images: Sequence[Path]) -> None:
    """The gate (serve.precision_gate) in a child process, as training's last step: the
    serving runtimes (OpenVINO's TBB threads and its small signal stack on the compiling
    thread, see hostcpu.ensure_signal_stack; ONNX Runtime's pool) stay out of the training
    process. The model is already written: a gate that cannot run leaves it fp32-only (a
    warning), it does not fail the job."""
    listing = "".join(f"{path}\n" for path in images)
    command = [sys.executable, "-m", GATE_MODULE, str(model_dir)]
    try:
        result = subprocess.run(command, input=listing, text=True, timeout=GATE_TIMEOUT_S)
        failed = result.returncode != 0 and f"exit code {result.returncode}"
    except subprocess.TimeoutExpired:
        failed = f"no verdict within {GATE_TIMEOUT_S} s"
    if failed:
        log.warning("the precision gate failed (%s): the model serves in fp32", failed)

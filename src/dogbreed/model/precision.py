"""Reduced-precision serving paths and the gate that lets serving use them.

A reduced-precision path (bf16: OpenVINO reading model.onnx) is used only when its top-1 agrees
with the fp32 path (ONNX Runtime, same file) on at least 99% of the validation images. The
measurement (top-1 agreement, largest softmax probability difference, image count, the CPU it
ran on) goes into metadata.json under `precisions`. bf16 can only be measured on a CPU that
computes it (AMX or AVX512-BF16): elsewhere OpenVINO quietly runs fp32 and the figure would be
fp32 against itself, so the record says "not measured" and why, and serving keeps fp32 until
`dogbreed export MODEL_DIR --data DIR` is run on such a CPU. Torch-free.
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
from dogbreed.model.artifact import ArtifactError, read_metadata, write_metadata

log = logging.getLogger(__name__)
REDUCED_PRECISIONS = ("bf16",)
MIN_AGREEMENT = 0.99
BATCH = 32  # images per forward pass while measuring: bounds memory on large splits
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


def measure(model_dir: Path, images: Sequence[Path], precision: str, threads: int) -> dict:
    """Run fp32 and `precision` over `images` with serving's own preprocessing and compare."""
    from dogbreed.serve.backends import cpu_backend
    from dogbreed.serve.preprocess import Preprocessor

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


def gate_in_subprocess(model_dir: Path, images: Sequence[Path]) -> None:
    """`gate` in a child process, as training's last step: the serving runtimes (OpenVINO's
    TBB threads, ONNX Runtime) never share a process with torch's OpenMP runtime, which
    crashed a later thread of the process that had loaded both. The model is already written:
    a gate that cannot run leaves it fp32-only (a warning), it does not fail the job."""
    listing = "".join(f"{path}\n" for path in images)
    command = [sys.executable, "-m", "dogbreed.model.precision", str(model_dir)]
    try:
        result = subprocess.run(command, input=listing, text=True, timeout=GATE_TIMEOUT_S)
        failed = result.returncode != 0 and f"exit code {result.returncode}"
    except subprocess.TimeoutExpired:
        failed = f"no verdict within {GATE_TIMEOUT_S} s"
    if failed:
        log.warning("the precision gate failed (%s): the model serves in fp32", failed)


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

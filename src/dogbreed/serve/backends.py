"""Inference backends: model.onnx on CPU (default, no torch needed), TorchScript with torch.

The `onnx` backend runs model.onnx in fp32 with ONNX Runtime, or in bf16 with OpenVINO on CPUs
that compute bf16 in hardware (AMX, AVX512-BF16): measured on a 2-core Xeon with AMX, ResNet50
224 px, OpenVINO bf16 is 4-6x faster than ONNX Runtime fp32, while ONNX Runtime's static int8
gained nothing (docs/serving.md). `choose_cpu_precision` decides which one runs; torch is
imported only inside TorchBackend so that the CPU serving image, which has no torch, never
needs it.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from dogbreed import hostcpu, hostgpu
from dogbreed.model import precision as gating
from dogbreed.model.artifact import (
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    ArtifactError,
    ModelMetadata,
    read_metadata,
)

log = logging.getLogger(__name__)


class Backend(Protocol):
    description: str

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW normalised images -> float32 logits [N, classes]."""
        ...


class OnnxBackend:
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn idle cores that the other workers and the decoder need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.description = f"onnxruntime {ort.__version__} CPU, {threads} intra-op thread(s)"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class OpenVinoBackend:
    """model.onnx through OpenVINO's CPU plugin with bf16 inference precision (AMX/AVX512-BF16)."""

    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        config = {
            "INFERENCE_PRECISION_HINT": "bf16",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",  # one stream: MMS batches requests for us
            # Every MMS worker would pin its threads to the same first cores.
            "ENABLE_CPU_PINNING": False,
        }
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        hostcpu.ensure_signal_stack()  # the plugin's own is too small for AMX signal frames
        # Where the CPU lacks bf16 the plugin falls back to f32 without a word: refuse that.
        ran = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if "bf16" not in ran and "bfloat16" not in ran:
            raise ArtifactError(f"OpenVINO runs {ran} here, not bf16: this CPU lacks bf16")
        self.request = self.compiled.create_infer_request()
        self.description = (
            f"openvino {ov.get_version().split('-')[0]} CPU bf16, {threads} thread(s)"
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.request.infer({0: batch})[0]


class TorchBackend:
    """TorchScript; on a GPU in reduced precision (fp16 by default) and channels_last."""

    def __init__(self, path: Path, threads: int, precision: str, device_id: int | None) -> None:
        import torch

        torch.set_num_threads(threads)
        cuda = torch.cuda.is_available()
        gpu = device_id if device_id is not None and device_id >= 0 else 0  # MMS: -1 = none
        self.device = torch.device(f"cuda:{gpu}" if cuda else "cpu")
        if precision == "auto":
            precision = "fp16" if cuda else "fp32"
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
            precision
        ]
        with warnings.catch_warnings():
            # torch 2.14 marks TorchScript deprecated; it is the format the trainer exports.
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location=self.device).eval()
        self.model = model.to(dtype=self.dtype, memory_format=torch.channels_last)
        self.torch = torch
        self.description = f"torch {torch.__version__} {self.device} {precision}, {threads} threads"

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits = self.model(x)
        return logits.float().cpu().numpy()


def gpu_present() -> bool:
    """A GPU this process may use and torch installed; decided without importing torch."""
    return hostgpu.gpu_count() > 0 and importlib.util.find_spec("torch") is not None


def resolve_backend(name: str) -> str:
    if name == "auto":
        return "torch" if gpu_present() else "onnx"
    return name


@dataclass(frozen=True)
class PrecisionChoice:
    """What runs and why: the log line and /ping's body say it."""

    backend: str
    precision: str
    runtime: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


_CPU_RUNTIMES = {"fp32": "onnxruntime", "bf16": "openvino"}


def choose_cpu_precision(
    requested: str, meta: ModelMetadata, flags: frozenset[str]
) -> PrecisionChoice:
    """The precision the onnx backend runs: `requested` when forced, else (auto) bf16 where the
    CPU computes it fast and the model's agreement gate passed, fp32 otherwise."""
    if requested == "fp16":
        raise ArtifactError("fp16 needs the torch backend on a GPU; on CPU use bf16 or fp32")
    record = meta.precisions.get("bf16", {})
    verdict = _gate_text(record)
    if requested == "fp32":
        return PrecisionChoice("onnx", "fp32", "onnxruntime", "forced by the precision setting")
    reason = gating.unavailable("bf16", flags)
    if requested == "bf16":
        if reason:
            raise ArtifactError(f"precision bf16 cannot run here: {reason}")
        if not record.get("passed"):
            log.warning("bf16 forced although its agreement gate did not pass (%s)", verdict)
        return PrecisionChoice("onnx", "bf16", "openvino", f"forced; agreement gate {verdict}")
    if reason:
        return PrecisionChoice("onnx", "fp32", "onnxruntime", reason)
    if not record.get("passed"):
        if record.get("measured"):
            log.warning("bf16 refused: agreement gate %s; serving fp32", verdict)
        return PrecisionChoice("onnx", "fp32", "onnxruntime", f"bf16 agreement gate {verdict}")
    return PrecisionChoice("onnx", "bf16", "openvino", f"fast bf16 CPU, agreement gate {verdict}")


def _gate_text(record: dict) -> str:
    if not record:
        return "not measured (run `dogbreed export MODEL_DIR --data DIR` on a bf16 CPU)"
    if not record.get("measured"):
        return f"not measured: {record.get('reason', 'unknown reason')}"
    outcome = "passed" if record.get("passed") else f"failed (< {gating.MIN_AGREEMENT:.0%})"
    return f"{outcome}: {record['top1_agreement']:.2%} top-1 on {record['images']} images"


def describe_precision(model_dir: Path, backend: str, precision: str) -> PrecisionChoice:
    """What `load_backend` will run for these settings, decided without loading the model (the
    supervisor calls it for the log and /ping; the workers reach the same answer)."""
    backend = resolve_backend(backend)
    if backend == "torch":
        if precision == "auto":
            precision = "fp16" if gpu_present() else "fp32"
        return PrecisionChoice("torch", precision, "torch", "torch backend")
    return choose_cpu_precision(precision, read_metadata(model_dir), hostcpu.cpu_flags())


def cpu_backend(model_dir: Path, precision: str, threads: int) -> Backend:
    """model.onnx in `precision` (fp32: ONNX Runtime, bf16: OpenVINO)."""
    path = model_dir / ONNX_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found (needed by the onnx backend)")
    if _CPU_RUNTIMES[precision] == "openvino":
        return OpenVinoBackend(path, threads)
    return OnnxBackend(path, threads)


def load_backend(
    model_dir: Path, name: str, threads: int, precision: str = "auto", device_id: int | None = None
) -> Backend:
    name = resolve_backend(name)
    if name == "torch":
        if importlib.util.find_spec("torch") is None:
            raise ArtifactError("backend 'torch' needs torch, which is not installed here")
        path = model_dir / TORCHSCRIPT_FILE
        if not path.is_file():
            raise ArtifactError(f"{path} not found (needed by the torch backend)")
        return TorchBackend(path, threads, precision, device_id)
    choice = describe_precision(model_dir, name, precision)
    log.info("precision %s (%s): %s", choice.precision, choice.runtime, choice.reason)
    return cpu_backend(model_dir, choice.precision, threads)

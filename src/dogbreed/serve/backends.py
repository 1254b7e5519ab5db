"""Inference backends: ONNX Runtime on CPU (default, no torch needed), TorchScript with torch.

`load_backend` picks one from the settings; torch is imported only inside TorchBackend so that
the CPU serving image, which has no torch, never needs it.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np

from dogbreed.model.artifact import ONNX_FILE, TORCHSCRIPT_FILE, ArtifactError

log = logging.getLogger(__name__)
_NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


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
    """An NVIDIA driver and torch installed; decided without importing torch."""
    return _NVIDIA_DRIVER.exists() and importlib.util.find_spec("torch") is not None


def resolve_backend(name: str) -> str:
    if name == "auto":
        return "torch" if gpu_present() else "onnx"
    return name


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
    path = model_dir / ONNX_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found (needed by the onnx backend)")
    return OnnxBackend(path, threads)

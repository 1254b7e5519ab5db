"""The model directory: the contract between training (writes it) and serving (reads it).

`model/` (SageMaker tars it into model.tar.gz) holds everything serving needs and nothing else:

    weights.pt        state_dict of the trained network (torch.save)
    model.onnx        inference export: input "input" float32 [batch, 3, S, S] normalised RGB,
                      output "logits" float32 [batch, num_classes]; dynamic batch axis
    model.torchscript TorchScript (traced, eval mode) of the same network, for the torch backend
    classes.json      JSON list of class names; index = class id
    metadata.json     see ModelMetadata

This module must not import torch: the CPU serving image has none.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dogbreed.data.presets import IMAGENET_MEAN, IMAGENET_STD
from dogbreed.model.files import write_file, write_text

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript"
CLASSES_FILE = "classes.json"
METADATA_FILE = "metadata.json"


class ArtifactError(ValueError):
    """A model directory that serving cannot use; the message names what is wrong."""


@dataclass
class ModelMetadata:
    architecture: str
    num_classes: int
    image_size: int  # centre-crop size = network input size
    resize_size: int  # shorter side is resized to this before the centre crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    format_version: int = FORMAT_VERSION
    metrics: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    # Reduced-precision paths and their agreement with fp32 (dogbreed.model.precision;
    # measured by dogbreed.serve.precision_gate).
    precisions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {"architecture", "num_classes", "image_size", "resize_size"} - data.keys()
        if missing:
            raise ArtifactError(f"{METADATA_FILE} lacks {', '.join(sorted(missing))}")
        values = {k: v for k, v in data.items() if k in known}
        values["mean"] = tuple(values.get("mean", IMAGENET_MEAN))
        values["std"] = tuple(values.get("std", IMAGENET_STD))
        return cls(**values)


def _read_json(path: Path, missing: str) -> Any:
    """The JSON in `path`; ArtifactError with `missing` when it is absent or not JSON."""
    if not path.is_file():
        raise ArtifactError(missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None


def read_metadata(model_dir: str | Path) -> ModelMetadata:
    path = Path(model_dir) / METADATA_FILE
    data = _read_json(path, f"{path} not found: is {model_dir} a dogbreed model directory?")
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} must be a JSON object")
    meta = ModelMetadata.from_dict(data)
    if meta.format_version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {meta.format_version} is newer than this code "
            f"understands ({FORMAT_VERSION})"
        )
    return meta


def write_metadata(model_dir: Path, metadata: ModelMetadata) -> None:
    write_text(model_dir / METADATA_FILE, metadata.to_json())


def read_classes(model_dir: str | Path, num_classes: int | None = None) -> list[str]:
    path = Path(model_dir) / CLASSES_FILE
    classes = _read_json(path, f"{path} not found")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ArtifactError(f"{path} must be a JSON list of class names")
    if num_classes is not None and len(classes) != num_classes:
        raise ArtifactError(f"{path} has {len(classes)} classes, metadata says {num_classes}")
    return classes


def save_model_dir(
    model_dir: str | Path,
    model: Any,
    classes: list[str],
    metadata: ModelMetadata,
) -> Path:
    """Write the model directory (training side): weights, ONNX, TorchScript, classes, metadata.

    `model` is an `nn.Module`; it is copied to CPU float32 in eval mode for the exports, so the
    caller's model (maybe on a GPU, channels_last) is left as it was. torch is imported here
    only: serving reads this module without torch.
    """
    import copy
    import warnings

    import torch

    if len(classes) != metadata.num_classes:
        raise ArtifactError(f"{len(classes)} class names for {metadata.num_classes} outputs")
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).to("cpu", torch.float32, memory_format=torch.contiguous_format)
    net.eval()
    # Through write_file, into open files: a full disk then names the file and its size.
    write_file(out / WEIGHTS_FILE, lambda f: torch.save(net.state_dict(), f))
    example = torch.zeros(1, 3, metadata.image_size, metadata.image_size)
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.14 flags jit.trace/jit.save/the legacy ONNX exporter as deprecated; they are
        # what the serving side loads, so the warnings are noise in the training log.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        write_file(
            out / ONNX_FILE,
            lambda f: torch.onnx.export(
                net,
                (example,),
                f,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,  # the TorchScript-based exporter: no onnxscript needed, stable
            ),
        )
        traced = torch.jit.trace(net, example)
        write_file(out / TORCHSCRIPT_FILE, lambda f: torch.jit.save(traced, f))
    write_text(out / CLASSES_FILE, json.dumps(classes, indent=1))
    write_metadata(out, metadata)
    return out

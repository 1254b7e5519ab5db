"""Training hyperparameters, defined once.

The same names work as SageMaker hyperparameters (`batch_size`) and as command-line flags
(`--batch-size`); both spellings are accepted in both places. SageMaker sends every value as a
string: the SDK's framework estimators JSON-encode each value (`"\\"resnet18\\""`, `"0.001"`),
its generic `Estimator` sends `str(value)` (`"resnet18"`, `"False"`). `parse_value` accepts both.

This module imports nothing heavy: the serving image, the tuner and the AWS launcher read it too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dogbreed.settings import (
    SettingError,
    add_arguments,
    convert,
    given_flags,
    setting,
    spec,
    specs,
)

# SageMaker's root for a container's files (model/, input/, output/): training and serving.
DEFAULT_BASE_DIR = "/opt/ml"
FREEZE_CHOICES = ("none", "backbone", "layer1", "layer2", "layer3", "layer4")


class ConfigError(SettingError):
    """A hyperparameter that is unknown or has a value of the wrong type."""


@dataclass
class TrainConfig:
    """Every knob of a training run. Field names are the public hyperparameter names."""

    backbone: str = setting("resnet50", "torchvision classification model name (resnet18, ...)")
    pretrained: bool = setting(False, "start from torchvision's ImageNet weights")
    weights: str | None = setting(
        None, "local file with the pretrained weights (no network needed)"
    )
    freeze: str = setting(
        "none",
        "none: fine-tune all; backbone: head only; layerN (ResNets only): train from stage N on",
        choices=FREEZE_CHOICES,
    )
    epochs: int = setting(10, "maximum number of epochs")
    batch_size: int = setting(32, "images per step on each process (global = this x world size)")
    learning_rate: float = setting(1e-3, "peak learning rate, reached after the warm-up")
    optimizer: str = setting("adamw", "optimizer", choices=("adamw", "sgd"))
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(0.05, "decoupled weight decay (AdamW) or L2 (SGD)")
    warmup_epochs: float = setting(1.0, "linear warm-up length in epochs, then cosine decay")
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss")
    image_size: int = setting(224, "training crop and model input size in pixels")
    amp: bool = setting(
        True, "bf16 autocast on a GPU or a CPU with AMX/AVX512-BF16 (fp32 on other CPUs)"
    )
    channels_last: bool = setting(True, "channels_last memory format")
    compile: bool = setting(False, "torch.compile the training model (slower start, faster steps)")
    workers: int | None = setting(
        None, "DataLoader worker processes per training process (default: from the CPU count)"
    )
    patience: int = setting(5, "early stopping: epochs without a better valid_loss before stopping")
    seed: int = setting(42, "random seed")

    def to_hyperparameters(self) -> dict[str, str]:
        """SageMaker form: every value a JSON-encoded string, as the SDK sends them."""
        return {k: json.dumps(v) for k, v in dataclasses.asdict(self).items() if v is not None}

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def parse_value(name: str, raw: Any) -> Any:
    """Convert one hyperparameter value (a string from SageMaker or the CLI) to its field type."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)  # framework estimators JSON-encode each value
        except json.JSONDecodeError:
            value = raw  # generic Estimator: str(value)
    declared = spec(TrainConfig, name)
    is_choice = declared.choices is not None and value in declared.choices  # freeze="none"
    if value is None or (
        isinstance(value, str) and value.strip().lower() in ("none", "null", "") and not is_choice
    ):
        if declared.default is None:
            return None
        raise ConfigError(f"hyperparameter {name!r} needs a value")
    try:
        return convert(declared, value, f"hyperparameter {name!r}")
    except SettingError as exc:
        raise ConfigError(str(exc)) from None


def canonical_name(key: str) -> str:
    return key.strip().lstrip("-").replace("-", "_").lower()


def is_ignored_key(key: str) -> bool:
    """Keys SageMaker adds itself (`sagemaker_*`, `_tuning_objective_metric`, ...)."""
    return key.startswith("_") or key.startswith("sagemaker_")


def config_from_hyperparameters(
    hyperparameters: dict[str, Any], base: TrainConfig | None = None, *, strict: bool = True
) -> TrainConfig:
    """A config from SageMaker-style hyperparameters; unknown keys are an error when strict."""
    known = {f.name for f in fields(TrainConfig)}
    changes: dict[str, Any] = {}
    unknown: list[str] = []
    for key, raw in hyperparameters.items():
        if is_ignored_key(key):
            continue
        name = canonical_name(key)
        if name not in known:
            unknown.append(key)
            continue
        changes[name] = parse_value(name, raw)
    if unknown and strict:
        raise ConfigError(
            f"unknown hyperparameter(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    return dataclasses.replace(base or TrainConfig(), **changes)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field, both `--batch-size` and `--batch_size`; unset flags stay None.
    Their text is converted with hyperparameters.json's (a bad value is the job's failure)."""
    group = parser.add_argument_group("hyperparameters (also read from hyperparameters.json)")
    add_arguments(group, TrainConfig, typed=False, underscore_spellings=True)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """Overlay the flags that were given on `base` (e.g. a config from hyperparameters.json)."""
    return config_from_hyperparameters(given_flags(TrainConfig, args), base)


def hyperparameter_docs() -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) for every field; tests hold the README tables to it."""
    return [(s.name, s.kind.__name__, str(s.default), s.help) for s in specs(TrainConfig)]


def base_dir(explicit: str | Path | None = None) -> Path:
    """`explicit`, else $SAGEMAKER_BASE_DIR, else /opt/ml."""
    return Path(explicit or os.environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR)

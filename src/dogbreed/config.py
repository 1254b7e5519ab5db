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
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

# SageMaker's root for a container's files (model/, input/, output/): training and serving.
DEFAULT_BASE_DIR = "/opt/ml"
FREEZE_CHOICES = ("none", "backbone", "layer1", "layer2", "layer3", "layer4")


class ConfigError(ValueError):
    """A hyperparameter that is unknown or has a value of the wrong type."""


def _hp(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Every knob of a training run. Field names are the public hyperparameter names."""

    backbone: str = _hp("resnet50", "torchvision classification model name (resnet18, ...)")
    pretrained: bool = _hp(False, "start from torchvision's ImageNet weights")
    weights: str | None = _hp(None, "local file with the pretrained weights (no network needed)")
    freeze: str = _hp(
        "none",
        "none: fine-tune all; backbone: head only; layerN (ResNets only): train from stage N on",
        FREEZE_CHOICES,
    )
    epochs: int = _hp(10, "maximum number of epochs")
    batch_size: int = _hp(32, "images per step on each process (global = this x world size)")
    learning_rate: float = _hp(1e-3, "peak learning rate, reached after the warm-up")
    optimizer: str = _hp("adamw", "optimizer", ("adamw", "sgd"))
    momentum: float = _hp(0.9, "SGD momentum")
    weight_decay: float = _hp(0.05, "decoupled weight decay (AdamW) or L2 (SGD)")
    warmup_epochs: float = _hp(1.0, "linear warm-up length in epochs, then cosine decay")
    label_smoothing: float = _hp(0.1, "label smoothing of the cross-entropy loss")
    image_size: int = _hp(224, "training crop and model input size in pixels")
    amp: bool = _hp(
        True, "bf16 autocast on a GPU or a CPU with AMX/AVX512-BF16 (fp32 on other CPUs)"
    )
    channels_last: bool = _hp(True, "channels_last memory format")
    compile: bool = _hp(False, "torch.compile the training model (slower start, faster steps)")
    workers: int | None = _hp(
        None, "DataLoader worker processes per training process (default: from the CPU count)"
    )
    patience: int = _hp(5, "early stopping: epochs without a better valid_loss before stopping")
    seed: int = _hp(42, "random seed")

    def to_hyperparameters(self) -> dict[str, str]:
        """SageMaker form: every value a JSON-encoded string, as the SDK sends them."""
        return {k: json.dumps(v) for k, v in dataclasses.asdict(self).items() if v is not None}

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _field_type(name: str) -> type:
    hint = get_type_hints(TrainConfig)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_value(name: str, raw: Any) -> Any:
    """Convert one hyperparameter value (a string from SageMaker or the CLI) to its field type."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)  # framework estimators JSON-encode each value
        except json.JSONDecodeError:
            value = raw  # generic Estimator: str(value)
    kind = _field_type(name)
    choices = next(f.metadata["choices"] for f in fields(TrainConfig) if f.name == name)
    is_choice = choices is not None and value in choices  # freeze="none" is a choice, not None
    if value is None or (
        isinstance(value, str) and value.strip().lower() in ("none", "null", "") and not is_choice
    ):
        default = next(f.default for f in fields(TrainConfig) if f.name == name)
        if default is None:
            return None
        raise ConfigError(f"hyperparameter {name!r} needs a value")
    try:
        if kind is bool:
            result: Any = _to_bool(value)
        elif kind is int:
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError(f"not an integer: {value!r}")
            result = int(as_float)
        elif kind is float:
            result = float(value)
        else:
            result = str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"hyperparameter {name!r}: {exc}") from None
    if choices and result not in choices:
        raise ConfigError(f"hyperparameter {name!r} must be one of {', '.join(choices)}")
    return result


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
    """One flag per field, both `--batch-size` and `--batch_size`; unset flags stay None."""
    group = parser.add_argument_group("hyperparameters (also read from hyperparameters.json)")
    for f in fields(TrainConfig):
        flags = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            flags.append(f"--{f.name}")
        help_text = f.metadata["help"]
        if f.default is not None:
            help_text += f" (default: {f.default})"
        if f.metadata["choices"]:
            help_text += f"; one of {', '.join(f.metadata['choices'])}"
        if _field_type(f.name) is bool:
            # `--pretrained`, `--pretrained true`, `--no-pretrained` all work.
            group.add_argument(
                *flags,
                dest=f.name,
                nargs="?",
                const="true",
                default=None,
                metavar="BOOL",
                help=help_text,
            )
            group.add_argument(
                f"--no-{f.name.replace('_', '-')}",
                dest=f.name,
                action="store_const",
                const="false",
                help=argparse.SUPPRESS,
            )
        else:
            group.add_argument(
                *flags, dest=f.name, default=None, metavar=f.name.upper(), help=help_text
            )


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """Overlay the flags that were given on `base` (e.g. a config from hyperparameters.json)."""
    given = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    return config_from_hyperparameters(given, base)


def hyperparameter_docs() -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) for every field; tests hold the README tables to it."""
    rows = []
    for f in fields(TrainConfig):
        rows.append((f.name, _field_type(f.name).__name__, str(f.default), f.metadata["help"]))
    return rows


def base_dir(explicit: str | Path | None = None) -> Path:
    """`explicit`, else $SAGEMAKER_BASE_DIR, else /opt/ml."""
    return Path(explicit or os.environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR)

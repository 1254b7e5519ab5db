"""The hyperparameter search space, defined once.

Local Optuna studies (`dogbreed tune`) and SageMaker tuning jobs (`dogbreed sagemaker tune`)
both read `SEARCH_SPACE`: each entry names a `TrainConfig` field and its range. A parameter
fixed on the command line (`--epochs 2`) is removed from the space (`active_space`).

The objective is always a validation metric (`OBJECTIVES`); the test split is never used for
model selection.

No heavy imports here: optuna is only needed by `suggest`, which receives the trial.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from dogbreed.config import TrainConfig

# Metric name (as printed by the trainer and scraped by SageMaker) -> optimisation direction.
OBJECTIVES: dict[str, str] = {"valid_loss": "minimize", "valid_acc": "maximize"}
DEFAULT_OBJECTIVE = "valid_loss"


@dataclass(frozen=True)
class Param:
    """One searchable `TrainConfig` field: a float or int range, or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter's value."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def sagemaker_range(self) -> tuple[str, dict[str, Any]]:
        """(key in SageMaker's ParameterRanges, range) for this parameter."""
        if self.choices is not None:
            return "CategoricalParameterRanges", {
                "Name": self.name,
                "Values": [str(c) for c in self.choices],
            }
        scaling = "Logarithmic" if self.log else "Linear"
        if self.integer:
            return "IntegerParameterRanges", {
                "Name": self.name,
                "MinValue": str(int(self.low)),
                "MaxValue": str(int(self.high)),
                "ScalingType": scaling,
            }
        return "ContinuousParameterRanges", {
            "Name": self.name,
            "MinValue": repr(float(self.low)),
            "MaxValue": repr(float(self.high)),
            "ScalingType": scaling,
        }


SEARCH_SPACE: tuple[Param, ...] = (
    Param("learning_rate", 1e-5, 1e-1, log=True),
    Param("batch_size", choices=(16, 32, 64, 128)),
    Param("epochs", 3, 30, integer=True),
    Param("weight_decay", 1e-6, 1e-1, log=True),
    # layer1/layer2 differ little from "none" on small data; the four kept span the range.
    Param("freeze", choices=("none", "layer3", "layer4", "backbone")),
    Param("label_smoothing", 0.0, 0.2),
    Param("optimizer", choices=("adamw", "sgd")),
    Param("warmup_epochs", 0.0, 2.0),
)


def active_space(fixed: Iterable[str] = ()) -> list[Param]:
    """The search space without the parameters fixed by the user."""
    fixed = set(fixed)
    return [p for p in SEARCH_SPACE if p.name not in fixed]


def suggest_config(trial: Any, base: TrainConfig, fixed: Iterable[str] = ()) -> TrainConfig:
    """`base` with every non-fixed parameter of the space drawn from the trial."""
    return base.replace(**{p.name: p.suggest(trial) for p in active_space(fixed)})


def sagemaker_parameter_ranges(fixed: Iterable[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """SageMaker's `ParameterRanges` for the same space (all three keys, maybe empty)."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for param in active_space(fixed):
        key, value = param.sagemaker_range()
        ranges[key].append(value)
    return ranges


def static_hyperparameters(cfg: TrainConfig, fixed: Iterable[str] = ()) -> dict[str, str]:
    """Hyperparameters every tuning job gets (JSON-encoded strings): all but the searched ones."""
    searched = {p.name for p in active_space(fixed)}
    return {k: v for k, v in cfg.to_hyperparameters().items() if k not in searched}


def fixed_from_args(args: Any) -> frozenset[str]:
    """The TrainConfig fields given as flags (`add_config_arguments` leaves the others None)."""
    return frozenset(f.name for f in fields(TrainConfig) if getattr(args, f.name, None) is not None)


def add_objective_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--objective",
        choices=sorted(OBJECTIVES),
        default=DEFAULT_OBJECTIVE,
        help="validation metric: valid_loss (minimised, default) or valid_acc (maximised)",
    )

"""The one search space: valid TrainConfig names, same ranges for Optuna and SageMaker."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

import optuna

from dogbreed.config import TrainConfig, add_config_arguments, config_from_hyperparameters
from dogbreed.tune import space


def test_every_searched_name_is_a_trainconfig_field_and_choices_parse() -> None:
    known = {f.name for f in fields(TrainConfig)}
    for param in space.SEARCH_SPACE:
        assert param.name in known
        if param.choices:
            # SageMaker sends categorical values as plain strings: the trainer must parse them.
            for choice in param.choices:
                cfg = config_from_hyperparameters({param.name: str(choice)})
                assert getattr(cfg, param.name) == choice
        else:
            assert param.low < param.high


def test_required_dimensions_and_scales() -> None:
    by_name = {p.name: p for p in space.SEARCH_SPACE}
    assert by_name["learning_rate"].log and by_name["weight_decay"].log
    assert by_name["epochs"].integer
    for name in ("batch_size", "freeze", "optimizer"):
        assert by_name[name].choices
    assert {"label_smoothing", "warmup_epochs"} <= by_name.keys()


def test_optuna_suggestions_stay_in_the_sagemaker_ranges() -> None:
    ranges = space.sagemaker_parameter_ranges()
    continuous = {r["Name"]: r for r in ranges["ContinuousParameterRanges"]}
    integer = {r["Name"]: r for r in ranges["IntegerParameterRanges"]}
    categorical = {r["Name"]: r["Values"] for r in ranges["CategoricalParameterRanges"]}
    assert continuous["learning_rate"]["ScalingType"] == "Logarithmic"
    assert continuous["label_smoothing"]["ScalingType"] == "Linear"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        cfg = space.suggest_config(study.ask(), TrainConfig())
        for name, r in continuous.items():
            assert float(r["MinValue"]) <= getattr(cfg, name) <= float(r["MaxValue"])
        for name, r in integer.items():
            assert int(r["MinValue"]) <= getattr(cfg, name) <= int(r["MaxValue"])
        for name, values in categorical.items():
            assert str(getattr(cfg, name)) in values


def test_fixed_flags_leave_the_space_and_become_static() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args("--epochs 2 --backbone resnet18 --batch-size 16".split())
    fixed = space.fixed_from_args(args)
    assert fixed == {"epochs", "backbone", "batch_size"}
    names = {p.name for p in space.active_space(fixed)}
    assert "epochs" not in names and "batch_size" not in names and "learning_rate" in names
    ranges = space.sagemaker_parameter_ranges(fixed)
    assert ranges["IntegerParameterRanges"] == []
    static = space.static_hyperparameters(TrainConfig(epochs=2, batch_size=16), fixed)
    assert json.loads(static["epochs"]) == 2 and json.loads(static["batch_size"]) == 16
    assert "learning_rate" not in static and "freeze" not in static
    # A suggested config keeps the fixed values.
    trial = optuna.create_study().ask()
    cfg = space.suggest_config(trial, TrainConfig(epochs=2, batch_size=16), fixed)
    assert cfg.epochs == 2 and cfg.batch_size == 16 and "epochs" not in trial.params

"""TrainConfig: SageMaker's two hyperparameter spellings, CLI flags, errors."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from dogbreed.config import (
    ConfigError,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    config_from_hyperparameters,
    hyperparameter_docs,
)

REPO = Path(__file__).resolve().parent.parent


def test_framework_estimator_spelling_json_encoded_strings() -> None:
    # What the SDK's PyTorch estimator writes: json.dumps of each value.
    hps = {
        "backbone": '"resnet18"',
        "epochs": "5",
        "batch_size": "64",
        "learning_rate": "0.0003",
        "pretrained": "true",
        "freeze": '"layer3"',
        "weights": "null",
    }
    cfg = config_from_hyperparameters(hps)
    assert cfg.backbone == "resnet18"
    assert cfg.epochs == 5 and isinstance(cfg.epochs, int)
    assert cfg.batch_size == 64
    assert cfg.learning_rate == pytest.approx(3e-4)
    assert cfg.pretrained is True
    assert cfg.freeze == "layer3"
    assert cfg.weights is None


def test_generic_estimator_spelling_str_values() -> None:
    # What the generic Estimator writes: str(value), so Python's True/False and bare words.
    hps = {"backbone": "resnet18", "epochs": "5.0", "pretrained": "False", "freeze": "none"}
    cfg = config_from_hyperparameters(hps)
    assert (cfg.backbone, cfg.epochs, cfg.pretrained, cfg.freeze) == ("resnet18", 5, False, "none")


def test_round_trip_through_to_hyperparameters() -> None:
    cfg = TrainConfig(backbone="resnet18", epochs=3, learning_rate=0.01, workers=2)
    hps = cfg.to_hyperparameters()
    assert all(isinstance(v, str) for v in hps.values())
    assert config_from_hyperparameters(json.loads(json.dumps(hps))) == cfg


def test_sagemaker_keys_tolerated_and_dashes_accepted() -> None:
    hps = {
        "_tuning_objective_metric": "valid_loss",
        "sagemaker_program": "train",
        "sagemaker_region": '"us-east-1"',
        "batch-size": "8",
    }
    assert config_from_hyperparameters(hps).batch_size == 8


@pytest.mark.parametrize(
    ("hps", "message"),
    [
        ({"epoch": "3"}, "unknown hyperparameter"),
        ({"epochs": "three"}, "'epochs'"),
        ({"epochs": "2.5"}, "not an integer"),
        ({"pretrained": "maybe"}, "not a boolean"),
        ({"optimizer": '"adam"'}, "one of adamw, sgd"),
        ({"freeze": "layer9"}, "must be one of"),
        ({"backbone": "null"}, "needs a value"),
        ({"learning_rate": "nan"}, "not a finite number"),
    ],
)
def test_bad_hyperparameters_name_the_problem(hps: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_hyperparameters(hps)


def test_cli_flags_both_spellings_overlay_a_base() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    base = config_from_hyperparameters({"epochs": "7", "backbone": '"resnet34"'})
    args = parser.parse_args(["--batch-size", "12", "--learning_rate", "0.02", "--pretrained"])
    cfg = config_from_args(args, base)
    assert (cfg.batch_size, cfg.learning_rate, cfg.pretrained) == (12, 0.02, True)
    assert (cfg.epochs, cfg.backbone) == (7, "resnet34")  # untouched fields keep the base
    assert config_from_args(parser.parse_args(["--no-amp"]), base).amp is False


def test_readme_and_training_docs_document_every_hyperparameter() -> None:
    """The README's and docs/training.md's tables list every field with its type, in order."""
    expected = [(name, kind) for name, kind, _, _ in hyperparameter_docs()]
    assert [name for name, _ in expected] == list(TrainConfig.__dataclass_fields__)
    for doc in ("README.md", "docs/training.md"):
        text = (REPO / doc).read_text()
        rows = re.findall(r"^\| `(\w+)` \| (str|int|float|bool) \|", text, re.MULTILINE)
        assert rows == expected, doc

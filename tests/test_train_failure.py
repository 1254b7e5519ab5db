"""Every failure writes a short reason to output/failure and exits non-zero; never a traceback
as the only trace. These runs stop before any training step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_train_e2e import run_train, sagemaker_job

TINY = {"backbone": "resnet18", "image_size": 64, "epochs": 1, "batch_size": 8}


def _failure(base: Path) -> str:
    path = base / "output" / "failure"
    assert path.is_file(), "no output/failure written"
    text = path.read_text()
    assert 0 < len(text) <= 1024
    return text


@pytest.mark.parametrize(
    ("hyperparameters", "reason"),
    [
        ({**TINY, "epochs": "many"}, "hyperparameter 'epochs'"),
        ({**TINY, "learning_rte": 0.1}, "unknown hyperparameter(s): learning_rte"),
        ({**TINY, "backbone": "resnet5000"}, "unknown backbone 'resnet5000'"),
        ({**TINY, "batch_size": 0}, "'batch_size' must be at least 1"),
        ({**TINY, "freeze": "layer2", "backbone": "mobilenet_v3_small"}, "ResNet-style"),
    ],
)
def test_bad_hyperparameter_fails_with_a_reason(
    tmp_path: Path, sample_data: Path, hyperparameters: dict[str, object], reason: str
) -> None:
    base = sagemaker_job(tmp_path, sample_data, hyperparameters)
    proc = run_train(base, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert reason in _failure(base)
    assert "Traceback" not in proc.stderr
    assert not (base / "model").exists()


def test_malformed_hyperparameters_json(tmp_path: Path, sample_data: Path) -> None:
    base = sagemaker_job(tmp_path, sample_data, TINY)
    (base / "input" / "config" / "hyperparameters.json").write_text("{not json")
    proc = run_train(base, timeout=300)
    assert proc.returncode == 2
    assert "hyperparameters.json" in _failure(base)


def test_missing_split_names_it(tmp_path: Path, sample_data: Path) -> None:
    base = sagemaker_job(tmp_path, sample_data, TINY)
    shutil.rmtree(base / "input" / "data" / "training" / "valid")
    proc = run_train(base, timeout=300)
    assert proc.returncode == 2
    assert "missing: valid" in _failure(base)


def test_declared_channel_without_data(tmp_path: Path, sample_data: Path) -> None:
    base = sagemaker_job(tmp_path, sample_data, TINY)
    shutil.rmtree(base / "input" / "data")
    proc = run_train(base, timeout=300)
    assert proc.returncode == 2
    assert "channel folder(s) missing" in _failure(base)


def test_no_data_channel_at_all(tmp_path: Path, sample_data: Path) -> None:
    base = sagemaker_job(tmp_path, sample_data, TINY)
    shutil.rmtree(base / "input" / "data")
    (base / "input" / "config" / "inputdataconfig.json").unlink()
    proc = run_train(base, timeout=300)
    assert proc.returncode == 2
    assert "need the channel 'training'" in _failure(base)


def test_stale_failure_is_removed_and_flags_override_the_files(
    tmp_path: Path, sample_data: Path
) -> None:
    # A bad value in hyperparameters.json, corrected by a flag: the job gets past the config
    # (and fails later on purpose, on an empty test split), and the old reason is gone.
    base = sagemaker_job(tmp_path, sample_data, {**TINY, "epochs": "many"})
    (base / "output").mkdir()
    (base / "output" / "failure").write_text("old reason")
    data = tmp_path / "data"
    shutil.copytree(sample_data, data)
    for folder in (data / "test").iterdir():
        shutil.rmtree(folder)
    proc = run_train(base, "--epochs", "1", "--data", str(data), timeout=300)
    assert proc.returncode == 2
    text = _failure(base)
    assert "old reason" not in text and "epochs" not in text
    assert "test" in text
    assert json.loads((base / "input" / "config" / "hyperparameters.json").read_text())

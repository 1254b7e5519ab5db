"""`dogbreed train` end to end, as SageMaker runs it: no flags, everything under a temporary
SAGEMAKER_BASE_DIR. Real sample JPEGs, a real resnet18, real exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from loopback_http import running_moto_server

from dogbreed.data.layout import find_splits
from dogbreed.train.report import METRIC_DEFINITIONS, parse_metric_lines

EPOCHS = 8
BUCKET, JOB_NAME = "training-output", "e2e-job-1"
# The recipe that learns the 5-class sample within a few CPU minutes (AdamW, lr 1e-3).
HYPERPARAMETERS = {
    "backbone": "resnet18",
    "image_size": 64,
    "epochs": EPOCHS,
    "batch_size": 16,
    "learning_rate": 0.001,
    "seed": 0,
    "patience": EPOCHS,
}
# ARCHITECTURE.md's line formats, character for character.
NUM = r"[0-9]+(?:\.[0-9]+)?(?:e-?[0-9]+)?"
EPOCH_LINE = re.compile(
    rf"^epoch=\d+ train_loss={NUM} train_acc={NUM} valid_loss={NUM} valid_acc={NUM} "
    rf"lr={NUM} images_per_sec={NUM}$"
)
FINAL_LINE = re.compile(rf"^final valid_loss={NUM} valid_acc={NUM} test_loss={NUM} test_acc={NUM}$")


def sagemaker_job(
    root: Path, data: Path, hyperparameters: dict[str, object], channels: str = "training"
) -> Path:
    """A SageMaker-style /opt/ml: config files as the platform writes them, data channels."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    # The framework estimators' spelling: every value JSON-encoded into a string.
    hps = {k: json.dumps(v) for k, v in hyperparameters.items()}
    hps["_tuning_objective_metric"] = "valid_loss"
    hps["sagemaker_region"] = '"us-east-1"'
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    resource = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    data_root = root / "input" / "data"
    if channels == "training":
        shutil.copytree(data, data_root / "training")
        names = ["training"]
    else:
        names = ["train", "valid", "test"]
        for split in names:
            shutil.copytree(data / split, data_root / split)
    entry = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
    (config / "inputdataconfig.json").write_text(json.dumps(dict.fromkeys(names, entry)))
    return root


def run_train(
    base: Path, *flags: str, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    environ.update(env or {}, SAGEMAKER_BASE_DIR=str(base))
    return subprocess.run(
        [sys.executable, "-m", "dogbreed", "train", *flags],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Run:
    base: Path
    proc: subprocess.CompletedProcess
    uploaded: dict[str, bytes]  # what the intermediate sync put in S3: key -> body


@pytest.fixture(scope="module")
def sagemaker_run(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One job, with the toolkit's intermediate sync to an S3 on loopback (a moto server)."""
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    with running_moto_server() as url:
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name=aws["AWS_REGION"],
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket=BUCKET)
        hyperparameters = {**HYPERPARAMETERS, "sagemaker_s3_output": f"s3://{BUCKET}/jobs"}
        base = sagemaker_job(tmp_path_factory.mktemp("opt_ml"), sample_data, hyperparameters)
        env = {**aws, "S3_ENDPOINT_URL": url, "TRAINING_JOB_NAME": JOB_NAME}
        proc = run_train(base, env=env)
        listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        uploaded = {
            o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed
        }
        yield Run(base, proc, uploaded)


def test_job_succeeds_and_model_dir_holds_exactly_the_contract(
    sagemaker_run: Run, sample_data: Path
) -> None:
    base, proc = sagemaker_run.base, sagemaker_run.proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = base / "model"
    assert {p.name for p in model.iterdir()} == {
        "weights.pt",
        "model.onnx",
        "model.torchscript",
        "classes.json",
        "metadata.json",
    }
    assert json.loads((model / "classes.json").read_text()) == find_splits(sample_data).classes
    meta = json.loads((model / "metadata.json").read_text())
    assert (meta["architecture"], meta["image_size"], meta["num_classes"]) == ("resnet18", 64, 5)
    assert meta["hyperparameters"]["learning_rate"] == 0.001
    assert {"torch", "torchvision", "python"} <= meta["versions"].keys()
    # The precision gate ran as training's last step: a verdict, measured or why not.
    bf16 = meta["precisions"]["bf16"]
    assert "top1_agreement" in bf16 if bf16["measured"] else bf16["reason"]
    assert not (base / "output" / "failure").exists()
    assert (base / "output" / "success").is_file()
    assert (base / "checkpoints" / "last.pt").is_file()


def test_the_epoch_history_reached_s3_while_the_job_ran(sagemaker_run: Run) -> None:
    """The toolkit's sync, as AWS's images run it: output/intermediate/ goes to
    s3://BUCKET/PREFIX/$TRAINING_JOB_NAME/output/intermediate/ (every epoch's write)."""
    assert sagemaker_run.proc.returncode == 0, sagemaker_run.proc.stderr[-3000:]
    key = f"jobs/{JOB_NAME}/output/intermediate/history.json"
    assert set(sagemaker_run.uploaded) == {key}
    history = json.loads(sagemaker_run.uploaded[key])
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    local = sagemaker_run.base / "output" / "intermediate" / "history.json"
    assert history == json.loads(local.read_text())


def test_an_s3_output_that_is_not_s3_fails_before_training(
    sample_data: Path, tmp_path: Path
) -> None:
    hyperparameters = {**HYPERPARAMETERS, "sagemaker_s3_output": "ftp://bucket/jobs"}
    base = sagemaker_job(tmp_path / "opt_ml", sample_data, hyperparameters)
    proc = run_train(base, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    reason = (base / "output" / "failure").read_text()
    assert reason.startswith("JobError: hyperparameter sagemaker_s3_output: Expecting 's3' scheme")
    assert not (base / "model" / "weights.pt").exists()
    assert not (base / "output" / "success").exists()


def test_model_learned_and_outputs_are_written(
    sagemaker_run: Run,
) -> None:
    base, proc = sagemaker_run.base, sagemaker_run.proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    final = metrics["final"]
    assert final["test_acc"] >= 0.5, f"5 classes, chance is 0.2: {final}"
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, EPOCHS + 1))
    best = min(metrics["history"], key=lambda h: h["valid_loss"])
    assert metrics["best_epoch"] == best["epoch"]  # selection on valid, never on test
    assert final["valid_loss"] == pytest.approx(best["valid_loss"])
    confusion = metrics["confusion_matrix"]
    assert sum(map(sum, confusion)) == 30  # every test image counted once
    assert sum(confusion[i][i] for i in range(5)) / 30 == pytest.approx(final["test_acc"])
    for plot in ("curves.png", "confusion_matrix.png"):
        assert (base / "output" / "data" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((base / "model" / "metadata.json").read_text())
    assert meta["metrics"]["test_acc"] == pytest.approx(final["test_acc"])


def test_stdout_metric_lines_follow_the_contract_and_the_regexes(
    sagemaker_run: Run,
) -> None:
    base, proc = sagemaker_run.base, sagemaker_run.proc
    lines = proc.stdout.splitlines()
    assert "world_size=1 rank=0 device=cpu" in lines
    epoch_lines = [line for line in lines if line.startswith("epoch=")]
    assert len(epoch_lines) == EPOCHS
    assert all(EPOCH_LINE.match(line) for line in epoch_lines), epoch_lines
    assert sum(bool(FINAL_LINE.match(line)) for line in lines) == 1
    # What SageMaker would scrape with our MetricDefinitions.
    scraped = parse_metric_lines(proc.stdout)
    assert {d["Name"] for d in METRIC_DEFINITIONS} == scraped.keys()
    assert scraped["epoch"] == list(range(1, EPOCHS + 1))
    history = json.loads((base / "output" / "data" / "metrics.json").read_text())["history"]
    final = json.loads((base / "output" / "data" / "metrics.json").read_text())["final"]
    # Per epoch, then the best epoch's again on the final line (the tuner's objective).
    valid_losses = [h["valid_loss"] for h in history] + [final["valid_loss"]]
    assert scraped["valid_loss"] == pytest.approx(valid_losses, abs=1e-4)
    assert final["valid_loss"] == pytest.approx(min(valid_losses), abs=1e-4)
    assert scraped["train_acc"] == pytest.approx([h["train_acc"] for h in history], abs=1e-4)
    assert scraped["test_acc"] == [pytest.approx(final["test_acc"], abs=1e-4)]

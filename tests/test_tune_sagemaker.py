"""`dogbreed sagemaker tune` against moto's real HTTP server (see conftest.moto_server)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from dogbreed.aws import tuning
from dogbreed.config import config_from_hyperparameters
from dogbreed.train.report import METRIC_DEFINITIONS

ROLE = "arn:aws:iam::123456789012:role/dogbreed-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dogbreed-train:abc123"
BASE = [
    "--image", IMAGE, "--role", ROLE, "--data", "s3://bucket/dogImages",
    "--output", "s3://bucket/tuning", "--no-wait",
]  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tuning.add_arguments(parser)
    return parser.parse_args(argv)


def fake_trial_listing(sm: Any, summaries: list[dict[str, Any]]) -> None:
    """moto does not implement ListTrainingJobsForHyperParameterTuningJob (NotImplementedError
    on the server): answer that ONE operation locally; every other call goes to moto over HTTP."""

    def answer(model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if model.name != "ListTrainingJobsForHyperParameterTuningJob":
            return None
        return AWSResponse("local", 200, {}, None), {"TrainingJobSummaries": summaries}

    sm.meta.events.register_first("before-call.sagemaker.*", answer)


def summary(name: str, value: float | None, lr: str, status: str = "Completed") -> dict[str, Any]:
    item: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
        "CreationTime": "2026-01-01T00:00:00Z",
        "TrainingJobStatus": status,
        "TunedHyperParameters": {"learning_rate": lr, "batch_size": "32", "freeze": "layer4"},
    }
    if value is not None:
        item["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": "Minimize",
            "MetricName": "valid_loss",
            "Value": value,
        }
    return item


def test_create_tuning_job_on_moto(moto_server: str, capsys: pytest.CaptureFixture) -> None:
    argv = [
        *BASE,
        "--job-name", "dogbreed-tune-test", "--max-jobs", "6", "--max-parallel-jobs", "2",
        "--early-stopping", "Auto", "--warm-start-from", "dogbreed-tune-parent",
        "--epochs", "12", "--backbone", "resnet50", "--spot", "--instance-type", "ml.g5.xlarge",
    ]  # fmt: skip
    assert tuning.main(parse(argv)) == 0
    assert "created tuning job dogbreed-tune-test" in capsys.readouterr().out

    sm = boto3.client("sagemaker")
    job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="dogbreed-tune-test")
    config = job["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "valid_loss",
    }
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    ranges = config["ParameterRanges"]
    continuous = {r["Name"]: r for r in ranges["ContinuousParameterRanges"]}
    assert continuous["learning_rate"]["ScalingType"] == "Logarithmic"
    assert continuous["weight_decay"]["ScalingType"] == "Logarithmic"
    assert float(continuous["learning_rate"]["MinValue"]) < float(
        continuous["learning_rate"]["MaxValue"]
    )
    categorical = {r["Name"]: r["Values"] for r in ranges["CategoricalParameterRanges"]}
    assert categorical["batch_size"] == ["16", "32", "64", "128"]
    assert "optimizer" in categorical and "freeze" in categorical
    # --epochs 12 fixed it: no epochs range, a static hyperparameter instead.
    assert ranges["IntegerParameterRanges"] == []
    definition = job["TrainingJobDefinition"]
    static = definition["StaticHyperParameters"]
    assert static["epochs"] == "12" and static["backbone"] == '"resnet50"'
    assert not {"learning_rate", "batch_size", "freeze"} & static.keys()
    assert definition["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert definition["InputDataConfig"][0]["ChannelName"] == "training"
    assert definition["EnableManagedSpotTraining"] is True
    assert (
        definition["StoppingCondition"]["MaxWaitTimeInSeconds"]
        >= (definition["StoppingCondition"]["MaxRuntimeInSeconds"])
    )
    assert "CheckpointConfig" not in definition
    assert definition["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert job["WarmStartConfig"] == {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "dogbreed-tune-parent"}],
        "WarmStartType": "IdenticalDataAndAlgorithm",
    }


def test_attach_reports_trials_and_best(
    moto_server: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert tuning.main(parse([*BASE, "--job-name", "dogbreed-tune-rep", "--epochs", "3"])) == 0
    sm = boto3.client("sagemaker")
    fake_trial_listing(
        sm,
        [
            summary("t-001", 1.20, "0.01"),
            summary("t-002", None, "0.09", status="Stopped"),
            summary("t-003", 0.41, "0.0004"),
            summary("t-004", 0.77, "0.002"),
        ],
    )
    # moto's tuning jobs complete at once: the wait returns after one poll.
    assert tuning.wait_for(sm, "dogbreed-tune-rep", poll_s=0.1, timeout_s=10) == "Completed"
    best_file = tmp_path / "best.json"
    cfg = tuning.report(sm, "dogbreed-tune-rep", best_file)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "dogbreed-tune-rep: Completed Completed=1" in out  # the wait's progress line
    assert "dogbreed-tune-rep: Completed, 4 training job(s), objective valid_loss" in out
    rows = [line.split()[0] for line in lines if line.startswith("t-")]
    assert rows == ["t-003", "t-004", "t-001", "t-002"]  # best first, no objective last
    assert "best training job: t-003 valid_loss=0.4100" in out
    # The best file holds static + tuned hyperparameters and loads into a TrainConfig.
    assert cfg is not None and cfg.learning_rate == 0.0004 and cfg.epochs == 3
    loaded = config_from_hyperparameters(json.loads(best_file.read_text()))
    assert loaded == cfg and loaded.freeze == "layer4" and loaded.batch_size == 32


def test_maximise_objective_ranks_highest_first() -> None:
    trials = [summary("a", 0.5, "0.1"), summary("b", 0.9, "0.1"), summary("c", None, "0.1")]
    ranked = tuning.rank_trials(trials, "Maximize")
    assert [t["TrainingJobName"] for t in ranked] == ["b", "a", "c"]


def test_dry_run_prints_the_request(aws_env: None, capsys: pytest.CaptureFixture) -> None:
    argv = [*BASE, "--dry-run", "--objective", "valid_acc", "--image-size", "64"]
    assert tuning.main(parse(argv)) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["operation"] == "CreateHyperParameterTuningJob"
    objective = record["params"]["HyperParameterTuningJobConfig"][
        "HyperParameterTuningJobObjective"
    ]
    assert objective == {"Type": "Maximize", "MetricName": "valid_acc"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-jobs", "2", "--max-parallel-jobs", "3"], "max-parallel-jobs"),
        (["--job-name", "x" * 33], "longer than 32"),
        (["--checkpoint-s3", "s3://bucket/ckpt"], "not supported for tuning"),
        (
            "--learning-rate 0.01 --batch-size 32 --epochs 3 --weight-decay 0.01 --freeze none "
            "--label-smoothing 0.1 --optimizer sgd --warmup-epochs 1".split(),
            "nothing to tune",
        ),
        (["--learning-rate", "fast"], "learning_rate"),
    ],
)
def test_bad_requests_fail_with_a_clear_error(
    aws_env: None, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    assert tuning.main(parse([*BASE, "--dry-run", *extra])) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_create_needs_image_role_output(aws_env: None, capsys: pytest.CaptureFixture) -> None:
    assert tuning.main(parse(["--data", "s3://bucket/d", "--dry-run"])) == 2
    assert "--image, --role, --output" in capsys.readouterr().err


def test_attach_in_a_dry_run_follows_nothing(aws_env: None, capsys: pytest.CaptureFixture) -> None:
    argv = ["--attach", "dogbreed-tune-260101-120000", "--dry-run", "--output", "json"]
    assert tuning.main(parse(argv)) == 0  # was a KeyError: a dry run describes no job
    document = json.loads(capsys.readouterr().out)
    assert (document["tuning_job"], document["dry_run"]) == ("dogbreed-tune-260101-120000", True)
    assert "hyper-tuning-jobs" in document["console_url"]


def test_attach_to_a_missing_job_is_a_clear_error(
    moto_server: str, capsys: pytest.CaptureFixture
) -> None:
    assert tuning.main(parse(["--attach", "no-such-tuning-job", "--no-wait"])) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-tuning-job" in err

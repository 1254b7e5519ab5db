"""Waiting for `dogbreed sagemaker train|tune`: status changes and CloudWatch log lines as they
come, read over HTTP from moto's CloudWatch Logs.

moto's training jobs are Completed the moment they are created, so the job's progress through
Starting -> Training -> Completed cannot come from moto: a before-call hook answers those
DescribeTrainingJob calls (and writes new log lines to moto between two of them, as a running
container would). Every CloudWatch Logs call goes to moto.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from dogbreed.aws import logs, tuning
from dogbreed.aws.clients import Aws
from dogbreed.cli import main

GROUP = "/aws/sagemaker/TrainingJobs"
JOB = "dogbreed-logs-1"
JOB_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{JOB}"
ROLE = "arn:aws:iam::123456789012:role/dogbreed-sagemaker-execution"
TRAIN = ["sagemaker", "train", "--image", "i", "--role", ROLE, "--job-name", JOB]
TRAIN += ["--data", "s3://dogbreed-bucket/d", "--output", "s3://dogbreed-bucket/jobs"]


@pytest.fixture()
def cloudwatch_logs(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    client = boto3.client("logs")
    client.create_log_group(logGroupName=GROUP)
    monkeypatch.setattr(logs, "sleep", lambda seconds: None)  # polls back to back
    yield client


def write(client: Any, stream: str, *lines: str) -> None:
    existing = client.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=stream)
    if not existing["logStreams"]:
        client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
    client.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)


def test_tail_prints_only_new_lines_of_every_host(cloudwatch_logs: Any) -> None:
    out = io.StringIO()
    tail = logs.LogTail(cloudwatch_logs, f"{JOB}/", out)
    write(cloudwatch_logs, f"{JOB}/algo-1-1700000000", "world_size=2 rank=0", "epoch=1")
    write(cloudwatch_logs, "dogbreed-logs-10/algo-1-1700000000", "another job")
    assert tail.poll() == 2
    assert out.getvalue().splitlines() == [
        "[algo-1-1700000000] world_size=2 rank=0",
        "[algo-1-1700000000] epoch=1",
    ]
    assert tail.poll() == 0  # nothing new
    write(cloudwatch_logs, f"{JOB}/algo-1-1700000000", "epoch=2")
    write(cloudwatch_logs, f"{JOB}/algo-2-1700000000", "world_size=2 rank=1")  # a new host
    assert tail.poll() == 2
    assert out.getvalue().splitlines()[2:] == [
        "[algo-1-1700000000] epoch=2",
        "[algo-2-1700000000] world_size=2 rank=1",
    ]


def test_tail_waits_quietly_for_the_log_group(moto_server: str) -> None:
    # An account's first job: the group does not exist until the container's first line.
    assert logs.LogTail(boto3.client("logs"), f"{JOB}/", io.StringIO()).poll() == 0


def scripted_job(states: list[tuple[str, str, Callable[[], None] | None]]) -> Callable[..., Any]:
    """A before-call hook answering DescribeTrainingJob with `states` in turn (the last one
    repeats); each state's action runs when it is answered."""
    answers = iter(states)
    last: list[dict[str, Any]] = []

    def answer(model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if model.name != "DescribeTrainingJob":
            return None
        state = next(answers, None)
        if state is not None:
            status, secondary, action = state
            if action:
                action()
            last[:] = [
                {
                    "TrainingJobName": JOB,
                    "TrainingJobArn": JOB_ARN,
                    "TrainingJobStatus": status,
                    "SecondaryStatus": secondary,
                    "SecondaryStatusTransitions": [
                        {"Status": secondary, "StatusMessage": f"{secondary} message"}
                    ],
                    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                    "ModelArtifacts": {"S3ModelArtifacts": "s3://dogbreed-bucket/jobs/m.tar.gz"},
                }
            ]
        return AWSResponse("scripted", 200, {}, None), last[0]

    return answer


@pytest.fixture()
def job_progress(
    cloudwatch_logs: Any, monkeypatch: pytest.MonkeyPatch
) -> Callable[[list[tuple[str, str, Callable[[], None] | None]]], None]:
    def install(states: list[tuple[str, str, Callable[[], None] | None]]) -> None:
        hook = scripted_job(states)
        original = Aws.client

        def client(self: Aws, service: str, **kwargs: Any) -> Any:
            made = original(self, service, **kwargs)
            if service == "sagemaker":
                made.meta.events.register_first("before-call.sagemaker.DescribeTrainingJob", hook)
            return made

        monkeypatch.setattr(Aws, "client", client)

    return install


def test_train_streams_status_and_log_lines_while_it_waits(
    cloudwatch_logs: Any, job_progress: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"{JOB}/algo-1-1700000000"
    job_progress(
        [
            ("InProgress", "Starting", None),  # read for the stopping condition
            ("InProgress", "Starting", None),
            ("InProgress", "Training", lambda: write(cloudwatch_logs, host, "epoch=1 a=1")),
            ("InProgress", "Training", lambda: write(cloudwatch_logs, host, "epoch=2 a=2")),
            ("Completed", "Completed", lambda: write(cloudwatch_logs, host, "final a=3")),
        ]
    )
    assert main([*TRAIN, "--poll-seconds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    console = "https://us-east-1.console.aws.amazon.com/sagemaker/home?region=us-east-1#/jobs/"
    assert lines[:2] == [f"created training job {JOB}", f"console: {console}{JOB}"]
    assert lines[2:8] == [
        f"{JOB}: InProgress (Starting) Starting message",
        f"{JOB}: InProgress (Training) Training message",
        "[algo-1-1700000000] epoch=1 a=1",
        "[algo-1-1700000000] epoch=2 a=2",  # no repeated status line: it did not change
        f"{JOB}: Completed (Completed) Completed message",
        "[algo-1-1700000000] final a=3",  # the last lines, read after the job ended
    ]
    assert "status: Completed (Completed)" in lines


def test_no_logs_keeps_the_status_lines_only(
    cloudwatch_logs: Any, job_progress: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"{JOB}/algo-1-1700000000"
    job_progress(
        [
            ("InProgress", "Training", None),
            ("InProgress", "Training", lambda: write(cloudwatch_logs, host, "epoch=1")),
            ("Completed", "Completed", None),
        ]
    )
    assert main([*TRAIN, "--no-logs", "--output", "json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)  # stdout: the result only
    assert document["status"] == "Completed" and document["training_job"] == JOB
    assert document["model_artifact"] == "s3://dogbreed-bucket/jobs/m.tar.gz"
    assert document["console_url"].endswith(f"#/jobs/{JOB}")
    assert f"{JOB}: Completed (Completed)" in captured.err  # progress goes to stderr
    assert "epoch=1" not in captured.err


def test_tune_streams_the_trials_log_lines(
    cloudwatch_logs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    tune = ["sagemaker", "tune", "--image", "i", "--role", ROLE, "--data", "s3://dogbreed-b/d"]
    tune += ["--output", "s3://dogbreed-b/t", "--job-name", "dogbreed-tune-l", "--no-wait"]
    assert main(tune) == 0
    write(cloudwatch_logs, "dogbreed-tune-l-001-0123abcd/algo-1-1700000000", "epoch=1 trial 1")
    write(cloudwatch_logs, "dogbreed-tune-l-2-001-0123abcd/algo-1-1700000000", "other job's")
    sm = boto3.client("sagemaker")
    capsys.readouterr()
    tail = tuning.trial_logs(Aws(), "dogbreed-tune-l", sys.stdout)
    # moto's tuning jobs complete at once: one poll, then the trials' lines.
    assert tuning.wait_for(sm, "dogbreed-tune-l", 0.1, 10, tail=tail) == "Completed"
    out = capsys.readouterr().out
    assert "[001-0123abcd/algo-1-1700000000] epoch=1 trial 1" in out
    assert "other job's" not in out


@pytest.mark.parametrize("logs_flag", ["--logs", "--no-logs"])
def test_tune_output_json_is_one_document(
    cloudwatch_logs: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logs_flag: str,
) -> None:
    name = f"dogbreed-tune-{logs_flag[2:4]}"
    trial = {
        "TrainingJobName": f"{name}-001-0123abcd",
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}-001",
        "CreationTime": "2026-01-01T00:00:00Z",
        "TrainingJobStatus": "Completed",
        "TunedHyperParameters": {"learning_rate": "0.002"},
        "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid_loss", "Value": 0.4},
    }

    # moto lacks ListTrainingJobsForHyperParameterTuningJob: that one call is answered here.
    def listing(model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse("local", 200, {}, None), {"TrainingJobSummaries": [trial]}

    original = Aws.client

    def client(self: Aws, service: str, **kwargs: Any) -> Any:
        made = original(self, service, **kwargs)
        event = "before-call.sagemaker.ListTrainingJobsForHyperParameterTuningJob"
        made.meta.events.register_first(event, listing)
        return made

    monkeypatch.setattr(Aws, "client", client)
    tune = ["sagemaker", "tune", "--image", "i", "--role", ROLE, "--data", "s3://dogbreed-b/d"]
    tune += ["--output", "s3://dogbreed-b/t", "--job-name", name, "--output", "json", logs_flag]
    write(cloudwatch_logs, f"{trial['TrainingJobName']}/algo-1-1700000000", "epoch=1 of 001")
    assert main(tune) == 0  # moto's tuning jobs complete at once: one poll
    captured = capsys.readouterr()
    document = json.loads(captured.out)  # stdout: the result only
    assert (document["tuning_job"], document["status"]) == (name, "Completed")
    assert document["arn"].endswith(f":hyper-parameter-tuning-job/{name}")
    assert document["best_training_job"] == trial["TrainingJobName"]
    assert document["best_objective_value"] == 0.4
    assert json.loads(document["best_hyperparameters"]["learning_rate"]) == 0.002
    assert document["console_url"].endswith(f"#/hyper-tuning-jobs/{name}")
    assert f"console: {document['console_url']}" in captured.err  # progress: stderr
    streamed = "[001-0123abcd/algo-1-1700000000] epoch=1 of 001" in captured.err
    assert streamed == (logs_flag == "--logs")

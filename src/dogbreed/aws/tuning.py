"""`dogbreed sagemaker tune`: the search space of `dogbreed.tune.space` as a SageMaker
hyperparameter tuning job for our training image, then a report of its trials.

    dogbreed sagemaker tune --image URI --role ARN --data s3://bucket/dogImages \\
        --output s3://bucket/tuning --max-jobs 20 --max-parallel-jobs 2
    dogbreed sagemaker tune --attach dogbreed-tune-260101-120000 --best-out best.json

The training job definition takes `dogbreed sagemaker train`'s flags and builder. Trainer
flags (`--epochs 10 --backbone resnet50 ...`) fix a value: it becomes a static hyperparameter
and leaves the searched ranges. The objective is the trainer's validation metric
line (`valid_loss`, minimised, or `valid_acc`, maximised), scraped with the trainer's own
`METRIC_DEFINITIONS`. While waiting it prints the console URL, the job's progress and its
trials' CloudWatch log lines (`--no-logs`: not those). boto3 is imported only when the command
runs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from dogbreed.aws import logs, training
from dogbreed.aws.clients import Aws, AwsError, aws_command, aws_from_args, emit, progress_out
from dogbreed.aws.names import check_name
from dogbreed.aws.training import load_config, training_job_request
from dogbreed.config import TrainConfig, config_from_hyperparameters
from dogbreed.tune.space import (
    OBJECTIVES,
    add_objective_argument,
    fixed_from_args,
    sagemaker_parameter_ranges,
    static_hyperparameters,
)
from dogbreed.tune.table import format_table

NAME_MAX = 32  # SageMaker's limit for tuning job names
MAX_PARENTS = 5  # warm start: at most 5 parent tuning jobs
# Fields of CreateTrainingJob that a tuning job's TrainingJobDefinition also takes.
DEFINITION_FIELDS = (
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "EnableNetworkIsolation",
    "EnableManagedSpotTraining",
    "VpcConfig",
)


def default_job_name(now: datetime | None = None) -> str:
    return f"dogbreed-tune-{(now or datetime.now(UTC)):%y%m%d-%H%M%S}"


def tuning_job_request(args: argparse.Namespace) -> dict[str, Any]:
    """CreateHyperParameterTuningJob parameters: `dogbreed sagemaker train`'s job definition
    (image, role, channels, resources, spot, VPC) with the search space's ranges."""
    if args.checkpoint_s3:
        # One CheckpointConfig is shared by every training job of the tuning job: parallel
        # trials would resume each other's checkpoints. Interrupted spot trials restart instead.
        raise AwsError("--checkpoint-s3 is not supported for tuning jobs (trials would share it)")
    name = args.job_name or default_job_name()
    check_name(name, "tuning job name")
    if len(name) > NAME_MAX:
        raise AwsError(f"tuning job name {name!r} is longer than {NAME_MAX} characters")
    if not 1 <= args.max_parallel_jobs <= args.max_jobs:
        raise AwsError("need 1 <= --max-parallel-jobs <= --max-jobs")
    if len(args.warm_start_from) > MAX_PARENTS:
        raise AwsError(f"--warm-start-from takes at most {MAX_PARENTS} parent tuning jobs")
    fixed = fixed_from_args(args)
    ranges = sagemaker_parameter_ranges(fixed)
    if not any(ranges.values()):
        raise AwsError("every searched hyperparameter is fixed by a flag: nothing to tune")
    # The training request validates everything it shares with us; spot is added below because
    # without a checkpoint location the training command (rightly, for one job) refuses it.
    job = training_job_request(
        argparse.Namespace(**{**vars(args), "spot": False, "max_wait": None})
    )
    definition = {k: job[k] for k in DEFINITION_FIELDS if k in job}
    definition["StaticHyperParameters"] = static_hyperparameters(load_config(args), fixed)
    if args.spot:
        max_wait = args.max_wait or 2 * args.max_run
        if max_wait < args.max_run:
            raise AwsError(f"--max-wait ({max_wait}) must be at least --max-run ({args.max_run})")
        definition["EnableManagedSpotTraining"] = True
        definition["StoppingCondition"]["MaxWaitTimeInSeconds"] = max_wait
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": args.strategy,
            "HyperParameterTuningJobObjective": {
                "Type": "Minimize" if OBJECTIVES[args.objective] == "minimize" else "Maximize",
                "MetricName": args.objective,
            },
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": args.max_jobs,
                "MaxParallelTrainingJobs": args.max_parallel_jobs,
            },
            "ParameterRanges": ranges,
            "TrainingJobEarlyStoppingType": args.early_stopping,
        },
        "TrainingJobDefinition": definition,
        "Tags": job["Tags"],
    }
    if args.warm_start_from:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [
                {"HyperParameterTuningJobName": parent} for parent in args.warm_start_from
            ],
            "WarmStartType": args.warm_start_type,
        }
    return request


def trial_logs(aws: Aws, name: str, out: IO[str]) -> logs.LogTail:
    """The log lines of the tuning job's training jobs, named `<name>-<NNN>-<8 hex>`."""
    pattern = re.compile(rf"{re.escape(name)}-\d{{3}}-[0-9a-f]{{8}}/")
    return logs.LogTail(aws.client("logs"), f"{name}-", out, pattern)


def wait_for(
    sm: Any,
    name: str,
    poll_s: float,
    timeout_s: float,
    out: IO[str] | None = None,
    tail: logs.LogTail | None = None,
) -> str:
    """Poll until the tuning job ends (or `timeout_s` passes); one progress line per change,
    and the trials' new log lines in between when `tail` is given."""

    def describe() -> tuple[str, str]:
        job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        status = job["HyperParameterTuningJobStatus"]
        counters = job.get("TrainingJobStatusCounters", {})
        return status, f"{name}: {status} " + " ".join(
            f"{k}={v}" for k, v in sorted(counters.items())
        )

    still_running = (
        f"{name} keeps running on AWS: report later with `dogbreed sagemaker tune --attach {name}`"
    )
    return logs.follow(describe, tail, poll_s, timeout_s, out or sys.stdout, still_running)


def list_trials(sm: Any, name: str) -> list[dict[str, Any]]:
    pages = sm.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job").paginate(
        HyperParameterTuningJobName=name, PaginationConfig={"PageSize": 100}
    )
    return [summary for page in pages for summary in page.get("TrainingJobSummaries", [])]


def _objective_value(summary: dict[str, Any]) -> float | None:
    metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric")
    return None if metric is None else float(metric["Value"])


def rank_trials(trials: Iterable[dict[str, Any]], objective_type: str) -> list[dict[str, Any]]:
    """Best first; trials without an objective value (failed, stopped early) last."""
    sign = 1.0 if objective_type == "Minimize" else -1.0

    def key(summary: dict[str, Any]) -> tuple[int, float]:
        value = _objective_value(summary)
        return (1, 0.0) if value is None else (0, sign * value)

    return sorted(trials, key=key)


def best_config(job: dict[str, Any], best: dict[str, Any]) -> TrainConfig:
    """The best trial's full config: the job's static hyperparameters plus its tuned ones."""
    static = job.get("TrainingJobDefinition", {}).get("StaticHyperParameters", {})
    return config_from_hyperparameters({**static, **best.get("TunedHyperParameters", {})})


def trials_table(trials: list[dict[str, Any]], objective: str) -> str:
    tuned = sorted({k for t in trials for k in t.get("TunedHyperParameters", {})})
    rows: list[list[object]] = [["training job", "status", objective, *tuned]]
    for t in trials:
        value = _objective_value(t)
        rows.append(
            [
                t["TrainingJobName"],
                t.get("TrainingJobStatus", "-"),
                "-" if value is None else f"{value:.4f}",
                *(t.get("TunedHyperParameters", {}).get(k, "-") for k in tuned),
            ]
        )
    return format_table(rows)


def job_and_trials(sm: Any, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """DescribeHyperParameterTuningJob and its training jobs, best first."""
    job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    objective = job["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    return job, rank_trials(list_trials(sm, name), objective["Type"])


def summary(job: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, Any]:
    """What scripts need from the tuning job (`--output json`)."""
    objective = job["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    best = trials[0] if trials and _objective_value(trials[0]) is not None else None
    return {
        "tuning_job": job["HyperParameterTuningJobName"],
        "arn": job.get("HyperParameterTuningJobArn"),
        "status": job["HyperParameterTuningJobStatus"],
        "failure_reason": job.get("FailureReason"),
        "objective": objective,
        "training_jobs": len(trials),
        "best_training_job": best and best["TrainingJobName"],
        "best_objective_value": best and _objective_value(best),
        "best_hyperparameters": best and best_config(job, best).to_hyperparameters(),
    }


def report(
    sm: Any, name: str, best_out: Path | None = None, out: IO[str] | None = None
) -> TrainConfig | None:
    """Print the job's status, its trials best first, and the best trial's hyperparameters."""
    out = out or sys.stdout
    job, trials = job_and_trials(sm, name)
    objective = job["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    print(
        f"{name}: {job['HyperParameterTuningJobStatus']}, {len(trials)} training job(s), "
        f"objective {objective['MetricName']} ({objective['Type']})",
        file=out,
    )
    if job.get("FailureReason"):
        print(f"failure: {job['FailureReason']}", file=out)
    if trials:
        print(trials_table(trials, objective["MetricName"]), file=out)
    if not trials or _objective_value(trials[0]) is None:
        print("no training job has reported the objective yet", file=out)
        return None
    best = trials[0]
    cfg = best_config(job, best)
    print(
        f"best training job: {best['TrainingJobName']} "
        f"{objective['MetricName']}={_objective_value(best):.4f}",
        file=out,
    )
    if best_out is not None:
        best_out.write_text(json.dumps(cfg.to_hyperparameters(), indent=2, sort_keys=True))
        print(
            f"best hyperparameters: {best_out}\n"
            f"train with them: dogbreed sagemaker train --hyperparameters-file {best_out} ...",
            file=out,
        )
    return cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The training job definition takes exactly `dogbreed sagemaker train`'s flags.
    training.add_arguments(parser)
    for action in parser._actions:  # argparse has no public API to relax `required`
        if action.dest in ("image", "role", "output"):
            action.required = False  # not needed with --attach; checked in main()
        if action.dest == "job_name":
            action.help = "tuning job name, at most 32 characters (default dogbreed-tune-<time>)"
    job = parser.add_argument_group("tuning job")
    job.add_argument(
        "--attach",
        metavar="JOB",
        help="follow and report an existing tuning job instead of creating one",
    )
    job.add_argument("--max-jobs", type=int, default=20, help="training jobs in all (default 20)")
    job.add_argument(
        "--max-parallel-jobs", type=int, default=2, help="training jobs at once (default 2)"
    )
    add_objective_argument(job)
    job.add_argument(
        "--strategy", choices=("Bayesian", "Random"), default="Bayesian", help="(default Bayesian)"
    )
    job.add_argument(
        "--early-stopping",
        choices=("Auto", "Off"),
        default="Auto",
        help="Auto: SageMaker stops trials whose per-epoch objective lags (default Auto)",
    )
    job.add_argument(
        "--warm-start-from",
        action="append",
        default=[],
        metavar="JOB",
        help=f"parent tuning job to learn from (repeat, at most {MAX_PARENTS})",
    )
    job.add_argument(
        "--warm-start-type",
        choices=("IdenticalDataAndAlgorithm", "TransferLearning"),
        default="IdenticalDataAndAlgorithm",
        help="(default IdenticalDataAndAlgorithm)",
    )
    job.add_argument(
        "--best-out", type=Path, help="write the best trial's hyperparameters.json here"
    )


def wait_timeout(job: dict[str, Any]) -> float:
    """How long the job can take at most: rounds of parallel trials, each up to its limit."""
    limits = job["HyperParameterTuningJobConfig"]["ResourceLimits"]
    stopping = job.get("TrainingJobDefinition", {}).get("StoppingCondition", {})
    per_trial = stopping.get("MaxWaitTimeInSeconds") or stopping.get("MaxRuntimeInSeconds", 86400)
    rounds = math.ceil(limits["MaxNumberOfTrainingJobs"] / limits["MaxParallelTrainingJobs"])
    return rounds * per_trial + 3600  # plus queueing for capacity


@aws_command
def main(args: argparse.Namespace) -> int:
    aws: Aws = aws_from_args(args)
    name = args.attach
    request = None
    if name is None:
        missing = [f"--{n}" for n in ("image", "role", "output") if not getattr(args, n)]
        if missing:
            print(
                f"error: creating a tuning job needs {', '.join(missing)} (or --attach JOB)",
                file=sys.stderr,
            )
            return 2
        request = tuning_job_request(args)
        name = request["HyperParameterTuningJobName"]
    sm = aws.client("sagemaker")
    out = progress_out(args)
    url = logs.console_url(sm.meta.region_name, "hyper-tuning-jobs", name)
    arn = None
    if request is not None:
        arn = sm.create_hyper_parameter_tuning_job(**request).get("HyperParameterTuningJobArn")
    if aws.dry_run or (request is not None and not args.wait):
        # dry run: nothing exists to follow; --no-wait: `--attach NAME` reports later
        created = [f"created tuning job {name} {arn}"] if request is not None else []
        document = {"tuning_job": name, "arn": arn, "status": None, "console_url": url}
        emit(args, aws, document, [*created, f"console: {url}"])
        return 0
    if request is not None:
        print(f"created tuning job {name} {arn}", file=out)
    print(f"console: {url}", file=out, flush=True)
    status = "Completed"
    if args.wait:
        job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        tail = trial_logs(aws, name, out) if args.logs else None
        try:
            status = wait_for(sm, name, args.poll_seconds, wait_timeout(job), out, tail)
        except KeyboardInterrupt:
            print(f"stopped waiting; {name} keeps running: --attach {name}", file=sys.stderr)
            return 130
    report(sm, name, args.best_out, out)
    if args.output_format == "json":
        emit(args, aws, {**summary(*job_and_trials(sm, name)), "console_url": url}, [])
    return 0 if status == "Completed" else 1

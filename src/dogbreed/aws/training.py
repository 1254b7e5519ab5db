"""`dogbreed sagemaker train`: one SageMaker training job running our training image.

The job gets the hyperparameters of `dogbreed.config.TrainConfig` (JSON-encoded strings, as
the SageMaker SDK sends them), the dataset as S3 channels (`training`, or `train`/`valid`/`test`),
metric definitions matching the trainer's stdout lines, and optionally managed spot capacity
with an S3 checkpoint location, network isolation and a VPC. While it waits it prints the
console URL, every status change and the job's CloudWatch log lines (`--no-logs`: not those).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import IO, Any

from dogbreed.aws import logs
from dogbreed.aws.clients import (
    Aws,
    AwsError,
    OutputFlag,
    UsageError,
    add_aws_arguments,
    aws_command,
    aws_from_args,
    emit,
    progress_out,
)
from dogbreed.aws.flags import add_wait_argument, comma_list, parse_pairs
from dogbreed.aws.names import check_name, tag_list, unique_name
from dogbreed.aws.s3uri import check_s3_uri
from dogbreed.config import (
    ConfigError,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    config_from_hyperparameters,
)

log = logging.getLogger(__name__)

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
SPLIT_CHANNELS = ("train", "valid", "test")


def metric_definitions() -> list[dict[str, str]]:
    """What SageMaker scrapes from the job's log; the trainer prints these lines."""
    from dogbreed.train.report import METRIC_DEFINITIONS

    return list(METRIC_DEFINITIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="training image URI (ECR)")
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument(
        "--output",
        action=OutputFlag,
        help="S3 URI for the model artifact (S3OutputPath), required; also `--output json`: "
        "print the result as one JSON document",
    )
    parser.add_argument("--job-name", help="training job name (default: dogbreed-<UTC time>)")
    data = parser.add_argument_group("data (either --data or all of --train/--valid/--test)")
    data.add_argument("--data", help="S3 prefix holding train/ valid/ test/ (channel `training`)")
    for split in SPLIT_CHANNELS:
        data.add_argument(f"--{split}", help=f"S3 prefix of the {split} split (channel `{split}`)")
    data.add_argument(
        "--input-mode",
        choices=("File", "FastFile"),
        default="File",
        help="File copies the data first; FastFile streams it (default File)",
    )
    res = parser.add_argument_group("resources")
    res.add_argument("--instance-type", default="ml.g4dn.xlarge", help="(default ml.g4dn.xlarge)")
    res.add_argument(
        "--instance-count", type=int, default=1, help="hosts; >1 trains data-parallel (default 1)"
    )
    res.add_argument("--volume-gb", type=int, default=30, help="EBS volume per host (default 30)")
    res.add_argument(
        "--max-run", type=int, default=4 * 3600, metavar="S", help="max runtime (default 14400 s)"
    )
    res.add_argument(
        "--spot", action="store_true", help="managed spot training (needs --checkpoint-s3)"
    )
    res.add_argument(
        "--max-wait",
        type=int,
        metavar="S",
        help="spot: max runtime + time waiting for capacity (default 2 x --max-run)",
    )
    res.add_argument(
        "--checkpoint-s3", help="S3 URI synced with /opt/ml/checkpoints (resume after interruption)"
    )
    net = parser.add_argument_group("network")
    net.add_argument(
        "--network-isolation", action="store_true", help="no outbound network from the container"
    )
    net.add_argument("--subnets", help="comma-separated VPC subnet ids (with --security-groups)")
    net.add_argument("--security-groups", help="comma-separated security group ids")
    parser.add_argument(
        "--hyperparameters-file",
        type=Path,
        help="JSON object of hyperparameters (e.g. the tuner's best); flags override it",
    )
    parser.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag (repeatable)")
    add_wait_argument(parser, "training job")
    parser.add_argument(
        "--logs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="while waiting, print the job's CloudWatch log lines (default: --logs)",
    )
    add_config_arguments(parser)
    add_aws_arguments(parser, output_flag=False)


def load_config(args: argparse.Namespace) -> TrainConfig:
    base = None
    try:
        if args.hyperparameters_file:
            data = json.loads(args.hyperparameters_file.read_text())
            if not isinstance(data, dict):
                raise AwsError(f"{args.hyperparameters_file} must hold a JSON object")
            base = config_from_hyperparameters(data)
        return config_from_args(args, base)
    except (OSError, json.JSONDecodeError, ConfigError) as exc:
        raise AwsError(f"hyperparameters: {exc}") from None


def channels(args: argparse.Namespace) -> list[dict[str, Any]]:
    splits = {s: getattr(args, s) for s in SPLIT_CHANNELS if getattr(args, s)}
    if args.data and splits:
        raise UsageError("give either --data or --train/--valid/--test, not both")
    if args.data:
        uris = {"training": args.data}
    elif len(splits) == len(SPLIT_CHANNELS):
        uris = splits
    else:
        raise UsageError("give --data, or all three of --train, --valid and --test")
    return [
        {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": check_s3_uri(uri, f"channel {name}"),
                    # Every host reads the whole split; the trainer shards it per process.
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "InputMode": args.input_mode,
        }
        for name, uri in uris.items()
    ]


def training_job_request(args: argparse.Namespace) -> dict[str, Any]:
    """The CreateTrainingJob parameters the flags describe (validated, nothing sent)."""
    if not args.output:
        raise UsageError("--output S3_URI is required: where the model artifact goes")
    name = check_name(args.job_name or unique_name("dogbreed"), "training job name")
    if args.instance_count < 1:
        raise UsageError("--instance-count must be at least 1")
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": args.max_run}
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": args.image,
            "TrainingInputMode": args.input_mode,
            "MetricDefinitions": metric_definitions(),
        },
        "RoleArn": args.role,
        "HyperParameters": load_config(args).to_hyperparameters(),
        "InputDataConfig": channels(args),
        "OutputDataConfig": {"S3OutputPath": check_s3_uri(args.output, "--output")},
        "ResourceConfig": {
            "InstanceType": args.instance_type,
            "InstanceCount": args.instance_count,
            "VolumeSizeInGB": args.volume_gb,
        },
        "StoppingCondition": stopping,
        "EnableNetworkIsolation": args.network_isolation,
        "Tags": tag_list(parse_pairs(args.tag, "--tag")),
    }
    if args.spot:
        if not args.checkpoint_s3:
            raise UsageError("--spot needs --checkpoint-s3: an interrupted job resumes from it")
        max_wait = args.max_wait or 2 * args.max_run
        if max_wait < args.max_run:
            raise UsageError(f"--max-wait ({max_wait}) must be at least --max-run ({args.max_run})")
        request["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = max_wait
    elif args.max_wait:
        raise UsageError("--max-wait only applies with --spot")
    if args.checkpoint_s3:
        request["CheckpointConfig"] = {
            "S3Uri": check_s3_uri(args.checkpoint_s3, "--checkpoint-s3"),
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        }
    if bool(args.subnets) != bool(args.security_groups):
        raise UsageError("a VPC needs both --subnets and --security-groups")
    if args.subnets:
        request["VpcConfig"] = {
            "Subnets": comma_list(args.subnets),
            "SecurityGroupIds": comma_list(args.security_groups),
        }
    return request


def follow_job(aws: Aws, sm: Any, name: str, args: argparse.Namespace, out: IO[str]) -> None:
    """Until the job ends: its status changes and (with --logs) its log lines."""
    stopping = sm.describe_training_job(TrainingJobName=name)["StoppingCondition"]
    # Queueing for capacity counts too: allow the stopping condition plus an hour.
    max_seconds = stopping.get("MaxWaitTimeInSeconds", stopping["MaxRuntimeInSeconds"]) + 3600

    def describe() -> tuple[str, str]:
        job = sm.describe_training_job(TrainingJobName=name)
        status = job["TrainingJobStatus"]
        line = f"{name}: {status} ({job.get('SecondaryStatus', '-')})"
        transitions = job.get("SecondaryStatusTransitions") or [{}]
        message = transitions[-1].get("StatusMessage")
        return status, f"{line} {message}" if message else line

    tail = logs.LogTail(aws.client("logs"), f"{name}/", out) if args.logs else None
    logs.follow(describe, tail, args.poll_seconds, max_seconds, out, f"{name} keeps running on AWS")


def report(job: dict[str, Any]) -> list[str]:
    """Human-readable summary of a DescribeTrainingJob answer."""
    lines = [
        f"training job: {job['TrainingJobName']}",
        f"status: {job['TrainingJobStatus']} ({job.get('SecondaryStatus', '-')})",
    ]
    if job.get("FailureReason"):
        lines.append(f"failure: {job['FailureReason']}")
    for metric in job.get("FinalMetricDataList", []):
        lines.append(f"metric {metric['MetricName']}: {metric['Value']:g}")
    artifact = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if artifact:
        lines.append(f"model artifact: {artifact}")
    seconds, billable = job.get("TrainingTimeInSeconds"), job.get("BillableTimeInSeconds")
    if seconds and billable is not None:
        saved = 100 * (1 - billable / seconds)
        saving = f" (spot saved {saved:.0f}%)" if billable < seconds else ""
        lines.append(f"training seconds: {seconds}, billable: {billable}{saving}")
    return lines


def summary(job: dict[str, Any]) -> dict[str, Any]:
    """What scripts need from a DescribeTrainingJob answer (`--output json`)."""
    return {
        "training_job": job.get("TrainingJobName"),
        "arn": job.get("TrainingJobArn"),
        "status": job.get("TrainingJobStatus"),
        "secondary_status": job.get("SecondaryStatus"),
        "failure_reason": job.get("FailureReason"),
        "model_artifact": job.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        "metrics": {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])},
        "training_seconds": job.get("TrainingTimeInSeconds"),
        "billable_seconds": job.get("BillableTimeInSeconds"),
    }


@aws_command
def main(args: argparse.Namespace) -> int:
    request = training_job_request(args)
    aws: Aws = aws_from_args(args)
    sm = aws.client("sagemaker")
    arn = sm.create_training_job(**request).get("TrainingJobArn")
    name = request["TrainingJobName"]
    url = logs.console_url(sm.meta.region_name, "jobs", name)
    if aws.dry_run or not args.wait:
        document = {"training_job": name, "arn": arn, "status": None, "console_url": url}
        emit(args, aws, document, [f"training job: {name}", f"console: {url}"])
        return 0
    out = progress_out(args)
    print(f"created training job {name}\nconsole: {url}", file=out, flush=True)
    follow_job(aws, sm, name, args, out)
    job = sm.describe_training_job(TrainingJobName=name)
    emit(args, aws, {**summary(job), "console_url": url}, report(job))
    return 0 if job["TrainingJobStatus"] == "Completed" else 1

"""`dogbreed sagemaker train`: one SageMaker training job running our training image.

The job gets the hyperparameters of `dogbreed.config.TrainConfig` (JSON-encoded strings, as
the SageMaker SDK sends them), the dataset as S3 channels (`training`, or `train`/`valid`/`test`),
metric definitions matching the trainer's stdout lines, and optionally managed spot capacity
with an S3 checkpoint location, network isolation and a VPC.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from dogbreed.aws.clients import Aws, AwsError, add_aws_arguments, aws_command, aws_from_args
from dogbreed.aws.common import (
    add_wait_argument,
    check_name,
    check_s3_uri,
    comma_list,
    parse_pairs,
    tag_list,
    unique_name,
)
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
        "--output", required=True, help="S3 URI for the model artifact (S3OutputPath)"
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
    add_config_arguments(parser)
    add_aws_arguments(parser)


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
        raise AwsError("give either --data or --train/--valid/--test, not both")
    if args.data:
        uris = {"training": args.data}
    elif len(splits) == len(SPLIT_CHANNELS):
        uris = splits
    else:
        raise AwsError("give --data, or all three of --train, --valid and --test")
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
    name = check_name(args.job_name or unique_name("dogbreed"), "training job name")
    if args.instance_count < 1:
        raise AwsError("--instance-count must be at least 1")
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
            raise AwsError("--spot needs --checkpoint-s3: an interrupted job resumes from it")
        max_wait = args.max_wait or 2 * args.max_run
        if max_wait < args.max_run:
            raise AwsError(f"--max-wait ({max_wait}) must be at least --max-run ({args.max_run})")
        request["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = max_wait
    elif args.max_wait:
        raise AwsError("--max-wait only applies with --spot")
    if args.checkpoint_s3:
        request["CheckpointConfig"] = {
            "S3Uri": check_s3_uri(args.checkpoint_s3, "--checkpoint-s3"),
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        }
    if bool(args.subnets) != bool(args.security_groups):
        raise AwsError("a VPC needs both --subnets and --security-groups")
    if args.subnets:
        request["VpcConfig"] = {
            "Subnets": comma_list(args.subnets),
            "SecurityGroupIds": comma_list(args.security_groups),
        }
    return request


def wait_for_job(sm: Any, name: str, poll_seconds: int, max_seconds: int) -> None:
    """Block until the job completes, fails or stops; a failed job is reported, not raised."""
    import botocore.exceptions

    waiter = sm.get_waiter("training_job_completed_or_stopped")
    # Queueing for capacity counts too: allow the stopping condition plus an hour.
    attempts = math.ceil((max_seconds + 3600) / poll_seconds)
    try:
        waiter.wait(
            TrainingJobName=name, WaiterConfig={"Delay": poll_seconds, "MaxAttempts": attempts}
        )
    except botocore.exceptions.WaiterError as exc:
        if "terminal failure state" not in str(exc):
            raise


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


@aws_command
def main(args: argparse.Namespace) -> int:
    request = training_job_request(args)
    aws: Aws = aws_from_args(args)
    sm = aws.client("sagemaker")
    sm.create_training_job(**request)
    name = request["TrainingJobName"]
    if aws.dry_run:
        return 0
    log.info("created training job %s", name)
    if not args.wait:
        print(f"training job: {name}")
        return 0
    stopping = request["StoppingCondition"]
    max_seconds = stopping.get("MaxWaitTimeInSeconds", stopping["MaxRuntimeInSeconds"])
    wait_for_job(sm, name, args.poll_seconds, max_seconds)
    job = sm.describe_training_job(TrainingJobName=name)
    print("\n".join(report(job)))
    return 0 if job["TrainingJobStatus"] == "Completed" else 1

"""`dogbreed sagemaker transform`: a Batch Transform job that scores images in S3 with a model.

The model is one that exists (`--model-name`) or one made first from `--model-data` and
`--image`, exactly as `deploy` makes its models. The input is an S3 prefix: either one image
per object (`--split-type None`, `application/x-image`) or jsonlines files of
`{"image": base64}` records (`--split-type Line`, `application/jsonlines`), which
`--strategy MultiRecord` packs many to a request. `MaxConcurrentTransforms` and
`MaxPayloadInMB` stay unset unless forced, so that SageMaker asks the container's
`GET /execution-parameters`, where the serving image answers what it can take.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from dogbreed.aws import endpoint, logs
from dogbreed.aws.clients import (
    OutputFlag,
    UsageError,
    add_aws_arguments,
    aws_command,
    aws_from_args,
    emit,
    progress_out,
)
from dogbreed.aws.flags import add_wait_argument, parse_pairs
from dogbreed.aws.names import check_name, tag_list, unique_name
from dogbreed.aws.s3uri import check_s3_uri

SPLIT_TYPES = ("None", "Line")
STRATEGIES = ("SingleRecord", "MultiRecord")
CONTENT_TYPES = {"None": "application/x-image", "Line": "application/jsonlines"}
# AWS: MaxPayloadInMB at most 100, and MaxConcurrentTransforms x MaxPayloadInMB at most 100.
MAX_PAYLOAD_MB = 100
# A transform job has no stopping condition: wait a day at most (the job keeps running).
MAX_WAIT_SECONDS = 24 * 3600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model (--model-name, or --model-data with --image --role)")
    which = model.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-name", help="an existing SageMaker model")
    which.add_argument(
        "--model-data", help="S3 URI of model.tar.gz: a model is created first, as deploy does"
    )
    model.add_argument("--image", help="serving image URI (ECR), with --model-data")
    model.add_argument("--role", help="SageMaker execution role ARN, with --model-data")
    model.add_argument(
        "--network-isolation", action="store_true", help="no outbound network from the container"
    )
    endpoint.add_environment_arguments(
        parser.add_argument_group("model server environment (with --model-data)")
    )
    data = parser.add_argument_group("data")
    data.add_argument("--input", required=True, help="S3 prefix of the objects to score")
    data.add_argument(
        "--output",
        action=OutputFlag,
        help="S3 prefix for the results (one <object>.out per input object), required; also "
        "`--output json`: print the result as one JSON document",
    )
    data.add_argument(
        "--split-type",
        choices=SPLIT_TYPES,
        default="None",
        help="None: each object is one request (an image); Line: jsonlines records, results "
        "assembled one line per record (default None)",
    )
    data.add_argument(
        "--content-type",
        help=f"(default {CONTENT_TYPES['None']}, with Line {CONTENT_TYPES['Line']})",
    )
    job = parser.add_argument_group(
        "job (unset limits: SageMaker asks the container's GET /execution-parameters)"
    )
    job.add_argument("--job-name", help="(default: dogbreed-transform-<UTC time>)")
    job.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="BatchStrategy; MultiRecord packs many lines into a request (needs --split-type "
        "Line); default: the container's",
    )
    job.add_argument(
        "--instance-type",
        default=endpoint.DEFAULT_INSTANCE_TYPE,
        help=f"(default {endpoint.DEFAULT_INSTANCE_TYPE})",
    )
    job.add_argument("--instance-count", type=int, default=1, help="(default 1)")
    job.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="MaxConcurrentTransforms per instance (default: the container's)",
    )
    job.add_argument(
        "--max-payload-mb",
        type=int,
        metavar="MB",
        help=f"MaxPayloadInMB, 1-{MAX_PAYLOAD_MB}; with --split-type None at least the largest "
        "image (default: the container's)",
    )
    parser.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag (repeatable)")
    add_wait_argument(parser, "transform job")
    add_aws_arguments(parser, output_flag=False)


def check_model_flags(args: argparse.Namespace) -> None:
    """Flags that only make a model must come with --model-data, which needs --image and --role."""
    from dogbreed.serve.settings import server_flag_values

    if args.model_data:
        if not (args.image and args.role):
            raise UsageError("--model-data needs --image and --role")
        return
    check_name(args.model_name, "model name")
    given = {
        "--image": args.image,
        "--role": args.role,
        "--network-isolation": args.network_isolation,
        "--env": args.env,
        "model server flags": server_flag_values(args),
    }
    for flag, value in given.items():
        if value:
            raise UsageError(f"{flag}: only with --model-data (--model-name's model has its own)")


def limits(args: argparse.Namespace) -> dict[str, Any]:
    """BatchStrategy, MaxConcurrentTransforms and MaxPayloadInMB: only those forced by a flag."""
    if args.strategy == "MultiRecord" and args.split_type != "Line":
        raise UsageError("--strategy MultiRecord packs split records: it needs --split-type Line")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UsageError("--max-concurrent must be at least 1")
    payload = args.max_payload_mb
    if payload is not None and not 1 <= payload <= MAX_PAYLOAD_MB:
        raise UsageError(f"--max-payload-mb must be between 1 and {MAX_PAYLOAD_MB}")
    if payload and args.max_concurrent and payload * args.max_concurrent > MAX_PAYLOAD_MB:
        raise UsageError(f"--max-concurrent x --max-payload-mb must be at most {MAX_PAYLOAD_MB}")
    forced = {
        "BatchStrategy": args.strategy,
        "MaxConcurrentTransforms": args.max_concurrent,
        "MaxPayloadInMB": payload,
    }
    return {key: value for key, value in forced.items() if value is not None}


def transform_request(args: argparse.Namespace, name: str, model: str) -> dict[str, Any]:
    """CreateTransformJob's parameters, every flag checked."""
    if not args.output:
        raise UsageError("--output s3://bucket/prefix (where the results go) is required")
    if args.instance_count < 1:
        raise UsageError("--instance-count must be at least 1")
    output = {"S3OutputPath": check_s3_uri(args.output, "--output"), "Accept": "application/json"}
    if args.split_type == "Line":
        output["AssembleWith"] = "Line"  # one output line per input line, in order
    return {
        "TransformJobName": name,
        "ModelName": model,
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": check_s3_uri(args.input, "--input"),
                }
            },
            "ContentType": args.content_type or CONTENT_TYPES[args.split_type],
            "SplitType": args.split_type,
        },
        "TransformOutput": output,
        "TransformResources": {
            "InstanceType": args.instance_type,
            "InstanceCount": args.instance_count,
        },
        "Tags": tag_list(parse_pairs(args.tag, "--tag")),
        **limits(args),
    }


def wait_for_job(sm: Any, name: str, poll_seconds: int) -> dict[str, Any]:
    """Completed, Stopped or Failed: the final DescribeTransformJob."""
    import botocore.exceptions

    try:
        sm.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName=name,
            WaiterConfig={
                "Delay": poll_seconds,
                "MaxAttempts": max(1, MAX_WAIT_SECONDS // poll_seconds),
            },
        )
    except botocore.exceptions.WaiterError as exc:
        # Failed is reported with its reason below; a timeout or a missing job is an error.
        if "TransformJobStatus" not in (exc.last_response or {}):
            raise
    return sm.describe_transform_job(TransformJobName=name)


@dataclass
class Transform:
    """What the command did, for the report."""

    request: dict[str, Any]
    model_created: bool
    console_url: str
    arn: str | None = None
    described: dict[str, Any] | None = None  # the final DescribeTransformJob when waited for


def report(done: Transform) -> tuple[dict[str, Any], list[str]]:
    """The `--output json` document and the lines for people."""
    described = done.described or {}
    name, model = done.request["TransformJobName"], done.request["ModelName"]
    output = done.request["TransformOutput"]["S3OutputPath"]
    document = {
        "transform_job": name,
        "arn": described.get("TransformJobArn", done.arn),
        "model": model,
        "model_created": done.model_created,
        "status": described.get("TransformJobStatus"),
        "failure_reason": described.get("FailureReason") or None,
        "input": done.request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"],
        "output": output,
        "console_url": done.console_url,
    }
    lines = [f"transform job: {name}" + ("" if described else " (not waiting)")]
    lines.append(
        f"model: {model}" + (" (created; reuse: --model-name)" if done.model_created else "")
    )
    if described:
        lines.append(f"status: {document['status']}")
    if document["failure_reason"]:
        lines.append(f"failure: {document['failure_reason']}")
    lines += [f"output: {output}", f"console: {done.console_url}"]
    return document, lines


@aws_command
def main(args: argparse.Namespace) -> int:
    check_model_flags(args)
    name = check_name(args.job_name or unique_name("dogbreed-transform"), "transform job name")
    # One name for the job and the model it makes, as deploy names its model and config.
    request = transform_request(args, name, args.model_name or name)
    container = endpoint.model_container(args, serverless=False) if args.model_data else None
    aws = aws_from_args(args)
    sm = aws.client("sagemaker")
    if container:
        endpoint.create_model(sm, name, args, container, request["Tags"])
    url = logs.console_url(sm.meta.region_name, "transform-jobs", name)
    done = Transform(request, bool(container), url)
    done.arn = sm.create_transform_job(**request).get("TransformJobArn")
    if args.wait and not aws.dry_run:
        print(f"created transform job {name}\nconsole: {url}", file=progress_out(args), flush=True)
        done.described = wait_for_job(sm, name, args.poll_seconds)
    emit(args, aws, *report(done))
    # Not waited for: the request went in. Waited for: only Completed scored everything.
    return 0 if done.described is None or done.described["TransformJobStatus"] == "Completed" else 1

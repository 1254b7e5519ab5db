"""`dogbreed sagemaker invoke`: send one image to an endpoint, print its top-k breeds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dogbreed.aws.clients import (
    AwsError,
    UsageError,
    add_aws_arguments,
    aws_command,
    aws_from_args,
    emit,
)

# SageMaker real-time endpoints take request bodies up to 6 MB.
MAX_BODY = 6 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--image", required=True, type=Path, help="image file to classify")
    parser.add_argument("--top-k", type=int, help="how many breeds to return (server default 5)")
    add_aws_arguments(parser)


@aws_command
def main(args: argparse.Namespace) -> int:
    path: Path = args.image
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    body = path.read_bytes()
    if len(body) > MAX_BODY:
        raise UsageError(
            f"{path} is {len(body)} bytes: SageMaker endpoints take at most {MAX_BODY}"
        )
    if args.top_k is not None and args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    params: dict[str, Any] = {
        "EndpointName": args.endpoint_name,
        "Body": body,
        # The serving stack decodes the bytes itself, whatever the image format.
        "ContentType": "application/x-image",
        "Accept": "application/json",
    }
    if args.top_k is not None:
        params["CustomAttributes"] = f"top_k={args.top_k}"
    aws = aws_from_args(args)
    response = aws.client("sagemaker-runtime").invoke_endpoint(**params)
    answer = None
    if not aws.dry_run:
        text = response["Body"].read().decode("utf-8", errors="replace")
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            raise AwsError(
                f"the endpoint answered something other than JSON: {text[:200]!r}"
            ) from None
    document = {"endpoint": args.endpoint_name, "image": str(path), "result": answer}
    emit(args, aws, document, [json.dumps(answer, indent=2)])
    return 0

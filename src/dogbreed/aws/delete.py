"""`dogbreed sagemaker delete`: the endpoint, its scaling target, its alarms, and every endpoint
config and model that `deploy` made for it (those carrying the `dogbreed:endpoint` tag)."""

from __future__ import annotations

import argparse
from typing import Any

from dogbreed.aws import alarms, autoscale
from dogbreed.aws.clients import (
    Aws,
    add_aws_arguments,
    aws_command,
    aws_from_args,
    describe_endpoint,
    emit,
)
from dogbreed.aws.names import TAG_KEY, check_name, unique_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-name", required=True)
    add_aws_arguments(parser)


def tagged(sm: Any, kind: str, endpoint: str) -> list[str]:
    """Names of the models or endpoint configs that `deploy` created for `endpoint`."""
    list_call, key, name_key = {
        "model": ("list_models", "Models", "ModelName"),
        "config": ("list_endpoint_configs", "EndpointConfigs", "EndpointConfigName"),
    }[kind]
    arn_key = "ModelArn" if kind == "model" else "EndpointConfigArn"
    names = []
    # deploy's names are unique_name(endpoint): the endpoint name, maybe cut, then a timestamp.
    prefix = unique_name(endpoint).rsplit("-", 3)[0]
    for page in sm.get_paginator(list_call).paginate(NameContains=prefix):
        for item in page.get(key, []):
            tags = sm.list_tags(ResourceArn=item[arn_key]).get("Tags", [])
            if {"Key": TAG_KEY, "Value": endpoint} in tags:
                names.append(item[name_key])
    return names


def delete(aws: Aws, endpoint: str) -> list[str]:
    """Remove scaling, endpoint, alarms, configs and models of `endpoint`; what was removed."""
    sm = aws.client("sagemaker")
    aas = aws.client("application-autoscaling")
    removed = []
    existing = describe_endpoint(sm, endpoint)
    if existing:
        for variant in existing.get("ProductionVariants", []):
            rid = autoscale.resource_id(endpoint, variant["VariantName"])
            scaling = autoscale.current(aas, rid)
            if scaling:
                autoscale.remove(aas, rid, scaling)
                removed.append(f"scalable target {rid}")
        sm.delete_endpoint(EndpointName=endpoint)
        removed.append(f"endpoint {endpoint}")
    # Alarms outlive the endpoint otherwise (and cost money); only those `deploy` made.
    removed += [
        f"alarm {name}" for name in alarms.delete_alarms(aws.client("cloudwatch"), endpoint)
    ]
    # The endpoint is gone (or going), so none of its configs is in use any more.
    for name in tagged(sm, "config", endpoint):
        sm.delete_endpoint_config(EndpointConfigName=name)
        removed.append(f"endpoint config {name}")
    for name in tagged(sm, "model", endpoint):
        sm.delete_model(ModelName=name)
        removed.append(f"model {name}")
    return removed


@aws_command
def main(args: argparse.Namespace) -> int:
    aws = aws_from_args(args)
    removed = delete(aws, check_name(args.endpoint_name, "endpoint name"))
    lines = [f"deleted {what}" for what in removed] or ["nothing to delete"]
    emit(args, aws, {"endpoint": args.endpoint_name, "deleted": removed}, lines)
    return 0

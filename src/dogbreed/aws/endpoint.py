"""`dogbreed sagemaker deploy|invoke|delete`: a real-time endpoint for the serving image.

deploy: a new model and endpoint config (named `<endpoint>-<UTC time>`, tagged
`dogbreed:endpoint=<endpoint>`), then `create_endpoint`, or, when the endpoint exists,
`update_endpoint` with a blue/green deployment (optional CloudWatch alarms roll it back).
Nothing in use is deleted. An autoscaled variant whose instance type changes is deregistered,
updated and registered again with its policies. `delete` removes the endpoint, its scaling
target and every config and model carrying the tag.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from dogbreed.aws import autoscale
from dogbreed.aws.clients import Aws, AwsError, add_aws_arguments, aws_command, aws_from_args
from dogbreed.aws.common import (
    TAG_KEY,
    add_wait_argument,
    check_name,
    check_s3_uri,
    describe_endpoint,
    parse_pairs,
    tag_list,
    unique_name,
)

log = logging.getLogger(__name__)

# SageMaker real-time endpoints take request bodies up to 6 MB.
MAX_BODY = 6 * 1024 * 1024
ROUTING = ("ALL_AT_ONCE", "CANARY", "LINEAR")


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    from dogbreed.serve.settings import add_server_arguments

    parser.add_argument("--endpoint-name", required=True, help="endpoint to create or update")
    parser.add_argument("--model-data", required=True, help="S3 URI of model.tar.gz")
    parser.add_argument("--image", required=True, help="serving image URI (ECR)")
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument("--instance-type", default="ml.m5.large", help="(default ml.m5.large)")
    parser.add_argument("--instance-count", type=int, default=1, help="(default 1)")
    parser.add_argument(
        "--variant-name", default=autoscale.DEFAULT_VARIANT, help="(default AllTraffic)"
    )
    parser.add_argument(
        "--startup-timeout",
        type=int,
        default=600,
        metavar="S",
        help="container health-check timeout at start (default 600 s)",
    )
    parser.add_argument(
        "--network-isolation", action="store_true", help="no outbound network from the container"
    )
    serve = parser.add_argument_group("model server environment")
    add_server_arguments(serve)
    serve.add_argument(
        "--timeout-seconds",
        type=int,
        default=60,
        help="SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS (default 60, SageMaker's limit)",
    )
    serve.add_argument("--env", action="append", metavar="KEY=VALUE", help="any other variable")
    update = parser.add_argument_group("update of an existing endpoint (blue/green)")
    update.add_argument("--traffic-routing", choices=ROUTING, default="ALL_AT_ONCE")
    update.add_argument(
        "--traffic-percent",
        type=int,
        default=10,
        help="CANARY: canary size; LINEAR: step size, in %% of capacity (default 10)",
    )
    update.add_argument(
        "--wait-interval",
        type=int,
        default=300,
        metavar="S",
        help="bake time between traffic shifts (default 300 s)",
    )
    update.add_argument(
        "--termination-wait",
        type=int,
        default=300,
        metavar="S",
        help="keep the old fleet this long after the shift (default 300 s)",
    )
    update.add_argument(
        "--rollback-alarm",
        action="append",
        metavar="ALARM",
        help="CloudWatch alarm that rolls the update back (repeatable)",
    )
    capture = parser.add_argument_group("data capture")
    capture.add_argument("--capture-s3", help="S3 URI: capture requests and responses there")
    capture.add_argument("--capture-percent", type=int, default=100, help="(default 100)")
    parser.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag (repeatable)")
    add_wait_argument(parser, "endpoint")
    add_aws_arguments(parser)


def add_invoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--image", required=True, type=Path, help="image file to classify")
    parser.add_argument("--top-k", type=int, help="how many breeds to return (server default 5)")
    add_aws_arguments(parser)


def add_delete_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-name", required=True)
    add_aws_arguments(parser)


def model_environment(args: argparse.Namespace) -> dict[str, str]:
    """Container environment, checked with the serving image's own settings parser."""
    from dogbreed.serve.settings import (
        ENV_NAMES,
        ServeSettings,
        SettingsError,
        server_flag_values,
    )

    env = {ENV_NAMES[field]: str(value) for field, value in server_flag_values(args).items()}
    env["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"] = str(args.timeout_seconds)
    env.update(parse_pairs(args.env, "--env"))
    try:
        ServeSettings.from_env(env)
    except SettingsError as exc:
        raise AwsError(f"model server environment: {exc}") from None
    return env


def deployment_config(args: argparse.Namespace) -> dict[str, Any]:
    routing: dict[str, Any] = {
        "Type": args.traffic_routing,
        "WaitIntervalInSeconds": args.wait_interval,
    }
    if args.traffic_routing != "ALL_AT_ONCE":
        if not 1 <= args.traffic_percent <= 100:
            raise AwsError("--traffic-percent must be between 1 and 100")
        key = "CanarySize" if args.traffic_routing == "CANARY" else "LinearStepSize"
        routing[key] = {"Type": "CAPACITY_PERCENT", "Value": args.traffic_percent}
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": args.termination_wait,
        }
    }
    if args.rollback_alarm:
        config["AutoRollbackConfiguration"] = {
            "Alarms": [{"AlarmName": name} for name in args.rollback_alarm]
        }
    return config


def current_instance_type(sm: Any, endpoint: dict[str, Any], variant: str) -> str | None:
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    for v in config.get("ProductionVariants", []):
        if v["VariantName"] == variant:
            return v.get("InstanceType")
    return None


def wait_in_service(sm: Any, endpoint: str, poll_seconds: int) -> dict[str, Any]:
    import botocore.exceptions

    try:
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName=endpoint,
            # Creating an endpoint takes minutes; a blue/green update with bake time longer.
            WaiterConfig={"Delay": poll_seconds, "MaxAttempts": max(1, 7200 // poll_seconds)},
        )
    except botocore.exceptions.WaiterError as exc:
        if "terminal failure state" not in str(exc):
            raise
    return sm.describe_endpoint(EndpointName=endpoint)


def deploy(aws: Aws, args: argparse.Namespace) -> tuple[str, dict[str, Any] | None]:
    """Create or blue/green-update the endpoint: (new config name, final DescribeEndpoint when
    waited for)."""
    endpoint = check_name(args.endpoint_name, "endpoint name")
    if args.instance_count < 1:
        raise AwsError("--instance-count must be at least 1")
    tags = tag_list({**parse_pairs(args.tag, "--tag"), TAG_KEY: endpoint})
    environment = model_environment(args)
    update_policy = deployment_config(args)  # checked before anything is created
    sm = aws.client("sagemaker")
    # A dry run sees no endpoint: it prints the create path.
    existing = None if aws.dry_run else describe_endpoint(sm, endpoint)
    if existing:
        status = existing["EndpointStatus"]
        if status in autoscale.BUSY_STATES:
            raise AwsError(f"endpoint {endpoint!r} is {status}: wait until that finishes")
        if status == "Failed":
            raise AwsError(
                f"endpoint {endpoint!r} is Failed ({existing.get('FailureReason', '')}): "
                "run `dogbreed sagemaker delete` first"
            )
    name = unique_name(endpoint)
    container = {
        "Image": args.image,
        "ModelDataUrl": check_s3_uri(args.model_data, "--model-data"),
        "Environment": environment,
    }
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=args.role,
        PrimaryContainer=container,
        EnableNetworkIsolation=args.network_isolation,
        Tags=tags,
    )
    config: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [
            {
                "VariantName": args.variant_name,
                "ModelName": name,
                "InitialInstanceCount": args.instance_count,
                "InstanceType": args.instance_type,
                "InitialVariantWeight": 1.0,
                "ContainerStartupHealthCheckTimeoutInSeconds": args.startup_timeout,
            }
        ],
        "Tags": tags,
    }
    if args.capture_s3:
        config["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": args.capture_percent,
            "DestinationS3Uri": check_s3_uri(args.capture_s3, "--capture-s3"),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        }
    sm.create_endpoint_config(**config)
    suspended = None
    rid = autoscale.resource_id(endpoint, args.variant_name)
    aas = aws.client("application-autoscaling")
    if existing is None:
        sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=name, Tags=tags)
        log.info("creating endpoint %s with config %s", endpoint, name)
    else:
        # AWS refuses to change the instance type of an autoscaled variant.
        if current_instance_type(sm, existing, args.variant_name) != args.instance_type:
            suspended = autoscale.suspend(aas, rid)
        try:
            sm.update_endpoint(
                EndpointName=endpoint, EndpointConfigName=name, DeploymentConfig=update_policy
            )
        except Exception:
            if suspended:  # the endpoint did not change: put its scaling back as it was
                autoscale.restore(aas, rid, suspended)
            raise
        log.info("updating endpoint %s: %s -> %s", endpoint, existing["EndpointConfigName"], name)
    if aws.dry_run or not (args.wait or suspended):
        return name, None
    try:
        described = wait_in_service(sm, endpoint, args.poll_seconds)
    except BaseException:
        if suspended:  # not restored while the update may still run: say how to, then fail
            log.error(
                "autoscaling of %s is still off; once the endpoint is InService: %s",
                endpoint,
                restore_command(endpoint, args.variant_name, suspended),
            )
        raise
    if suspended:
        autoscale.restore(aas, rid, suspended)
    return name, described


def restore_command(endpoint: str, variant: str, scaling: autoscale.Scaling) -> str:
    """The `dogbreed sagemaker autoscale` call that registers `scaling` again."""
    configs = [p.get("TargetTrackingScalingPolicyConfiguration", {}) for p in scaling.policies]
    target = next((c["TargetValue"] for c in configs if "TargetValue" in c), None)
    return (
        f"dogbreed sagemaker autoscale --endpoint-name {endpoint} --variant-name {variant} "
        f"--min {scaling.target['MinCapacity']} --max {scaling.target['MaxCapacity']}"
        + (f" --target {target}" if target is not None else "")
    )


@aws_command
def deploy_main(args: argparse.Namespace) -> int:
    aws = aws_from_args(args)
    config, described = deploy(aws, args)
    if aws.dry_run:
        return 0
    if described is None:
        print(f"endpoint: {args.endpoint_name} (not waiting)\nconfig: {config}")
        return 0
    print(f"endpoint: {described['EndpointName']}")
    print(f"status: {described['EndpointStatus']}")
    print(f"config: {described['EndpointConfigName']}")
    if described.get("FailureReason"):
        print(f"failure: {described['FailureReason']}")
    if described["EndpointConfigName"] != config:
        # A blue/green update that hit a rollback alarm (or failed) ends InService on the old one.
        serving = described["EndpointConfigName"]
        print(f"not deployed: the endpoint still serves {serving}, not {config}")
        return 1
    return 0 if described["EndpointStatus"] == "InService" else 1


@aws_command
def invoke_main(args: argparse.Namespace) -> int:
    path: Path = args.image
    if not path.is_file():
        raise AwsError(f"{path}: no such file")
    body = path.read_bytes()
    if len(body) > MAX_BODY:
        raise AwsError(f"{path} is {len(body)} bytes: SageMaker endpoints take at most {MAX_BODY}")
    if args.top_k is not None and args.top_k < 1:
        raise AwsError("--top-k must be at least 1")
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
    if aws.dry_run:
        return 0
    text = response["Body"].read().decode("utf-8", errors="replace")
    try:
        print(json.dumps(json.loads(text), indent=2))
    except json.JSONDecodeError:
        raise AwsError(f"the endpoint answered something other than JSON: {text[:200]!r}") from None
    return 0


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
    """Remove scaling, endpoint, configs and models of `endpoint`; what was removed."""
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
    # The endpoint is gone (or going), so none of its configs is in use any more.
    for name in tagged(sm, "config", endpoint):
        sm.delete_endpoint_config(EndpointConfigName=name)
        removed.append(f"endpoint config {name}")
    for name in tagged(sm, "model", endpoint):
        sm.delete_model(ModelName=name)
        removed.append(f"model {name}")
    return removed


@aws_command
def delete_main(args: argparse.Namespace) -> int:
    aws = aws_from_args(args)
    removed = delete(aws, check_name(args.endpoint_name, "endpoint name"))
    if not aws.dry_run:
        print("\n".join(f"deleted {what}" for what in removed) or "nothing to delete")
    return 0

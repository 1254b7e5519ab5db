"""`dogbreed sagemaker deploy`: a real-time or serverless endpoint for the serving image
(`invoke` and `delete` are aws/invoke.py and aws/delete.py).

deploy: a new model and endpoint config (named `<endpoint>-<UTC time>`, tagged
`dogbreed:endpoint=<endpoint>`), then `create_endpoint`, or, when the endpoint exists,
`update_endpoint` with a blue/green or rolling deployment (CloudWatch alarms roll it back;
`--create-alarms` makes them) that keeps the running instance count and weight
(`RetainAllVariantProperties`) unless `--instance-count` changes the count on purpose. Nothing
in use is deleted. An autoscaled variant whose instance type changes is deregistered, updated
and registered again with its policies.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import Any

from dogbreed.aws import alarms, autoscale
from dogbreed.aws.clients import (
    Aws,
    AwsError,
    UsageError,
    add_aws_arguments,
    aws_command,
    aws_from_args,
    describe_endpoint,
    emit,
)
from dogbreed.aws.flags import add_wait_argument, parse_pairs
from dogbreed.aws.names import TAG_KEY, check_name, tag_list, unique_name
from dogbreed.aws.s3uri import check_s3_uri

log = logging.getLogger(__name__)

ROUTING = ("ALL_AT_ONCE", "CANARY", "LINEAR")
# AWS's limits, in % of the new fleet: a canary at most half of it, linear steps 10-50%.
TRAFFIC_PERCENT = {"CANARY": (1, 50), "LINEAR": (10, 50)}
UPDATE_POLICIES = ("blue-green", "rolling")
MAX_ROLLBACK_ALARMS = 10  # AutoRollbackConfiguration's limit
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
# Serverless inference: 1-6 GB of memory in 1 GB steps, at most 200 concurrent invocations.
SERVERLESS_MEMORY_MB = tuple(range(1024, 6145, 1024))
MAX_SERVERLESS_CONCURRENCY = 200
# A serverless container has no GPU and 1-6 GB: one MMS worker (each worker holds a copy of the
# model) on ONNX Runtime (the CPU serving image has no torch). Flags override these.
SERVERLESS_SERVER_DEFAULTS = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "DOGBREED_BACKEND": "onnx"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-name", required=True, help="endpoint to create or update")
    parser.add_argument("--model-data", required=True, help="S3 URI of model.tar.gz")
    parser.add_argument("--image", required=True, help="serving image URI (ECR)")
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN")
    parser.add_argument(
        "--instance-type", help=f"(default {DEFAULT_INSTANCE_TYPE}; not with serverless)"
    )
    parser.add_argument(
        "--instance-count",
        type=int,
        help="create: default 1; update: default the running count (autoscaling's, kept)",
    )
    parser.add_argument(
        "--variant-name", default=autoscale.DEFAULT_VARIANT, help="(default AllTraffic)"
    )
    parser.add_argument(
        "--startup-timeout",
        type=int,
        default=600,
        metavar="S",
        help="container health-check timeout at start (default 600 s; instances only)",
    )
    parser.add_argument(
        "--network-isolation", action="store_true", help="no outbound network from the container"
    )
    serverless = parser.add_argument_group("serverless inference (instead of instances)")
    serverless.add_argument(
        "--serverless-memory",
        type=int,
        metavar="MB",
        help="memory per container: 1024, 2048, ... 6144 (with --serverless-concurrency)",
    )
    serverless.add_argument(
        "--serverless-concurrency",
        type=int,
        metavar="N",
        help=f"most concurrent invocations, 1-{MAX_SERVERLESS_CONCURRENCY}",
    )
    add_environment_arguments(parser.add_argument_group("model server environment"))
    add_update_arguments(parser.add_argument_group("update of an existing endpoint"))
    alarms.add_arguments(parser.add_argument_group("rollback alarms"))
    capture = parser.add_argument_group("data capture")
    capture.add_argument("--capture-s3", help="S3 URI: capture requests and responses there")
    capture.add_argument("--capture-percent", type=int, default=100, help="(default 100)")
    parser.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag (repeatable)")
    add_wait_argument(parser, "endpoint")
    add_aws_arguments(parser)


def add_environment_arguments(serve: argparse._ArgumentGroup) -> None:
    """The flags `model_environment` reads (deploy, and transform's `--model-data`)."""
    from dogbreed.serve.settings import add_server_arguments

    add_server_arguments(serve)
    serve.add_argument(
        "--timeout-seconds",
        type=int,
        default=60,
        help="SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS (default 60, SageMaker's limit)",
    )
    serve.add_argument("--env", action="append", metavar="KEY=VALUE", help="any other variable")


def add_update_arguments(update: argparse._ArgumentGroup) -> None:
    update.add_argument(
        "--update-policy",
        choices=UPDATE_POLICIES,
        default="blue-green",
        help="blue-green: a new fleet, then traffic shifts; rolling: instances replaced in "
        "batches, less extra capacity (default blue-green)",
    )
    update.add_argument(
        "--traffic-routing",
        choices=ROUTING,
        default="ALL_AT_ONCE",
        help="blue-green traffic shift (default ALL_AT_ONCE)",
    )
    update.add_argument(
        "--traffic-percent",
        type=int,
        default=10,
        help="CANARY: canary size, 1-50; LINEAR: step size, 10-50; in %% of the new fleet's "
        "capacity (default 10)",
    )
    update.add_argument(
        "--rolling-batch-percent",
        type=int,
        default=25,
        help="rolling: instances replaced per step, 5-50%% of the variant's (default 25)",
    )
    update.add_argument(
        "--wait-interval",
        type=int,
        default=300,
        metavar="S",
        help="bake time between traffic shifts or rolling steps, 0-3600 (default 300 s)",
    )
    update.add_argument(
        "--termination-wait",
        type=int,
        default=300,
        metavar="S",
        help="blue-green: keep the old fleet this long after the shift (default 300 s)",
    )
    update.add_argument(
        "--rollback-alarm",
        action="append",
        metavar="ALARM",
        help="CloudWatch alarm that rolls the update back (repeatable)",
    )


def model_environment(args: argparse.Namespace, serverless: bool) -> dict[str, str]:
    """Container environment, checked with the serving image's own settings parser."""
    from dogbreed.serve.settings import ENV_NAMES, ServeSettings, server_flag_values
    from dogbreed.settings import SettingError

    env = dict(SERVERLESS_SERVER_DEFAULTS) if serverless else {}
    env.update({ENV_NAMES[f]: str(value) for f, value in server_flag_values(args).items()})
    env["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"] = str(args.timeout_seconds)
    env.update(parse_pairs(args.env, "--env"))
    try:
        settings = ServeSettings.from_env(env)
    except SettingError as exc:
        raise UsageError(f"model server environment: {exc}") from None
    if serverless and settings.backend == "torch":
        raise UsageError("serverless endpoints have no GPU and the CPU serving image no torch")
    return env


@dataclass(frozen=True)
class Variant:
    """The production variant the flags ask for: instances, or serverless."""

    name: str
    instance_type: str | None = None  # None: serverless
    instance_count: int | None = None  # None: create 1; update: keep the running count
    startup_timeout: int = 600
    serverless: dict[str, int] | None = None

    def spec(self, model: str) -> dict[str, Any]:
        """The ProductionVariant of a new endpoint config."""
        spec: dict[str, Any] = {
            "VariantName": self.name,
            "ModelName": model,
            "InitialVariantWeight": 1.0,
        }
        if self.serverless:
            spec["ServerlessConfig"] = self.serverless
        else:
            spec["InstanceType"] = self.instance_type
            spec["InitialInstanceCount"] = self.instance_count or 1
            spec["ContainerStartupHealthCheckTimeoutInSeconds"] = self.startup_timeout
        return spec


def serverless_config(args: argparse.Namespace) -> dict[str, int] | None:
    memory, concurrency = args.serverless_memory, args.serverless_concurrency
    if memory is None and concurrency is None:
        return None
    if memory is None or concurrency is None:
        raise UsageError("serverless needs both --serverless-memory and --serverless-concurrency")
    if memory not in SERVERLESS_MEMORY_MB:
        raise UsageError(f"--serverless-memory must be one of {SERVERLESS_MEMORY_MB} (MB)")
    if not 1 <= concurrency <= MAX_SERVERLESS_CONCURRENCY:
        raise UsageError(
            f"--serverless-concurrency must be between 1 and {MAX_SERVERLESS_CONCURRENCY}"
        )
    return {"MemorySizeInMB": memory, "MaxConcurrency": concurrency}


def variant_from(args: argparse.Namespace) -> Variant:
    serverless = serverless_config(args)
    if args.instance_count is not None and args.instance_count < 1:
        raise UsageError("--instance-count must be at least 1")
    if serverless is None:
        return Variant(
            args.variant_name,
            args.instance_type or DEFAULT_INSTANCE_TYPE,
            args.instance_count,
            args.startup_timeout,
        )
    # What AWS does not offer serverless endpoints, refused before anything is created.
    refused = {
        "--instance-type/--instance-count": args.instance_type or args.instance_count,
        "--capture-s3 (data capture)": args.capture_s3,
        "--network-isolation": args.network_isolation,
        "--update-policy rolling": args.update_policy == "rolling",
        "a GPU image (no GPU)": args.image.rsplit(":", 1)[-1].endswith("gpu"),
    }
    for what, given in refused.items():
        if given:
            raise UsageError(f"serverless endpoints do not take {what}")
    return Variant(args.variant_name, serverless=serverless)


def deployment_config(args: argparse.Namespace, rollback_alarms: list[str]) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig: blue/green or rolling, with the rollback alarms."""
    # AWS's ranges; botocore checks only the minimum.
    if not 0 <= args.wait_interval <= 3600:
        raise UsageError("--wait-interval must be between 0 and 3600 seconds")
    if not 0 <= args.termination_wait <= 3600:
        raise UsageError("--termination-wait must be between 0 and 3600 seconds")
    if len(rollback_alarms) > MAX_ROLLBACK_ALARMS:
        raise UsageError(
            f"AWS rolls an update back on at most {MAX_ROLLBACK_ALARMS} alarms, not "
            f"{len(rollback_alarms)} (--rollback-alarm, plus 2 with --create-alarms)"
        )
    if args.update_policy == "rolling":
        if not 5 <= args.rolling_batch_percent <= 50:
            raise UsageError("--rolling-batch-percent must be between 5 and 50 (AWS's range)")
        batch = {"Type": "CAPACITY_PERCENT", "Value": args.rolling_batch_percent}
        config: dict[str, Any] = {
            "RollingUpdatePolicy": {
                "MaximumBatchSize": batch,
                "WaitIntervalInSeconds": args.wait_interval,
            }
        }
    else:
        config = {"BlueGreenUpdatePolicy": blue_green_policy(args)}
    if rollback_alarms:
        config["AutoRollbackConfiguration"] = {
            "Alarms": [{"AlarmName": name} for name in rollback_alarms]
        }
    return config


def blue_green_policy(args: argparse.Namespace) -> dict[str, Any]:
    routing: dict[str, Any] = {
        "Type": args.traffic_routing,
        "WaitIntervalInSeconds": args.wait_interval,
    }
    if args.traffic_routing != "ALL_AT_ONCE":
        low, high = TRAFFIC_PERCENT[args.traffic_routing]
        if not low <= args.traffic_percent <= high:
            raise UsageError(
                f"--traffic-percent must be between {low} and {high} for "
                f"{args.traffic_routing} (AWS's range)"
            )
        key = "CanarySize" if args.traffic_routing == "CANARY" else "LinearStepSize"
        routing[key] = {"Type": "CAPACITY_PERCENT", "Value": args.traffic_percent}
    return {
        "TrafficRoutingConfiguration": routing,
        "TerminationWaitInSeconds": args.termination_wait,
    }


def running_variant(sm: Any, endpoint: dict[str, Any], variant: str) -> dict[str, Any]:
    """The variant as it runs (DescribeEndpoint: counts, weight) and as configured (its
    endpoint config: instance type or serverless)."""
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variants = config.get("ProductionVariants", [])
    configured = next((v for v in variants if v["VariantName"] == variant), None)
    if configured is None:
        # AWS's blue/green and rolling updates need the new config to keep the variant name.
        raise UsageError(
            f"endpoint {endpoint['EndpointName']!r} has no variant {variant!r} (it has "
            f"{[v['VariantName'] for v in variants]}): an update keeps the variant name; "
            "pass that one as --variant-name"
        )
    running = next(
        (v for v in endpoint.get("ProductionVariants", []) if v["VariantName"] == variant), {}
    )
    return {**configured, **running}


def is_serverless(variant: dict[str, Any]) -> bool:
    return any(k in variant for k in ("ServerlessConfig", "CurrentServerlessConfig"))


@dataclass
class UpdatePlan:
    """How `update_endpoint` treats the running variant."""

    request: dict[str, Any] = field(default_factory=dict)  # RetainAllVariantProperties & co
    kept: dict[str, Any] = field(default_factory=dict)  # what stays as it runs
    notes: list[str] = field(default_factory=list)


def update_plan(current: dict[str, Any], wanted: Variant, policy: str) -> UpdatePlan:
    """Keep the running instance count and weight (autoscaling's), as AWS asks for autoscaled
    variants: without RetainAllVariantProperties the new config's InitialInstanceCount would
    apply. `--instance-count` changes the count on purpose; data capture always follows this
    deploy's flags."""
    plan = UpdatePlan()
    if is_serverless(current) and policy == "rolling":
        # AWS's deployment guardrails exclude serverless endpoints from rolling updates.
        raise UsageError(
            "the endpoint is serverless: AWS updates it blue/green only (--update-policy "
            "blue-green), not rolling"
        )
    if is_serverless(current) or wanted.serverless:
        if wanted.serverless and not is_serverless(current):
            raise UsageError(
                "AWS cannot turn an instance-based endpoint into a serverless one: delete it "
                "first or deploy under another --endpoint-name"
            )
        if not wanted.serverless:
            plan.notes.append("serverless -> instances: AWS cannot turn it back to serverless")
        return plan  # no instance count to keep
    excluded = [{"VariantPropertyType": "DataCaptureConfig"}]
    kept = {"weight": current.get("CurrentWeight")}
    if wanted.instance_count is None:
        kept["instance_count"] = current.get("CurrentInstanceCount")
    else:
        excluded.append({"VariantPropertyType": "DesiredInstanceCount"})
    plan.kept = {k: v for k, v in kept.items() if v is not None}
    plan.request = {
        "RetainAllVariantProperties": True,
        "ExcludeRetainedVariantProperties": excluded,
    }
    return plan


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


def check_updatable(existing: dict[str, Any], endpoint: str) -> None:
    status = existing["EndpointStatus"]
    if status in autoscale.BUSY_STATES:
        raise AwsError(f"endpoint {endpoint!r} is {status}: wait until that finishes")
    if status == "Failed":
        raise AwsError(
            f"endpoint {endpoint!r} is Failed ({existing.get('FailureReason', '')}): "
            "run `dogbreed sagemaker delete` first"
        )


def model_container(args: argparse.Namespace, serverless: bool) -> dict[str, Any]:
    """The model's PrimaryContainer: `--image`, `--model-data` and the checked environment."""
    return {
        "Image": args.image,
        "ModelDataUrl": check_s3_uri(args.model_data, "--model-data"),
        "Environment": model_environment(args, serverless),
    }


def create_model(
    sm: Any, name: str, args: argparse.Namespace, container: dict[str, Any], tags: list[Any]
) -> None:
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=args.role,
        PrimaryContainer=container,
        EnableNetworkIsolation=args.network_isolation,
        Tags=tags,
    )


@dataclass(frozen=True)
class Resources:
    """The model's container and the endpoint config's data capture, checked before any call."""

    container: dict[str, Any]
    capture: dict[str, Any] | None

    @classmethod
    def from_args(cls, args: argparse.Namespace, variant: Variant) -> Resources:
        container = model_container(args, bool(variant.serverless))
        if not args.capture_s3:
            return cls(container, None)
        capture = {
            "EnableCapture": True,
            "InitialSamplingPercentage": args.capture_percent,
            "DestinationS3Uri": check_s3_uri(args.capture_s3, "--capture-s3"),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        }
        return cls(container, capture)


def create_model_and_config(
    sm: Any, args: argparse.Namespace, variant: Variant, resources: Resources, tags: list[Any]
) -> str:
    """The new model and endpoint config (one name, both tagged); the name."""
    name = unique_name(args.endpoint_name)
    create_model(sm, name, args, resources.container, tags)
    config: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [variant.spec(name)],
        "Tags": tags,
    }
    if resources.capture:
        config["DataCaptureConfig"] = resources.capture
    sm.create_endpoint_config(**config)
    return name


@dataclass
class Deployment:
    """What `deploy` did, for the report."""

    endpoint: str
    variant: Variant
    config: str = ""
    updated: bool = False
    plan: UpdatePlan = field(default_factory=UpdatePlan)
    current: dict[str, Any] = field(default_factory=dict)  # the running variant (updates)
    alarms: list[str] = field(default_factory=list)
    described: dict[str, Any] | None = None  # the final DescribeEndpoint when waited for


def deploy(aws: Aws, args: argparse.Namespace) -> Deployment:
    """Create the endpoint, or update it with a blue/green or rolling deployment."""
    done = Deployment(check_name(args.endpoint_name, "endpoint name"), variant_from(args))
    # Every flag is checked before the first call.
    resources = Resources.from_args(args, done.variant)
    thresholds = alarms.thresholds_from(args)
    created = alarms.alarm_names(done.endpoint, done.variant.name) if args.create_alarms else ()
    policy = deployment_config(args, [*(args.rollback_alarm or []), *created])
    tags = tag_list({**parse_pairs(args.tag, "--tag"), TAG_KEY: done.endpoint})
    sm = aws.client("sagemaker")
    # A dry run sees no endpoint: it prints the create path.
    existing = None if aws.dry_run else describe_endpoint(sm, done.endpoint)
    if existing:
        check_updatable(existing, done.endpoint)
        done.updated = True
        done.current = running_variant(sm, existing, done.variant.name)
        done.plan = update_plan(done.current, done.variant, args.update_policy)
    done.config = create_model_and_config(sm, args, done.variant, resources, tags)
    if args.create_alarms:
        cloudwatch = aws.client("cloudwatch")
        done.alarms = alarms.put_alarms(cloudwatch, done.endpoint, done.variant.name, thresholds)
    if done.updated:
        update(aws, sm, args, policy, done)
        return done
    sm.create_endpoint(EndpointName=done.endpoint, EndpointConfigName=done.config, Tags=tags)
    log.info("creating endpoint %s with config %s", done.endpoint, done.config)
    if args.wait and not aws.dry_run:
        done.described = wait_in_service(sm, done.endpoint, args.poll_seconds)
    return done


def update(
    aws: Aws, sm: Any, args: argparse.Namespace, policy: dict[str, Any], done: Deployment
) -> None:
    """update_endpoint. AWS refuses to change the instance type of an autoscaled variant: its
    scaling is deregistered first and registered again once the endpoint is InService."""
    aas = aws.client("application-autoscaling")
    rid = autoscale.resource_id(done.endpoint, done.variant.name)
    type_changes = done.current.get("InstanceType") != done.variant.instance_type
    suspended = autoscale.suspend(aas, rid) if type_changes else None
    try:
        sm.update_endpoint(
            EndpointName=done.endpoint,
            EndpointConfigName=done.config,
            DeploymentConfig=policy,
            **done.plan.request,
        )
    except Exception:
        if suspended:  # the endpoint did not change: put its scaling back as it was
            autoscale.restore(aas, rid, suspended)
        raise
    log.info("updating endpoint %s to %s", done.endpoint, done.config)
    if not (args.wait or suspended):
        return
    try:
        done.described = wait_in_service(sm, done.endpoint, args.poll_seconds)
    except BaseException:
        if suspended:  # not restored while the update may still run: say how to, then fail
            log.error(
                "autoscaling of %s is still off; once the endpoint is InService: %s",
                done.endpoint,
                restore_command(done.endpoint, done.variant.name, suspended),
            )
        raise
    if suspended:
        autoscale.restore(aas, rid, suspended)


def restore_command(endpoint: str, variant: str, scaling: autoscale.Scaling) -> str:
    """The `dogbreed sagemaker autoscale` call that registers `scaling` again."""
    configs = [p.get("TargetTrackingScalingPolicyConfiguration", {}) for p in scaling.policies]
    target = next((c["TargetValue"] for c in configs if "TargetValue" in c), None)
    return (
        f"dogbreed sagemaker autoscale --endpoint-name {endpoint} --variant-name {variant} "
        f"--min {scaling.target['MinCapacity']} --max {scaling.target['MaxCapacity']}"
        + (f" --target {target}" if target is not None else "")
    )


def deploy_lines(done: Deployment) -> list[str]:
    """The report for people."""
    described = done.described or {}
    lines = [f"endpoint: {done.endpoint}" + ("" if described else " (not waiting)")]
    if described:
        lines.append(f"status: {described['EndpointStatus']}")
    lines.append(f"config: {described.get('EndpointConfigName', done.config)}")
    if described.get("FailureReason"):
        lines.append(f"failure: {described['FailureReason']}")
    kept = done.plan.kept
    if kept:  # RetainAllVariantProperties: nothing else would keep them
        count, weight = kept.get("instance_count"), kept.get("weight")
        what = [f"{count} instance(s)"] if count is not None else []
        what += [f"weight {weight:g}"] if weight is not None else []
        lines.append(
            f"kept from the running variant: {', '.join(what)} (RetainAllVariantProperties; "
            "--instance-count N changes the count)"
        )
    if done.alarms:
        lines.append(f"alarms: {', '.join(done.alarms)} (roll an update back)")
    lines.extend(f"note: {note}" for note in done.plan.notes)
    if described and described["EndpointConfigName"] != done.config:
        # A blue/green update that hit a rollback alarm (or failed) ends InService on the old one.
        lines.append(
            f"not deployed: the endpoint still serves {described['EndpointConfigName']}, "
            f"not {done.config}"
        )
    return lines


def deployed(done: Deployment) -> bool:
    """Waited for: InService on the NEW config. Not waited for: the request went in."""
    if done.described is None:
        return True
    return (
        done.described["EndpointStatus"] == "InService"
        and done.described["EndpointConfigName"] == done.config
    )


def deploy_document(done: Deployment) -> dict[str, Any]:
    described = done.described or {}
    return {
        "endpoint": done.endpoint,
        "endpoint_arn": described.get("EndpointArn"),
        "operation": "update" if done.updated else "create",
        "config": done.config,
        "model": done.config,
        "serving_config": described.get("EndpointConfigName"),
        "status": described.get("EndpointStatus"),
        "failure_reason": described.get("FailureReason"),
        "deployed": deployed(done) if described else None,
        "variant": done.variant.name,
        "instance_type": done.variant.instance_type,
        "serverless": done.variant.serverless,
        "kept": done.plan.kept,
        "alarms": done.alarms,
        "notes": done.plan.notes,
    }


@aws_command
def main(args: argparse.Namespace) -> int:
    aws = aws_from_args(args)
    done = deploy(aws, args)
    emit(args, aws, deploy_document(done), deploy_lines(done))
    return 0 if aws.dry_run or deployed(done) else 1

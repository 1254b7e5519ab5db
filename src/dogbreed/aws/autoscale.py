"""`dogbreed sagemaker autoscale`: target tracking on invocations per instance for one variant.

The target value is invocations per instance PER MINUTE. It should come from a measurement:
`dogbreed loadtest` prints `max_rps x safety_factor x 60` for one serving container (AWS's rule).
`suspend`/`restore` let `deploy` change the instance type of an autoscaled variant, which AWS
refuses while the variant is a registered scalable target. A serverless variant has no
instances to scale: it scales itself up to its MaxConcurrency, so it is refused here.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

log = logging.getLogger(__name__)

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
DEFAULT_POLICY = "dogbreed-invocations-per-instance"
DEFAULT_VARIANT = "AllTraffic"
BUSY_STATES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


@dataclass
class Scaling:
    """A registered target with its policies, as Application Auto Scaling describes them."""

    target: dict[str, Any]
    policies: list[dict[str, Any]] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-name", required=True, help="the endpoint to scale")
    parser.add_argument("--variant-name", default=DEFAULT_VARIANT, help="(default AllTraffic)")
    parser.add_argument("--min", type=int, default=1, help="fewest instances (default 1)")
    parser.add_argument("--max", type=int, default=4, help="most instances (default 4)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--target",
        type=float,
        help="invocations per instance per minute; take it from `dogbreed loadtest`",
    )
    target.add_argument(
        "--loadtest-json",
        type=Path,
        metavar="FILE",
        help="read the target from `dogbreed loadtest --json FILE`",
    )
    parser.add_argument(
        "--scale-in-cooldown", type=int, default=600, metavar="S", help="(default 600 s)"
    )
    parser.add_argument(
        "--scale-out-cooldown", type=int, default=60, metavar="S", help="(default 60 s)"
    )
    parser.add_argument("--policy-name", default=DEFAULT_POLICY, help=f"(default {DEFAULT_POLICY})")
    parser.add_argument(
        "--off", action="store_true", help="remove the policy and deregister the variant"
    )
    add_aws_arguments(parser)


def target_from(args: argparse.Namespace) -> float:
    if args.loadtest_json is None:
        if args.target is None or args.target <= 0:
            raise UsageError("--target (or --loadtest-json) is required: run `dogbreed loadtest`")
        return args.target
    try:
        value = json.loads(args.loadtest_json.read_text())["autoscaling_target"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"{args.loadtest_json}: no loadtest result ({exc})") from None
    if not isinstance(value, int | float) or value <= 0:
        raise UsageError(f"{args.loadtest_json}: autoscaling_target must be positive")
    return float(value)


def check_variant(sm: Any, endpoint: str, variant: str) -> None:
    """Application Auto Scaling needs an InService endpoint with that variant."""
    described = describe_endpoint(sm, endpoint)
    if described is None:
        raise AwsError(f"endpoint {endpoint!r} not found: deploy it first")
    status = described["EndpointStatus"]
    if status != "InService":
        raise AwsError(f"endpoint {endpoint!r} is {status}: autoscaling needs it InService")
    variants = {v["VariantName"]: v for v in described.get("ProductionVariants", [])}
    if variant not in variants:
        raise AwsError(
            f"endpoint {endpoint!r} has no variant {variant!r} (it has {list(variants)})"
        )
    if "CurrentServerlessConfig" in variants[variant]:
        raise AwsError(
            f"variant {variant!r} of {endpoint!r} is serverless: it has no instances to scale and "
            "scales itself up to its MaxConcurrency (set it with `deploy --serverless-concurrency`)"
        )


def policy_configuration(target: float, scale_in: int, scale_out: int) -> dict[str, Any]:
    return {
        "TargetValue": target,
        "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
        "ScaleInCooldown": scale_in,
        "ScaleOutCooldown": scale_out,
    }


def current(aas: Any, rid: str) -> Scaling | None:
    targets = aas.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION
    ).get("ScalableTargets", [])
    if not targets:
        return None
    policies = aas.describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION
    ).get("ScalingPolicies", [])
    return Scaling(targets[0], policies)


def register(aas: Any, rid: str, min_capacity: int, max_capacity: int) -> None:
    aas.register_scalable_target(
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        MinCapacity=min_capacity,
        MaxCapacity=max_capacity,
    )


def put_policy(aas: Any, rid: str, name: str, configuration: dict[str, Any]) -> None:
    aas.put_scaling_policy(
        PolicyName=name,
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=configuration,
    )


def remove(aas: Any, rid: str, scaling: Scaling) -> None:
    for policy in scaling.policies:
        aas.delete_scaling_policy(
            PolicyName=policy["PolicyName"],
            ServiceNamespace=NAMESPACE,
            ResourceId=rid,
            ScalableDimension=DIMENSION,
        )
    aas.deregister_scalable_target(
        ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION
    )


def suspend(aas: Any, rid: str) -> Scaling | None:
    """Deregister (remembering target and policies) so that the variant can be updated."""
    scaling = current(aas, rid)
    if scaling:
        log.info("deregistering %s from autoscaling for the update", rid)
        remove(aas, rid, scaling)
    return scaling


def restore(aas: Any, rid: str, scaling: Scaling) -> None:
    """Register the target again, then its target-tracking policies, as they were."""
    register(aas, rid, scaling.target["MinCapacity"], scaling.target["MaxCapacity"])
    for policy in scaling.policies:
        configuration = policy.get("TargetTrackingScalingPolicyConfiguration")
        if configuration:
            put_policy(aas, rid, policy["PolicyName"], configuration)
    log.info("registered %s for autoscaling again", rid)


@aws_command
def main(args: argparse.Namespace) -> int:
    aws: Aws = aws_from_args(args)
    rid = resource_id(args.endpoint_name, args.variant_name)
    document: dict[str, Any] = {"resource_id": rid, "autoscaling": not args.off}
    aas = aws.client("application-autoscaling")
    if args.off:
        scaling = None if aws.dry_run else current(aas, rid)
        if scaling:
            remove(aas, rid, scaling)
        document["removed"] = bool(scaling)
        line = (
            f"autoscaling removed from {rid}"
            if scaling
            else f"{rid} was not registered for autoscaling"
        )
        emit(args, aws, document, [line])
        return 0
    target = target_from(args)
    if not 1 <= args.min <= args.max:
        raise UsageError(f"need 1 <= --min ({args.min}) <= --max ({args.max})")
    if not aws.dry_run:
        check_variant(aws.client("sagemaker"), args.endpoint_name, args.variant_name)
    # The target must exist before its policy (AWS checks; moto does not).
    register(aas, rid, args.min, args.max)
    configuration = policy_configuration(target, args.scale_in_cooldown, args.scale_out_cooldown)
    put_policy(aas, rid, args.policy_name, configuration)
    document.update(min=args.min, max=args.max, policy=args.policy_name, **configuration)
    line = (
        f"autoscaling {rid}: {args.min}-{args.max} instances, target {target:g} "
        f"invocations/instance/minute, cooldowns in {args.scale_in_cooldown} s / out "
        f"{args.scale_out_cooldown} s"
    )
    emit(args, aws, document, [line])
    return 0

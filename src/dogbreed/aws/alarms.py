"""CloudWatch alarms on an endpoint variant, for the auto-rollback of blue/green and rolling
updates: server errors (`Invocation5XXErrors`) and model latency (`ModelLatency`).

Both watch `AWS/SageMaker` with the dimensions EndpointName and VariantName. A blue/green or
rolling update keeps the variant name, so the alarms see the old and the new fleet together:
if either trips while traffic shifts, SageMaker rolls the update back. The alarms carry the
tag `dogbreed:endpoint=<endpoint>`, so that `delete` removes exactly these.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from dogbreed.aws.clients import UsageError
from dogbreed.aws.names import TAG_KEY, tag_list

NAMESPACE = "AWS/SageMaker"
PERIOD_S = 60  # SageMaker publishes endpoint metrics every minute
DEFAULT_ERROR_RATE = 0.05
DEFAULT_LATENCY_MS = 1000.0  # the `dogbreed loadtest` p95 bound
DEFAULT_PERIODS = 2


@dataclass(frozen=True)
class Thresholds:
    error_rate: float = DEFAULT_ERROR_RATE
    latency_ms: float = DEFAULT_LATENCY_MS
    periods: int = DEFAULT_PERIODS

    def check(self) -> None:
        if not 0 < self.error_rate < 1:
            raise UsageError("--alarm-5xx-rate must be a fraction between 0 and 1, e.g. 0.05")
        if self.latency_ms <= 0:
            raise UsageError("--alarm-latency-ms must be positive")
        if not 1 <= self.periods <= 60:
            raise UsageError("--alarm-periods must be between 1 and 60 minutes")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--create-alarms",
        action="store_true",
        help="create (or update) the 5xx and latency alarms of the variant and roll updates "
        "back on them",
    )
    group.add_argument(
        "--alarm-5xx-rate",
        type=float,
        default=DEFAULT_ERROR_RATE,
        metavar="FRACTION",
        help=f"alarm when this fraction of invocations fails with a 5xx (default "
        f"{DEFAULT_ERROR_RATE})",
    )
    group.add_argument(
        "--alarm-latency-ms",
        type=float,
        default=DEFAULT_LATENCY_MS,
        metavar="MS",
        help=f"alarm when the p95 ModelLatency exceeds this (default {DEFAULT_LATENCY_MS:g})",
    )
    group.add_argument(
        "--alarm-periods",
        type=int,
        default=DEFAULT_PERIODS,
        metavar="N",
        help=f"consecutive 1-minute periods over the threshold (default {DEFAULT_PERIODS})",
    )


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    thresholds = Thresholds(args.alarm_5xx_rate, args.alarm_latency_ms, args.alarm_periods)
    thresholds.check()
    return thresholds


def alarm_names(endpoint: str, variant: str) -> tuple[str, str]:
    """The names of the variant's two alarms: server errors, latency."""
    return f"{endpoint}-{variant}-5xx", f"{endpoint}-{variant}-latency"


def alarm_requests(endpoint: str, variant: str, thresholds: Thresholds) -> list[dict[str, Any]]:
    """The PutMetricAlarm parameters of the two alarms."""
    errors_name, latency_name = alarm_names(endpoint, variant)
    common = {
        "Namespace": NAMESPACE,
        "Dimensions": [
            {"Name": "EndpointName", "Value": endpoint},
            {"Name": "VariantName", "Value": variant},
        ],
        "Period": PERIOD_S,
        "EvaluationPeriods": thresholds.periods,
        "DatapointsToAlarm": thresholds.periods,
        "ComparisonOperator": "GreaterThanThreshold",
        # No traffic is no evidence against the new fleet.
        "TreatMissingData": "notBreaching",
        "Tags": tag_list({TAG_KEY: endpoint}),
    }
    return [
        {
            **common,
            "AlarmName": errors_name,
            "AlarmDescription": f"{endpoint}/{variant}: share of invocations answered 5xx",
            "MetricName": "Invocation5XXErrors",
            # One data point per invocation (0 or 1): the average is the error rate.
            "Statistic": "Average",
            "Threshold": thresholds.error_rate,
        },
        {
            **common,
            "AlarmName": latency_name,
            "AlarmDescription": f"{endpoint}/{variant}: p95 model latency",
            "MetricName": "ModelLatency",
            "ExtendedStatistic": "p95",
            "Threshold": thresholds.latency_ms * 1000,  # the metric is in microseconds
            "Unit": "Microseconds",
        },
    ]


def put_alarms(cloudwatch: Any, endpoint: str, variant: str, thresholds: Thresholds) -> list[str]:
    """Create or update both alarms (PutMetricAlarm replaces a same-named one); their names."""
    requests = alarm_requests(endpoint, variant, thresholds)
    for request in requests:
        cloudwatch.put_metric_alarm(**request)
    return [r["AlarmName"] for r in requests]


def tagged_alarms(cloudwatch: Any, endpoint: str) -> list[str]:
    """Names of the alarms that `put_alarms` made for `endpoint` (by tag, not by name alone:
    an endpoint `dogs-v2` has alarms starting `dogs-` too)."""
    names = []
    pages = cloudwatch.get_paginator("describe_alarms").paginate(
        AlarmNamePrefix=f"{endpoint}-", AlarmTypes=["MetricAlarm"]
    )
    for page in pages:
        for alarm in page.get("MetricAlarms", []):
            tags = cloudwatch.list_tags_for_resource(ResourceARN=alarm["AlarmArn"]).get("Tags", [])
            if {"Key": TAG_KEY, "Value": endpoint} in tags:
                names.append(alarm["AlarmName"])
    return names


def delete_alarms(cloudwatch: Any, endpoint: str) -> list[str]:
    names = tagged_alarms(cloudwatch, endpoint)
    if names:
        cloudwatch.delete_alarms(AlarmNames=names)
    return names

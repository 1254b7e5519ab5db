"""`dogbreed sagemaker train|tune|deploy|invoke|transform|autoscale|delete`.

The action modules are small and import no boto3 at module level, so all of them are loaded
to build the parser.
"""

from __future__ import annotations

import argparse
import importlib

# action -> (module, add_arguments, main, one-line help)
ACTIONS: dict[str, tuple[str, str, str, str]] = {
    "train": ("dogbreed.aws.training", "add_arguments", "main", "run a SageMaker training job"),
    "tune": (
        "dogbreed.aws.tuning",
        "add_arguments",
        "main",
        "run a SageMaker hyperparameter tuning job",
    ),
    "deploy": (
        "dogbreed.aws.endpoint",
        "add_deploy_arguments",
        "deploy_main",
        "create or blue/green-update a real-time endpoint",
    ),
    "invoke": (
        "dogbreed.aws.invoke",
        "add_arguments",
        "main",
        "send an image to an endpoint, print the top-k breeds",
    ),
    "autoscale": (
        "dogbreed.aws.autoscale",
        "add_arguments",
        "main",
        "target-tracking autoscaling of an endpoint variant",
    ),
    "transform": (
        "dogbreed.aws.transform",
        "add_arguments",
        "main",
        "score images in S3 with a Batch Transform job",
    ),
    "delete": (
        "dogbreed.aws.delete",
        "add_arguments",
        "main",
        "delete an endpoint with its configs, models and scaling",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (module_name, add_name, main_name, help_text) in ACTIONS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        getattr(module, add_name)(subparser)
        subparser.set_defaults(_action_main=getattr(module, main_name))


def main(args: argparse.Namespace) -> int:
    return int(args._action_main(args) or 0)

"""`dogbreed sagemaker train|tune|deploy|invoke|transform|autoscale|delete`.

Each action is a module exposing `add_arguments(parser)` and `main(args) -> int`, as the
`dogbreed` commands are (dogbreed/cli.py). They import no boto3 at module level, so all of them
are loaded to build the parser.
"""

from __future__ import annotations

import argparse
import importlib

# action -> (module, one-line help)
ACTIONS: dict[str, tuple[str, str]] = {
    "train": ("dogbreed.aws.training", "run a SageMaker training job"),
    "tune": ("dogbreed.aws.tuning", "run a SageMaker hyperparameter tuning job"),
    "deploy": ("dogbreed.aws.endpoint", "create or blue/green-update a real-time endpoint"),
    "invoke": ("dogbreed.aws.invoke", "send an image to an endpoint, print the top-k breeds"),
    "autoscale": ("dogbreed.aws.autoscale", "target-tracking autoscaling of an endpoint variant"),
    "transform": ("dogbreed.aws.transform", "score images in S3 with a Batch Transform job"),
    "delete": ("dogbreed.aws.delete", "delete an endpoint with its configs, models and scaling"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (module_name, help_text) in ACTIONS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(subparser)
        subparser.set_defaults(_action_main=module.main)


def main(args: argparse.Namespace) -> int:
    return int(args._action_main(args) or 0)

"""The `dogbreed` command: one entry point, one subcommand per concern.

Each subcommand lives in a small `cli` module of its own package that exposes
`add_arguments(parser)` and `main(args) -> int`. Those modules import nothing heavy at module
level (no torch, boto3 or optuna), so `dogbreed --help` and `dogbreed serve` stay fast and the
CPU serving image works without torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dogbreed import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("dogbreed.train.cli", "train a model (SageMaker `train` contract or local flags)"),
    "data": ("dogbreed.data.cli", "generate sample data, fetch the dataset, upload it to S3"),
    "serve": ("dogbreed.serve.cli", "serve a model directory over HTTP (/ping, /invocations)"),
    "export": (
        "dogbreed.serve.export",
        "measure a model directory's reduced-precision paths against fp32 (agreement gate)",
    ),
    "tune": ("dogbreed.tune.cli", "hyperparameter search with Optuna on this machine"),
    "sagemaker": ("dogbreed.aws.cli", "train, tune, deploy, invoke, autoscale, delete on AWS"),
    "loadtest": ("dogbreed.serve.loadtest", "measure one serving container's sustainable req/s"),
    "lambda": ("dogbreed.aws.lambda_deploy", "package and deploy the Lambda client"),
}
# Actions that a higher package supplies to a lower package's command, so that the lower one
# never imports it: command -> [(action, module with add_arguments and main, one-line help)].
# The command's module takes them with `add_action(actions, name, help, add_arguments, main)`.
ADDED_ACTIONS: dict[str, list[tuple[str, str, str]]] = {
    "data": [
        (
            "upload",
            "dogbreed.aws.s3",
            "upload a folder to S3, keeping relative paths; skips objects already there",
        )
    ],
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only `command`'s module is imported (all of them when it is None)."""
    parser = argparse.ArgumentParser(prog="dogbreed", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dogbreed {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if command in (None, name):
            module = importlib.import_module(module_name)
            actions = module.add_arguments(subparser)
            for action, added_name, added_help in ADDED_ACTIONS.get(name, []):
                added = importlib.import_module(added_name)
                module.add_action(actions, action, added_help, added.add_arguments, added.main)
            subparser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args._module.main(args) or 0)

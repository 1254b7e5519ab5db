"""`dogbreed tune`: hyperparameter search with Optuna on this machine.

Trainer flags (`--epochs 2 --backbone resnet18 ...`) fix those values: a fixed parameter is
removed from the search space. Everything else in `dogbreed.tune.space.SEARCH_SPACE` is searched.
optuna and torch are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dogbreed.config import ConfigError, add_config_arguments, config_from_args
from dogbreed.tune.space import add_objective_argument, fixed_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path, help="dataset root holding train/ valid/ test/"
    )
    parser.add_argument(
        "--n-trials",
        type=int,
        default=20,
        help="stop when the study holds this many finished (complete or pruned) trials; "
        "re-running continues an interrupted study (default 20)",
    )
    parser.add_argument(
        "--storage",
        help="Optuna RDB storage URL, e.g. sqlite:///study.db (default: OUTPUT_DIR/study.db)",
    )
    parser.add_argument("--study-name", default="dogbreed", help="study name (default dogbreed)")
    add_objective_argument(parser)
    parser.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        default="median",
        help="stops hopeless trials from their per-epoch validation metric (default median)",
    )
    parser.add_argument(
        "--pruner-startup-trials",
        type=int,
        default=3,
        help="median pruner: finished trials needed before any pruning (default 3)",
    )
    parser.add_argument(
        "--pruner-warmup-epochs",
        type=int,
        default=0,
        help="median pruner: never prune at or before this epoch (default 0)",
    )
    parser.add_argument(
        "--timeout", type=float, help="stop starting new trials after this many seconds"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("tuning"),
        help="trial-NNNN/ directories, best/input/config/hyperparameters.json, plots and the "
        "default study.db (default ./tuning)",
    )
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.n_trials < 1:
        print("error: --n-trials must be at least 1", file=sys.stderr)
        return 2
    from dogbreed.data.layout import DataError, find_splits
    from dogbreed.model.build import ModelError
    from dogbreed.tune import local

    bad_input = (ConfigError, DataError, ModelError, local.TuneError)
    try:
        base = config_from_args(args)
        find_splits(args.data)  # a bad layout is reported now, not after the first trial starts
    except bad_input as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = local.StudySettings(
        storage=args.storage or f"sqlite:///{output_dir / 'study.db'}",
        study_name=args.study_name,
        objective=args.objective,
        pruner=args.pruner,
        pruner_startup_trials=args.pruner_startup_trials,
        pruner_warmup_epochs=args.pruner_warmup_epochs,
        fixed=fixed_from_args(args),
    )
    status = 0
    try:
        study = local.run_study(
            args.data.resolve(), output_dir, base, settings, args.n_trials, args.timeout
        )
    except bad_input as exc:
        # A bad storage or study, or a trial the trainer refused (e.g. an unknown backbone).
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # The finished trials are stored; report them, and the next run continues.
        print("interrupted: re-run the same command to continue the study", file=sys.stderr)
        study = local.open_study(settings, base)
        status = 130

    print(local.summary_table(study, settings.fixed))
    for path in local.save_plots(study, output_dir):
        print(f"plot: {path}")
    best_file = local.write_best(study, output_dir)
    if best_file is None:
        print("no trial completed: nothing to recommend", file=sys.stderr)
        return status or 1
    best = local.best_trial(study)
    print(
        f"best: trial {best.number} {settings.objective}={best.value:.4f}, "
        f"its model: {best.user_attrs['dir']}/model\n"
        f"best hyperparameters: {best_file}\n"
        f"train with them: dogbreed train --base-dir {output_dir / local.BEST_BASE_DIR} "
        f"--data {args.data}\n"
        f"on SageMaker: dogbreed sagemaker train --hyperparameters-file {best_file} ..."
    )
    return status

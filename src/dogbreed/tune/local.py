"""Local hyperparameter search with Optuna, through the real trainer, in this process.

One study lives in an RDB storage (`sqlite:///study.db`): it survives the process, so
re-running with the same storage and study name continues it, and several `dogbreed tune`
processes pointed at the same storage share the work. Each trial trains with
`dogbreed.train.loop.train` into `OUTPUT_DIR/trial-NNNN/`; after every epoch its validation
metric goes to `trial.report`, and the pruner stops trials that are clearly behind.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from dogbreed.config import TrainConfig
from dogbreed.tune.space import OBJECTIVES, active_space, suggest_config
from dogbreed.tune.table import format_table

log = logging.getLogger(__name__)

# A process killed mid-trial leaves that trial RUNNING; after this long without a heartbeat the
# next run marks it FAIL and re-queues its parameters once.
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 180
# `dogbreed train --base-dir OUTPUT/best` reads this file as SageMaker would (and writes the
# final model to OUTPUT/best/model); `dogbreed sagemaker train --hyperparameters-file` takes it too.
BEST_BASE_DIR = "best"
BEST_FILE = "input/config/hyperparameters.json"
HISTORY_PLOT = "optimization_history.png"
INTERMEDIATE_PLOT = "intermediate_values.png"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

TrainFn = Callable[..., dict[str, float]]


class TuneError(ValueError):
    """A tuning request that cannot run as asked; the message says what to change."""


@dataclass
class StudySettings:
    storage: str
    study_name: str = "dogbreed"
    objective: str = "valid_loss"
    pruner: str = "median"
    pruner_startup_trials: int = 3
    pruner_warmup_epochs: int = 0
    fixed: frozenset[str] = field(default_factory=frozenset)


def make_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.pruner_startup_trials,
            n_warmup_steps=settings.pruner_warmup_epochs,
        )
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(f"unknown pruner {settings.pruner!r}: use median, hyperband or none")


def _storage(url: str) -> optuna.storages.RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        # Several tuner processes may write the same file: wait for the lock, don't fail.
        engine_kwargs["connect_args"] = {"timeout": 60}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=HEARTBEAT_GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=1
                ),
            )
        except Exception as exc:  # sqlalchemy's errors: bad URL, missing directory, ...
            raise TuneError(f"cannot open study storage {url!r}: {exc}") from None


def open_study(settings: StudySettings, base: TrainConfig) -> optuna.Study:
    """Create the study, or load it and check that it was created for the same question."""
    if settings.objective not in OBJECTIVES:
        raise TuneError(f"unknown objective {settings.objective!r}: one of {', '.join(OBJECTIVES)}")
    fixed_hps = {k: v for k, v in base.to_hyperparameters().items() if k in settings.fixed}
    study = optuna.create_study(
        storage=_storage(settings.storage),
        study_name=settings.study_name,
        direction=OBJECTIVES[settings.objective],
        pruner=make_pruner(settings),
        load_if_exists=True,
    )
    stored = study.user_attrs
    if not stored:
        study.set_user_attr("objective", settings.objective)
        study.set_user_attr("fixed", fixed_hps)
        return study
    # Trials scored on another metric or with other fixed values are not comparable.
    if stored.get("objective") != settings.objective or stored.get("fixed") != fixed_hps:
        raise TuneError(
            f"study {settings.study_name!r} in {settings.storage} was created with objective "
            f"{stored.get('objective')} and fixed hyperparameters {stored.get('fixed')}; this run "
            f"asks for {settings.objective} and {fixed_hps}: use the same flags or a new "
            "--study-name"
        )
    return study


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def trial_dir(output_dir: Path, number: int) -> Path:
    return output_dir / f"trial-{number:04d}"


def make_objective(
    data: Path,
    output_dir: Path,
    base: TrainConfig,
    settings: StudySettings,
    train_fn: TrainFn,
) -> Callable[[optuna.Trial], float]:
    from dogbreed.train.environment import JobPaths

    def objective(trial: optuna.Trial) -> float:
        cfg = suggest_config(trial, base, settings.fixed)
        directory = trial_dir(output_dir, trial.number)
        trial.set_user_attr("dir", str(directory))
        trial.set_user_attr("hyperparameters", cfg.to_hyperparameters())
        paths = JobPaths.from_root(
            data, directory / "model", directory / "output", directory / "checkpoints"
        )

        def report(epoch: int, metrics: dict[str, float]) -> None:
            value = float(metrics[settings.objective])
            trial.report(value, epoch)
            if not math.isfinite(value) or trial.should_prune():
                raise optuna.TrialPruned(f"{settings.objective}={value:.4f} at epoch {epoch}")

        result = train_fn(cfg, paths, report)
        value = float(result[settings.objective])
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{settings.objective} is {value}")
        return value

    return objective


def run_study(
    data: Path,
    output_dir: Path,
    base: TrainConfig,
    settings: StudySettings,
    n_trials: int,
    timeout: float | None = None,
    train_fn: TrainFn | None = None,
) -> optuna.Study:
    """Run trials until the study holds `n_trials` finished ones (or `timeout` seconds pass)."""
    if train_fn is None:
        from dogbreed.train.loop import train as train_fn
    output_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(settings, base)
    remaining = n_trials - len(finished_trials(study))
    if remaining <= 0:
        log.info("study %s already has %d finished trials", settings.study_name, n_trials)
        return study
    log.info("study %s: running up to %d more trial(s)", settings.study_name, remaining)
    study.optimize(
        make_objective(data, output_dir, base, settings, train_fn),
        n_trials=remaining,
        timeout=timeout,
        # Other processes may share the study: stop when it, not this process, is done.
        callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=FINISHED)],
        gc_after_trial=True,
    )
    return study


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial if completed else None


def write_best(study: optuna.Study, output_dir: Path) -> Path | None:
    """The best trial's full config, SageMaker-style, in OUTPUT/best/input/config/."""
    best = best_trial(study)
    if best is None:
        return None
    path = output_dir / BEST_BASE_DIR / BEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(best.user_attrs["hyperparameters"], indent=2, sort_keys=True))
    return path


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def summary_table(study: optuna.Study, fixed: Iterable[str] = ()) -> str:
    """One row per trial: state, objective, epochs run, time, searched parameters."""
    best = best_trial(study)
    names = [p.name for p in active_space(fixed)]
    header = ["trial", "state", study.user_attrs.get("objective", "value"), "epochs", "time_s"]
    rows = [header + names]
    for t in study.get_trials(deepcopy=False):
        duration = t.duration.total_seconds() if t.duration else None
        mark = "*" if best is not None and t.number == best.number else ""
        rows.append(
            [
                f"{t.number}{mark}",
                t.state.name,
                _format_value(t.value),
                _format_value(t.last_step),
                _format_value(round(duration, 1) if duration is not None else None),
                *(_format_value(t.params.get(n)) for n in names),
            ]
        )
    return format_table(rows)


def save_plots(study: optuna.Study, output_dir: Path) -> list[Path]:
    """Optimisation history and per-epoch validation curves (matplotlib, PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots = []
    if best_trial(study) is not None:
        plots.append((HISTORY_PLOT, ovm.plot_optimization_history))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots.append((INTERMEDIATE_PLOT, ovm.plot_intermediate_values))
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in plots:
            ax = plot(study)
            ax.figure.savefig(output_dir / name, dpi=100, bbox_inches="tight")
            plt.close(ax.figure)
            written.append(output_dir / name)
    return written

"""`dogbreed train`: the SageMaker `train` contract, and the same job from flags on EC2/laptop.

On SageMaker (`docker run IMAGE train`) no flag is given: hyperparameters, channels and output
locations come from `$SAGEMAKER_BASE_DIR` (default /opt/ml). Flags override them.

Exit codes: 0 done; 1 an unexpected error, a storage problem (disk full, permission denied) or
a lost peer host; 2 a bad hyperparameter, data layout, environment or checkpoint; 143 (128 +
SIGTERM) stopped by SIGTERM after writing a checkpoint (a rerun resumes). Every non-zero exit
writes a one-line reason to output/failure (SageMaker's FailureReason); exit 0 writes
output/success. With hyperparameter `sagemaker_s3_output`, output/intermediate/ (the epoch history)
is uploaded to S3 while the job runs, as AWS's images do.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from dogbreed.config import ConfigError, TrainConfig, add_config_arguments, base_dir
from dogbreed.train import environment, launch
from dogbreed.train.environment import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_STOPPED, JobPaths

log = logging.getLogger(__name__)

SYNC_JOIN_TIMEOUT_S = 120


def add_arguments(parser: argparse.ArgumentParser) -> None:
    paths = parser.add_argument_group("locations (default: the SageMaker layout under --base-dir)")
    paths.add_argument(
        "--base-dir",
        help="SageMaker root holding input/ model/ output/ checkpoints/ "
        "(env SAGEMAKER_BASE_DIR; default /opt/ml)",
    )
    paths.add_argument(
        "--data",
        help="dataset root holding train/ valid/ test/ (default: the SageMaker channels "
        "'training' or 'train'+'valid'+'test' under BASE/input/data, or SM_CHANNEL_*)",
    )
    paths.add_argument("--model-dir", help="model output (env SM_MODEL_DIR; default BASE/model)")
    paths.add_argument(
        "--output-dir",
        help="metrics.json and plots go to OUTPUT/data, a failure reason to OUTPUT/failure "
        "(env SM_OUTPUT_DIR, SM_OUTPUT_DATA_DIR; default BASE/output)",
    )
    paths.add_argument(
        "--checkpoint-dir", help="checkpoint each epoch; resumed from (default BASE/checkpoints)"
    )
    add_config_arguments(parser)
    launch.add_launch_arguments(parser)


def _flags(args: argparse.Namespace) -> dict[str, str]:
    """The hyperparameter flags that were given (unset ones are None)."""
    names = TrainConfig.__dataclass_fields__
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _worker_argv() -> list[str]:
    """The `dogbreed` arguments the torchrun workers get: this process's own command line."""
    argv = sys.argv[1:]
    return argv if "train" in argv else ["train", *argv]


def _maybe_run_user_program(base: Path, args: argparse.Namespace) -> None:
    """Script mode: a job that names its own entry point goes to the toolkit (never returns)."""
    from dogbreed.train import toolkit

    program = toolkit.user_program(environment.read_hyperparameters(base), os.environ)
    if program is None:
        return
    given = [
        name
        for name in ("data", "model_dir", "output_dir", "checkpoint_dir")
        if getattr(args, name)
    ]
    if given or _flags(args):
        raise ConfigError(
            f"this job runs your script {program!r} (sagemaker_program / {toolkit.PROGRAM_ENV}): "
            "dogbreed train flags do not apply to it; pass its arguments as hyperparameters"
        )
    log.info("script mode: running %s through the sagemaker-training toolkit", program)
    toolkit.run_user_program(str(base))


def main(args: argparse.Namespace) -> int:
    # Heavy imports here, not at module level: `dogbreed --help` stays fast.
    from dogbreed.data.layout import DataError
    from dogbreed.model.artifact import ArtifactError
    from dogbreed.model.build import ModelError

    base = base_dir(args.base_dir)
    output_dir = Path(args.output_dir) if args.output_dir else base / "output"
    sync = None
    try:
        _maybe_run_user_program(base, args)
        paths = environment.job_paths(
            base, args.data, args.model_dir, args.output_dir, args.checkpoint_dir
        )
        output_dir = paths.output_dir
        for marker in (paths.failure_file, paths.success_file):  # from a previous attempt
            marker.unlink(missing_ok=True)
        cfg = environment.load_config(base, _flags(args))
        if not launch.is_worker() and output_dir == base / "output":
            # Before training: the sync is a forked process, safe before torch's threads start.
            sync = environment.start_intermediate_sync(base)
        code = _run(cfg, paths, args, base)
    except (ConfigError, DataError, ModelError, ArtifactError, launch.LaunchError) as exc:
        log.error("%s", exc)
        environment.write_failure(output_dir, f"{type(exc).__name__}: {exc}")
        code = EXIT_BAD_INPUT
    except Exception as exc:
        log.exception("training failed")
        environment.write_failure(output_dir, _unexpected_reason(exc))
        code = EXIT_ERROR
    if code == 0 and not launch.is_worker():
        environment.write_success(output_dir)
    if sync is not None:
        # It uploads what is left, then stops on seeing success or failure; bounded, because
        # a slow S3 must not keep a finished job (and its instances) running.
        sync.join(SYNC_JOIN_TIMEOUT_S)
    return code


def _run(cfg: TrainConfig, paths: JobPaths, args: argparse.Namespace, base: Path) -> int:
    """Train here, or launch torchrun for the hosts and GPUs and wait for it: the exit code."""
    code = launch.maybe_launch(environment.training_env(base), _worker_argv(), args)
    if code is not None:
        if code != 0 and not paths.failure_file.exists():  # e.g. a worker killed by OOM
            environment.write_failure(
                paths.output_dir, f"distributed training failed: torchrun exited with code {code}"
            )
        return code
    from dogbreed.train.loop import TrainingStopped, train

    try:
        train(cfg, paths)
    except TrainingStopped as exc:
        log.warning("%s", exc)
        environment.write_failure(paths.output_dir, str(exc))
        return EXIT_STOPPED
    return 0


def _unexpected_reason(exc: Exception) -> str:
    """The cause when we know it (no space, permission denied, a lost peer); otherwise the
    exception and its innermost frame: enough to act on within SageMaker's 1024 characters."""
    from dogbreed.model.files import storage_reason
    from dogbreed.train.distributed import PeerLost

    if isinstance(exc, PeerLost):
        return str(exc)
    known = storage_reason(exc)
    if known is not None:
        return known
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"

"""Script mode: run a user's own training script the way AWS's PyTorch training image does.

A job that names an entry point (hyperparameter `sagemaker_program` or `SAGEMAKER_PROGRAM`,
its code in `sagemaker_submit_directory` or /opt/ml/code: what the SDK's framework estimators
and `ModelTrainer` send) is not the built-in trainer's job. The sagemaker-training toolkit runs
it, through its own `trainer.train()`, with `main` below as the framework module
(`SAGEMAKER_TRAINING_MODULE`, the role `sagemaker_pytorch_container.training:main` plays in
AWS's image). The toolkit then does what it does there: `Environment` reads the job, the code
is fetched and installed (requirements.txt included), hyperparameters become `--key value`
arguments and `SM_*` variables, output/success or output/failure is written, output/intermediate
is synced to S3, and the exit status is the script's.

What `main` adds is what AWS's PyTorch framework module adds: the master address and port for
scripts that call `init_process_group` themselves, the NCCL interface,
and torchrun across hosts and GPUs when `distribution={"torch_distributed": {"enabled": True}}`
(hyperparameter `sagemaker_torch_distributed_enabled`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from dogbreed.train.environment import decoded
from dogbreed.train.launch import DEFAULT_MASTER_PORT

FRAMEWORK_MODULE = "dogbreed.train.toolkit:main"
PROGRAM_HYPERPARAMETER = "sagemaker_program"
PROGRAM_ENV = "SAGEMAKER_PROGRAM"
TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"


def _enabled(value: Any) -> bool:
    """True for the SDK's JSON `true` and for a generic Estimator's str(True)."""
    return str(decoded(value)).lower() == "true"


def user_program(hyperparameters: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The user's entry point this job names, or None (the built-in trainer's job)."""
    program = environ.get(PROGRAM_ENV) or decoded(hyperparameters.get(PROGRAM_HYPERPARAMETER))
    return str(program) if program else None


def run_user_program(base_dir: str) -> NoReturn:
    """Hand the job to the toolkit's `train`; it exits with the user script's status."""
    # The toolkit resolves /opt/ml once, when its modules are first imported.
    os.environ["SAGEMAKER_BASE_DIR"] = base_dir
    os.environ["SAGEMAKER_TRAINING_MODULE"] = FRAMEWORK_MODULE
    # SageMaker creates output/; the toolkit writes success/failure there without creating it.
    Path(base_dir, "output").mkdir(parents=True, exist_ok=True)
    from sagemaker_training import trainer

    trainer.train()  # always ends in sys.exit
    raise AssertionError("sagemaker_training.trainer.train returned")


def main() -> None:
    """The toolkit's framework module: run the user's script with the right runner."""
    from sagemaker_training import entry_point, environment, runner

    env = environment.Environment()  # entry_point.run waits for every host's DNS itself
    # Scripts that call init_process_group(init_method="env://") themselves find the master.
    os.environ.setdefault("MASTER_ADDR", env.master_hostname)
    os.environ.setdefault("MASTER_PORT", str(DEFAULT_MASTER_PORT))
    os.environ.setdefault("NCCL_SOCKET_IFNAME", env.network_interface_name)
    distributed = _enabled(env.additional_framework_parameters.get(TORCH_DISTRIBUTED))
    entry_point.run(
        uri=env.module_dir,
        user_entry_point=env.user_entry_point,
        args=env.to_cmd_args(),
        env_vars=env.to_env_vars(),
        capture_error=True,
        runner_type=runner.TorchDistributedRunnerType if distributed else runner.ProcessRunnerType,
    )

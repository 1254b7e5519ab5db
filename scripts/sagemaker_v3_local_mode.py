"""The dogbreed training image under SageMaker Python SDK v3's `ModelTrainer`, in local mode.

Two ways a v3 user runs our image (`training_mode=Mode.LOCAL_CONTAINER`: the SDK writes its
own docker-compose file; no AWS account, dummy credentials):

    builtin DATA_DIR WORK_DIR               the built-in trainer (`train`), v3-encoded
                                            hyperparameters (json.dumps of non-strings)
    script SOURCE_DIR ENTRY_SCRIPT WORK_DIR a user's script via SourceCode (the SDK's own
                                            drivers, mounted into our image, run it)

Prints the files of the resulting model.tar.gz and, for `script`, the script's record.
Needs `pip install "sagemaker>=3,<4"`, Docker and docker compose.

Usage: python scripts/sagemaker_v3_local_mode.py builtin DATA_DIR WORK_DIR
       python scripts/sagemaker_v3_local_mode.py script SOURCE_DIR ENTRY_SCRIPT WORK_DIR
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from sdk_local import TINY_JOB, TRAIN_IMAGE, without_an_account

# v3 sends "resnet18", "2", "false", "0.003".
BUILTIN_HYPERPARAMETERS: dict[str, Any] = {**TINY_JOB, "pretrained": False}


def _trainer(work: Path, channel: Path, hyperparameters: dict[str, Any], **extra: Any) -> Any:
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData
    from sagemaker.train.model_trainer import Mode

    work.mkdir(parents=True, exist_ok=True)
    return ModelTrainer(
        training_image=TRAIN_IMAGE,
        training_mode=Mode.LOCAL_CONTAINER,
        compute=Compute(instance_type="local_cpu", instance_count=1),
        hyperparameters=hyperparameters,
        input_data_config=[InputData(channel_name="training", data_source=str(channel))],
        base_job_name="dogbreed-v3",
        local_container_root=str(work),
        **extra,
    )


def _model_tar(work: Path) -> Path:
    return work / "compressed_artifacts" / "model.tar.gz"


def builtin(data_dir: Path, work: Path) -> int:
    _trainer(work, data_dir.resolve(), BUILTIN_HYPERPARAMETERS).train()
    with tarfile.open(_model_tar(work)) as tar:
        print(f"model.tar.gz holds: {sorted(tar.getnames())}")
    return 0


def script(source_dir: Path, entry_script: str, work: Path) -> int:
    from sagemaker.train.configs import SourceCode

    channel = work / "data"
    channel.mkdir(parents=True, exist_ok=True)
    (channel / "README").write_text("a channel the script does not need to read\n")
    code = SourceCode(source_dir=str(source_dir.resolve()), entry_script=entry_script)
    _trainer(work, channel, {"steps": 3, "learning_rate": 0.05}, source_code=code).train()
    with tarfile.open(_model_tar(work)) as tar:
        member = tar.extractfile("user_record.json")
        record = json.loads(member.read()) if member else None
    print(f"user record: {json.dumps(record)}")
    return 0 if record else 1


def main(argv: list[str]) -> int:
    without_an_account()
    if len(argv) == 3 and argv[0] == "builtin":
        return builtin(Path(argv[1]), Path(argv[2]))
    if len(argv) == 4 and argv[0] == "script":
        return script(Path(argv[1]), argv[2], Path(argv[3]))
    print(__doc__.strip().split("Usage: ")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

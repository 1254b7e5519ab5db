"""The images under the SageMaker Python SDKs' local mode, the way SageMaker users try them first.

SDK v2: `scripts/sagemaker_local_mode.py` runs `Estimator(image_uri=..., instance_type="local")
.fit()` on the sample data (the SDK writes its own docker-compose file and runs `train`), then
`Model(image_uri=...).deploy(instance_type="local")` on the resulting model.tar.gz and invokes
it through the SDK's local runtime client; `scripts/sagemaker_script_mode.py` runs a user's own
script through `PyTorch(entry_point=..., image_uri=OURS)` on one host and on two hosts with
torch_distributed. SDK v3: `scripts/sagemaker_v3_local_mode.py` runs `ModelTrainer` in
LOCAL_CONTAINER mode, built-in trainer and a user's script through `SourceCode`.
Each SDK pins its own boto3 and friends, so each lives in a venv of its own (cached across
runs), pinned in tests/requirements/.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_containers import images  # noqa: F401  (fixture: both images built)

REPO = Path(__file__).resolve().parent.parent
USER_CODE = REPO / "tests" / "user_code"
MODEL_FILES = {"classes.json", "metadata.json", "model.onnx", "model.torchscript", "weights.pt"}


def eval_list(text: str) -> list[str]:
    return ast.literal_eval(text.strip())


def sdk_venv(requirements: str) -> Path:
    """A venv with one pinned SageMaker SDK (tests/requirements/NAME); rebuilt when the pin
    changes."""
    pinned = REPO / "tests" / "requirements" / requirements
    pin = pinned.read_text().strip()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = cache / "dogbreed" / f"sdk-{pin.replace('==', '-')}"
    python = venv / "bin" / "python"
    ready = (
        python.exists() and subprocess.run([str(python), "-c", "import sagemaker"]).returncode == 0
    )
    if not ready:  # first run, or an install that was cut short
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-r", str(pinned)],
            check=True,
            timeout=1200,
        )
    return python


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    return sdk_venv("sagemaker-sdk.txt")


@pytest.fixture(scope="session")
def sdk3_python() -> Path:
    return sdk_venv("sagemaker-sdk-v3.txt")


def run_sdk(python: Path, script: str, *args: str | Path, cwd: Path) -> str:
    """Run one of scripts/sagemaker_*.py under an SDK venv; its output (it must exit 0)."""
    proc = subprocess.run(
        [str(python), str(REPO / "scripts" / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=cwd,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def printed(out: str, prefix: str) -> str:
    """The rest of the line the script printed after `prefix`."""
    return next(line for line in out.splitlines() if line.startswith(prefix)).removeprefix(prefix)


def tar_names(out: str) -> set[str]:
    names = eval_list(printed(out, "model.tar.gz holds:"))
    return {name.removeprefix("./") for name in names} - {"", "."}


def sdk_containers() -> set[str]:
    """The SDK names its local containers `<random>-algo-N-<random>`."""
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "name=algo-"], capture_output=True, text=True
    ).stdout
    return set(out.split())


@pytest.fixture()
def remove_sdk_containers() -> Iterator[None]:
    """The SDK leaves its stopped training containers behind: remove the ones this test made."""
    before = sdk_containers()
    yield
    left = sdk_containers() - before
    if left:
        subprocess.run(["docker", "rm", "-f", *left], capture_output=True)


@pytest.mark.docker
@pytest.mark.usefixtures("remove_sdk_containers")
def test_sdk_local_mode_trains_deploys_and_invokes(
    images: None,  # noqa: F811
    sdk_python: Path,
    sample_data: Path,
    tmp_path: Path,
) -> None:
    out = run_sdk(
        sdk_python, "sagemaker_local_mode.py", sample_data, tmp_path / "work", cwd=tmp_path
    )
    # The SDK tarred /opt/ml/model: serving's files, nothing else.
    assert tar_names(out) == MODEL_FILES, out[-4000:]
    assert '/invocations: {"top_k": [{"label": ' in out, out[-4000:]


@pytest.mark.docker
@pytest.mark.usefixtures("remove_sdk_containers")
@pytest.mark.parametrize("hosts", [1, 2])
def test_sdk_v2_pytorch_estimator_runs_a_users_script(
    images: None,  # noqa: F811
    sdk_python: Path,
    tmp_path: Path,
    hosts: int,
) -> None:
    out = run_sdk(sdk_python, "sagemaker_script_mode.py", USER_CODE, "user_train.py", hosts,
                  tmp_path / "work", cwd=tmp_path)  # fmt: skip
    record = json.loads(printed(out, "user record: "))
    # Hyperparameters became the script's arguments; two hosts = one torchrun job of 2 ranks.
    assert (record["steps"], record["learning_rate"]) == (4, 0.05)
    assert (record["world_size"], record["ranks_seen"]) == (hosts, hosts)
    assert len(record["hosts"]) == hosts and record["channels"] == ["training"]


@pytest.mark.docker
@pytest.mark.usefixtures("remove_sdk_containers")
def test_sdk_v3_model_trainer_trains_the_built_in_model(
    images: None,  # noqa: F811
    sdk3_python: Path,
    sample_data: Path,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    out = run_sdk(sdk3_python, "sagemaker_v3_local_mode.py", "builtin", sample_data, work,
                  cwd=tmp_path)  # fmt: skip
    assert tar_names(out) == MODEL_FILES, out[-4000:]
    with tarfile.open(work / "compressed_artifacts" / "model.tar.gz") as tar:
        member = tar.extractfile("metadata.json")
        assert member is not None
        hyperparameters = json.loads(member.read())["hyperparameters"]
    # v3 sent "resnet18", "2", "false", "0.003": each read as the type it stands for.
    assert hyperparameters["backbone"] == "resnet18" and hyperparameters["epochs"] == 2
    assert hyperparameters["pretrained"] is False and hyperparameters["learning_rate"] == 0.003


@pytest.mark.docker
@pytest.mark.usefixtures("remove_sdk_containers")
def test_sdk_v3_source_code_runs_a_users_script(
    images: None,  # noqa: F811
    sdk3_python: Path,
    tmp_path: Path,
) -> None:
    out = run_sdk(sdk3_python, "sagemaker_v3_local_mode.py", "script", USER_CODE,
                  "user_train.py", tmp_path / "work", cwd=tmp_path)  # fmt: skip
    record = json.loads(printed(out, "user record: "))
    assert (record["steps"], record["learning_rate"]) == (3, 0.05)
    # v3 mounts its drivers and the source as channels of their own, beside ours.
    assert record["world_size"] == 1 and "training" in record["channels"], record

"""The images under the SageMaker Python SDK's local mode, the way SageMaker users try them first.

`scripts/sagemaker_local_mode.py` runs `Estimator(image_uri=..., instance_type="local").fit()`
on the sample data (the SDK writes its own docker-compose file and runs `train`), then
`Model(image_uri=...).deploy(instance_type="local")` on the resulting model.tar.gz and invokes
it through the SDK's local runtime client. The SDK v2 pins its own boto3 and friends, so it
lives in a venv of its own (cached across runs), pinned in tests/requirements/.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_containers import images  # noqa: F401  (fixture: both images built)

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "tests" / "requirements" / "sagemaker-sdk.txt"


def eval_list(text: str) -> list[str]:
    return ast.literal_eval(text.strip())


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    """A venv with the pinned SageMaker SDK; rebuilt when the pin changes."""
    pin = REQUIREMENTS.read_text().strip()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = cache / "dogbreed" / f"sdk-{pin.replace('==', '-')}"
    python = venv / "bin" / "python"
    ready = (
        python.exists() and subprocess.run([str(python), "-c", "import sagemaker"]).returncode == 0
    )
    if not ready:  # first run, or an install that was cut short
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
            check=True,
            timeout=1200,
        )
    return python


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
    proc = subprocess.run(
        [str(sdk_python), str(REPO / "scripts" / "sagemaker_local_mode.py"), str(sample_data),
         str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # The SDK tarred /opt/ml/model: serving's files, nothing else.
    holds = next(line for line in out.splitlines() if line.startswith("model.tar.gz holds:"))
    names = {name.removeprefix("./") for name in eval_list(holds.partition(":")[2])} - {"", "."}
    assert names == {"classes.json", "metadata.json", "model.onnx", "model.torchscript",
                     "weights.pt"}, holds  # fmt: skip
    assert '/invocations: {"top_k": [{"label": ' in out, out[-4000:]

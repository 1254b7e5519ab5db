"""Script mode through the sagemaker-training toolkit, without Docker: `dogbreed train` on a
SageMaker layout that names a user's entry point runs THAT script with the hyperparameters as
arguments, and the toolkit writes output/success or output/failure. (The images run the same
path under the SageMaker SDKs in tests/test_sagemaker_local_mode.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

USER_SCRIPT = """
import json, os, sys
from pathlib import Path

if "--fail" in sys.argv:
    raise RuntimeError("user script: bad things happened")
record = {
    "argv": sys.argv[1:],
    "model_dir": os.environ["SM_MODEL_DIR"],
    "channel": os.environ.get("SM_CHANNEL_TRAINING"),
    "hps": json.loads(os.environ["SM_HPS"]),
    "rank": os.environ.get("RANK"),
    "world_size": os.environ.get("WORLD_SIZE"),
    "master": os.environ.get("MASTER_ADDR"),
}
Path(os.environ["SM_MODEL_DIR"], "record.json").write_text(json.dumps(record))
"""


def sagemaker_job(base: Path, code: Path | None, hyperparameters: dict[str, str]) -> None:
    """The files SageMaker (or the SDK's local mode) writes before `docker run IMAGE train`;
    `code` None: the job names neither program nor code, as an image with its code in
    /opt/ml/code and SAGEMAKER_PROGRAM set is run."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (base / "input" / "data" / "training").mkdir(parents=True)
    (base / "model").mkdir()
    hps = dict(hyperparameters)
    if code is not None:
        hps["sagemaker_program"] = json.dumps("user_train.py")
        hps["sagemaker_submit_directory"] = json.dumps(str(code))
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    # The toolkit waits until every host name resolves: this machine's own name does.
    host = socket.gethostname()
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": host, "hosts": [host], "network_interface_name": "lo"})
    )
    (config / "inputdataconfig.json").write_text(json.dumps({"training": {}}))


def run_train(
    base: Path, *flags: str, program: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "AWS_DEFAULT_REGION": "us-east-1"}
    if program is not None:
        env["SAGEMAKER_PROGRAM"] = program
    # The toolkit runs `torchrun` from PATH, as in the image (/opt/venv/bin).
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.run(
        [sys.executable, "-m", "dogbreed", "train", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code-src"
    folder.mkdir()
    (folder / "user_train.py").write_text(USER_SCRIPT)
    return folder


def test_the_users_script_runs_with_its_hyperparameters(tmp_path: Path, code: Path) -> None:
    base = tmp_path / "ml"
    # As the SDK v2 encodes them (json.dumps of every value), plus what a tuning job adds.
    sagemaker_job(base, code, {"epochs": "3", "lr": "0.01", "_tuning_objective_metric": '"x"'})
    proc = run_train(base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((base / "model" / "record.json").read_text())
    # The toolkit's contract: sorted --key value arguments; the keys SageMaker itself adds
    # (sagemaker_*, a tuning job's _tuning_objective_metric) are not the script's.
    assert record["argv"] == ["--epochs", "3", "--lr", "0.01"]
    assert record["model_dir"] == str(base / "model")
    assert record["channel"] == str(base / "input" / "data" / "training")
    assert record["hps"] == {"epochs": 3, "lr": 0.01}
    assert record["master"] == socket.gethostname()
    assert (base / "output" / "success").exists()
    assert not (base / "output" / "failure").exists()


def test_sagemaker_program_runs_the_script_baked_into_opt_ml_code(
    tmp_path: Path, code: Path
) -> None:
    """A derived image (`COPY user_train.py /opt/ml/code/`, `ENV SAGEMAKER_PROGRAM`), as with
    AWS's images: no sagemaker_program or submit directory in the job."""
    base = tmp_path / "ml"
    sagemaker_job(base, None, {"epochs": "3"})
    (base / "code").mkdir()
    (base / "code" / "user_train.py").write_text(USER_SCRIPT)
    proc = run_train(base, program="user_train.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((base / "model" / "record.json").read_text())
    assert record["argv"] == ["--epochs", "3"]
    assert (base / "output" / "success").exists()


def test_torch_distributed_runs_the_script_under_torchrun(tmp_path: Path, code: Path) -> None:
    base = tmp_path / "ml"
    sagemaker_job(base, code, {"sagemaker_torch_distributed_enabled": "true"})
    proc = run_train(base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((base / "model" / "record.json").read_text())
    assert (record["rank"], record["world_size"]) == ("0", "1")  # set by torchrun, one CPU host


def test_a_failing_script_fails_the_job_with_its_error(tmp_path: Path, code: Path) -> None:
    base = tmp_path / "ml"
    sagemaker_job(base, code, {"fail": '""'})
    proc = run_train(base)
    assert proc.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "user script: bad things happened" in failure
    assert not (base / "output" / "success").exists()


def test_built_in_trainer_flags_are_refused_in_script_mode(tmp_path: Path, code: Path) -> None:
    base = tmp_path / "ml"
    sagemaker_job(base, code, {})
    proc = run_train(base, "--epochs", "2")
    assert proc.returncode == 2
    reason = (base / "output" / "failure").read_text()
    assert "user_train.py" in reason and "pass its arguments as hyperparameters" in reason

"""`dogbreed serve` start-up, readiness and failure: /ping is 200 only while the model can
really be served; an unusable model or a dead model server ends `serve` with a non-zero code."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests
from serving import TEST_ENV, free_port, ping, role, running_server, server_processes, stop

from dogbreed.model import artifact

JPEG_BODY_TIMEOUT = 60


def start_serve(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dogbreed", "serve", "--host", "127.0.0.1", *args],
            env={**os.environ, **TEST_ENV, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def watch_until_exit(process: subprocess.Popen[bytes], url: str, limit_s: float) -> set[int]:
    """Every /ping status seen until the process exits (bounded by limit_s)."""
    seen: set[int] = set()
    deadline = time.monotonic() + limit_s
    while process.poll() is None and time.monotonic() < deadline:
        seen.add(ping(url, timeout=1))
        time.sleep(0.2)
    return seen


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("corrupt onnx", "cannot be served"),
        ("no metadata", "metadata.json not found"),
        ("class count mismatch", "classes"),
    ],
)
def test_unusable_model_exits_non_zero_and_never_pings_200(
    trained_model_dir: Path, tmp_path: Path, breakage: str, message: str
) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model)
    if breakage == "corrupt onnx":
        (model / artifact.ONNX_FILE).write_bytes(b"\x08\x01garbage" * 100)
    elif breakage == "no metadata":
        (model / artifact.METADATA_FILE).unlink()
    else:
        (model / artifact.CLASSES_FILE).write_text('["only", "two"]')
    port = free_port()
    log = tmp_path / "serve.log"
    process = start_serve(["--model", str(model), "--port", str(port)], {}, log)
    try:
        seen = watch_until_exit(process, f"http://127.0.0.1:{port}", limit_s=120)
    finally:
        stop(process)
    assert process.returncode not in (0, None)
    assert 200 not in seen
    text = log.read_text()
    assert "serve failed" in text and message in text, text[-2000:]


def test_serves_a_model_tarball_from_sagemaker_base_dir_on_bind_to_port(
    trained_model_dir: Path, sample_data: Path, tmp_path: Path
) -> None:
    """SageMaker's layout: no flags, the model under $SAGEMAKER_BASE_DIR/model, the port from
    SAGEMAKER_BIND_TO_PORT; here `model` is a model.tar.gz (what --model also accepts)."""
    base = tmp_path / "opt_ml"
    base.mkdir()
    with tarfile.open(base / "model", "w:gz") as archive:
        for path in trained_model_dir.iterdir():
            archive.add(path, arcname=path.name)
    port = free_port()
    env = {"SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port)}
    log = tmp_path / "serve.log"
    process = start_serve([], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while ping(url) != 200:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        body = next((sample_data / "test").rglob("*.jpg")).read_bytes()
        response = requests.post(
            f"{url}/invocations",
            data=body,
            headers={"Content-Type": "image/jpeg"},
            timeout=JPEG_BODY_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        classes = artifact.read_classes(trained_model_dir)
        assert response.json()["top_k"][0]["label"] in classes
    finally:
        stop(process)
    assert process.returncode == 0  # SIGTERM is a clean stop


def test_ping_turns_503_when_no_worker_can_serve(trained_model_dir: Path, tmp_path: Path) -> None:
    """The model files vanish while serving and the worker dies: MMS cannot restart it and
    says "Unhealthy" with HTTP 200; our /ping must say 503."""
    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model)
    with running_server(model) as url:
        assert ping(url) == 200
        (model / artifact.ONNX_FILE).unlink()
        workers = [p for p in server_processes(url) if role(p) == "worker"]
        assert workers
        for worker in workers:
            worker.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 60
        while ping(url) != 503:
            assert time.monotonic() < deadline, "/ping stayed 200 with no worker able to serve"
            time.sleep(0.5)
        response = requests.get(f"{url}/ping", timeout=5)
        assert response.json()["error"] == "unhealthy"


def test_serve_exits_non_zero_when_the_model_server_dies(trained_model_dir: Path) -> None:
    with running_server(trained_model_dir) as url:
        tree = server_processes(url)
        supervisor = tree[0]
        java = next(p for p in tree if p.name() == "java")
        java.send_signal(signal.SIGKILL)
        assert supervisor.wait(30) == 1
        assert ping(url) != 200

"""The real model server (`dogbreed serve`: Java MMS + our handler) for tests, on a free port.

    from tests.serving import running_server
    with running_server(model_dir) as base_url:   # /ping is 200 when this returns
        requests.post(f"{base_url}/invocations", data=jpeg, headers={"Content-Type": "image/jpeg"})

`model_server` (session scope) is the same, started once on the shared `trained_model_dir`;
tests/conftest.py registers this module as a plugin so any test can ask for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

# JVM + MMS + a worker on two busy shared cores: generous, but bounded.
STARTUP_TIMEOUT_S = 240
STOP_TIMEOUT_S = 40
# Tests share two cores with other suites: one worker, one thread, unless the caller says more.
TEST_ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "DOGBREED_THREADS": "1"}


class ServerFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(base_url: str, timeout: float = 2.0) -> int:
    """/ping's status code; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"{base_url}/ping", timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_server(
    model_dir: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    args: tuple[str, ...] = (),
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> Iterator[str]:
    """Start `dogbreed serve` on 127.0.0.1:<free port>, yield its base URL once /ping is 200,
    stop it with SIGTERM (as SageMaker does) afterwards. Raises ServerFailed with the log tail
    when the server exits or is not healthy in time."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, **TEST_ENV, **(env or {})}
    cmd = [
        sys.executable,
        "-m",
        "dogbreed",
        "serve",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    with tempfile.NamedTemporaryFile("w+b", prefix="dogbreed-serve-", suffix=".log") as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + startup_timeout
            while ping(base_url) != 200:
                if process.poll() is not None:
                    raise ServerFailed(
                        f"dogbreed serve exited with {process.returncode}:\n{_tail(log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise ServerFailed(f"not healthy in {startup_timeout} s:\n{_tail(log_path)}")
                time.sleep(0.5)
            yield base_url
        finally:
            stop(process)
            sys.stderr.write(f"--- dogbreed serve log tail ---\n{_tail(log_path, 15)}\n")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL for the whole group (MMS and its workers) if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="session")
def model_server(trained_model_dir: Path) -> Iterator[str]:
    """Base URL of a real model server on the model the real trainer produced."""
    with running_server(trained_model_dir) as base_url:
        yield base_url

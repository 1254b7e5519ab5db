"""The real model server (`dogbreed serve`: Java MMS + our handler) for tests, on a free port.

    from tests.serving import running_server
    with running_server(model_dir) as base_url:   # /ping is 200 when this returns
        requests.post(f"{base_url}/invocations", data=jpeg, headers={"Content-Type": "image/jpeg"})

`model_server` (session scope) is the same, started once on the shared `trained_model_dir`;
tests/conftest.py registers this module as a plugin so any test can ask for it. Also here:
request bodies (`jpeg`, `png`, `bomb_png`), raw-socket requests (`connect`, `raw_request`,
`split_response`) and the server's processes (`server_processes`, `role`).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import psutil
import pytest
from loopback_http import free_port
from PIL import Image

# JVM + MMS + a worker on two busy shared cores: generous, but bounded.
STARTUP_TIMEOUT_S = 240
STOP_TIMEOUT_S = 40
# Tests share two cores with other suites: one worker, one thread, unless the caller says more.
# fp32: the answers are compared with torch's; bf16 (on AMX/AVX512-BF16 CPUs, when the model's
# gate passed) has its own tests (test_serve_precision.py).
TEST_ENV = {
    "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    "DOGBREED_THREADS": "1",
    "DOGBREED_PRECISION": "fp32",
}


class ServerFailed(RuntimeError):
    pass


def ping(base_url: str, timeout: float = 2.0) -> int:
    """/ping's status code; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"{base_url}/ping", timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def jpeg(
    size: tuple[int, int] = (500, 375), colour: tuple[int, int, int] = (180, 120, 60)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (10 gigapixels by default)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">II", data, 16, width, height)  # IHDR data starts at byte 16
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 60, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def server_processes(url: str) -> list[psutil.Process]:
    """The processes behind the server listening at `url`: the supervisor (which runs the
    gateway), MMS's launcher, the Java frontend and the workers."""
    port = int(url.rsplit(":", 1)[1])
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "serve" in cmdline and str(port) in cmdline:
            return [proc, *proc.children(recursive=True)]
    raise AssertionError(f"no dogbreed serve process for {url}")


def role(proc: psutil.Process) -> str:
    """What a process of `server_processes` is: supervisor, launcher, java or worker."""
    cmdline = " ".join(proc.cmdline())
    if proc.name() == "java":
        return "java"
    if "model_service_worker" in cmdline:
        return "worker"
    return "launcher" if "mms.model_server" in cmdline else "supervisor"


def raw_request(base_url: str, request: bytes) -> bytes:
    """Send `request` on a new connection; everything the server sends until it closes."""
    with connect(base_url) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def connect(base_url: str, timeout: float = 10) -> socket.socket:
    """A raw TCP connection to the server at `base_url`, for requests no client library sends."""
    address = urlsplit(base_url)
    return socket.create_connection((address.hostname, address.port), timeout=timeout)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_server(
    model_dir: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    args: tuple[str, ...] = (),
    startup_timeout: float = STARTUP_TIMEOUT_S,
    log_path: Path | None = None,
) -> Iterator[str]:
    """Start `dogbreed serve` on 127.0.0.1:<free port>, yield its base URL once /ping is 200,
    stop it with SIGTERM (as SageMaker does) afterwards. Raises ServerFailed with the log tail
    when the server exits or is not healthy in time. The log goes to `log_path` when given
    (kept), else to a temporary file."""
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
    with _log_file(log_path) as log:
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


def _log_file(path: Path | None) -> contextlib.AbstractContextManager[IO[bytes]]:
    if path is None:
        return tempfile.NamedTemporaryFile("w+b", prefix="dogbreed-serve-", suffix=".log")
    return path.open("wb")


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

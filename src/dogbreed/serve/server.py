"""`dogbreed serve`: validate the model, start multi-model-server behind the gateway, supervise.

Order of events (each step fails fast with a clear log line and a non-zero exit):
1. resolve the model (a directory, or a model.tar.gz extracted to a private directory);
2. load it with the chosen backend and run a warm-up batch (an unusable model stops here);
3. bind the public port with the gateway, whose /ping says 503 until step 5 is done;
4. start MMS on loopback with our config (ports, timeouts in seconds, writable log/tmp dirs);
5. register the model through MMS's management API with batch size, batch delay and workers
   (models given to MMS with --models at start-up would get batch size 1), synchronously;
6. every second, ask MMS whether its workers are up and feed that to /ping; exit non-zero when
   MMS dies, stop cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from dogbreed.model.artifact import METADATA_FILE, ArtifactError
from dogbreed.serve.backends import resolve_backend
from dogbreed.serve.gateway import Gateway, Health, Limits
from dogbreed.serve.predictor import Predictor
from dogbreed.serve.settings import (
    ServeSettings,
    SettingsError,
    available_cpus,
    resolve_parallelism,
)

log = logging.getLogger(__name__)

MODEL_NAME = "model"
HANDLER = "dogbreed.serve.handler:handle"
MMS_PORT_RANGE = (20000, 32766)
HEALTH_INTERVAL_S = 1.0
# Consecutive failed MMS pings (timeouts under load are possible) before /ping says 503.
PING_FAILURES_TOLERATED = 3
SHUTDOWN_GRACE_S = 20  # SageMaker sends SIGKILL 30 s after SIGTERM
# The frontend's heap holds the request bodies the gateway forwards (its byte budget bounds
# them) and ~20 MB of its own. With 6 MB bodies filling the 64 MB budget we measured up to
# 95 MB live after a full GC and an OutOfMemoryError at -Xmx128m; twice the budget plus
# 64 MB leaves room for the garbage between collections (docs/serving.md, JVM sizing).
HEAP_BASE_MB = 64
HEALTHY = ("Healthy", "Partial Healthy")  # MMS's words; Partial: some workers still serve

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Everything to stdout (containers log there); no files, no per-request access log. -->
<Configuration>
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %c{1} - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="warn"/>
    <Logger name="MMS_METRICS" level="off"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="MODEL_LOG" level="info"/>
    <Logger name="com.amazonaws.ml.mms" level="info"/>
    <Logger name="com.amazonaws.ml.mms.wlm.WorkerThread" level="warn"/>
    <Root level="warn"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


class ServeFailure(RuntimeError):
    """Serving cannot start or went down; the message is the log line."""


def resolve_model(path: Path, workdir: Path) -> Path:
    """A model directory as is, or a model.tar.gz extracted under `workdir`."""
    if path.is_dir():
        return path
    if not path.is_file():
        raise ArtifactError(f"model {path} does not exist")
    if not tarfile.is_tarfile(path):
        raise ArtifactError(f"model {path} is neither a directory nor a tar archive")
    target = workdir / "model"
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as archive:
        archive.extractall(target, filter="data")  # refuses absolute paths, .., devices
    if not (target / METADATA_FILE).is_file():
        subdirs = [p for p in target.iterdir() if p.is_dir()]
        if len(subdirs) == 1 and (subdirs[0] / METADATA_FILE).is_file():
            return subdirs[0]
    return target


def default_vmargs(settings: ServeSettings) -> str:
    """JVM flags sized to what the frontend holds, not to the machine: AWS's default (max heap
    10% of the memory, G1) let the heap grow to 1.3 GB under load on a big host. Serial GC:
    no GC threads, the smallest footprint for a small heap. C1 only: the Java side is network
    plumbing, and C2's compiler arenas cost ~15 MB."""
    heap_mb = HEAP_BASE_MB + 2 * math.ceil(settings.max_buffered_mb)
    return (
        f"-XX:+UseContainerSupport -XX:+UseSerialGC -Xms16m -Xmx{heap_mb}m "
        "-XX:MaxMetaspaceSize=64m -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError"
    )


def free_port(port_range: str | None = None) -> int:
    """A free loopback port for MMS, inside SAGEMAKER_SAFE_PORT_RANGE ("low-high") when set.

    MMS rejects ports above 32766, so the kernel's ephemeral range (32768+) cannot be used.
    """
    low, high = MMS_PORT_RANGE
    if port_range:
        low_text, _, high_text = port_range.partition("-")
        low, high = int(low_text), min(int(high_text), MMS_PORT_RANGE[1])
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)  # two servers starting together rarely pick the same port
    for candidate in candidates[:1000]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    raise ServeFailure(f"no free port for the model server in {low}-{high}")


class ModelServer:
    """One multi-model-server (Java frontend + Python workers) bound to loopback."""

    def __init__(
        self, model_dir: Path, settings: ServeSettings, workdir: Path, handler: str = HANDLER
    ) -> None:
        self.model_dir = model_dir.resolve()
        self.handler = handler
        self.settings = settings
        self.workdir = workdir
        port_range = os.environ.get("SAGEMAKER_SAFE_PORT_RANGE")
        self.inference_port = free_port(port_range)
        self.management_port = free_port(port_range)
        while self.management_port == self.inference_port:
            self.management_port = free_port(port_range)
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        s = self.settings
        properties = {
            "inference_address": f"http://127.0.0.1:{self.inference_port}",
            "management_address": f"http://127.0.0.1:{self.management_port}",
            "model_store": str(self.model_dir.parent),
            # MMS's default_response_timeout is in MINUTES; the _seconds key is what we mean.
            "default_response_timeout_seconds": s.response_timeout_s,
            "default_workers_per_model": s.workers,
            # The gateway never has more than this at MMS: a full queue (503) cannot happen.
            "job_queue_size": s.in_flight,
            "decode_input_request": "false",  # the handler gets the raw bytes
            # The gateway enforces the real limit; this only guards MMS itself.
            "max_request_size": s.max_payload_bytes + 65536,
            "async_logging": "true",
            "vmargs": os.environ.get("SAGEMAKER_MODEL_SERVER_VMARGS") or default_vmargs(s),
        }
        path = self.workdir / "config.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        (self.workdir / "log4j2.xml").write_text(LOG4J2_XML)
        return path

    def start(self) -> None:
        config = self.write_config()
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env = {
            **os.environ,
            **self.settings.to_env(),
            # MMS keeps its pid file in the temp dir and refuses to start when another
            # server's file is there: a private TMPDIR lets several servers run side by side.
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.workdir / "logs"),
            "METRICS_LOCATION": str(self.workdir / "logs"),
            "OMP_NUM_THREADS": str(self.settings.threads),
            "MKL_NUM_THREADS": str(self.settings.threads),
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [
            sys.executable,
            "-m",
            "mms.model_server",
            "--start",
            "--foreground",
            "--mms-config",
            str(config),
            "--log-config",
            str(self.workdir / "log4j2.xml"),
            "--model-store",
            str(self.model_dir.parent),
        ]
        log.info("starting multi-model-server: %s", " ".join(cmd))
        # Same process group as `serve`: a signal to the group (tini -g, Ctrl-C) reaches Java
        # and the workers too, and nothing outlives a killed group.
        self.process = subprocess.Popen(cmd, env=env, cwd=self.workdir)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _request(
        self, method: str, port: int, path: str, timeout: float
    ) -> tuple[int, dict[str, object]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            document = {"message": body.decode("utf-8", "replace")}
        return response.status, document if isinstance(document, dict) else {}

    def wait_until_up(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServeFailure("multi-model-server exited during start-up (see its log above)")
            with contextlib.suppress(OSError, http.client.HTTPException):
                self._request("GET", self.management_port, "/models", timeout=2)
                return
            time.sleep(0.5)
        raise ServeFailure("multi-model-server did not start within SAGEMAKER_STARTUP_TIMEOUT")

    def register(self, deadline: float) -> None:
        s = self.settings
        query = urllib.parse.urlencode(
            {
                "url": self.model_dir.name,
                "model_name": MODEL_NAME,
                "handler": self.handler,
                "runtime": "python",
                "batch_size": s.batch_size,
                "max_batch_delay": s.max_batch_delay_ms,
                "initial_workers": s.workers,
                "response_timeout": s.response_timeout_s,
                "synchronous": "true",
            }
        )
        timeout = max(1.0, deadline - time.monotonic())
        try:
            status, answer = self._request(
                "POST", self.management_port, f"/models?{query}", timeout
            )
        except (OSError, http.client.HTTPException) as exc:
            raise ServeFailure(f"registering the model with MMS failed: {exc}") from None
        if status != 200:
            raise ServeFailure(f"MMS refused the model ({status}): {answer.get('message')}")
        log.info(
            "model registered: %d worker(s) x %d thread(s), batch size %d, max delay %d ms",
            s.workers,
            s.threads,
            s.batch_size,
            s.max_batch_delay_ms,
        )

    def ping(self) -> str | None:
        """MMS's own verdict ("Healthy", "Partial Healthy", "Unhealthy"); None if no answer."""
        try:
            status, answer = self._request("GET", self.inference_port, "/ping", timeout=2)
        except (OSError, http.client.HTTPException):
            return None
        return str(answer.get("status")) if status == 200 else None

    def stop(self) -> None:
        """SIGTERM to the launcher, Java and the workers; SIGKILL whatever outlives the grace."""
        import psutil

        if self.process is None or self.process.poll() is not None:
            return
        try:
            launcher = psutil.Process(self.process.pid)
            tree = [launcher, *launcher.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(tree, timeout=SHUTDOWN_GRACE_S)
        for proc in alive:
            log.warning("killing %s (pid %d), still running after SIGTERM", proc.name(), proc.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.process.wait()


def count_gpus() -> int:
    """GPUs as MMS counts them (nvidia-smi); 0 when there is no NVIDIA driver."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return len(listing.split())


def validate_model(model_dir: Path, settings: ServeSettings) -> None:
    """Load the model as a worker will and run a warm-up batch; raise if it cannot serve."""
    try:
        Predictor(model_dir, settings).warm_up(settings.batch_size)
    except Exception as exc:  # onnxruntime/torch raise their own types for a broken file
        raise ServeFailure(f"model {model_dir} cannot be served: {exc}") from exc


def check_in_subprocess(model_dir: Path, settings: ServeSettings) -> None:
    """`validate_model` in a child process: the supervisor then holds no model, no
    onnxruntime arena and no CUDA context while it supervises."""
    cmd = [sys.executable, "-m", "dogbreed", "serve", "--check", "--model", str(model_dir)]
    env = {**os.environ, **settings.to_env()}
    try:
        code = subprocess.run(cmd, env=env, timeout=settings.startup_timeout_s).returncode
    except subprocess.TimeoutExpired:
        raise ServeFailure(
            f"model {model_dir} load and warm-up check did not finish within "
            f"{settings.startup_timeout_s} s (SAGEMAKER_STARTUP_TIMEOUT)"
        ) from None
    if code != 0:
        raise ServeFailure(f"model {model_dir} failed its load and warm-up check (see above)")


def serve(
    model: Path, settings: ServeSettings, host: str = "0.0.0.0", workdir: Path | None = None
) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until serving fails (exit non-zero)."""
    private = workdir is None
    work = Path(tempfile.mkdtemp(prefix="dogbreed-serve-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    mms: ModelServer | None = None
    gateway: Gateway | None = None
    try:
        started = time.monotonic()
        deadline = started + settings.startup_timeout_s
        model_dir = resolve_model(model, work)
        backend = resolve_backend(settings.backend)
        gpus = count_gpus() if backend == "torch" else 0
        settings = resolve_parallelism(settings.replace(backend=backend), available_cpus(), gpus)
        check_in_subprocess(model_dir, settings)
        health = Health()
        try:
            # MMS answers a request that ran past its timeout; the gateway waits a little longer.
            limits = Limits.from_settings(settings, settings.response_timeout_s + 5)
            gateway = Gateway((host, settings.port), 0, health, limits)
        except OSError as exc:
            raise ServeFailure(f"cannot listen on {host}:{settings.port}: {exc}") from None
        threading.Thread(target=gateway.serve_forever, name="gateway", daemon=True).start()
        log.info("listening on http://%s:%d (/ping, /invocations)", host, settings.port)
        mms = ModelServer(model_dir, settings, work)
        gateway.backend_port = mms.inference_port
        mms.start()
        mms.wait_until_up(deadline)
        mms.register(deadline)
        log.info("ready in %.1f s", time.monotonic() - started)
        return _monitor(mms, health, stop)
    except (ArtifactError, ServeFailure, SettingsError, OSError) as exc:
        log.error("serve failed: %s", exc)
        return 1
    finally:
        if gateway is not None:
            gateway.health.set(False, "shutting down")
            gateway.shutdown()
            gateway.server_close()
        if mms is not None:
            mms.stop()
        if private:
            shutil.rmtree(work, ignore_errors=True)


def _monitor(mms: ModelServer, health: Health, stop: threading.Event) -> int:
    failures = 0
    while not stop.wait(HEALTH_INTERVAL_S if failures or health.get()[0] else 0.2):
        if not mms.alive():
            health.set(False, "the model server exited")
            log.error("multi-model-server exited with code %s", mms.process and mms.process.poll())
            return 1
        verdict = mms.ping()
        if verdict in HEALTHY:
            failures = 0
            health.set(True, f"model server: {verdict}")
        elif verdict is not None:
            health.set(False, f"model server: {verdict} (no worker can serve)")
        else:
            failures += 1
            if failures >= PING_FAILURES_TOLERATED:
                health.set(False, "the model server does not answer")
    log.info("stopping")
    return 0

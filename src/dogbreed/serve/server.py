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

import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from dogbreed.hostcpu import available_cpus
from dogbreed.hostgpu import gpu_count
from dogbreed.model.artifact import METADATA_FILE, ArtifactError
from dogbreed.serve import user_code as user_code_handler
from dogbreed.serve.backends import describe_precision, resolve_backend
from dogbreed.serve.errors import ServeFailure
from dogbreed.serve.gateway import Gateway, Health, Limits, execution_parameters
from dogbreed.serve.mms import HANDLER, HEALTHY, ModelServer
from dogbreed.serve.predictor import Predictor
from dogbreed.serve.privileges import drop_privileges, serving_user
from dogbreed.serve.settings import ServeSettings, resolve_parallelism
from dogbreed.settings import SettingError

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 1.0
# Consecutive failed MMS pings (timeouts under load are possible) before /ping says 503.
PING_FAILURES_TOLERATED = 3


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


def prepare(
    model: Path, settings: ServeSettings, work: Path
) -> tuple[Path, ServeSettings, dict[str, object]]:
    """The model ready to serve (extracted, readable, checked), the settings resolved for this
    machine, and what /ping says about it. Drops root here, before anything else starts."""
    model_dir = resolve_model(model, work)
    user = serving_user(settings.user)
    if user is not None:
        model_dir = drop_privileges(user, model_dir, work)
    if user_code_handler.has_user_code(model_dir):
        # The toolkit's Transformer answers one request per call: no MMS batching.
        log.info("serving the model's own code/inference.py through sagemaker-inference")
        settings = resolve_parallelism(settings.replace(batch_size=1), available_cpus(), 0)
        return model_dir, settings, {"handler": user_code_handler.HANDLER}
    backend = resolve_backend(settings.backend)
    gpus = gpu_count() if backend == "torch" else 0
    settings = resolve_parallelism(settings.replace(backend=backend), available_cpus(), gpus)
    check_in_subprocess(model_dir, settings)
    choice = describe_precision(model_dir, settings.backend, settings.precision).as_dict()
    log.info("precision: %s", choice)
    return model_dir, settings, {"handler": HANDLER, **choice}


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
        model_dir, settings, about = prepare(model, settings, work)
        health = Health()
        user_code = about["handler"] == user_code_handler.HANDLER
        try:
            # MMS answers a request that ran past its timeout; the gateway waits a little longer.
            limits = Limits.from_settings(settings, settings.response_timeout_s + 5)
            parameters = execution_parameters(settings)
            gateway = Gateway(
                (host, settings.port), 0, health, limits, parameters, user_code, about
            )
        except OSError as exc:
            raise ServeFailure(f"cannot listen on {host}:{settings.port}: {exc}") from None
        threading.Thread(target=gateway.serve_forever, name="gateway", daemon=True).start()
        log.info("listening on http://%s:%d (/ping, /invocations)", host, settings.port)
        mms = ModelServer(model_dir, settings, work, str(about["handler"]))
        gateway.backend_port = mms.inference_port
        mms.start()
        mms.wait_until_up(deadline)
        mms.register(deadline)
        log.info("ready in %.1f s", time.monotonic() - started)
        return _monitor(mms, health, stop)
    except (ArtifactError, ServeFailure, SettingError, OSError) as exc:
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

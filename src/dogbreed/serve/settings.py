"""Serving settings from the environment (SageMaker's names where it has one) and CLI flags.

The supervisor (`dogbreed serve`) resolves every value once and exports the result to the model
server's environment, so each MMS worker reads exactly the same settings with `from_env`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from dogbreed.data.images import DEFAULT_MAX_PIXELS

BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MB = 1024 * 1024

# env var -> field; every field can be set this way (the CLI flags override them).
ENV_NAMES: dict[str, str] = {
    "backend": "DOGBREED_BACKEND",
    "precision": "DOGBREED_PRECISION",
    "workers": "SAGEMAKER_MODEL_SERVER_WORKERS",
    "threads": "DOGBREED_THREADS",
    "batch_size": "SAGEMAKER_MODEL_SERVER_BATCH_SIZE",
    "max_batch_delay_ms": "SAGEMAKER_MODEL_SERVER_MAX_BATCH_DELAY",
    "port": "SAGEMAKER_BIND_TO_PORT",
    "max_payload_mb": "SAGEMAKER_MAX_PAYLOAD_IN_MB",
    "startup_timeout_s": "SAGEMAKER_STARTUP_TIMEOUT",
    "top_k": "DOGBREED_TOP_K",
    "max_instances": "DOGBREED_MAX_INSTANCES",
    "max_pixels": "DOGBREED_MAX_PIXELS",
    "max_connections": "DOGBREED_MAX_CONNECTIONS",
    "max_in_flight": "DOGBREED_MAX_IN_FLIGHT",
    "max_buffered_mb": "DOGBREED_MAX_BUFFERED_MB",
    "read_timeout_s": "DOGBREED_READ_TIMEOUT",
    "keepalive_timeout_s": "DOGBREED_KEEPALIVE_TIMEOUT",
    "user": "DOGBREED_SERVE_USER",
}
# Variables sagemaker-inference defines: read through it (`_toolkit_values`), never here.
TOOLKIT_NAMES = (
    "SAGEMAKER_MODEL_SERVER_WORKERS",
    "SAGEMAKER_BIND_TO_PORT",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB",
    "SAGEMAKER_STARTUP_TIMEOUT",
)


# Model-server knobs taken as flags by both `dogbreed serve` and `dogbreed sagemaker deploy`
# (which passes them to the endpoint's container as the ENV_NAMES variables).
SERVER_FLAGS: dict[str, str] = {
    "backend": "onnx (ONNX Runtime) or torch (TorchScript); auto: torch on a CUDA GPU",
    "precision": "auto: onnx backend bf16 (OpenVINO) on AMX/AVX512-BF16 CPUs when the model's "
    "agreement gate passed, else fp32; torch backend fp16 on GPU; or force fp32/fp16/bf16",
    "workers": "MMS worker processes (default: one per 2 CPU cores, one per GPU)",
    "threads": "intra-op threads per worker (default: cores / workers)",
    "batch_size": "MMS batching: most requests per forward pass (default 8)",
    "max_batch_delay_ms": "MMS batching: ms to wait to fill a batch (default 5)",
    "top_k": "breeds in an answer when the request does not say (default 5)",
}


def add_server_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """One flag per SERVER_FLAGS entry; unset flags stay None (the environment decides)."""
    choices = {"backend": BACKENDS, "precision": PRECISIONS}
    for field, help_text in SERVER_FLAGS.items():
        flag = "--" + field.replace("_", "-")
        help_text = f"{help_text}; ${ENV_NAMES[field]}"
        if field in choices:
            parser.add_argument(flag, choices=choices[field], help=help_text)
        else:
            parser.add_argument(flag, type=int, help=help_text)


def server_flag_values(args: argparse.Namespace) -> dict[str, object]:
    """The SERVER_FLAGS that were given on the command line."""
    return {f: getattr(args, f) for f in SERVER_FLAGS if getattr(args, f, None) is not None}


class SettingsError(ValueError):
    """An environment variable or flag with an unusable value."""


@dataclass(frozen=True)
class ServeSettings:
    backend: str = "auto"  # auto: torch on a CUDA GPU when torch is installed, else onnx
    precision: str = "auto"  # onnx: bf16 on a fast-bf16 CPU if the gate passed; torch GPU: fp16
    workers: int | None = None  # MMS worker processes; None: from the CPU/GPU count
    threads: int | None = None  # intra-op threads per worker; None: cores / workers
    batch_size: int = 8  # MMS request batching: most requests per forward pass
    max_batch_delay_ms: int = 5  # how long MMS waits to fill a batch
    port: int = 8080
    max_payload_mb: float = 6.0  # SageMaker real-time endpoints cap bodies at 6 MB
    response_timeout_s: int = 60  # SageMaker's /invocations limit
    startup_timeout_s: int = 600
    top_k: int = 5
    max_instances: int = 32  # images in one JSON request
    max_pixels: int = DEFAULT_MAX_PIXELS  # declared size above which an image is refused
    # The gateway's bounds (gateway.Limits): what clients can make the front hold.
    max_connections: int = 1000  # open client connections
    max_in_flight: int | None = None  # requests at MMS at once; None: 2 x workers x batch size
    max_buffered_mb: float = 64.0  # request bodies held in memory, all connections together
    read_timeout_s: float = 20.0  # a request's first byte to its last
    keepalive_timeout_s: float = 60.0  # idle time between requests on one connection
    safe_port_range: str | None = None  # "low-high": where MMS's loopback ports may go
    vmargs: str | None = None  # the frontend's JVM flags; None: mms.default_vmargs
    user: str = "model-server"  # started as root: serve as this user (privileges.py)

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * MB)

    @property
    def in_flight(self) -> int:
        """Requests at MMS at once: per worker, a batch running and the next one filling."""
        return self.max_in_flight or 2 * (self.workers or 1) * self.batch_size

    def replace(self, **changes: object) -> ServeSettings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_env(self) -> dict[str, str]:
        """The resolved values as environment variables, for the MMS workers."""
        env = {
            # "6", not "6.0": sagemaker-inference reads SAGEMAKER_MAX_PAYLOAD_IN_MB as an int.
            name: format(value, "g") if isinstance(value, float) else str(value)
            for key, name in ENV_NAMES.items()
            if (value := getattr(self, key)) is not None
        }
        env["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"] = str(self.response_timeout_s)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """DOGBREED_* and MMS's batching variables parsed here; the SAGEMAKER_* variables that
        sagemaker-inference defines read through its Environment (names, units, defaults)."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            name = ENV_NAMES.get(f.name, "")
            raw = environ.get(name, "").strip()
            if raw and name not in TOOLKIT_NAMES:
                values[f.name] = _parse(f.name, name, raw, f.type)
        values.update(_toolkit_values(environ))
        return cls(**values).validated()

    def validated(self) -> ServeSettings:
        if self.backend not in BACKENDS:
            raise SettingsError(
                f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}"
            )
        if self.precision not in PRECISIONS:
            raise SettingsError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"
            )
        for name in (
            "batch_size",
            "top_k",
            "max_instances",
            "max_pixels",
            "startup_timeout_s",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        for name in ("workers", "threads", "max_in_flight"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if self.max_batch_delay_ms < 0 or self.max_payload_mb <= 0 or self.response_timeout_s < 1:
            raise SettingsError("batch delay, payload limit and timeout must be positive")
        if min(self.read_timeout_s, self.keepalive_timeout_s) <= 0:
            raise SettingsError("read and keep-alive time-outs must be positive")
        if self.max_buffered_mb < self.max_payload_mb:
            raise SettingsError(
                f"DOGBREED_MAX_BUFFERED_MB ({self.max_buffered_mb:g}) must be at least the "
                f"payload limit ({self.max_payload_mb:g} MB)"
            )
        if not 0 < self.port < 65536:
            raise SettingsError(f"port {self.port} is out of range")
        return self


def _parse(field: str, env_name: str, raw: str, kind: object) -> object:
    try:
        if "int" in str(kind):
            return int(raw)
        if "float" in str(kind):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{env_name}={raw!r}: {field} must be a number") from None
    return raw.lower()


def _toolkit_values(environ: Mapping[str, str]) -> dict[str, object]:
    """The settings sagemaker-inference's Environment reads, for the variables that are set."""
    try:
        from sagemaker_inference import environment, parameters
    except ImportError:  # an install without the serve extra (`sagemaker deploy` checking
        return {}  # a container's environment): the container reads these when it starts
    with _as_os_environ(environ):
        try:
            toolkit = environment.Environment()
            values = {
                "workers": toolkit.model_server_workers and int(toolkit.model_server_workers),
                "port": int(toolkit.inference_http_port),
                "startup_timeout_s": toolkit.startup_timeout,
                # MMS reads SAGEMAKER_MODEL_SERVER_TIMEOUT as MINUTES; the _SECONDS form wins.
                "response_timeout_s": toolkit.model_server_timeout_seconds
                or toolkit.model_server_timeout * 60,
                "max_payload_mb": (toolkit.max_request_size or 0) / MB,
                "safe_port_range": toolkit.safe_port_range,
                "vmargs": toolkit.vmargs,
            }
        except ValueError as exc:
            raise SettingsError(f"a SAGEMAKER_* variable must be an integer: {exc}") from None
    names = {
        "response_timeout_s": (
            parameters.MODEL_SERVER_TIMEOUT_ENV,
            parameters.MODEL_SERVER_TIMEOUT_SECONDS_ENV,
        ),
        "safe_port_range": (parameters.SAFE_PORT_RANGE_ENV,),
        "vmargs": (parameters.MODEL_SERVER_VMARGS,),
    }
    return {
        field: value
        for field, value in values.items()
        if any(environ.get(name, "").strip() for name in names.get(field) or (ENV_NAMES[field],))
    }


@contextlib.contextmanager
def _as_os_environ(environ: Mapping[str, str]) -> Iterator[None]:
    """The toolkit reads os.environ only; a deploy command checks another container's."""
    if environ is os.environ:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def resolve_parallelism(settings: ServeSettings, cpus: int, gpus: int) -> ServeSettings:
    """Fill in workers and threads so that workers x threads never exceeds the CPUs.

    CPU: one worker per two cores with two threads each (half the model copies of one worker
    per core; the two threads split both the forward pass and a batch's JPEG decoding).
    GPU: one worker per GPU; its threads decode images.
    """
    workers = settings.workers
    if workers is None:
        workers = gpus if gpus else max(1, cpus // 2)
    threads = settings.threads or max(1, cpus // workers)
    return dataclasses.replace(settings, workers=workers, threads=threads)

"""Serving settings from the environment (SageMaker's names where it has one) and CLI flags.

The supervisor (`dogbreed serve`) resolves every value once and exports the result to the model
server's environment, so each MMS worker reads exactly the same settings with `from_env`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
}


# Model-server knobs taken as flags by both `dogbreed serve` and `dogbreed sagemaker deploy`
# (which passes them to the endpoint's container as the ENV_NAMES variables).
SERVER_FLAGS: dict[str, str] = {
    "backend": "onnx (ONNX Runtime) or torch (TorchScript); auto: torch on a CUDA GPU",
    "precision": "torch backend: fp16 on GPU and fp32 on CPU (auto), or fp32/fp16/bf16",
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
    precision: str = "auto"  # torch backend: fp16 on GPU, fp32 on CPU
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
            name: str(getattr(self, key))
            for key, name in ENV_NAMES.items()
            if getattr(self, key) is not None
        }
        env["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"] = str(self.response_timeout_s)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_NAMES.get(f.name, ""), "").strip()
            if raw:
                values[f.name] = _parse(f.name, ENV_NAMES[f.name], raw, f.type)
        values["response_timeout_s"] = _response_timeout(environ)
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


def _response_timeout(environ: Mapping[str, str]) -> int:
    """Seconds. MMS reads SAGEMAKER_MODEL_SERVER_TIMEOUT as MINUTES; the _SECONDS form wins."""
    seconds = environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", "").strip()
    minutes = environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT", "").strip()
    try:
        if seconds:
            return int(seconds)
        if minutes:
            return int(minutes) * 60
    except ValueError:
        raise SettingsError("SAGEMAKER_MODEL_SERVER_TIMEOUT[_SECONDS] must be an integer") from None
    return ServeSettings.response_timeout_s


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


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

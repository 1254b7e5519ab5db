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
from dogbreed.settings import (
    SettingError,
    add_arguments,
    check,
    from_environ,
    given_flags,
    setting,
    specs,
)

BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MB = 1024 * 1024

# Variables sagemaker-inference defines: read through it (`_toolkit_values`), never here.
TOOLKIT_NAMES = (
    "SAGEMAKER_MODEL_SERVER_WORKERS",
    "SAGEMAKER_BIND_TO_PORT",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB",
    "SAGEMAKER_STARTUP_TIMEOUT",
    "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS",
    "SAGEMAKER_SAFE_PORT_RANGE",
    "SAGEMAKER_MODEL_SERVER_VMARGS",
)


@dataclass(frozen=True)
class ServeSettings:
    """Every serving knob. Fields with a flag are flags of both `dogbreed serve` and
    `dogbreed sagemaker deploy` (which passes them to the endpoint's container as variables)."""

    backend: str = setting(
        "auto",
        "onnx (ONNX Runtime) or torch (TorchScript); auto: torch on a CUDA GPU",
        env="DOGBREED_BACKEND",
        choices=BACKENDS,
    )
    precision: str = setting(
        "auto",
        "auto: onnx backend bf16 (OpenVINO) on AMX/AVX512-BF16 CPUs when the model's agreement "
        "gate passed, else fp32; torch backend fp16 on GPU; or force fp32/fp16/bf16",
        env="DOGBREED_PRECISION",
        choices=PRECISIONS,
    )
    workers: int | None = setting(
        None,
        "MMS worker processes (default: one per 2 CPU cores, one per GPU)",
        env="SAGEMAKER_MODEL_SERVER_WORKERS",
        minimum=1,
    )
    threads: int | None = setting(
        None,
        "intra-op threads per worker (default: cores / workers)",
        env="DOGBREED_THREADS",
        minimum=1,
    )
    batch_size: int = setting(
        8,
        "MMS batching: most requests per forward pass",
        env="SAGEMAKER_MODEL_SERVER_BATCH_SIZE",
        minimum=1,
    )
    # 2 ms, measured (docs/serving.md, "Hops and MMS's batch delay"): MMS waits the whole
    # delay even for a lone request. Against 5 ms, 2 ms raised throughput at every concurrency
    # on an AMD EPYC and was within noise on a Xeon with AMX; a lone request waits 3 ms less.
    max_batch_delay_ms: int = setting(
        2,
        "MMS batching: ms to wait to fill a batch",
        env="SAGEMAKER_MODEL_SERVER_MAX_BATCH_DELAY",
        minimum=0,
    )
    port: int = setting(8080, "public port", env="SAGEMAKER_BIND_TO_PORT", flag=False)
    # SageMaker real-time endpoints cap bodies at 6 MB.
    max_payload_mb: float = setting(
        6.0, "request body limit (MB)", env="SAGEMAKER_MAX_PAYLOAD_IN_MB", flag=False
    )
    # SageMaker's /invocations limit; SAGEMAKER_MODEL_SERVER_TIMEOUT (MINUTES, as MMS reads it)
    # is read too, the _SECONDS form wins.
    response_timeout_s: int = setting(
        60,
        "per-request timeout (s)",
        env="SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS",
        flag=False,
        minimum=1,
    )
    startup_timeout_s: int = setting(
        600,
        "seconds for MMS start and model registration",
        env="SAGEMAKER_STARTUP_TIMEOUT",
        flag=False,
        minimum=1,
    )
    top_k: int = setting(
        5, "breeds in an answer when the request does not say", env="DOGBREED_TOP_K", minimum=1
    )
    max_instances: int = setting(
        32, "images in one JSON request", env="DOGBREED_MAX_INSTANCES", flag=False, minimum=1
    )
    max_pixels: int = setting(
        DEFAULT_MAX_PIXELS,
        "declared image size above which an image is refused (decompression bombs)",
        env="DOGBREED_MAX_PIXELS",
        flag=False,
        minimum=1,
    )
    # The gateway's bounds (gateway.Limits): what clients can make the front hold.
    max_connections: int = setting(
        1000, "open client connections", env="DOGBREED_MAX_CONNECTIONS", flag=False, minimum=1
    )
    max_in_flight: int | None = setting(
        None,
        "requests at MMS at once (default: 2 x workers x batch size)",
        env="DOGBREED_MAX_IN_FLIGHT",
        flag=False,
        minimum=1,
    )
    max_buffered_mb: float = setting(
        64.0,
        "request bodies held in memory, all connections together (MB)",
        env="DOGBREED_MAX_BUFFERED_MB",
        flag=False,
    )
    read_timeout_s: float = setting(
        20.0, "a request's first byte to its last (s)", env="DOGBREED_READ_TIMEOUT", flag=False
    )
    keepalive_timeout_s: float = setting(
        60.0,
        "idle time between requests on one connection (s)",
        env="DOGBREED_KEEPALIVE_TIMEOUT",
        flag=False,
    )
    safe_port_range: str | None = setting(
        None,
        "low-high: where MMS's loopback ports may go",
        env="SAGEMAKER_SAFE_PORT_RANGE",
        flag=False,
    )
    vmargs: str | None = setting(
        None,
        "the frontend's JVM flags (default: mms.default_vmargs)",
        env="SAGEMAKER_MODEL_SERVER_VMARGS",
        flag=False,
    )
    user: str = setting(
        "model-server",
        "started as root: serve as this user (privileges.py); root keeps root",
        env="DOGBREED_SERVE_USER",
        flag=False,
    )

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
        return {
            # "6", not "6.0": sagemaker-inference reads SAGEMAKER_MAX_PAYLOAD_IN_MB as an int.
            name: format(value, "g") if isinstance(value, float) else str(value)
            for key, name in ENV_NAMES.items()
            if (value := getattr(self, key)) is not None
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """DOGBREED_* and MMS's batching variables parsed here; the SAGEMAKER_* variables that
        sagemaker-inference defines read through its Environment (names, units, defaults)."""
        environ = os.environ if environ is None else environ
        values = from_environ(cls, environ, skip=TOOLKIT_NAMES)
        values.update(_toolkit_values(environ))
        return cls(**values).validated()

    def validated(self) -> ServeSettings:
        check(self)
        if self.max_payload_mb <= 0:
            raise SettingError("the payload limit must be positive")
        if min(self.read_timeout_s, self.keepalive_timeout_s) <= 0:
            raise SettingError("read and keep-alive time-outs must be positive")
        if self.max_buffered_mb < self.max_payload_mb:
            raise SettingError(
                f"DOGBREED_MAX_BUFFERED_MB ({self.max_buffered_mb:g}) must be at least the "
                f"payload limit ({self.max_payload_mb:g} MB)"
            )
        if not 0 < self.port < 65536:
            raise SettingError(f"port {self.port} is out of range")
        return self


# field -> environment variable; every field can be set this way (the CLI flags override them).
ENV_NAMES: dict[str, str] = {s.name: s.env for s in specs(ServeSettings) if s.env}


def add_server_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The model-server flags `dogbreed serve` and `dogbreed sagemaker deploy` share; unset
    flags stay None (the environment decides)."""
    add_arguments(parser, ServeSettings)


def server_flag_values(args: argparse.Namespace) -> dict[str, object]:
    """The model-server flags that were given on the command line."""
    return given_flags(ServeSettings, args)


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
            raise SettingError(f"a SAGEMAKER_* variable must be an integer: {exc}") from None
    also_read = {"response_timeout_s": parameters.MODEL_SERVER_TIMEOUT_ENV}

    def is_set(field: str) -> bool:
        names = (ENV_NAMES[field], also_read.get(field, ""))
        return any(environ.get(name, "").strip() for name in names)

    return {field: value for field, value in values.items() if is_set(field)}


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

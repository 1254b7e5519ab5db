"""Everything this project knows about multi-model-server 1.1.11, in one place.

An MMS upgrade touches this file only: how the frontend is started (process, config.properties,
log config, JVM flags), how a model is registered for batching, how a worker's context hands
over request headers and bodies, how replies are padded around a decoder bug (and the padding
stripped again), and how MMS's own error texts are replaced by ours.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import os
import random
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from dogbreed.serve.errors import ServeFailure, error_body
from dogbreed.serve.http1 import RETRY_AFTER, Answer, HttpError, Request
from dogbreed.serve.protocol import CONTENT_TYPE_HEADER, REQUEST_ID_HEADER
from dogbreed.serve.settings import ServeSettings

log = logging.getLogger(__name__)

MODEL_NAME = "model"
PREDICT_PATH = f"/predictions/{MODEL_NAME}"
HANDLER = "dogbreed.serve.handler:handle"
PORT_RANGE = (20000, 32766)
SHUTDOWN_GRACE_S = 20  # SageMaker sends SIGKILL 30 s after SIGTERM
HEALTHY = ("Healthy", "Partial Healthy")  # MMS's words; Partial: some workers still serve
# The frontend's heap holds the request bodies the gateway forwards (its byte budget bounds
# them) and ~20 MB of its own. With 6 MB bodies filling the 64 MB budget we measured up to
# 95 MB live after a full GC and an OutOfMemoryError at -Xmx128m; twice the budget plus
# 64 MB leaves room for the garbage between collections (docs/serving.md, JVM sizing).
HEAP_BASE_MB = 64

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


def default_vmargs(settings: ServeSettings) -> str:
    """JVM flags sized to what the frontend holds, not to the machine: AWS's default (max heap
    10% of the memory, G1) let the heap grow to 1.3 GB under load on a big host. Serial GC:
    no GC threads, the smallest footprint for a small heap. C1 only: the Java side is network
    plumbing, and C2's compiler arenas cost ~15 MB. The whole heap is committed and touched
    at start (-Xms = -Xmx, AlwaysPreTouch): the frontend's footprint is then its bound from
    the first request, instead of a heap that creeps up whenever a few large bodies coincide."""
    heap_mb = HEAP_BASE_MB + 2 * math.ceil(settings.max_buffered_mb)
    return (
        f"-XX:+UseContainerSupport -XX:+UseSerialGC -Xms{heap_mb}m -Xmx{heap_mb}m "
        "-XX:+AlwaysPreTouch "
        "-XX:MaxMetaspaceSize=64m -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError"
    )


def free_port(port_range: str | None = None) -> int:
    """A free loopback port for MMS, inside SAGEMAKER_SAFE_PORT_RANGE ("low-high") when set.

    MMS rejects ports above 32766, so the kernel's ephemeral range (32768+) cannot be used.
    """
    low, high = PORT_RANGE
    if port_range:
        low_text, _, high_text = port_range.partition("-")
        low, high = int(low_text), min(int(high_text), PORT_RANGE[1])
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
        port_range = settings.safe_port_range
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
            "vmargs": s.vmargs or default_vmargs(s),
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


# ---- inside a worker: what MMS hands the handler and what it expects back ----


@dataclass(frozen=True)
class WorkerRequest:
    body: bytes | bytearray | None
    headers: dict[str, str]  # lower-case names; content-type is the client's
    request_id: str  # the gateway's id (what the client sees), else MMS's own


def worker_requests(data: list[dict[str, Any]], context: Any) -> list[WorkerRequest]:
    requests = []
    for idx, item in enumerate(data):
        headers = _headers(context, idx)
        request_id = headers.get(REQUEST_ID_HEADER) or _mms_id(context, idx)
        requests.append(WorkerRequest(_body(item), headers, request_id))
    return requests


def _mms_id(context: Any, idx: int) -> str:
    return context.get_request_id(idx) or ""


def _headers(context: Any, idx: int) -> dict[str, str]:
    # MMS mixes request headers (name -> str) with per-parameter dicts; names keep their case.
    raw = context.get_all_request_header(idx) or {}
    headers = {k.lower(): v for k, v in raw.items() if isinstance(v, str)}
    headers["content-type"] = headers.pop(CONTENT_TYPE_HEADER, "")  # the client's (gateway)
    return headers


def _body(item: Mapping[str, Any]) -> bytes | bytearray | None:
    body = item.get("body")
    if body is None and item:
        body = next(iter(item.values()))
    return body if isinstance(body, (bytes, bytearray)) or body is None else str(body).encode()


def restore_client_content_type(context: Any) -> None:
    """Give each request its client's Content-Type back (the gateway sends MMS octet-stream
    so that MMS never parses a form body itself), for code that reads the request headers."""
    for processor in context.request_processor:
        headers = processor.get_request_properties()
        client_type = next((v for k, v in headers.items() if k.lower() == CONTENT_TYPE_HEADER), "")
        for name in [k for k in headers if k.lower() == "content-type"]:
            del headers[name]
        headers["Content-Type"] = client_type


def worker_reply(context: Any, answers: list[tuple[int, str]]) -> list[str]:
    """Set each request's status on the context; the bodies, padded (below), for MMS.

    No content type or headers here: the gateway sets Content-Type."""
    phrases = []
    for idx, (status, _) in enumerate(answers):
        phrase = HTTPStatus(status).phrase
        context.set_response_status(status, phrase, idx)
        phrases.append(phrase)
    mms_ids = [_mms_id(context, idx) for idx in range(len(answers))]
    return _padded([body for _, body in answers], phrases, mms_ids)


# MMS 1.1.11's frontend decodes a worker's reply (mms/protocol/otf_message_handler.py layout)
# with a Netty decoder that checks for a partial frame before every length-prefixed string but
# NOT before each prediction's 4-byte HTTP status code, nor inside the response-header map.
# When a socket read ends inside one of those, the decoder throws, the frontend drops the
# worker ("Worker died") and every request of the batch gets a 500. Reads end at multiples of
# 16 bytes (Netty's adaptive buffer sizes), so: send no headers, and pad each JSON body with
# trailing spaces so that the next status code never straddles a multiple of 16.
_MMS_SUCCESS = "Prediction success"


def _padded(bodies: list[str], phrases: list[str], request_ids: list[str]) -> list[str]:
    out: list[str] = []
    offset = 4 + 4 + len(_MMS_SUCCESS)  # code, message
    for body, phrase, request_id in zip(bodies, phrases, request_ids, strict=True):
        offset += 4 + len(request_id.encode()) + 4  # request id, empty content type
        misaligned = offset % 16 == 0 or offset % 16 > 12  # [offset, offset + 4) has a 16k
        if misaligned and out:
            pad = (1 - offset) % 16
            out[-1] += " " * pad
            offset += pad
        offset += 4 + 4 + len(phrase.encode()) + 4  # status, phrase, zero headers
        offset += 4 + len(body.encode())
        out.append(body)
    return out


# ---- in the gateway: what MMS gets of a request, and what of its answer the client ----

# Request headers the handler needs; everything else stays in the gateway.
FORWARDED_HEADERS = ("accept",)
FORWARDED_PREFIX = "x-amzn-sagemaker-"


def request_headers(request: Request, request_id: str) -> dict[str, str]:
    """What MMS gets: never a form content type (MMS would parse such a body itself), only
    printable ASCII values (MMS's worker decodes header bytes outside any error handling)."""
    headers = {REQUEST_ID_HEADER: request_id, "Content-Type": "application/octet-stream"}
    for name, value in request.headers.items():
        if name == "content-type":
            name = CONTENT_TYPE_HEADER
        elif name not in FORWARDED_HEADERS and not name.startswith(FORWARDED_PREFIX):
            continue
        if not (value.isascii() and value.isprintable()):
            message = f"header {name} must be printable ASCII"
            raise HttpError(400, "bad_request", message, close=False)
        headers[name] = value
    return headers


@dataclass(frozen=True)
class Reply:
    status: int
    payload: bytes
    content_type: str | None


def client_answer(reply: Reply, request_id: str, user_code: bool) -> Answer:
    """Our handler's answers as they are (padding stripped); a model's own code's answers
    with its content type; MMS's texts, and tracebacks, replaced by ours (the log has them)."""
    if reply.status >= 400 and not _is_our_error(reply.payload):
        text = reply.payload[:300].decode("utf-8", "replace")
        log.warning("request %s: model server answered %d: %s", request_id, reply.status, text)
        return model_server_error(reply.status, request_id)
    if user_code:
        typed = (("Content-Type", reply.content_type),) if reply.content_type else ()
        return reply.status, reply.payload, typed
    return reply.status, reply.payload.rstrip(b" "), ()


def _is_our_error(payload: bytes) -> bool:
    """The handler's own refusals ({"error", "message"}) pass through unchanged."""
    try:
        document = json.loads(payload)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
    return isinstance(document, dict) and "error" in document and "message" in document


def model_server_error(status: int, request_id: str) -> Answer:
    """Our answer for MMS's own failures ("Worker died.", no worker) or its absence: 503 when
    a retry can help, else 500. Never MMS's text: the log line has it."""
    if status == 503:
        body = error_body("unavailable", "no model worker could take the request", request_id)
        return 503, body, RETRY_AFTER
    if 400 <= status < 500:  # a model's own code refused the request (its message: the log)
        return status, error_body("bad_request", "the model refused the request", request_id), ()
    body = error_body("internal_error", "the model server failed on this request", request_id)
    return 500, body, ()

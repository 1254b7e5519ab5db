"""The public HTTP front: an honest /ping and a bounded /invocations pass-through to MMS.

Why a front at all: MMS answers /ping with HTTP 200 even when no worker can serve (the body
says "Unhealthy"), and answers "Healthy" before any model is registered. SageMaker only looks
at the status code. So MMS listens on loopback only, and this server owns the public port:
/ping is 200 only while the supervisor's monitor has seen MMS report its workers up;
/invocations is forwarded to MMS over kept-alive loopback connections, and MMS's own error
texts are replaced by ours. GET / is a page to try the model in a browser (webpage.py).

Why asyncio: a client that sends its request slowly (or never finishes it) must not hold a
thread. One event loop reads every connection, with a deadline per request and an idle
time-out between requests; only complete requests reach the fixed pool of forwarding threads.
What clients can make the front hold is bounded (`Limits`): open connections, requests at
MMS, request-body bytes in memory. Past a bound the answer is a fast 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import json
import logging
import math
import resource
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dogbreed.serve import http1, mms, webpage
from dogbreed.serve.errors import error_body
from dogbreed.serve.http1 import RETRY_AFTER, Answer, HttpError, Request
from dogbreed.serve.protocol import (
    JSONLINES_TYPE,
    JSONLINES_TYPES,
    REQUEST_ID_HEADER,
    media_type,
)
from dogbreed.serve.settings import MB, ServeSettings

log = logging.getLogger(__name__)

ROUTES = {"/invocations": "POST", "/ping": "GET", "/execution-parameters": "GET", "/": "GET"}
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
# Bodies up to this multiple of the limit are read and dropped so the client sees the 413;
# beyond it the connection is closed instead.
DRAIN_FACTOR = 4
LISTEN_BACKLOG = 1024
# After an answer that ends the connection, what the client still sends is read and dropped
# for this long: closing with unread bytes sends a reset, which can destroy the answer.
LINGER_S = 1.0
SHUTDOWN_WAIT_S = 10.0
FD_RESERVE = 64  # descriptors kept for MMS connections, logs and the supervisor
# Errors from a kept-alive loopback connection that MMS closed meanwhile: safe to retry once.
# Never a timeout: the request may be running, and a retry would run it twice.
_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
)


class Health:
    """What /ping reports; the supervisor's monitor thread updates it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ok = False
        self._reason = "starting"

    def set(self, ok: bool, reason: str) -> None:
        with self._lock:
            if ok != self._ok:
                log.log(logging.INFO if ok else logging.WARNING, "health: %s", reason)
            self._ok, self._reason = ok, reason

    def get(self) -> tuple[bool, str]:
        with self._lock:
            return self._ok, self._reason


@dataclass(frozen=True)
class Limits:
    """What one client, or all of them together, can make the front hold."""

    max_payload_bytes: int
    response_timeout_s: float  # waiting for MMS's answer
    max_connections: int = 1000
    max_in_flight: int = 16  # requests at MMS at once = forwarding threads
    max_buffered_bytes: int = 64 * MB  # request bodies held in memory, all connections
    read_timeout_s: float = 20.0  # first byte of a request to its last
    keepalive_timeout_s: float = 60.0  # idle time between two requests on a connection

    @classmethod
    def from_settings(cls, s: ServeSettings, response_timeout_s: float) -> Limits:
        return cls(
            max_payload_bytes=s.max_payload_bytes,
            response_timeout_s=response_timeout_s,
            max_connections=s.max_connections,
            max_in_flight=s.in_flight,
            max_buffered_bytes=int(s.max_buffered_mb * MB),
            read_timeout_s=s.read_timeout_s,
            keepalive_timeout_s=s.keepalive_timeout_s,
        )


@functools.cache
def try_page() -> webpage.Page:
    """The try-the-model page at GET /: SageMaker never routes there, so the contract is
    untouched. Read once, on the first request for it."""
    return webpage.load(
        Path(__file__).resolve().parent / "assets" / webpage.PAGE_NAME, "/invocations"
    )


def execution_parameters(s: ServeSettings) -> dict[str, object]:
    """What a Batch Transform job that leaves these unset reads from GET /execution-parameters:
    as many requests at once as the workers' batches take in one round, several jsonlines
    records per request (SplitType=Line), bodies within our payload limit."""
    return {
        "MaxConcurrentTransforms": (s.workers or 1) * s.batch_size,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": max(1, math.floor(s.max_payload_mb)),
    }


def busy(message: str, code: str = "busy") -> HttpError:
    return HttpError(503, code, message, headers=RETRY_AFTER)


def connections_allowed(wanted: int) -> int:
    """Raise the soft descriptor limit towards what `wanted` connections need; how many the
    limit then allows (accept() failing with EMFILE would stall every new client)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        new_soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    allowed = max(1, soft - FD_RESERVE)
    log.warning("descriptor limit %d: at most %d client connections", soft, allowed)
    return allowed


class Gateway:
    """Binds at construction (a busy port fails fast); `serve_forever` runs the event loop in
    the calling thread until `shutdown` is called from another."""

    def __init__(
        self,
        address: tuple[str, int],
        backend_port: int,
        health: Health,
        limits: Limits,
        execution_parameters: dict[str, object] | None = None,
        user_code: bool = False,
        about: dict[str, object] | None = None,
    ) -> None:
        self.backend_port = backend_port
        # /ping's body while healthy: what serves (handler, backend, precision and why).
        self.healthy_body = json.dumps({"status": "Healthy", **(about or {})})
        self.user_code = user_code  # a model's code/inference.py answers: its bytes, its type
        self.execution_parameters = json.dumps(execution_parameters or {})
        self.health = health
        self.limits = limits
        self.max_connections = connections_allowed(limits.max_connections + limits.max_in_flight)
        self.max_connections = min(self.max_connections, limits.max_connections)
        self._sock = socket.create_server(address, backlog=LISTEN_BACKLOG)
        self.server_address: tuple[str, int] = self._sock.getsockname()[:2]
        self._pool = ThreadPoolExecutor(limits.max_in_flight, "forward")
        self._local = threading.local()  # one loopback connection to MMS per forwarding thread
        self.connections: set[Connection] = set()
        self.idle: set[Connection] = set()  # waiting for their next request: may be evicted
        self.buffered = 0  # request-body bytes held; only the event loop touches it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._closing = threading.Event()
        self._finished = threading.Event()

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._finished.set()

    def shutdown(self) -> None:
        self._closing.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stop.set)
        self._finished.wait(SHUTDOWN_WAIT_S)

    def server_close(self) -> None:
        self._sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._closing.is_set():  # shutdown() came before the loop existed
            return
        server = await asyncio.start_server(
            self._accept, sock=self._sock, limit=http1.MAX_HEAD_BYTES
        )
        async with server:
            await self._stop.wait()
            for conn in list(self.connections):
                conn.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer)
        if len(self.connections) >= self.max_connections and not self._evict_idle():
            await conn.refuse(busy(f"more than {self.max_connections} open connections"))
            conn.abort()
            return
        self.connections.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            # The loop is stopping. Python 3.11's stream callback calls task.exception() on
            # this task, which raises (and logs a traceback) when the task ends cancelled.
            pass
        except Exception:  # a bug here must cost one connection, never the loop
            log.exception("connection handler failed")
        finally:
            self.connections.discard(conn)
            self.idle.discard(conn)
            conn.abort()

    def _evict_idle(self) -> bool:
        """At the connection limit, an idle kept-alive connection makes room for a new one."""
        if not self.idle:
            return False
        victim = self.idle.pop()
        self.connections.discard(victim)
        victim.abort()
        return True

    async def forward(self, body: bytearray, headers: dict[str, str]) -> mms.Reply:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._forward, body, headers)

    def _forward(self, body: bytearray, headers: dict[str, str]) -> mms.Reply:
        """On a forwarding thread: POST to MMS over this thread's kept-alive connection."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            fresh = conn is None
            if fresh:
                conn = _NoDelayConnection(
                    "127.0.0.1", self.backend_port, timeout=self.limits.response_timeout_s
                )
                self._local.conn = conn
            try:
                conn.request("POST", mms.PREDICT_PATH, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                return mms.Reply(response.status, payload, response.getheader("Content-Type"))
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                # A kept-alive connection MMS closed meanwhile: retry once on a new one.
                if fresh or attempt == 2 or not isinstance(exc, _STALE_CONNECTION_ERRORS):
                    raise
        raise AssertionError("unreachable")


class _NoDelayConnection(http.client.HTTPConnection):
    """http.client sends headers and body in separate writes; with Nagle's algorithm on, the
    body waits for the peer's delayed ACK (~40 ms per request on a kept-alive connection)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Connection:
    """One client connection: its requests one after another (HTTP/1.1 keep-alive)."""

    def __init__(
        self, gateway: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gateway = gateway
        self.limits = gateway.limits
        self.reader = reader
        self.writer = writer
        self.held = 0  # this connection's share of gateway.buffered

    def abort(self) -> None:
        self.writer.transport.abort()

    async def run(self) -> None:
        # A new connection must start its request within the read time-out; between
        # requests the (longer) keep-alive time-out applies.
        wait = self.limits.read_timeout_s
        while True:
            self.gateway.idle.add(self)
            try:
                first = await asyncio.wait_for(self.reader.read(1), wait)
            except (TimeoutError, ConnectionError):
                return
            finally:
                self.gateway.idle.discard(self)
            if not first:
                return
            try:
                keep_alive = await self._exchange(first)
            finally:
                self.gateway.buffered -= self.held
                self.held = 0
            if not keep_alive:
                return
            wait = self.limits.keepalive_timeout_s

    async def _exchange(self, first: bytes) -> bool:
        """Read one request and answer it; whether the connection stays open."""
        deadline = asyncio.get_running_loop().time() + self.limits.read_timeout_s
        request: Request | None = None
        try:
            async with asyncio.timeout_at(deadline):
                request = await http1.read_head(self.reader, first)
                if request is None:
                    return True  # blank lines between two requests
                await self._read_body(request)
        except TimeoutError:
            timeout = self.limits.read_timeout_s
            message = f"the request did not arrive within {timeout:g} s"
            await self.refuse(HttpError(408, "request_timeout", message))
            return False
        except HttpError as exc:
            if exc.close or request is None or not request.keep_alive:
                await self.refuse(exc, request)
                return False
            await self._send(*exc.answer(), request)
            return True
        except (http1.ClientGone, ConnectionError, asyncio.IncompleteReadError):
            return False
        return await self._dispatch(request)

    async def _read_body(self, request: Request) -> None:
        """Read the body into request.body, or drop it for any route but POST /invocations."""
        keep = request.method == "POST" and request.path == "/invocations"
        limit = self.limits.max_payload_bytes
        if http1.is_chunked(request):
            if not keep:  # not drained: the connection is closed instead
                raise route_error(request, close=True)
            self._continue(request)
            await http1.read_chunked(self.reader, limit, self._keep(request))
            return
        length = http1.content_length(request)
        if length > limit:
            drain = length <= DRAIN_FACTOR * limit and "expect" not in request.headers
            if drain:
                await http1.read_exact(self.reader, length, None)
            message = f"request body is {length} bytes; the limit is {limit}"
            raise HttpError(413, "payload_too_large", message, close=not drain)
        self._continue(request)
        await http1.read_exact(self.reader, length, self._keep(request) if keep else None)

    def _continue(self, request: Request) -> None:
        if request.headers.get("expect", "").lower() == "100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _keep(self, request: Request) -> Callable[[bytes], None]:
        """A sink that appends to the body while the gateway's byte budget allows."""

        def sink(chunk: bytes) -> None:
            gateway = self.gateway
            if gateway.buffered + len(chunk) > self.limits.max_buffered_bytes:
                raise busy("the server holds too many request bytes; retry")
            gateway.buffered += len(chunk)
            self.held += len(chunk)
            request.body += chunk

        return sink

    async def _dispatch(self, request: Request) -> bool:
        if request.method == "POST" and request.path == "/invocations":
            request_id = uuid.uuid4().hex
            status, body, headers = await self._invoke(request, request_id)
            headers = (*headers, (REQUEST_ID_HEADER, request_id))
            if status == 200 and media_type(request.headers.get("content-type")) in JSONLINES_TYPES:
                headers = (*headers, ("Content-Type", JSONLINES_TYPE))
        elif request.method in ("GET", "HEAD") and request.path == "/ping":
            ok, reason = self.gateway.health.get()
            status = 200 if ok else 503
            body = self.gateway.healthy_body if ok else error_body("unhealthy", reason)
            headers = ()
        elif request.method in ("GET", "HEAD") and request.path == "/execution-parameters":
            status, body, headers = 200, self.gateway.execution_parameters, ()
        elif request.method in ("GET", "HEAD") and request.path == "/":
            page = try_page()
            status, body, headers = 200, page.body, page.headers
        else:
            status, body, headers = route_error(request, close=False).answer()
        if status == 501:
            request.keep_alive = False
        await self._send(status, body, headers, request)
        return request.keep_alive

    async def _invoke(self, request: Request, request_id: str) -> Answer:
        ok, reason = self.gateway.health.get()
        if not ok:
            return busy(f"the model is not ready: {reason}", "unavailable").answer()
        try:
            headers = mms.request_headers(request, request_id)
        except HttpError as exc:
            return exc.answer()
        try:
            reply = await self.gateway.forward(request.body, headers)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("request %s: model server unreachable: %s", request_id, exc)
            return mms.model_server_error(503, request_id)
        return mms.client_answer(reply, request_id, self.gateway.user_code)

    async def _send(
        self,
        status: int,
        body: str | bytes,
        headers: http1.Headers,
        request: Request | None,
        close: bool = False,
    ) -> None:
        close = close or request is None or not request.keep_alive
        data = body.encode() if isinstance(body, str) else body
        head_only = request is not None and request.method == "HEAD"
        self.writer.write(http1.response_bytes(status, data, headers, close, head_only))
        try:
            # A client that does not read its answer must not hold the connection forever.
            await asyncio.wait_for(self.writer.drain(), self.limits.read_timeout_s)
        except (TimeoutError, ConnectionError):
            self.abort()

    async def refuse(self, error: HttpError, request: Request | None = None) -> None:
        """Answer with `error` and end the connection, draining what the client still sends."""
        await self._send(*error.answer(), request, close=True)
        with contextlib.suppress(Exception):
            self.writer.write_eof()
            async with asyncio.timeout(LINGER_S):
                while await self.reader.read(http1.READ_CHUNK):
                    pass


def route_error(request: Request, close: bool) -> HttpError:
    """The answer for anything but GET /ping and POST /invocations."""
    if request.method not in KNOWN_METHODS:
        return HttpError(501, "not_implemented", f"method {request.method[:20]!r} is not supported")
    allowed = ROUTES.get(request.path)
    if allowed is None:
        message = f"no route {request.method} {request.path[:200]}"
        return HttpError(404, "not_found", message, close=close)
    message = f"use {allowed} {request.path}"
    return HttpError(405, "method_not_allowed", message, close=close, headers=(("Allow", allowed),))

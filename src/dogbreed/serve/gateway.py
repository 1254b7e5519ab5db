"""The public HTTP front: an honest /ping and a thin /invocations pass-through to MMS.

Why a front at all: MMS answers /ping with HTTP 200 even when no worker can serve (the body
says "Unhealthy"), and answers "Healthy" before any model is registered. SageMaker only looks
at the status code. So MMS listens on loopback only, and this small threaded server owns the
public port: /ping is 200 only while the supervisor's monitor has seen MMS report its workers
up; /invocations is forwarded over a kept-alive loopback connection. It also enforces the body
size limit early and turns MMS's own error bodies into our `{"error", "message"}` shape.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dogbreed.serve.errors import PayloadTooLarge, ServeError, error_body

log = logging.getLogger(__name__)

MMS_PREDICT_PATH = "/predictions/model"
# Request headers MMS and the handler need; everything else stays here.
FORWARDED_HEADERS = ("content-type", "accept")
FORWARDED_PREFIX = "x-amzn-sagemaker-"
RETURNED_PREFIX = "x-dogbreed-"  # response headers passed back to the client
# Bodies up to this multiple of the limit are read and dropped so the client sees the 413;
# beyond it the connection is closed instead.
DRAIN_FACTOR = 4
_READ_CHUNK = 1 << 16
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


class Gateway(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of new connections got resets.
    request_queue_size = 256

    def __init__(
        self,
        address: tuple[str, int],
        backend_port: int,
        health: Health,
        max_payload_bytes: int,
        response_timeout_s: float,
    ) -> None:
        self.backend_port = backend_port
        self.health = health
        self.max_payload_bytes = max_payload_bytes
        self.response_timeout_s = response_timeout_s
        super().__init__(address, GatewayHandler)


class _NoDelayConnection(http.client.HTTPConnection):
    """http.client sends headers and body in separate writes; with Nagle's algorithm on, the
    body waits for the peer's delayed ACK (~40 ms per request on a kept-alive connection)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Same reason on the public side: headers and body are separate writes (see _reply).
    disable_nagle_algorithm = True
    server_version = "dogbreed"
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: Gateway
    _local = threading.local()  # one loopback connection to MMS per gateway thread

    def do_GET(self) -> None:
        if self.path == "/ping":
            ok, reason = self.server.health.get()
            if ok:
                self._reply(200, json.dumps({"status": "Healthy"}))
            else:
                self._reply(503, error_body("unhealthy", reason))
        elif self.path == "/invocations":
            self._reply(405, error_body("method_not_allowed", "use POST /invocations"))
        else:
            self._reply(404, error_body("not_found", f"no route {self.path}"))

    def do_PUT(self) -> None:
        self._method_not_allowed()

    def do_DELETE(self) -> None:
        self._method_not_allowed()

    def do_PATCH(self) -> None:
        self._method_not_allowed()

    def _method_not_allowed(self) -> None:
        routes = {"/invocations": "POST", "/ping": "GET"}
        allowed = routes.get(self.path)
        if allowed is None:
            body = error_body("not_found", f"no route {self.command} {self.path}")
            self._drain_and_reply(404, body)
        else:
            body = error_body("method_not_allowed", f"use {allowed} {self.path}")
            self._drain_and_reply(405, body, [("Allow", allowed)])

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """BaseHTTPRequestHandler's own errors (malformed request, unknown method) as JSON."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        try:
            status = HTTPStatus(code)
            name, phrase = status.name.lower(), status.phrase
        except ValueError:
            name, phrase = "error", ""
        self._reply(code, error_body(name, message or phrase or str(code)))

    def do_POST(self) -> None:
        if self.path != "/invocations":
            self._drain_and_reply(404, error_body("not_found", f"no route POST {self.path}"))
            return
        try:
            body = self._read_body()
        except ServeError as exc:
            self._reply(exc.status, exc.to_json())
            return
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() in FORWARDED_HEADERS or k.lower().startswith(FORWARDED_PREFIX)
        }
        try:
            status, extra, payload = self._forward(body, headers)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("model server unreachable: %s", exc)
            self._reply(503, error_body("unavailable", "the model server is not reachable"))
            return
        if status >= 400:
            payload = _normalise_error(status, payload)
        # The handler pads bodies with spaces to dodge an MMS decoder bug (handler.py).
        self._reply(status, payload.rstrip(b" "), extra)

    def _read_body(self) -> bytes:
        limit = self.server.max_payload_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise ServeError("invalid Content-Length header") from None
        if length > limit:
            self._discard(length)
            raise PayloadTooLarge(f"request body is {length} bytes; the limit is {limit}")
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                size = -1
            if size < 0:  # not hex, or negative ("-1" parses): rfile.read(-1) has no limit
                self.close_connection = True
                raise ServeError("malformed chunked body")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True  # the rest is never read: drop the connection
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            part = self.rfile.read(size)
            if len(part) != size:
                self.close_connection = True
                raise ServeError("malformed chunked body: the connection ended inside a chunk")
            parts.append(part)
            self.rfile.readline(1024)

    def _discard(self, length: int) -> None:
        if length > DRAIN_FACTOR * self.server.max_payload_bytes:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, _READ_CHUNK))
            if not chunk:
                break
            length -= len(chunk)

    def _drain_and_reply(
        self, status: int, body: str, extra: list[tuple[str, str]] | None = None
    ) -> None:
        if self.headers.get("Transfer-Encoding"):
            # Not drained: a chunked body left unread would be parsed as the next request.
            self.close_connection = True
        else:
            try:
                self._discard(int(self.headers.get("Content-Length") or 0))
            except ValueError:
                self.close_connection = True
        self._reply(status, body, extra)

    def _forward(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            fresh = conn is None
            if fresh:
                conn = _NoDelayConnection(
                    "127.0.0.1", self.server.backend_port, timeout=self.server.response_timeout_s
                )
                self._local.conn = conn
            try:
                conn.request("POST", MMS_PREDICT_PATH, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                extra = [
                    (k, v)
                    for k, v in response.getheaders()
                    if k.lower().startswith(RETURNED_PREFIX)
                ]
                return response.status, extra, payload
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                # A kept-alive connection MMS closed meanwhile: retry once on a new one.
                if fresh or attempt == 2 or not isinstance(exc, _STALE_CONNECTION_ERRORS):
                    raise
        raise AssertionError("unreachable")

    def _reply(
        self, status: int, body: str | bytes, extra: list[tuple[str, str]] | None = None
    ) -> None:
        """Every answer is JSON: ours, the handler's, or MMS's errors reshaped."""
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in extra or ():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _normalise_error(status: int, payload: bytes) -> bytes:
    """MMS's own errors ({"code", "type", "message"}) become {"error", "message"}."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if isinstance(document, dict) and "error" in document and "message" in document:
        return payload
    if isinstance(document, dict) and "message" in document:
        code = str(document.get("type") or "model_server_error")
        return error_body(code, str(document["message"])).encode()
    text = payload.decode("utf-8", "replace")[:500] or http.client.responses.get(status, "")
    return error_body("model_server_error", text).encode()

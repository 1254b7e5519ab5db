"""The gateway on its own (real sockets, in front of a small stand-in for MMS): forwarding,
its bounds on slow, idle and too many clients, MMS's errors replaced by ours; and the
supervisor's model check timing out."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import subprocess
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from loopback_http import LoopbackServer, QuietHandler
from serving import connect, split_response

from dogbreed.serve import server, webpage
from dogbreed.serve.gateway import Gateway, Health, Limits
from dogbreed.serve.settings import ServeSettings

RESPONSE_TIMEOUT_S = 1.0


class StandIn(QuietHandler):
    """Counts predictions and keeps the headers it got; sleeps past the gateway's timeout when
    asked, answers `status`/`body`, and closes its kept-alive connection after each answer
    when `close_after` is set (as MMS may)."""

    calls = 0
    delay_s = 0.0
    close_after = False
    status = 200
    body = b'{"ok": true}'
    seen: ClassVar[list[dict[str, str]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        with self.lock:
            type(self).calls += 1
            type(self).seen.append(dict(self.headers))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.delay_s)
        body = self.body
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.close_after:
            self.close_connection = True  # no "Connection: close": the gateway cannot know


@contextlib.contextmanager
def gateway_in_front(handler: type[StandIn], **limits: Any) -> Iterator[str]:
    """The gateway's base URL (with `limits` changed), in front of `handler`."""
    with running_gateway(handler, **limits) as gateway:
        yield url_of(gateway)


def url_of(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.server_address[1]}"


@contextlib.contextmanager
def running_gateway(handler: type[StandIn], **limits: Any) -> Iterator[Gateway]:
    backend = LoopbackServer(handler)
    health = Health()
    health.set(True, "test")
    bounds = Limits(max_payload_bytes=1 << 20, response_timeout_s=RESPONSE_TIMEOUT_S, **limits)
    gateway = Gateway(("127.0.0.1", 0), backend.server_address[1], health, bounds)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (backend, gateway)]
    for thread in threads:
        thread.start()
    try:
        yield gateway
    finally:
        for s in (gateway, backend):
            s.shutdown()
            s.server_close()


def test_a_timed_out_request_is_not_retried() -> None:
    class Slow(StandIn):
        calls = 0

    with gateway_in_front(Slow) as url, requests.Session() as session:
        # The first request opens the gateway's kept-alive connection; the second reuses it.
        assert session.post(f"{url}/invocations", data=b"x", timeout=10).status_code == 200
        Slow.delay_s = 2 * RESPONSE_TIMEOUT_S
        response = session.post(f"{url}/invocations", data=b"x", timeout=10)
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        time.sleep(Slow.delay_s)
    assert Slow.calls == 2  # not 3: the slow request ran once


def test_a_connection_the_model_server_closed_is_retried() -> None:
    class Closing(StandIn):
        calls = 0
        close_after = True

    with gateway_in_front(Closing) as url, requests.Session() as session:
        for _ in range(3):
            response = session.post(f"{url}/invocations", data=b"x", timeout=10)
            assert response.status_code == 200, response.text
    assert Closing.calls == 3


def test_a_model_check_past_the_startup_timeout_is_a_serve_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])  # type: ignore[arg-type]

    fake = types.SimpleNamespace(run=run, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(server, "subprocess", fake)
    with pytest.raises(server.ServeFailure, match="did not finish within 7 s"):
        server.check_in_subprocess(tmp_path, ServeSettings(startup_timeout_s=7))


def read_answer(sock: socket.socket, limit_s: float) -> bytes:
    """Everything the gateway sends on `sock` until it closes the connection (bounded)."""
    sock.settimeout(limit_s)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_a_body_that_does_not_arrive_in_time_is_a_408() -> None:
    """Content-Length 5000, 100 bytes sent: a JSON 408 after the read time-out, then the
    connection is closed; nothing reached the model server."""

    class Counting(StandIn):
        calls = 0

    with gateway_in_front(Counting, read_timeout_s=1.0) as url, connect(url) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        sock.sendall(b"x" * 100)
        status, headers, body = split_response(read_answer(sock, 10))
        elapsed = time.monotonic() - start
    assert status == 408
    assert json.loads(body)["error"] == "request_timeout"
    assert headers["connection"] == "close"
    assert 0.9 < elapsed < 5
    assert Counting.calls == 0


def test_idle_connections_are_closed_after_the_keepalive_timeout() -> None:
    with gateway_in_front(StandIn, read_timeout_s=1.0, keepalive_timeout_s=2.0) as url:
        with connect(url) as sock:  # a new connection that never sends: the read time-out
            start = time.monotonic()
            assert read_answer(sock, 10) == b""
            assert 0.9 < time.monotonic() - start < 5
        with connect(url) as sock:  # after an answer: the keep-alive time-out
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            start = time.monotonic()
            assert read_answer(sock, 10) == b""
            assert 1.9 < time.monotonic() - start < 6


def test_past_the_connection_limit_a_fast_503_with_retry_after() -> None:
    """Three clients in the middle of a request hold the three connections allowed: a fourth
    gets a 503 at once. Idle kept-alive connections, though, make room for new ones."""
    with running_gateway(StandIn, max_connections=3) as gateway:
        url = url_of(gateway)
        busy = [connect(url) for _ in range(3)]
        for sock in busy:
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # head not finished
        wait_for(lambda: len(gateway.connections) == 3)
        with connect(url) as extra:
            start = time.monotonic()
            status, headers, body = split_response(read_answer(extra, 10))
            assert time.monotonic() - start < 2
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"] == "busy"
        for sock in busy:
            sock.close()
        wait_for(lambda: not gateway.connections)
        with requests.Session() as a, requests.Session() as b, requests.Session() as c:
            for session in (a, b, c):  # three kept-alive, now idle, connections
                assert session.get(f"{url}/ping", timeout=5).status_code == 200
            assert requests.get(f"{url}/ping", timeout=5).status_code == 200


def test_request_bytes_beyond_the_memory_budget_get_a_503() -> None:
    """A client holding most of the body budget: the next body that does not fit is refused
    with Retry-After; once the first finishes, bodies fit again."""

    class Counting(StandIn):
        calls = 0

    mb = 1 << 20
    with running_gateway(Counting, max_buffered_bytes=mb + mb // 2) as gateway:
        url = url_of(gateway)
        with connect(url) as holder:
            holder.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % mb
            )
            holder.sendall(b"x" * (mb - 10_000))
            wait_for(lambda: gateway.buffered >= mb - 10_000)
            response = requests.post(f"{url}/invocations", data=b"y" * (mb + 5), timeout=10)
            assert response.status_code == 413  # over the per-request limit: not buffered
            response = requests.post(f"{url}/invocations", data=b"y" * mb, timeout=10)
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
            assert response.json()["error"] == "busy"
            holder.sendall(b"x" * 10_000)
            assert split_response(read_answer_once(holder))[0] == 200
        wait_for(lambda: gateway.buffered == 0)
        assert requests.post(f"{url}/invocations", data=b"y" * mb, timeout=10).status_code == 200
    assert Counting.calls == 2


def read_answer_once(sock: socket.socket) -> bytes:
    """One answer on a kept-alive connection (its headers and small body arrive together)."""
    sock.settimeout(10)
    return sock.recv(65536)


@pytest.mark.parametrize(
    ("status", "error", "retry"), [(500, "internal_error", False), (503, "unavailable", True)]
)
def test_the_model_servers_own_errors_never_reach_the_client(
    status: int, error: str, retry: bool
) -> None:
    class Failing(StandIn):
        body = json.dumps(
            {"code": status, "type": "InternalServerException", "message": "Worker died."}
        ).encode()

    Failing.status = status
    with gateway_in_front(Failing) as url:
        response = requests.post(f"{url}/invocations", data=b"x", timeout=10)
    assert response.status_code == status
    document = response.json()
    assert document["error"] == error
    assert document["request_id"] == response.headers["X-Dogbreed-Request-Id"]
    assert "died" not in response.text and "Exception" not in response.text
    assert ("Retry-After" in response.headers) == retry


def test_the_model_server_gets_no_form_body_and_only_ascii_headers() -> None:
    """MMS parses multipart and url-encoded bodies itself (a client's malformed form would be
    its error, not ours): it always gets octet-stream, the client's type in our header."""

    class Recording(StandIn):
        seen: ClassVar[list[dict[str, str]]] = []

    with gateway_in_front(Recording) as url:
        form = "multipart/form-data; boundary=x"
        headers = {"Content-Type": form, "X-Amzn-SageMaker-Custom-Attributes": "top_k=2"}
        assert requests.post(f"{url}/invocations", data=b"--x--", headers=headers).ok
        bad = {"X-Amzn-SageMaker-Custom-Attributes": "top_k=\xe9"}
        response = requests.post(f"{url}/invocations", data=b"x", headers=bad, timeout=10)
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    [seen] = Recording.seen
    assert seen["Content-Type"] == "application/octet-stream"
    assert seen["x-dogbreed-content-type"] == form
    assert seen["x-amzn-sagemaker-custom-attributes"] == "top_k=2"
    assert len(seen["x-dogbreed-request-id"]) == 32


def test_invocations_before_the_model_is_ready_get_a_503() -> None:
    class Counting(StandIn):
        calls = 0

    with running_gateway(Counting) as gateway:
        gateway.health.set(False, "starting")
        response = requests.post(f"{url_of(gateway)}/invocations", data=b"x", timeout=10)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["error"] == "unavailable"
    assert Counting.calls == 0


def wait_for(condition: Callable[[], bool], limit_s: float = 10) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --- GET /: the try-the-model page ---------------------------------------------------------


PAGE_SOURCE = Path(webpage.__file__).with_name("assets") / webpage.PAGE_NAME


def test_the_page_at_root_has_its_security_headers_and_posts_to_invocations() -> None:
    class Counting(StandIn):
        calls = 0

    with gateway_in_front(Counting) as url:
        response = requests.get(f"{url}/", timeout=5)
        head = requests.head(f"{url}/", timeout=5)
        post = requests.post(f"{url}/", data=b"x", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-cache"
    page = response.text
    source = PAGE_SOURCE.read_text()
    # The source with its one placeholder filled in: images go to /invocations here.
    assert page == source.replace(
        '<meta name="predict-url" content="">', '<meta name="predict-url" content="/invocations">'
    )
    assert Counting.calls == 0  # the page never reaches the model server
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(response.content))
    assert post.status_code == 405 and post.headers["Allow"] == "GET"


def test_the_csp_allows_exactly_the_pages_inline_blocks() -> None:
    with gateway_in_front(StandIn) as url:
        response = requests.get(f"{url}/", timeout=5)
    directives = dict(
        (part.split()[0], part.split()[1:])
        for part in response.headers["Content-Security-Policy"].split("; ")
    )
    assert directives["default-src"] == ["'none'"]
    assert directives["img-src"] == ["'self'", "blob:", "data:"]
    assert directives["connect-src"] == ["'self'"]
    page = response.text
    for kind in ("script", "style"):
        blocks = page.split(f"<{kind}>")[1:]
        assert len(blocks) == 1, f"one inline {kind} block"
        block = blocks[0].split(f"</{kind}>")[0]
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert directives[f"{kind}-src"] == [f"'sha256-{digest}'"]
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]

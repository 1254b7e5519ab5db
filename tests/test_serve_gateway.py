"""The gateway's forwarding on its own, in front of a small stand-in for MMS, and the
supervisor's model check timing out."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from loopback_http import LoopbackServer, QuietHandler

from dogbreed.serve import server
from dogbreed.serve.gateway import Gateway, Health
from dogbreed.serve.settings import ServeSettings

RESPONSE_TIMEOUT_S = 1.0


class StandIn(QuietHandler):
    """Counts predictions; sleeps past the gateway's timeout when asked, and closes its
    kept-alive connection after each answer when `close_after` is set (as MMS may)."""

    calls = 0
    delay_s = 0.0
    close_after = False
    lock = threading.Lock()

    def do_POST(self) -> None:
        with self.lock:
            type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.delay_s)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.close_after:
            self.close_connection = True  # no "Connection: close": the gateway cannot know


@contextlib.contextmanager
def gateway_in_front(handler: type[StandIn]) -> Iterator[str]:
    backend = LoopbackServer(handler)
    health = Health()
    health.set(True, "test")
    gateway = Gateway(
        ("127.0.0.1", 0), backend.server_address[1], health, 1 << 20, RESPONSE_TIMEOUT_S
    )
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (backend, gateway)]
    for thread in threads:
        thread.start()
    try:
        yield f"http://127.0.0.1:{gateway.server_address[1]}"
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

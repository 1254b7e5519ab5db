"""The base of the tests' small stand-in HTTP servers (fake container, SageMaker runtime),
`free_port` (tests and bench/ use this one) and a real moto server on loopback."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

S = TypeVar("S", bound=ThreadingHTTPServer)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_moto_server() -> Iterator[str]:
    """A real moto HTTP server on 127.0.0.1, emptied first; its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        # moto keeps its state per process, not per server: start from empty.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
        yield url
    finally:
        server.stop()


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on a free port of 127.0.0.1."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as MMS and the SageMaker runtime
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every answer.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@contextmanager
def serving(server: S) -> Iterator[S]:
    """Serve `server` on a background thread; shut it down and close it afterwards."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

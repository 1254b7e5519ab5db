"""A tiny model container for the AWS tests: real HTTP on 127.0.0.1, fake model.

Why a stand-in: the loadtest and invoke tests check how OUR client code behaves against a
server with known capacity and latency (`workers` requests at a time, each taking `delay_s`),
which a real model cannot give deterministically on 2 shared CPU cores. It answers
`POST /invocations` with a top-k JSON (k from `X-Amzn-SageMaker-Custom-Attributes: top_k=K`)
and `GET /ping`; `status` forces an error answer. Tests only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loopback_http import LoopbackServer, QuietHandler, serving
from PIL import Image

BREEDS = ["Affenpinscher", "Beagle", "Collie", "Dalmatian", "Entlebucher_mountain_dog"]


def write_jpeg(path: Path) -> Path:
    """A small real JPEG to send."""
    Image.new("RGB", (64, 48), (200, 120, 40)).save(path, "JPEG")
    return path


class FakeContainer(LoopbackServer):
    def __init__(self, workers: int = 2, delay_s: float = 0.0) -> None:
        super().__init__(_Handler)
        self.slots = threading.Semaphore(workers)
        self.delay_s = delay_s
        self.status = 200
        self.requests = 0
        self.last_body = b""
        self.last_headers: dict[str, str] = {}


class _Handler(QuietHandler):
    server: FakeContainer

    def _answer(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200, {"status": "Healthy"})

    def do_POST(self) -> None:
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with server.slots:  # at most `workers` requests are served at once
            time.sleep(server.delay_s)
        server.requests += 1
        server.last_body = body
        server.last_headers = dict(self.headers.items())
        if server.status != 200:
            self._answer(server.status, {"error": "unsupported image"})
            return
        attributes = self.headers.get("X-Amzn-SageMaker-Custom-Attributes", "")
        top_k = int(attributes.partition("top_k=")[2] or 5)
        top = [{"label": b, "score": round(0.5 ** (i + 1), 4)} for i, b in enumerate(BREEDS)]
        self._answer(200, {"top_k": top[:top_k]})


@contextmanager
def running_container(workers: int = 2, delay_s: float = 0.0) -> Iterator[FakeContainer]:
    with serving(FakeContainer(workers, delay_s)) as server:
        yield server

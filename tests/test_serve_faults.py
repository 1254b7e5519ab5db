"""Faults and hostile clients against the real server (gateway, Java MMS, worker), over real
sockets on 127.0.0.1: hostile bodies mixed with good photos never harm the photos, cost no
worker and no memory; 500 slow clients hold no thread and do not slow the others."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import resource
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from serving import (
    TEST_ENV,
    bomb_png,
    connect,
    jpeg,
    png,
    role,
    running_server,
    server_processes,
)

from dogbreed.data.images import is_image_file

JSON = "application/json"
CONCURRENCY = 6  # half good-photo clients, half hostile ones
WARMUP_S = 10.0
MEASURE_S = 20.0
MAX_REQUESTS_PER_CLIENT = 2000  # next to the time bound
MEMORY_GROWTH_LIMIT = 0.10
SLOW_CONNECTIONS = 500
# Allowed on top of the p99 measured just before: scheduling noise on two shared cores.
P99_MARGIN_S = 0.25


@dataclass
class Server:
    url: str
    log: Path


@pytest.fixture(scope="module")
def server(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Slow clients must stay open for the whole measurement: a read time-out longer than it.
    log = tmp_path_factory.mktemp("faults") / "serve.log"
    env = {"DOGBREED_READ_TIMEOUT": "60"}
    with running_server(trained_model_dir, env, log_path=log) as url:
        yield Server(url, log)


def photos(sample_data: Path) -> list[bytes]:
    """Real JPEG bytes: the generated sample photos and two larger noisy ones from Pillow."""
    files = sorted(p for p in (sample_data / "test").rglob("*") if is_image_file(p))[:8]
    rng = np.random.default_rng(0)
    large = []
    for size in ((500, 375), (1600, 1200)):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        large.append(buffer.getvalue())
    return [p.read_bytes() for p in files] + large


Planned = tuple[str, bytes, dict[str, str]]  # name, body, headers


def hostile_requests() -> list[Planned]:
    """(name, body, headers): each one a client's mistake or attack, each a 4xx."""
    photo = jpeg()
    random_bytes = np.random.default_rng(1).bytes(2_000_000)
    attributes = "x-amzn-sagemaker-custom-attributes"
    return [
        ("deep JSON", b"[" * 50_000 + b"]" * 50_000, {"Content-Type": JSON}),
        ("wide JSON", b"[" + b"0," * 200_000 + b"0]", {"Content-Type": JSON}),
        ("huge float", b'{"image": "eA==", "top_k": 1e999}', {"Content-Type": JSON}),
        ("huge int", b'{"image": "eA==", "top_k": ' + b"9" * 5000 + b"}", {"Content-Type": JSON}),
        ("huge string", b'{"image": "' + b"!" * 3_000_000 + b'"}', {"Content-Type": JSON}),
        ("base64 of noise", json.dumps({"image": base64.b64encode(random_bytes).decode()}).encode(),
         {"Content-Type": JSON}),
        ("truncated JPEG", photo[: len(photo) // 2], {"Content-Type": "image/jpeg"}),
        ("corrupt JPEG", photo[:20] + random_bytes[:20_000], {"Content-Type": "image/jpeg"}),
        ("image bomb", bomb_png(), {"Content-Type": "image/png"}),
        ("aspect bomb", png(1, 10_000), {"Content-Type": "image/png"}),
        ("form body", b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n",
         {"Content-Type": "multipart/form-data; boundary=x"}),
        ("over 6 MB", random_bytes * 4, {"Content-Type": "image/jpeg"}),
        ("33 images", json.dumps(["eA=="] * 33).encode(), {"Content-Type": JSON}),
        ("non-ASCII header", photo, {"Content-Type": "image/jpeg", attributes: "top_k=\xe9"}),
        ("wrong accept", photo, {"Content-Type": "image/jpeg", "Accept": "text/csv"}),
    ]  # fmt: skip


@dataclass
class Tally:
    good: list[int]
    hostile: dict[str, set[int]]
    bad_bodies: list[str]
    lock: threading.Lock


def client(url: str, tally: Tally, plan: list[Planned], hostile: bool, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with requests.Session() as session:
        for i in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() > deadline:
                return
            name, body, headers = plan[i % len(plan)]
            response = session.post(f"{url}/invocations", data=body, headers=headers, timeout=60)
            document = response.json()
            with tally.lock:
                if hostile:
                    tally.hostile.setdefault(name, set()).add(response.status_code)
                    if set(document) != {"error", "message"}:
                        tally.bad_bodies.append(f"{name}: {response.text[:200]}")
                else:
                    tally.good.append(response.status_code)
                    if "top_k" not in document:
                        tally.bad_bodies.append(f"photo: {response.text[:200]}")


def load(url: str, photo_bodies: list[bytes], seconds: float) -> Tally:
    tally = Tally([], {}, [], threading.Lock())
    good = [("photo", b, {"Content-Type": "image/jpeg"}) for b in photo_bodies]
    hostile = hostile_requests()
    threads = [
        threading.Thread(
            target=client, args=(url, tally, hostile if k % 2 else good, bool(k % 2), seconds)
        )
        for k in range(CONCURRENCY)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
        assert not thread.is_alive()
    return tally


def memory_mib(url: str) -> float:
    """RSS of every server process: supervisor + gateway, MMS launcher, Java, workers."""
    return sum(p.memory_info().rss for p in server_processes(url)) / (1 << 20)


def test_hostile_bodies_never_harm_good_photos(server: Server, sample_data: Path) -> None:
    """Concurrency 6 (3 photo clients, 3 hostile ones) for a warm-up and a measured run: every
    photo 200, every hostile body a JSON 4xx, the same worker process throughout, no worker
    (re)started in MMS's log, and all server processes together grow less than 10%."""
    bodies = photos(sample_data)
    # Each MMS worker is two processes: its listener and the child forked for the frontend.
    workers = {p.pid for p in server_processes(server.url) if role(p) == "worker"}
    tallies = [load(server.url, bodies, WARMUP_S)]
    after_warmup = memory_mib(server.url)
    tallies.append(load(server.url, bodies, MEASURE_S))
    at_end = memory_mib(server.url)
    for tally in tallies:
        assert tally.good and set(tally.good) == {200}
        assert not tally.bad_bodies, tally.bad_bodies[:5]
        for name, statuses in tally.hostile.items():
            assert all(400 <= s < 500 for s in statuses), (name, statuses)
    assert set(tallies[1].hostile) == {name for name, _, _ in hostile_requests()}
    assert {p.pid for p in server_processes(server.url) if role(p) == "worker"} == workers
    log = server.log.read_text(errors="replace")
    assert log.count("model_service_worker started") == int(
        TEST_ENV["SAGEMAKER_MODEL_SERVER_WORKERS"]
    )
    assert "died" not in log.lower()
    growth = (at_end - after_warmup) / after_warmup
    print(f"memory after warm-up {after_warmup:.0f} MiB, at the end {at_end:.0f} ({growth:+.1%})")
    assert growth < MEMORY_GROWTH_LIMIT


def good_latencies(url: str, clients: int = 2, per_client: int = 30) -> list[float]:
    """Seconds per request of `clients` photo clients, each on a kept-alive connection."""
    photo = jpeg()
    latencies: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        with requests.Session() as session:
            for _ in range(per_client):
                start = time.perf_counter()
                response = session.post(
                    f"{url}/invocations", data=photo, headers={"Content-Type": "image/jpeg"}
                )
                with lock:
                    if response.status_code == 200:  # anything else fails the count below
                        latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(latencies) == clients * per_client
    return latencies


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


@contextlib.contextmanager
def slow_clients(url: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that declare a 5000-byte body and send 100 bytes of it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:  # this process holds every one of them
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 256), hard))
    socks = []
    try:
        for _ in range(count):
            sock = connect(url)
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
            sock.sendall(b"x" * 100)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def still_open(sock: socket.socket) -> bool:
    """No answer and no close yet: the server is still waiting for the rest of the body."""
    sock.setblocking(False)
    try:
        sock.recv(1)  # an answer or the end of the connection
    except BlockingIOError:
        return True
    return False


def test_slow_clients_hold_no_thread_and_do_not_slow_good_requests(server: Server) -> None:
    """500 connections stuck in the middle of their body: the gateway keeps no thread for any
    of them (its thread count stays within its forwarding pool), and good requests are
    answered within their p99 of just before plus P99_MARGIN_S."""
    supervisor = next(p for p in server_processes(server.url) if role(p) == "supervisor")
    before = good_latencies(server.url)
    threads_before = supervisor.num_threads()
    with slow_clients(server.url, SLOW_CONNECTIONS) as socks:
        during = good_latencies(server.url)
        threads_during = supervisor.num_threads()
        assert all(still_open(s) for s in socks)
    print(f"p99 {p99(before) * 1000:.0f} ms before, {p99(during) * 1000:.0f} ms with "
          f"{SLOW_CONNECTIONS} slow clients; supervisor threads {threads_before} -> "
          f"{threads_during}")  # fmt: skip
    assert threads_during - threads_before < 20  # the forwarding pool (16) at most
    assert p99(during) <= p99(before) + P99_MARGIN_S

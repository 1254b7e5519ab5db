"""Soak: errors and memory of `dogbreed serve` under steady load, our JVM flags against AWS's.

  ours      `dogbreed serve` as shipped: the frontend's JVM sized by mms.default_vmargs
  baseline  the same server with the flags AWS's inference images use (max heap 10% of the
            machine's memory, G1), which this server had before

Closed loop: `--concurrency` clients, one kept-alive connection each, real JPEG bytes (the
generated sample data plus photo-like 500x375 and 1600x1200 JPEGs made with Pillow). Every
`--sample-every` s: requests, errors, req/s and p99 over the interval, resident memory (RSS) of
each server process (supervisor + gateway, MMS launcher, Java frontend, workers) and the PSS
total (shared pages counted once: what a container's memory limit sees). Memory growth is
measured from the end of the warm-up to the end of the run.

    python bench/bench_soak.py                                # 600 s ours, 120 s baseline
    python bench/bench_soak.py --seconds 60 --baseline-seconds 0 --vmargs "-Xmx64m"
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_serve import make_model, photo_jpegs  # noqa: E402
from serving import role, running_server, server_processes  # noqa: E402

from dogbreed.data.images import is_image_file  # noqa: E402
from dogbreed.data.sample import generate_sample  # noqa: E402
from dogbreed.hostcpu import available_cpus  # noqa: E402
from dogbreed.serve.settings import ServeSettings, resolve_parallelism  # noqa: E402

# What AWS's inference images pass to MMS (and this server did until it measured its needs).
AWS_VMARGS = (
    "-XX:+UseContainerSupport -XX:InitialRAMPercentage=8.0 -XX:MaxRAMPercentage=10.0 "
    "-XX:-UseLargePages -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError"
)
ROLES = ("supervisor", "launcher", "java", "worker")
MAX_REQUESTS_PER_S = 1000  # hard bound on the load loop next to the deadline
MAX_GROWTH_PCT = 10.0  # issue 11: memory of all server processes within 10% after warm-up
MiB = 1024 * 1024


@dataclass
class Interval:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


class Load:
    """Closed-loop clients on background threads; `take()` returns the interval so far."""

    def __init__(self, url: str, images: list[bytes], concurrency: int, seconds: float) -> None:
        self.parts = urlsplit(url)
        self.images = images
        self.deadline = time.monotonic() + seconds
        self.budget = int(MAX_REQUESTS_PER_S * seconds)
        self.lock = threading.Lock()
        self.interval = Interval()
        self.errors_seen: dict[int, int] = defaultdict(int)
        self.threads = [
            threading.Thread(target=self._client, args=(k,), daemon=True)
            for k in range(concurrency)
        ]
        for thread in self.threads:
            thread.start()

    def _client(self, offset: int) -> None:
        host, port = self.parts.hostname, self.parts.port
        conn = http.client.HTTPConnection(host, port, timeout=60)
        i = offset
        while time.monotonic() < self.deadline:
            with self.lock:
                if self.budget <= 0:
                    break
                self.budget -= 1
            body = self.images[i % len(self.images)]
            i += 1
            start = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "image/jpeg"})
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
                status = 0
            elapsed = time.perf_counter() - start
            with self.lock:
                if status == 200:
                    self.interval.latencies.append(elapsed)
                else:
                    self.interval.errors += 1
                    self.errors_seen[status] += 1
        conn.close()

    def take(self) -> Interval:
        with self.lock:
            interval, self.interval = self.interval, Interval()
        return interval

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def memory(url: str) -> dict[str, float]:
    """MiB: RSS per role (workers summed) and the PSS of all server processes."""
    rss: dict[str, float] = dict.fromkeys(ROLES, 0.0)
    pss = 0.0
    for proc in server_processes(url):
        try:
            info = proc.memory_full_info()
            rss[role(proc)] += info.rss / MiB
            pss += info.pss / MiB
        except psutil.NoSuchProcess:
            continue
    return {**rss, "rss": sum(rss.values()), "pss": pss}


def soak(
    url: str, images: list[bytes], args: argparse.Namespace, seconds: float
) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    load = Load(url, images, args.concurrency, seconds)
    started = time.monotonic()
    total = errors = 0
    print(
        f"{'t s':>5} {'requests':>9} {'errors':>6} {'req/s':>7} {'p99 ms':>7} "
        + " ".join(f"{r:>10}" for r in ROLES)
        + f" {'RSS MiB':>8} {'PSS MiB':>8}"
    )
    while (elapsed := time.monotonic() - started) < seconds:
        time.sleep(min(args.sample_every, max(0.0, seconds - elapsed)))
        interval = load.take()
        span = time.monotonic() - started - (rows[-1]["t"] if rows else 0.0)
        total += len(interval.latencies)
        errors += interval.errors
        p99 = 0.0
        if len(interval.latencies) > 1:
            p99 = statistics.quantiles(interval.latencies, n=100, method="inclusive")[98] * 1000
        row = {
            "t": time.monotonic() - started,
            "requests": total,
            "errors": errors,
            "rps": len(interval.latencies) / span,
            "p99": p99,
            **memory(url),
        }
        rows.append(row)
        print(
            f"{row['t']:>5.0f} {total:>9} {errors:>6} {row['rps']:>7.1f} {p99:>7.1f} "
            + " ".join(f"{row[r]:>10.1f}" for r in ROLES)
            + f" {row['rss']:>8.1f} {row['pss']:>8.1f}",
            flush=True,
        )
    load.join()
    if load.errors_seen:
        print(f"errors by status (0: no answer): {dict(load.errors_seen)}")
    return rows


def growth_after_warmup(rows: list[dict[str, float]], warmup: float) -> dict[str, float]:
    """Per cent growth of java RSS, total RSS and PSS from the first sample after the warm-up."""
    after = next((r for r in rows if r["t"] >= warmup), rows[0])
    return {k: (rows[-1][k] - after[k]) / after[k] * 100 for k in ("java", "rss", "pss")}


def summary(name: str, rows: list[dict[str, float]], warmup: float) -> str:
    after = next((r for r in rows if r["t"] >= warmup), rows[0])
    last = rows[-1]
    growth = growth_after_warmup(rows, warmup)
    peak = max(r["pss"] for r in rows)
    return (
        f"{name:<9} {last['t']:>5.0f} s {last['requests']:>8.0f} req {last['errors']:>4.0f} err "
        f"{last['requests'] / last['t']:>6.1f} req/s | after {after['t']:.0f} s -> end: "
        f"java {after['java']:.0f} -> {last['java']:.0f} MiB ({growth['java']:+.1f}%), "
        f"RSS {after['rss']:.0f} -> {last['rss']:.0f} ({growth['rss']:+.1f}%), "
        f"PSS {after['pss']:.0f} -> {last['pss']:.0f} ({growth['pss']:+.1f}%), "
        f"peak PSS {peak:.0f} MiB"
    )


def real_jpegs(work: Path) -> list[bytes]:
    sample = work / "sample"
    generate_sample(sample, classes=4, per_class=6, seed=1)
    files = sorted(p for p in sample.rglob("*") if is_image_file(p))[:16]
    return (
        [p.read_bytes() for p in files]
        + photo_jpegs(8, (500, 375))
        + photo_jpegs(4, (1600, 1200), seed=1)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: a fresh random one)")
    parser.add_argument("--arch", default="resnet18", help="backbone of the generated model")
    parser.add_argument("--classes", type=int, default=133)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=600.0, help="ours")
    parser.add_argument("--baseline-seconds", type=float, default=120.0, help="0: skip it")
    parser.add_argument("--warmup", type=float, default=30.0, help="growth is counted after it")
    parser.add_argument("--sample-every", type=float, default=15.0)
    parser.add_argument("--vmargs", help="JVM flags for ours (default: the server's own)")
    args = parser.parse_args()

    # The server's own defaults (tests/serving.py would pin 1 worker x 1 thread).
    settings = resolve_parallelism(ServeSettings(), available_cpus(), 0)
    server_env = {
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(settings.workers),
        "DOGBREED_THREADS": str(settings.threads),
    }
    print(
        f"{available_cpus()} CPU(s), {settings.workers} worker(s) x {settings.threads} "
        f"thread(s), concurrency {args.concurrency}, warm-up {args.warmup:g} s"
    )
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        work = Path(tmp)
        images = real_jpegs(work)
        model = args.model or make_model(work / "model", args.arch, args.classes, args.image_size)
        print(f"{len(images)} JPEGs, {sum(map(len, images)) // len(images) // 1024} KiB average")
        runs = [
            ("ours", args.seconds, args.vmargs),
            ("baseline", args.baseline_seconds, AWS_VMARGS),
        ]
        for name, seconds, vmargs in runs:
            if seconds <= 0:
                continue
            env = {**server_env, **({"SAGEMAKER_MODEL_SERVER_VMARGS": vmargs} if vmargs else {})}
            print(f"\n== {name}: {vmargs or 'default JVM flags'}, {seconds:g} s")
            with running_server(model, env) as url:
                results[name] = soak(url, images, args, seconds)
    print()
    for name, rows in results.items():
        print(summary(name, rows, args.warmup))
    return verdict(results.get("ours"), args.warmup)


def verdict(rows: list[dict[str, float]] | None, warmup: float) -> int:
    """Exit status: 1 when ours had an error or its memory (PSS) grew by the issue's 10% or
    more after the warm-up; the baseline only gives the comparison."""
    if not rows:
        return 0
    errors, growth = rows[-1]["errors"], growth_after_warmup(rows, warmup)["pss"]
    if errors or growth >= MAX_GROWTH_PCT:
        print(f"FAIL: ours had {errors:.0f} error(s), PSS {growth:+.1f}% after the warm-up")
        return 1
    print(f"PASS: 0 errors, PSS {growth:+.1f}% (< {MAX_GROWTH_PCT:g}%) after the warm-up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`dogbreed loadtest`: the sustainable request rate of ONE serving container.

Sends the same image to `URL/invocations` from 1, 2, 4, ... concurrent clients (each level
bounded in time and request count), stops at the first level whose p95 latency exceeds the
bound or that has any error, and prints the table, the highest sustainable req/s (MAX_RPS) and
the SageMaker autoscaling target by AWS's rule: MAX_RPS x safety factor x 60 (invocations per
instance per minute). Standard library only; one persistent HTTP connection per client thread.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

MAX_CONCURRENCY = 256
MAX_DURATION = 300
MAX_REQUESTS = 100_000


class LoadTestError(RuntimeError):
    """Bad settings or a server that cannot be tested; the message says which."""


@dataclass
class Level:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    first_error: str = ""
    sustainable: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default="http://127.0.0.1:8080", help="container base URL (default :8080)"
    )
    parser.add_argument("--image", required=True, type=Path, help="image file sent every time")
    parser.add_argument(
        "--content-type", default="application/x-image", help="(default application/x-image)"
    )
    parser.add_argument(
        "--concurrency",
        default="1,2,4,8,16",
        help="comma-separated rising client counts (default 1,2,4,8,16)",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per level (default 10)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=2000, help="requests per level at most (default 2000)"
    )
    parser.add_argument(
        "--p95-ms", type=float, default=1000.0, help="latency bound for p95 (default 1000 ms)"
    )
    parser.add_argument(
        "--safety-factor", type=float, default=0.5, help="share of MAX_RPS to target (0.5)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout (default 60 s)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, send no request")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class Target:
    """Where requests go: one persistent connection per thread, reopened after an error."""

    def __init__(self, url: str, body: bytes, content_type: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LoadTestError(f"--url must look like http://HOST:PORT, not {url!r}")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.path = parts.path.rstrip("/") + "/invocations"
        self.body = body
        self.headers = {"Content-Type": content_type, "Accept": "application/json"}
        self.timeout = timeout

    def connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=self.timeout)

    def send(self, conn: http.client.HTTPConnection) -> tuple[bool, str]:
        """(ok, error text); ok means HTTP 200 with the whole body read."""
        conn.request("POST", self.path, body=self.body, headers=self.headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status == 200:
            return True, ""
        return False, f"HTTP {response.status}: {payload[:200].decode(errors='replace')}"


def run_level(target: Target, concurrency: int, duration: float, max_requests: int) -> Level:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    started = 0
    deadline = time.monotonic() + duration

    def client() -> None:
        nonlocal started
        conn = target.connect()
        try:
            while time.monotonic() < deadline:
                with lock:
                    if started >= max_requests:
                        return
                    started += 1
                begin = time.perf_counter()
                try:
                    ok, error = target.send(conn)
                except (OSError, http.client.HTTPException) as exc:
                    ok, error = False, f"{type(exc).__name__}: {exc}"
                    conn.close()
                    conn = target.connect()
                elapsed = time.perf_counter() - begin
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors.append(error)
        finally:
            conn.close()

    begin = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        # A request in flight at the deadline may take up to the timeout to finish.
        thread.join(timeout=duration + target.timeout + 5)
    seconds = time.perf_counter() - begin
    latencies.sort()
    return Level(
        concurrency=concurrency,
        requests=len(latencies) + len(errors),
        errors=len(errors),
        seconds=round(seconds, 3),
        rps=round(len(latencies) / seconds, 2) if seconds > 0 else 0.0,
        p50_ms=round(1000 * percentile(latencies, 0.50), 1),
        p95_ms=round(1000 * percentile(latencies, 0.95), 1),
        p99_ms=round(1000 * percentile(latencies, 0.99), 1),
        first_error=errors[0] if errors else "",
    )


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LoadTestError(
            f"--concurrency must be comma-separated integers, not {text!r}"
        ) from None
    if not levels or any(not 1 <= n <= MAX_CONCURRENCY for n in levels):
        raise LoadTestError(f"--concurrency values must be between 1 and {MAX_CONCURRENCY}")
    if levels != sorted(set(levels)):
        raise LoadTestError("--concurrency must rise: e.g. 1,2,4,8")
    return levels


def check_settings(args: argparse.Namespace) -> None:
    if not 0 < args.duration <= MAX_DURATION:
        raise LoadTestError(f"--duration must be in (0, {MAX_DURATION}] seconds")
    if not 1 <= args.max_requests <= MAX_REQUESTS:
        raise LoadTestError(f"--max-requests must be between 1 and {MAX_REQUESTS}")
    if not 0 < args.safety_factor <= 1:
        raise LoadTestError("--safety-factor must be in (0, 1]")
    if args.p95_ms <= 0 or args.timeout <= 0:
        raise LoadTestError("--p95-ms and --timeout must be positive")


def autoscaling_target(max_rps: float, safety_factor: float) -> int:
    """AWS's rule: invocations per instance per minute = MAX_RPS x safety factor x 60."""
    return max(1, math.floor(max_rps * safety_factor * 60))


def format_table(levels: list[Level]) -> str:
    header = "concurrency  requests  errors    req/s   p50 ms   p95 ms   p99 ms  sustainable"
    rows = [header]
    for lv in levels:
        rows.append(
            f"{lv.concurrency:>11}  {lv.requests:>8}  {lv.errors:>6}  {lv.rps:>7.1f}  "
            f"{lv.p50_ms:>7.1f}  {lv.p95_ms:>7.1f}  {lv.p99_ms:>7.1f}  "
            f"{'yes' if lv.sustainable else 'no'}"
        )
    return "\n".join(rows)


def load_test(args: argparse.Namespace, out: IO[str] | None = None) -> dict[str, Any]:
    """Run the rising levels; the summary dict (also what --json writes)."""
    out = out or sys.stdout
    check_settings(args)
    levels = parse_levels(args.concurrency)
    if not args.image.is_file():
        raise LoadTestError(f"{args.image}: no such file")
    target = Target(args.url, args.image.read_bytes(), args.content_type, args.timeout)
    plan = {
        "url": args.url + "/invocations",
        "concurrency": levels,
        "seconds_per_level": args.duration,
        "max_requests_per_level": args.max_requests,
        "p95_ms_bound": args.p95_ms,
    }
    if args.dry_run:
        print(json.dumps({"plan": plan}), file=out)
        return {"plan": plan}
    # One request first: a server that refuses the image is a setup error, not a load result.
    conn = target.connect()
    try:
        ok, error = target.send(conn)
    except (OSError, http.client.HTTPException) as exc:
        raise LoadTestError(f"cannot reach {target.path} at {args.url}: {exc}") from None
    finally:
        conn.close()
    if not ok:
        raise LoadTestError(f"the server refused the first request: {error}")
    results: list[Level] = []
    for concurrency in levels:
        level = run_level(target, concurrency, args.duration, args.max_requests)
        level.sustainable = level.errors == 0 and level.p95_ms <= args.p95_ms
        results.append(level)
        if not level.sustainable:
            break
    print(format_table(results), file=out)
    good = [lv for lv in results if lv.sustainable]
    summary: dict[str, Any] = {"plan": plan, "levels": [asdict(lv) for lv in results]}
    if not good:
        first = results[0]
        reason = first.first_error or f"p95 {first.p95_ms} ms > {args.p95_ms} ms"
        raise LoadTestError(
            f"no sustainable level, even at concurrency {first.concurrency}: {reason}"
        )
    best = max(good, key=lambda lv: lv.rps)
    target_value = autoscaling_target(best.rps, args.safety_factor)
    summary.update(
        max_rps=best.rps,
        at_concurrency=best.concurrency,
        safety_factor=args.safety_factor,
        autoscaling_target=target_value,
    )
    failed = results[-1] if not results[-1].sustainable else None
    if failed:
        why = failed.first_error or f"p95 {failed.p95_ms} ms > {args.p95_ms} ms"
        print(f"stopped at concurrency {failed.concurrency}: {why}", file=out)
    print(
        f"max sustainable: {best.rps:.1f} req/s at concurrency {best.concurrency} "
        f"(p95 <= {args.p95_ms:g} ms, no errors)",
        file=out,
    )
    print(
        f"autoscaling target: {best.rps:.1f} x {args.safety_factor:g} x 60 = {target_value} "
        "invocations per instance per minute",
        file=out,
    )
    print(f"  dogbreed sagemaker autoscale --endpoint-name NAME --target {target_value}", file=out)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


def main(args: argparse.Namespace) -> int:
    try:
        load_test(args)
    except (LoadTestError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

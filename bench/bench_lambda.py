"""How much latency the Lambda handler adds on top of the endpoint call, measured locally.

Three paths to the same running model server, the same JPEG, one request at a time:

  server    POST /invocations on the model server directly (keep-alive http.client)
  runtime   POST /endpoints/<name>/invocations on the runtime stand-in (one extra local hop)
  handler   lambda/handler.py with a Function URL event -> boto3 -> the stand-in -> the server

handler - runtime is what the function itself adds: event parsing, base64 decoding, the boto3
call path (serialisation, SigV4 signing, response parsing) and the JSON log line. The Lambda
service's own invoke overhead is not included (it cannot be measured here). `parse` times
`parse_request` alone for each event shape.

Start a model server first (e.g. `dogbreed serve --model-dir MODEL`), then:
    python bench/bench_lambda.py --model-url http://127.0.0.1:8080 --requests 50
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from runtime_standin import load_handler, running_standin  # noqa: E402

ENDPOINT = "bench-endpoint"


class Context:
    aws_request_id = "bench"


def jpeg(size: int) -> bytes:
    from PIL import Image

    pixels = bytes((x * 7 + y * 3) % 256 for y in range(size) for x in range(size))
    gray = Image.frombytes("L", (size, size), pixels)
    buffer = io.BytesIO()
    Image.merge("RGB", (gray, gray.rotate(90), gray.rotate(180))).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def timed(fn: Callable[[], None], requests: int, warmup: int, max_seconds: float) -> list[float]:
    """Latencies in ms; stops after `requests` or `max_seconds`, whichever comes first."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    deadline = time.monotonic() + max_seconds
    while len(samples) < requests and time.monotonic() < deadline:
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def poster(url: str, path: str, body: bytes, keep_alive: bool) -> Callable[[], None]:
    parts = urlsplit(url)
    conn: http.client.HTTPConnection | None = None

    def post() -> None:
        nonlocal conn
        if conn is None:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            conn.connect()
            # http.client sends the headers and a body over 2000 bytes in two writes: without
            # TCP_NODELAY (which urllib3, hence boto3, sets) a delayed ACK adds ~40 ms.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.request("POST", path, body=body, headers={"Content-Type": "application/x-image"})
        answer = conn.getresponse()
        answer.read()
        if not keep_alive:
            conn.close()
            conn = None
        if answer.status != 200:
            raise SystemExit(f"{url}{path} answered {answer.status}")

    return post


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"| {name:<28} | {len(samples):>4} | {statistics.median(samples):>8.2f} | "
        f"{p95:>8.2f} | {statistics.fmean(samples):>8.2f} |"
    )


def events(image: bytes) -> dict[str, dict]:
    encoded = base64.b64encode(image).decode()
    shapes = {}
    for name in ("apigw_rest_v1", "apigw_http_v2", "function_url"):
        event = json.loads((REPO / "tests" / "lambda_events" / f"{name}.json").read_text())
        event["body"], event["isBase64Encoded"] = encoded, True
        if event.get("multiValueHeaders"):
            event["multiValueHeaders"]["Content-Type"] = ["image/jpeg"]
        event["headers"] = {**(event.get("headers") or {}), "Content-Type": "image/jpeg"}
        shapes[name] = event
    shapes["direct"] = {"image_base64": encoded}
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-url", required=True, help="running model server, e.g. :8080")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per path (50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests first (5)")
    parser.add_argument("--image-size", type=int, default=224, help="JPEG side in pixels (224)")
    parser.add_argument("--max-seconds", type=float, default=60, help="per-path time cap (60)")
    args = parser.parse_args(argv)

    image = jpeg(args.image_size)
    shapes = events(image)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["ENDPOINT_NAME"] = ENDPOINT
    with running_standin(ENDPOINT, args.model_url) as standin:
        os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = standin.url
        lam = load_handler()

        def through_handler() -> None:
            with contextlib.redirect_stdout(io.StringIO()):  # its JSON log line, not timed away
                result = lam.handler(shapes["function_url"], Context())
            if result["statusCode"] != 200:
                raise SystemExit(f"handler answered {result}")

        runs = {
            # A new connection per request, as the stand-in makes to the server: on a kept-alive
            # connection the serving gateway answers ~45 ms later (see docs/lambda.md).
            "server /invocations": poster(args.model_url, "/invocations", image, False),
            "server, kept-alive conn": poster(args.model_url, "/invocations", image, True),
            "runtime stand-in": poster(
                standin.url, f"/endpoints/{ENDPOINT}/invocations", image, True
            ),
            "handler (Function URL event)": through_handler,
        }
        results = {
            n: timed(f, args.requests, args.warmup, args.max_seconds) for n, f in runs.items()
        }

    parse = {}
    for name, event in shapes.items():
        parse[name] = timed(lambda e=event: lam.parse_request(e), 200, 10, 10)

    print(
        f"image: {len(image)} bytes JPEG {args.image_size}x{args.image_size}; "
        f"{args.requests} requests per path, one at a time\n"
    )
    print("| path                         |    n |  p50 ms  |  p95 ms  |  mean ms |")
    print("|------------------------------|------|----------|----------|----------|")
    for name, samples in results.items():
        print(summary(name, samples))
    added = statistics.median(results["handler (Function URL event)"]) - statistics.median(
        results["runtime stand-in"]
    )
    print(f"\nadded by the handler (p50 handler - p50 runtime stand-in): {added:.2f} ms")
    print("\n| event shape     | parse_request p50 ms |")
    print("|-----------------|----------------------|")
    for name, samples in parse.items():
        print(f"| {name:<15} | {statistics.median(samples):>20.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

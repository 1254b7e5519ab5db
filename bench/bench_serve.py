"""Serving benchmark: our stack against the original's way of serving, same model, same run.

  ours      `dogbreed serve` (gateway -> MMS -> dogbreed.serve.handler): reduced-size JPEG
            decoding, numpy preprocessing, onnxruntime (CPU), MMS request batching into one
            vectorised forward pass
  baseline  MMS -> bench/baseline_handler.py: PIL, Resize((S, S)), ToTensor, torch eager fp32,
            one item at a time (the original inference2.py); no gateway hop (favours it)

Both get the same MMS workers x threads. Closed-loop load at each concurrency level with
photo-sized JPEGs (500x375 by default): p50/p95/p99 latency and throughput, then the ratios.
Decode + preprocess and the forward pass are also timed alone, in this process.

    python bench/bench_serve.py                      # resnet18, 224 px, 133 classes, ~2 min
    python bench/bench_serve.py --model MODEL_DIR --seconds 20 --concurrency 1 4 16
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from serving import running_server  # noqa: E402

from dogbreed.model import artifact  # noqa: E402
from dogbreed.serve.server import ModelServer  # noqa: E402
from dogbreed.serve.settings import ServeSettings, available_cpus, resolve_parallelism  # noqa: E402

MAX_REQUESTS_PER_LEVEL = 5000  # a hard bound next to --seconds


def photo_jpegs(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """Gradients + noise, quality 90: about the bytes and decode cost of a real photo."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    images = []
    for i in range(count):
        base = np.stack([x * 255 / width, y * 255 / height, ((x + i * 37) % 255)], -1)
        pixels = np.clip(base + rng.normal(0, 14, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def make_model(directory: Path, arch: str, classes: int, image_size: int) -> Path:
    """A randomly initialised network in the model directory format (speed needs no training)."""
    from dogbreed.model.build import build_model

    meta = artifact.ModelMetadata(arch, classes, image_size, artifact.eval_resize_size(image_size))
    names = [f"breed_{i:03d}" for i in range(classes)]
    return artifact.save_model_dir(directory, build_model(arch, classes), names, meta)


def load(url: str, images: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    """Closed loop: `concurrency` clients, each with one kept-alive connection."""
    parts = urlsplit(url)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    budget = [MAX_REQUESTS_PER_LEVEL]

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        i = offset
        while time.perf_counter() < deadline:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            body = images[i % len(images)]
            i += 1
            start = time.perf_counter()
            try:
                conn.request("POST", parts.path, body, {"Content-Type": "image/jpeg"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                ok = False
            elapsed = time.perf_counter() - start
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if not latencies:
        return {"n": 0, "errors": errors[0], "rps": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "n": len(latencies),
        "errors": errors[0],
        "rps": len(latencies) / wall,
        "p50": q[49] * 1000,
        "p95": q[94] * 1000,
        "p99": q[98] * 1000,
    }


def time_per_item(fn: Callable[[], object], repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def component_costs(model_dir: Path, images: list[bytes], threads: int) -> None:
    """Decode + preprocess and forward alone (ms per image), ours vs the baseline's way."""
    import torch
    from torchvision import transforms

    from dogbreed.model.build import build_model
    from dogbreed.serve.predictor import Predictor

    meta = artifact.read_metadata(model_dir)
    predictor = Predictor(model_dir, ServeSettings(backend="onnx", threads=threads))
    size = meta.image_size
    squash = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])
    torch.set_num_threads(threads)
    net = build_model(meta.architecture, meta.num_classes).eval()
    net.load_state_dict(torch.load(model_dir / artifact.WEIGHTS_FILE, map_location="cpu"))
    it = iter(range(10**9))

    def ours_pre() -> object:
        return predictor.preprocessor(images[next(it) % len(images)])

    def base_pre() -> object:
        return squash(Image.open(io.BytesIO(images[next(it) % len(images)])))

    x1 = np.stack([ours_pre()])
    x8 = np.stack([ours_pre() for _ in range(8)])
    t1 = torch.from_numpy(x1)

    def torch_eager() -> object:
        with torch.no_grad():
            return net(t1)

    rows = [
        ("decode+preprocess, ours (draft JPEG, numpy)", time_per_item(ours_pre, 40)),
        ("decode+preprocess, baseline (PIL, Resize, ToTensor)", time_per_item(base_pre, 40)),
        ("forward batch 1, onnxruntime", time_per_item(lambda: predictor.logits(x1), 20)),
        (
            "forward batch 8, onnxruntime (per image)",
            time_per_item(lambda: predictor.logits(x8), 5) / 8,
        ),
        ("forward batch 1, torch eager fp32 (baseline)", time_per_item(torch_eager, 20)),
    ]
    # OpenMP barriers suffer badly when other processes hold the cores: show 1 thread too.
    torch.set_num_threads(1)
    rows.append(("forward batch 1, torch eager fp32, 1 thread", time_per_item(torch_eager, 20)))
    print(f"\ncomponent costs, {threads} thread(s), ms per image:")
    for name, ms in rows:
        print(f"  {name:<52} {ms:8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: a fresh random one)")
    parser.add_argument("--arch", default="resnet18", help="backbone of the generated model")
    parser.add_argument("--classes", type=int, default=133)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=8.0, help="per level and server")
    parser.add_argument("--photo-size", type=int, nargs=2, default=[500, 375])
    args = parser.parse_args()

    cpus = available_cpus()
    settings = resolve_parallelism(ServeSettings(), cpus, 0)
    env = {
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(settings.workers),
        "DOGBREED_THREADS": str(settings.threads),
    }
    images = photo_jpegs(16, tuple(args.photo_size))
    print(
        f"{cpus} CPU(s); both servers: {settings.workers} worker(s) x {settings.threads} "
        f"thread(s); JPEG {args.photo_size[0]}x{args.photo_size[1]}, "
        f"{sum(map(len, images)) // len(images) // 1024} KiB average"
    )
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        model_dir = args.model or make_model(
            work / "model", args.arch, args.classes, args.image_size
        )
        meta = artifact.read_metadata(model_dir)
        print(f"model: {meta.architecture}, {meta.num_classes} classes, {meta.image_size} px")
        component_costs(model_dir, images, settings.threads or 1)

        results: dict[str, dict[int, dict[str, float]]] = {}
        with running_server(model_dir, env) as url:
            results["ours"] = {
                c: load(f"{url}/invocations", images, c, args.seconds) for c in args.concurrency
            }
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "bench"), os.environ.get("PYTHONPATH")) if p
        )
        baseline = ModelServer(
            model_dir, settings, work / "baseline", handler="baseline_handler:handle"
        )
        (work / "baseline").mkdir()
        try:
            baseline.start()
            deadline = time.monotonic() + 300
            baseline.wait_until_up(deadline)
            baseline.register(deadline)
            url = f"http://127.0.0.1:{baseline.inference_port}/predictions/model"
            results["baseline"] = {c: load(url, images, c, args.seconds) for c in args.concurrency}
        finally:
            baseline.stop()

    print("\nserver      conc      n  err    req/s   p50 ms   p95 ms   p99 ms")
    for name, levels in results.items():
        for c, r in levels.items():
            print(
                f"{name:<10} {c:>5} {r['n']:>6} {r['errors']:>4} {r['rps']:>8.1f} "
                f"{r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f}"
            )
    print("\nours / baseline   throughput x   p50 latency x (lower is better)")
    for c in args.concurrency:
        ours, base = results["ours"][c], results["baseline"][c]
        if base["rps"] and base["p50"]:
            print(f"  concurrency {c:>3}   {ours['rps'] / base['rps']:>10.2f}   "
                  f"{ours['p50'] / base['p50']:>10.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

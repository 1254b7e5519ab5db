"""Serving benchmark: our stack against the original's way of serving, same model, same run.

  ours      `dogbreed serve` (gateway -> MMS -> dogbreed.serve.handler): reduced-size JPEG
            decoding, numpy preprocessing, MMS request batching into one vectorised forward
            pass; one row per precision (fp32: onnxruntime; bf16: OpenVINO, on CPUs with
            AMX/AVX512-BF16), forced with DOGBREED_PRECISION
  baseline  MMS -> bench/baseline_handler.py: PIL, Resize((S, S)), ToTensor, torch eager fp32,
            one item at a time (the original inference2.py); no gateway hop (favours it)

Both get the same MMS workers x threads. Closed-loop load at each concurrency level with
photo-sized JPEGs (500x375 by default): p50/p95/p99 latency and throughput, then the ratios.
Decode + preprocess and the forward pass (per precision: the floor a server can reach) are
also timed alone, in this process, on the same photos; so is top-1 agreement with fp32.

    python bench/bench_serve.py                      # resnet18, 224 px, 133 classes, ~2 min
    python bench/bench_serve.py --model MODEL_DIR --seconds 20 --concurrency 1 4 16
    python bench/bench_serve.py --arch resnet50 --photo-size 1600 1200 --precisions fp32 bf16
    python bench/bench_serve.py --batch-delays 5 1 0   # MMS's batch delay: latency vs batching
    python bench/bench_serve.py --model TRAINED_DIR --photos DIR  # bf16 agreement on real photos
    python bench/bench_serve.py --layouts 1x2 2x1       # MMS workers x threads per worker

At concurrency 1 it also prints the hops: a request's p50 less its own decode and forward pass
(what the gateway, MMS and the batch delay add), and the gateway's share of them (the same load
sent straight to MMS's inference port).
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import os
import socket
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

from dogbreed import hostcpu  # noqa: E402
from dogbreed.data.images import is_image_file  # noqa: E402
from dogbreed.data.presets import eval_resize_size  # noqa: E402
from dogbreed.hostcpu import available_cpus  # noqa: E402
from dogbreed.model import artifact, precision  # noqa: E402
from dogbreed.serve.backends import cpu_backend  # noqa: E402
from dogbreed.serve.mms import PORT_RANGE, PREDICT_PATH, ModelServer  # noqa: E402
from dogbreed.serve.settings import ServeSettings, resolve_parallelism  # noqa: E402

MAX_REQUESTS_PER_LEVEL = 5000  # a hard bound next to --seconds
AGREEMENT_BATCH = 32


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

    meta = artifact.ModelMetadata(arch, classes, image_size, eval_resize_size(image_size))
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


def component_costs(
    model_dir: Path, images: list[bytes], threads: int, precisions: list[str]
) -> tuple[float, dict[str, tuple[float, float]]]:
    """Decode + preprocess and forward alone (ms per image), ours vs the baseline's way; returns
    our decode + preprocess and each precision's forward floor (ms at batch 1, ms per image at
    batch 8)."""
    import torch
    from torchvision import transforms

    from dogbreed.model.build import build_model
    from dogbreed.serve.predictor import Predictor

    meta = artifact.read_metadata(model_dir)
    predictor = Predictor(
        model_dir, ServeSettings(backend="onnx", threads=threads, precision="fp32")
    )
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
        ("decode+preprocess, ours (draft JPEG, crop box, numpy)", time_per_item(ours_pre, 40)),
        ("decode+preprocess, baseline (PIL, Resize, ToTensor)", time_per_item(base_pre, 40)),
    ]
    floors = {}
    for name in precisions:
        backend = cpu_backend(model_dir, name, threads)
        floors[name] = (
            time_per_item(lambda b=backend: b.run(x1), 20),
            time_per_item(lambda b=backend: b.run(x8), 5) / 8,
        )
        rows.append((f"forward batch 1, {name} ({backend.description})", floors[name][0]))
        rows.append((f"forward batch 8 per image, {name}", floors[name][1]))
    rows.append(("forward batch 1, torch eager fp32 (baseline)", time_per_item(torch_eager, 20)))
    # OpenMP barriers suffer badly when other processes hold the cores: show 1 thread too.
    torch.set_num_threads(1)
    rows.append(("forward batch 1, torch eager fp32, 1 thread", time_per_item(torch_eager, 20)))
    print(f"\ncomponent costs, {threads} thread(s), ms per image:")
    for name, ms in rows:
        print(f"  {name:<72} {ms:8.2f}")
    return rows[0][1], floors


Layout = tuple[int, int]  # MMS workers, threads per worker


def mms_port_pair() -> str:
    """SAGEMAKER_SAFE_PORT_RANGE of two free loopback ports: MMS's two ports are then known."""
    for low in range(PORT_RANGE[0], PORT_RANGE[1], 2):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", low))
                b.bind(("127.0.0.1", low + 1))
        except OSError:
            continue
        return f"{low}-{low + 1}"
    raise SystemExit("no two free ports for MMS")


def mms_predictions_url(port_range: str, image: bytes) -> str:
    """The one of the two MMS ports that answers a prediction (the other is management)."""
    for port in map(int, port_range.split("-")):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", PREDICT_PATH, image, {"Content-Type": "image/jpeg"})
            if conn.getresponse().status == 200:
                return f"http://127.0.0.1:{port}{PREDICT_PATH}"
        finally:
            conn.close()
    raise SystemExit(f"no MMS port of {port_range} answers predictions")


def layout_arg(text: str) -> Layout:
    """`--layouts 2x1`: (2, 1)."""
    workers, sep, threads = text.lower().partition("x")
    if not (sep and workers.isdigit() and threads.isdigit() and int(workers) and int(threads)):
        raise argparse.ArgumentTypeError(f"{text!r}: want WORKERSxTHREADS, e.g. 1x2")
    return int(workers), int(threads)


def photos_in(folder: Path) -> list[bytes]:
    """The bytes of every image file under `folder`, sorted by path (at least one)."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        raise SystemExit(f"--photos {folder}: no image files there")
    return [p.read_bytes() for p in paths]


def agreement(model_dir: Path, images: list[bytes], precisions: list[str]) -> None:
    """Top-1 agreement and largest probability difference of each precision vs fp32."""
    from dogbreed.serve.preprocess import Preprocessor

    preprocess = Preprocessor(artifact.read_metadata(model_dir))

    def logits(name: str) -> np.ndarray:
        # In chunks: a validation split's worth of --photos in one batch would not fit.
        backend = cpu_backend(model_dir, name, 1)
        chunks = (images[i : i + AGREEMENT_BATCH] for i in range(0, len(images), AGREEMENT_BATCH))
        return np.concatenate([backend.run(np.stack([preprocess(d) for d in c])) for c in chunks])

    fp32 = logits("fp32")
    for name in precisions[1:]:
        result = precision.compare(fp32, logits(name))
        print(
            f"{name} vs fp32 on the {len(images)} photos sent: top-1 agreement "
            f"{result['top1_agreement']:.2%}, largest probability difference "
            f"{result['max_prob_diff']:.4f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: a fresh random one)")
    parser.add_argument("--arch", default="resnet18", help="backbone of the generated model")
    parser.add_argument("--classes", type=int, default=133)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=8.0, help="per level and server")
    parser.add_argument("--photo-size", type=int, nargs=2, default=[500, 375])
    parser.add_argument(
        "--photos",
        type=Path,
        metavar="DIR",
        help="send these photos (every image file under DIR, sorted; the agreement line is then "
        "on real photos) instead of 16 generated ones of --photo-size; RGB JPEGs: the baseline, "
        "like the original, has no RGB conversion and fails on other modes",
    )
    fast = not precision.unavailable("bf16", hostcpu.cpu_flags())
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        default=["fp32", "bf16"] if fast else ["fp32"],
        help="one `ours` row each, fp32 first (default: bf16 too where the CPU computes it)",
    )
    parser.add_argument(
        "--batch-delays",
        type=int,
        nargs="+",
        default=[ServeSettings().max_batch_delay_ms],
        metavar="MS",
        help="MMS max batch delay of our servers: one row each (default: the server's default)",
    )
    parser.add_argument(
        "--layouts",
        type=layout_arg,
        nargs="+",
        metavar="WxT",
        help="MMS workers x threads of our servers, e.g. 1x2 2x1: one row each (default: what "
        "the server picks for these CPUs; the baseline always gets that)",
    )
    args = parser.parse_args()
    if args.precisions[0] != "fp32":
        parser.error("--precisions must start with fp32 (the reference)")

    cpus = available_cpus()
    settings = resolve_parallelism(ServeSettings(), cpus, 0)
    default: Layout = (settings.workers or 1, settings.threads or 1)
    images = photos_in(args.photos) if args.photos else photo_jpegs(16, tuple(args.photo_size))
    flags = sorted(hostcpu.cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "amx_int8"})
    flags += sorted(hostcpu.FAST_BF16_FLAGS & hostcpu.cpu_flags())
    sent = (
        f"{len(images)} photos from {args.photos}"
        if args.photos
        else "JPEG {}x{}".format(*args.photo_size)
    )
    print(
        f"{precision.cpu_model()}, flags {' '.join(flags) or 'none of note'}; {cpus} CPU(s); "
        f"default and baseline: {settings.workers} worker(s) x {settings.threads} thread(s); "
        f"{sent}, "
        f"{sum(map(len, images)) // len(images) // 1024} KiB average"
    )
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        model_dir = args.model or make_model(
            work / "model", args.arch, args.classes, args.image_size
        )
        meta = artifact.read_metadata(model_dir)
        print(f"model: {meta.architecture}, {meta.num_classes} classes, {meta.image_size} px")
        decode, floors = component_costs(model_dir, images, settings.threads or 1, args.precisions)
        agreement(model_dir, images, args.precisions)

        results: dict[str, dict[int, dict[str, float]]] = {}
        ours: dict[str, tuple[str, Layout]] = {}  # row name -> precision, workers x threads
        without_gateway: dict[str, dict[str, float]] = {}  # row name -> straight to MMS, c=1
        layouts = args.layouts or [default]
        for name, delay, (workers, threads) in itertools.product(
            args.precisions, args.batch_delays, layouts
        ):
            row = f"ours {name}" + (f" d{delay}" if len(args.batch_delays) > 1 else "")
            row += f" {workers}x{threads}" if args.layouts else ""
            port_range = mms_port_pair()
            server_env = {
                "SAGEMAKER_SAFE_PORT_RANGE": port_range,
                "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
                "DOGBREED_THREADS": str(threads),
                "DOGBREED_PRECISION": name,
                "SAGEMAKER_MODEL_SERVER_MAX_BATCH_DELAY": str(delay),
            }
            with running_server(model_dir, server_env) as url:
                results[row] = {
                    c: load(f"{url}/invocations", images, c, args.seconds) for c in args.concurrency
                }
                if 1 in args.concurrency and (workers, threads) == default:  # no gateway
                    direct = mms_predictions_url(port_range, images[0])
                    without_gateway[row] = load(direct, images, 1, args.seconds)
            ours[row] = name, (workers, threads)
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
            url = f"http://127.0.0.1:{baseline.inference_port}{PREDICT_PATH}"
            results["baseline"] = {c: load(url, images, c, args.seconds) for c in args.concurrency}
        finally:
            baseline.stop()

    print("\nserver          conc      n  err    req/s   p50 ms   p95 ms   p99 ms")
    for name, levels in results.items():
        for c, r in levels.items():
            print(
                f"{name:<14} {c:>5} {r['n']:>6} {r['errors']:>4} {r['rps']:>8.1f} "
                f"{r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f}"
            )
    for name, (batch1, batch8) in floors.items():
        # One worker's forward pass alone, no decode and no hops: what no server can beat.
        rps = (settings.workers or 1) * 1000 / batch8
        print(f"{'forward ' + name:<14} {'-':>5} {'-':>6} {'-':>4} {rps:>8.1f} {batch1:>8.1f}")
    print("\nours / baseline          throughput x   p50 latency x (lower is better)")
    base_levels = results["baseline"]
    for row in ours:
        for c in args.concurrency:
            mine, base = results[row][c], base_levels[c]
            if base["rps"] and base["p50"]:
                print(f"  {row:<16} conc {c:>3}   {mine['rps'] / base['rps']:>10.2f}   "
                      f"{mine['p50'] / base['p50']:>10.2f}")  # fmt: skip
    if without_gateway:
        # What the front, MMS and the batch delay add to one request's own work.
        # The floors were timed with the default layout's threads: other layouts get no line.
        print(f"\nhops at concurrency 1: p50 - decode ({decode:.1f} ms) - forward batch 1;")
        print("  the gateway's share: p50 through it - p50 straight to MMS's inference port")
        for row, (name, _) in ours.items():
            if row in without_gateway:
                p50 = results[row][1]["p50"]
                hops, gateway = p50 - decode - floors[name][0], p50 - without_gateway[row]["p50"]
                print(f"  {row:<16} {hops:8.1f} ms, of which the gateway {gateway:5.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

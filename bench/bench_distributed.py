"""Training throughput of 1 rank vs N ranks (data parallel, gloo on CPU) and the scaling efficiency.

Both runs train the same generated dataset with the same per-rank batch (weak scaling: the
global batch grows with the ranks, as when hosts are added to a job). The N-rank job is N
`dogbreed train --nodes N --node-rank R --master-addr 127.0.0.1` processes on this machine (the
EC2 path of the launcher), each with its own output folders. Throughput is the trainer's own
`images_per_sec` (all ranks' images / rank 0's epoch time), averaged over the epochs after the
first (warm-up: allocator, first DataLoader pass). Every rank gets `--threads` intra-op threads
(default 1), as every added host brings its own CPUs; the load average is printed with the table
because other work on the machine skews the figures.

    python bench/bench_distributed.py --ranks 2 --epochs 3 --per-class 24
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dogbreed.data.sample import generate_sample
from dogbreed.train.launch import WORKER_MARKERS

# free_port: the tests' helper (bench_lambda.py uses tests/ helpers the same way).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from loopback_http import free_port


def run_job(
    work: Path, data: Path, ranks: int, threads: int, flags: list[str], timeout: float
) -> list[float]:
    """images_per_sec of every epoch of one job with `ranks` processes."""
    env = {k: v for k, v in os.environ.items() if k not in WORKER_MARKERS}
    env["OMP_NUM_THREADS"] = str(threads)
    port = str(free_port())
    procs = []
    for rank in range(ranks):
        out = work / f"ranks{ranks}" / f"node{rank}"
        cmd = [
            sys.executable,
            "-m",
            "dogbreed",
            "train",
            "--data",
            str(data),
            "--model-dir",
            str(out / "model"),
            "--output-dir",
            str(out / "output"),
            "--checkpoint-dir",
            str(out / "checkpoints"),
            *flags,
        ]
        if ranks > 1:
            cmd += ["--nodes", str(ranks), "--node-rank", str(rank)]
            cmd += ["--master-addr", "127.0.0.1", "--master-port", port]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for proc in procs:
            stdout, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            outputs.append(stdout.decode(errors="replace"))
            if proc.returncode != 0:
                raise SystemExit(f"{ranks}-rank job failed:\n{outputs[-1][-3000:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [
        float(v) for v in re.findall(r"^epoch=\d+ .*images_per_sec=([0-9.]+)", outputs[0], re.M)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2, help="ranks of the parallel job")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per job (first = warm-up)")
    parser.add_argument("--per-class", type=int, default=24, help="generated images per class")
    parser.add_argument("--classes", type=int, default=5, help="generated classes")
    parser.add_argument("--batch-size", type=int, default=8, help="images per step per rank")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per job")
    args = parser.parse_args()
    if args.epochs < 2 or args.ranks < 2:
        parser.error("--epochs and --ranks must be at least 2")

    flags = [
        "--backbone",
        args.backbone,
        "--image-size",
        str(args.image_size),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--patience",
        str(args.epochs),
        "--workers",
        "0",
        "--seed",
        "0",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        work = Path(tmp)
        data = generate_sample(work / "data", args.classes, args.per_class, seed=0)
        rows = []
        for ranks in (1, args.ranks):
            per_epoch = run_job(work, data, ranks, args.threads, flags, args.timeout)
            if len(per_epoch) != args.epochs:
                raise SystemExit(f"expected {args.epochs} epoch lines, got {per_epoch}")
            rows.append((ranks, statistics.mean(per_epoch[1:]), per_epoch))

    base = rows[0][1]
    print(
        f"cpus={os.cpu_count()} backbone={args.backbone} image_size={args.image_size} "
        f"batch_size/rank={args.batch_size} threads/rank={args.threads} epochs={args.epochs} "
        f"(first one not counted) loadavg={os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'ranks':>5} {'global batch':>12} {'images/s':>9} {'speedup':>8} {'efficiency':>10}"
        "  per-epoch images/s"
    )
    for ranks, ips, per_epoch in rows:
        speedup = ips / base
        print(
            f"{ranks:>5} {ranks * args.batch_size:>12} {ips:>9.2f} {speedup:>8.2f} "
            f"{speedup / ranks:>10.0%}  {', '.join(f'{v:.2f}' for v in per_epoch)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

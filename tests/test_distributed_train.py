"""One real `dogbreed train` DDP job across two fake hosts on this machine (gloo on CPU).

Each host is a process with its own SAGEMAKER_BASE_DIR whose resourceconfig.json names it
algo-1 or algo-2; both names resolve to 127.0.0.1 through DOGBREED_HOST_ADDRESSES (test-only).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from contextlib import suppress
from pathlib import Path

import psutil
import pytest
from conftest import TINY_TRAIN_FLAGS
from test_distributed_launch import Host, finish, start_hosts

from dogbreed.data.sample import generate_sample
from dogbreed.model.artifact import METADATA_FILE, WEIGHTS_FILE
from dogbreed.train import launch

TRAIN_IMAGES = 120  # conftest's sample: 5 classes x 24 train images
WORLD = 2


def dist_flags(**changes: str) -> list[str]:
    """TINY_TRAIN_FLAGS with half the batch per rank: the same global batch (16), same LR."""
    flags = list(TINY_TRAIN_FLAGS)
    changes.setdefault("batch-size", str(int(flags[flags.index("--batch-size") + 1]) // WORLD))
    for name, value in changes.items():
        flags[flags.index(f"--{name}") + 1] = value
    return flags


def train_argv(data: Path, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", "dogbreed", "train", "--data", str(data), *flags]


def start_job(tmp_path: Path, data: Path | dict[str, Path], flags: list[str]) -> list[Host]:
    data_of = data if isinstance(data, dict) else dict.fromkeys(("algo-1", "algo-2"), data)
    return start_hosts(tmp_path, lambda host: train_argv(data_of[host], flags))


def samples_per_rank(output: str) -> dict[tuple[int, int], int]:
    """(rank, epoch) -> images that rank trained on, from `rank=R train_samples=K in epoch E`."""
    found = re.findall(r"rank=(\d+) train_samples=(\d+) in epoch (\d+)", output)
    return {(int(r), int(e)): int(k) for r, k, e in found}


@pytest.mark.slow
def test_two_hosts_train_one_model(
    sample_data: Path, trained_model_dir: Path, tmp_path: Path
) -> None:
    (code1, out1), (code2, out2) = finish(start_job(tmp_path, sample_data, dist_flags()), 1200)
    assert (code1, code2) == (0, 0), out1[-3000:] + out2[-3000:]
    assert "world_size=2 rank=0" in out1 and "world_size=2 rank=1" in out2

    # Each rank trains on its own half: the shares add up to one pass over the split. Only a
    # partial last global batch may be left out (drop_last), exactly as in a single-process run.
    counts = samples_per_rank(out1 + out2)
    epochs = int(TINY_TRAIN_FLAGS[TINY_TRAIN_FLAGS.index("--epochs") + 1])
    global_batch = int(dist_flags()[dist_flags().index("--batch-size") + 1]) * WORLD
    for epoch in range(1, epochs + 1):
        shares = [counts[(rank, epoch)] for rank in range(WORLD)]
        assert shares[0] == shares[1]
        assert sum(shares) == TRAIN_IMAGES // global_batch * global_batch

    # Metric lines (reduced over ranks) come from rank 0 only.
    assert re.search(r"^epoch=1 ", out1, re.M) and not re.search(r"^epoch=", out2, re.M)
    assert re.search(r"^final .*test_loss=", out1, re.M) and not re.search(r"test_loss=", out2)

    # Only rank 0 wrote the model, output/data and checkpoints.
    algo1, algo2 = tmp_path / "algo-1", tmp_path / "algo-2"
    assert (algo1 / "model" / WEIGHTS_FILE).is_file()
    assert (algo1 / "output" / "data" / "metrics.json").is_file()
    assert (algo1 / "checkpoints" / "last.pt").is_file()
    for name in ("model", "output/data", "checkpoints"):
        assert not (algo2 / name).exists() or not any((algo2 / name).iterdir()), name
    metrics = json.loads((algo1 / "output" / "data" / "metrics.json").read_text())
    assert metrics["world_size"] == 2

    # Same data, same global batch and LR: the model is as good as a single-process run's.
    # Per-rank BatchNorm sees 8 images instead of 16, so the runs are not bit-identical.
    single = json.loads((trained_model_dir / METADATA_FILE).read_text())["metrics"]
    multi = json.loads((algo1 / "model" / METADATA_FILE).read_text())["metrics"]
    assert multi["test_acc"] >= single["test_acc"] - 0.2, (multi, single)
    assert multi["test_acc"] > 1.5 / 5  # clearly above chance (5 classes)


def test_a_failing_rank_stops_the_job_and_both_hosts_report_it(
    sample_data: Path, tmp_path: Path
) -> None:
    # algo-2's data channel is missing: its rank fails after joining the process group.
    data = {"algo-1": sample_data, "algo-2": tmp_path / "missing"}
    (code1, out1), (code2, out2) = finish(start_job(tmp_path, data, dist_flags()), 600)
    assert code1 != 0 and code2 != 0, out1[-3000:] + out2[-3000:]
    reason2 = (tmp_path / "algo-2" / "output" / "failure").read_text()
    assert "missing" in reason2  # the root cause, on the host where it happened
    assert (tmp_path / "algo-1" / "output" / "failure").read_text().strip()  # and the peer stops
    assert not (tmp_path / "algo-1" / "model" / WEIGHTS_FILE).exists()


def test_hosts_with_different_data_refuse_to_train(sample_data: Path, tmp_path: Path) -> None:
    # Same classes, fewer images on algo-2 (as with S3 ShardedByS3Key): the sampler's indices
    # would name different images on each host, so the job stops before training.
    other = generate_sample(tmp_path / "other", classes=5, per_class=12, seed=0)
    data = {"algo-1": sample_data, "algo-2": other}
    (code1, out1), (code2, out2) = finish(start_job(tmp_path, data, dist_flags()), 600)
    assert code1 != 0 and code2 != 0, out1[-3000:] + out2[-3000:]
    for host in ("algo-1", "algo-2"):
        reason = (tmp_path / host / "output" / "failure").read_text()
        assert "hold different datasets" in reason


@pytest.mark.slow
def test_sigterm_on_one_host_stops_both_and_the_job_resumes(
    sample_data: Path, tmp_path: Path
) -> None:
    flags = dist_flags(epochs="2")
    hosts = start_job(tmp_path, sample_data, flags)
    hosts[0].wait_for("rank=0 train_samples=", 900)  # epoch 1 trained
    hosts[1].proc.send_signal(signal.SIGTERM)  # `docker stop` on algo-2 only
    (code1, out1), (code2, out2) = finish(hosts, 300)
    assert code1 != 0 and code2 != 0, out1[-3000:] + out2[-3000:]
    for host in ("algo-1", "algo-2"):
        assert "SIGTERM" in (tmp_path / host / "output" / "failure").read_text()
    assert (tmp_path / "algo-1" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "algo-2" / "checkpoints").exists()  # only rank 0 writes them

    # The restarted job (same dirs, as a SageMaker retry or spot restart) continues: algo-2
    # holds no checkpoint, so every rank must take rank 0's, or the ranks would diverge.
    (code1, out1), (code2, out2) = finish(start_job(tmp_path, sample_data, flags), 900)
    assert (code1, code2) == (0, 0), out1[-3000:] + out2[-3000:]
    resumed = re.findall(r"resuming from checkpoint: epoch (\d+) step (\d+)", out1 + out2)
    assert len(resumed) == 2 and resumed[0] == resumed[1]
    assert resumed[0][0] == "2"  # stopped after epoch 1's training: epoch 1 is not redone
    assert "in epoch 2" in out2 and not re.search(r"^epoch=1 ", out1, re.M)
    assert (tmp_path / "algo-1" / "model" / WEIGHTS_FILE).is_file()
    assert not (tmp_path / "algo-1" / "output" / "failure").exists()


def test_a_host_that_never_resolves_is_a_clear_error(tmp_path: Path) -> None:
    base = tmp_path / "algo-1"
    config = base / "input" / "config"
    config.mkdir(parents=True)
    resource = {"current_host": "algo-1", "hosts": ["algo-1", "nope.invalid"]}
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    env = {k: v for k, v in os.environ.items() if k not in launch.WORKER_MARKERS}
    env["DOGBREED_HOST_ADDRESSES"] = "algo-1=127.0.0.1"
    host = Host(base, train_argv(tmp_path / "data", ["--dns-timeout", "1"]), env)
    [(code, out)] = finish([host], 120)
    assert code == 2, out
    reason = (base / "output" / "failure").read_text()
    assert "nope.invalid did not resolve within 1 s" in reason


PEER_TIMEOUT = 5  # DOGBREED_PEER_TIMEOUT (default 60 s): how long a frozen host goes unnoticed


def host_processes(host: Host) -> list[psutil.Process]:
    """The fake host's launcher, its torchrun and the worker: all that a dead host takes down."""
    launcher = psutil.Process(host.proc.pid)
    return [*launcher.children(recursive=True), launcher]


@pytest.mark.parametrize(
    ("victim", "how", "reason"),
    [
        ("algo-2", signal.SIGKILL, "lost contact with another process of this job"),
        ("algo-1", signal.SIGKILL, "lost contact with"),  # the collective or the store first
        # Frozen (SIGSTOP): no connection closes, as when a host loses power or its network.
        ("algo-2", signal.SIGSTOP, "lost contact with rank 1 of this job: no sign of life"),
        ("algo-1", signal.SIGSTOP, f"its rendezvous store did not answer for {PEER_TIMEOUT} s"),
    ],
    ids=["worker-host-killed", "master-host-killed", "worker-host-frozen", "master-host-frozen"],
)
def test_a_dead_or_frozen_host_stops_the_other_with_a_reason(
    tmp_path: Path, victim: str, how: signal.Signals, reason: str
) -> None:
    data = generate_sample(tmp_path / "data", classes=3, per_class=8, seed=3)
    flags = "--backbone resnet18 --image-size 32 --epochs 50 --batch-size 4 --workers 0".split()
    env = {"DOGBREED_PEER_TIMEOUT": str(PEER_TIMEOUT), "OMP_NUM_THREADS": "1"}
    hosts = start_hosts(tmp_path, lambda _host: train_argv(data, flags), env)
    dead, survivor = hosts if victim == "algo-1" else hosts[::-1]
    doomed: list[psutil.Process] = []
    try:
        hosts[0].wait_for("world_size=2 rank=0", 300)  # in the process group: the mesh is up
        hosts[1].wait_for("world_size=2 rank=1", 300)
        doomed = host_processes(dead)
        for process in doomed:
            process.send_signal(how)
        since = time.monotonic()
        [(code, out)] = finish([survivor], 150)
        took = time.monotonic() - since
    finally:
        for process in doomed:  # a frozen host stays frozen until it is killed
            with suppress(psutil.NoSuchProcess):
                process.kill()
        finish(hosts, 30)
    assert code != 0, out[-3000:]
    assert took < 60, f"the surviving host took {took:.0f} s"  # the bar: 3 minutes, not 30
    text = (survivor.base / "output" / "failure").read_text()
    assert reason in text and "a rerun resumes from the last checkpoint" in text
    assert "Traceback" not in text and "pair.cc" not in text

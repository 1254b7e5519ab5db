"""The machine the trainer adapts to: CPU count under a cgroup quota, bf16 on capable CPUs."""

from __future__ import annotations

import faulthandler
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nested_signals import SEND_NESTED_SIGNALS

from dogbreed import hostcpu
from dogbreed.config import TrainConfig
from dogbreed.serve import server
from dogbreed.train.environment import JobPaths
from dogbreed.train.loop import amp_dtype, default_workers, train

CPU = torch.device("cpu")
# bf16 keeps 8 bits of mantissa: its mean training loss per epoch stays this close (relative) to
# fp32's at learning rate 0.001 (measured on an AMD EPYC with avx512_bf16: 0.4% in the first
# epoch, at most 4% in four; at 0.003 the Xeon with AMX gave at most 4.5%, the EPYC 12-18%).
BF16_FIRST_EPOCH_TOLERANCE = 0.05
BF16_LOSS_TOLERANCE = 0.15


@pytest.fixture()
def cgroup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fake cgroup v2 `cpu.max` on a 16-CPU affinity mask; no v1 file."""
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(hostcpu, "CGROUP_CPU_MAX", cpu_max)
    monkeypatch.setattr(hostcpu, "CGROUP_V1_QUOTA", tmp_path / "absent")
    monkeypatch.setattr(hostcpu.os, "sched_getaffinity", lambda pid: set(range(16)))
    return cpu_max


def test_a_cgroup_quota_caps_the_cpus_and_the_loader_workers(cgroup: Path) -> None:
    cgroup.write_text("max 100000\n")  # no quota: the affinity mask counts
    assert hostcpu.available_cpus() == 16
    assert default_workers(1) == 8  # at most 8
    cgroup.write_text("250000 100000\n")  # `docker run --cpus 2.5`
    assert hostcpu.available_cpus() == 2
    assert default_workers(1) == 1  # 2 CPUs: one for the main process, one worker
    assert default_workers(2) == 0  # two processes on 2 CPUs: no room for workers
    cgroup.write_text("50000 100000\n")  # half a CPU still runs one process
    assert hostcpu.available_cpus() == 1


def test_cgroup_v1_quota_and_serving_reads_the_same_count(
    cgroup: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cgroup.unlink(missing_ok=True)  # a cgroup v1 host
    (tmp_path / "cfs_quota_us").write_text("400000\n")
    (tmp_path / "cfs_period_us").write_text("100000\n")
    monkeypatch.setattr(hostcpu, "CGROUP_V1_QUOTA", tmp_path / "cfs_quota_us")
    monkeypatch.setattr(hostcpu, "CGROUP_V1_PERIOD", tmp_path / "cfs_period_us")
    assert hostcpu.available_cpus() == 4
    assert server.available_cpus is hostcpu.available_cpus  # serving sizes its workers from it
    (tmp_path / "cfs_quota_us").write_text("-1\n")  # unlimited
    assert hostcpu.available_cpus() == 16


@pytest.mark.parametrize(
    ("flags", "fast"),
    [
        ("fpu avx512f avx512_bf16 avx512_vnni", True),  # Cooper Lake, Zen 4
        ("fpu avx512f amx_bf16 amx_tile", True),  # Sapphire Rapids
        ("fpu avx2 avx512f avx512_vnni", False),  # Skylake/Cascade Lake: bf16 emulated, slower
    ],
)
def test_fast_bf16_from_the_cpu_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: str, fast: bool
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    monkeypatch.setattr(hostcpu, "CPUINFO", cpuinfo)
    assert hostcpu.fast_bf16() is fast
    assert (amp_dtype(TrainConfig(), CPU) == torch.bfloat16) is fast
    assert amp_dtype(TrainConfig(amp=False), CPU) is None  # `amp` stays the switch
    assert amp_dtype(TrainConfig(), torch.device("cuda")) == torch.bfloat16


def test_no_cpuinfo_means_fp32(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hostcpu, "CPUINFO", tmp_path / "absent")
    assert amp_dtype(TrainConfig(), CPU) is None


def _train_tiny(data: Path, work: Path, cfg: TrainConfig) -> tuple[dict[str, float], list[float]]:
    """The final metrics and each epoch's mean training loss."""
    paths = JobPaths.from_root(data, work / "model", work / "output", work / "checkpoints")
    final = train(cfg, paths)
    history = json.loads((paths.output_data_dir / "metrics.json").read_text())["history"]
    return final, [epoch["train_loss"] for epoch in history]


def test_bf16_training_follows_the_fp32_loss_curve_on_the_sample_data(
    sample_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Same seed, data order and initial weights, no DataLoader workers. Compared: each epoch's
    mean training loss (120 images), not the accuracy on 30 validation images, which after 4
    epochs swings by 2 images or more between two fp32 runs in different processes (measured:
    valid_acc 0.567 and 0.633; bf16 gave 0.733 and 0.767) while the loss curves agree to 5%.

    conftest's TINY_TRAIN_FLAGS but a third of their learning rate: a resnet18 from scratch on
    120 images at 0.003 is chaotic enough that rounding differences grow into 18% loss gaps by
    the third epoch on some CPUs; the test is about bf16's numerics, not that amplification."""
    cfg = TrainConfig(
        backbone="resnet18", image_size=64, epochs=4, batch_size=16, learning_rate=0.001,
        workers=0, seed=0,
    )  # fmt: skip
    # bf16 on any CPU (emulated and slow where the flags are missing): the numerics are tested.
    monkeypatch.setattr(hostcpu, "fast_bf16", lambda: True)
    fp32, fp32_losses = _train_tiny(sample_data, tmp_path / "fp32", cfg.replace(amp=False))
    with caplog.at_level(logging.INFO, logger="dogbreed.train.loop"):
        bf16, bf16_losses = _train_tiny(sample_data, tmp_path / "bf16", cfg)
    assert "precision: bf16 autocast" in caplog.text
    assert fp32["test_acc"] > 1.5 / 5 and bf16["test_acc"] > 1.5 / 5  # both learnt (5 classes)
    assert bf16_losses[-1] < bf16_losses[0] and fp32_losses[-1] < fp32_losses[0]
    relative = [abs(b - f) / f for b, f in zip(bf16_losses, fp32_losses, strict=True)]
    # The first epoch starts from the same weights; later ones drift a little further apart.
    assert relative[0] < BF16_FIRST_EPOCH_TOLERANCE, (bf16_losses, fp32_losses)
    assert max(relative) < BF16_LOSS_TOLERANCE, (bf16_losses, fp32_losses)


# A process whose main thread has run AMX code (bf16 on a Xeon with AMX), then nested signals.
AMX_THEN_NESTED_SIGNALS = (
    """
import sys
import torch
if sys.argv[1] == "faulthandler":
    import faulthandler
    faulthandler.enable()
x = torch.randn(256, 256, dtype=torch.bfloat16)
for _ in range(10):
    x @ x
"""
    + SEND_NESTED_SIGNALS
)


def test_the_test_process_has_no_faulthandler_signal_stack() -> None:
    """CPython 3.11's faulthandler gives the main thread an alternate signal stack (SIGSTKSZ +
    AT_MINSIGSTKSZ). After the thread has run AMX code every signal frame carries 8 KB of tile
    state: nested signals overflow that stack and the process dies of SIGSEGV or heap
    corruption, with no traceback (like CI's exit 139, there from OpenVINO's stack). So
    pytest runs with `-p no:faulthandler` (pyproject.toml); nothing of ours enables it."""
    assert not faulthandler.is_enabled()


def test_a_process_that_ran_amx_survives_nested_signals_without_faulthandler() -> None:
    """The case above, in a child without faulthandler: signals run on the thread's own stack.
    (With `faulthandler` as the argument it died in 4 of 4 runs on a Xeon with AMX: SIGSEGV,
    SIGBUS, or SIGABRT from `free(): invalid size` after the overflow corrupted the heap.)"""
    result = subprocess.run(
        [sys.executable, "-c", AMX_THEN_NESTED_SIGNALS, "none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "alive"), result.stderr[-2000:]

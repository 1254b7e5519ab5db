"""Facts about the CPUs this process runs on, shared by training and serving (stdlib only).

Below `config` in the dependency order: nothing here imports the rest of the package.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from pathlib import Path

# cgroup v2 (`QUOTA PERIOD` or `max PERIOD`), then v1 (quota -1 = unlimited).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
CPUINFO = Path("/proc/cpuinfo")
# Either one makes bf16 matrix maths faster than fp32 (AMX tiles: Sapphire Rapids on; AVX512-BF16:
# Cooper Lake, Zen 4 on). Without them oneDNN emulates bf16, which is slower than fp32.
FAST_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def _cgroup_cpus() -> float | None:
    """The container's CPU quota in CPUs, or None when it has none (or no cgroup is visible)."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(CGROUP_V1_QUOTA.read_text())
        return None if quota_us <= 0 else quota_us / int(CGROUP_V1_PERIOD.read_text())
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup CPU quota (a container
    started with `--cpus 2` on a 64-core host sees 64 CPUs but gets the time of 2)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpus()
    if quota is not None:
        return max(1, min(count or 1, math.floor(quota)))
    return max(1, count or 1)


def cpu_flags() -> frozenset[str]:
    """The `flags` of the first processor in /proc/cpuinfo (empty where there is none)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def fast_bf16() -> bool:
    """True when this CPU computes bf16 faster than fp32 (AMX or AVX512-BF16)."""
    return not FAST_BF16_FLAGS.isdisjoint(cpu_flags())


# Room for a dozen nested signal frames that carry AMX tile state (about 12 KB each).
SIGNAL_STACK_BYTES = 256 * 1024
_SS_ONSTACK = 1
_signal_stacks: list[ctypes.Array[ctypes.c_char]] = []  # kept alive: the kernel writes into them


class _SignalStack(ctypes.Structure):  # stack_t, <signal.h>
    _fields_ = (
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    )


def _sigaltstack(new: _SignalStack | None) -> _SignalStack:
    old = _SignalStack()
    ctypes.CDLL(None).sigaltstack(ctypes.byref(new) if new else None, ctypes.byref(old))
    return old


def signal_stack_size() -> int | None:
    """The size of this thread's alternate signal stack; None when it has none (or not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    current = _sigaltstack(None)
    return current.ss_size if current.ss_sp else None


def ensure_signal_stack(size: int = SIGNAL_STACK_BYTES) -> None:
    """Give this thread a larger alternate signal stack if it has a smaller one.

    Why: OpenVINO's CPU plugin installs a 20 KB one on the thread that compiles a model, and
    Python runs its signal handlers there (SA_ONSTACK). Once the thread has run AMX code every
    signal frame carries 8 KB of tile state, so two nested signals overflow those 20 KB: the
    process dies of SIGSEGV or corrupts its heap (tests/test_train_hardware.py shows it).
    A thread without one needs nothing: its signals run on its own stack."""
    if not sys.platform.startswith("linux"):
        return
    current = _sigaltstack(None)
    if not current.ss_sp or current.ss_size >= size or current.ss_flags & _SS_ONSTACK:
        return
    memory = ctypes.create_string_buffer(size)
    _sigaltstack(_SignalStack(ctypes.addressof(memory), 0, size))
    if signal_stack_size() == size:  # taken: keep its memory for as long as the thread lives
        _signal_stacks.append(memory)

"""Small DDP helpers (nanoGPT style): torchrun's environment decides, one process needs none.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without them the job is
a single process and nothing here touches torch.distributed.

A lost peer: when another rank's process dies, its connections close and this rank's next
collective fails at once (gloo: "Connection closed by peer"); `lost_peer` turns that into a
PeerLost with a reason. A host that vanishes with its network (power loss, a kernel panic) or
freezes closes nothing, and a collective would wait for torch's timeout (gloo: 30 minutes):
`watch_peers` notices the silence within DOGBREED_PEER_TIMEOUT seconds instead.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from dogbreed.config import ConfigError
from dogbreed.settings import SettingError, from_environ, setting

T = TypeVar("T")
log = logging.getLogger(__name__)

ENV_PEER_TIMEOUT = "DOGBREED_PEER_TIMEOUT"
# What gloo and NCCL say when a peer's connection breaks (as plain RuntimeErrors).
_PEER_LOST_SIGNS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "Timed out waiting",
    "ncclRemoteError",
)
_PEER_LOST_HINT = (
    "another host crashed, was stopped or lost the network; its own log or output/failure says "
    "why; a rerun resumes from the last checkpoint"
)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> DistInfo:
    """Join the process group when launched by torchrun; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor of metric sums/counts over all processes (identity for one process)."""
    if info.enabled:
        values = values.to(info.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def broadcast_from_main(obj: T, info: DistInfo) -> T:
    """Rank 0's `obj` on every process (any picklable object; identity for one process)."""
    if not info.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0, device=info.device)
    return holder[0]


def all_equal(value: object, info: DistInfo) -> bool:
    """True on every process when every process passed an equal (picklable) value."""
    if not info.enabled:
        return True
    values: list[object] = [None] * info.world_size
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every process when it is True on one (e.g. SIGTERM seen by one rank)."""
    if not info.enabled:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)]), info).item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class PeerLost(RuntimeError):
    """Another process of the job died, froze or lost the network: this one cannot go on."""


def lost_peer(exc: BaseException) -> PeerLost | None:
    """A PeerLost with a reason when `exc` is a collective failing for a lost peer, else None."""
    text = str(exc)
    if not isinstance(exc, (dist.DistNetworkError, dist.DistStoreError)) and not any(
        sign in text for sign in _PEER_LOST_SIGNS
    ):
        return None
    # "[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer [10.0.0.2]:4321. This is..."
    core = re.sub(r"^\[[^\]]*\] *", "", text.strip()).split(". ")[0].partition("\n")[0]
    return PeerLost(f"lost contact with another process of this job ({core}): {_PEER_LOST_HINT}")


@dataclass(frozen=True)
class PeerWatchSettings:
    """Read in every rank, not by the launcher: torchrun hands each worker the environment."""

    timeout: float = setting(
        60.0,
        "seconds a frozen or vanished peer host goes unnoticed before the job fails",
        env=ENV_PEER_TIMEOUT,
        flag=False,
        minimum=1,
    )


def peer_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds without a sign of life from a peer before the job is given up."""
    try:
        return PeerWatchSettings(**from_environ(PeerWatchSettings, environ)).timeout
    except SettingError as exc:
        raise ConfigError(str(exc)) from None


@contextmanager
def watch_peers(info: DistInfo, on_lost: Callable[[str], None]) -> Iterator[None]:
    """While inside, a thread calls `on_lost(reason)` when a peer falls silent (see the module).

    `on_lost` runs in that thread while the main thread may be stuck in a collective that
    nothing can interrupt, so it has to end the process itself.
    """
    if not info.enabled:
        yield
        return
    timeout = peer_timeout()
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(seconds=timeout),  # a frozen master host: store calls fail, not hang
        wait_for_workers=False,
    )
    done = threading.Event()
    thread = threading.Thread(
        target=_heartbeat, args=(store, info, timeout, done, on_lost), daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _heartbeat(
    store: dist.Store,
    info: DistInfo,
    timeout: float,
    done: threading.Event,
    on_lost: Callable[[str], None],
) -> None:
    """Bump this rank's counter in the job's store; watch the counters of the peers.

    Rank 0 watches every rank, the others watch rank 0: a silent rank makes rank 0 exit, and
    that exit breaks the connections of every other rank, which then fail at once.
    """
    peers = range(1, info.world_size) if info.is_main() else [0]
    seen = {peer: (-1, time.monotonic()) for peer in peers}  # counter, when it last moved
    # Store calls run in a worker: one to a frozen master host never returns (no time-out).
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        while not done.wait(min(5.0, timeout / 4)):
            reason = _silence(pool.submit(_beat, store, info.rank, peers), seen, timeout)
            if reason is not None and not done.is_set():
                on_lost(reason)
                return
    finally:
        pool.shutdown(wait=False)


def _beat(store: dist.Store, rank: int, peers: Iterable[int]) -> dict[int, int]:
    store.add(f"dogbreed/alive/{rank}", 1)
    return {peer: store.add(f"dogbreed/alive/{peer}", 0) for peer in peers}  # 0: no change


def _silence(
    beat: Future[dict[int, int]], seen: dict[int, tuple[int, float]], timeout: float
) -> str | None:
    """Why the job is lost, from this round's counters (`seen` is updated), or None."""
    master = f"the master host {os.environ['MASTER_ADDR']}"
    try:
        counts = beat.result(timeout=timeout)
    except TimeoutError:
        return (
            f"lost contact with {master}: its rendezvous store did not answer for {timeout:g} s "
            f"({ENV_PEER_TIMEOUT}): {_PEER_LOST_HINT}"
        )
    except RuntimeError as exc:  # DistStoreError, DistNetworkError: refused, reset
        first_line = str(exc).partition("\n")[0]
        return f"lost contact with {master} (its rendezvous store: {first_line}): {_PEER_LOST_HINT}"
    now = time.monotonic()
    for peer, count in counts.items():
        if count != seen[peer][0]:
            seen[peer] = (count, now)
        elif now - seen[peer][1] > timeout:
            return (
                f"lost contact with rank {peer} of this job: no sign of life for {timeout:g} s "
                f"({ENV_PEER_TIMEOUT}): {_PEER_LOST_HINT}"
            )
    return None

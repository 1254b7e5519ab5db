"""Multi-host launch: turn N SageMaker (or EC2) hosts into ONE torch.distributed job.

`dogbreed train` calls `maybe_launch` first. When this process should train by itself (one host
with at most one GPU, or it already is a torchrun worker) it returns None. Otherwise it runs

    python -m torch.distributed.run --nnodes N --node-rank R --nproc-per-node G \\
        --master-addr HOSTS[0] --master-port 7777 -m dogbreed <the same argv>

as a child, forwards SIGTERM/SIGINT to it and returns its exit code. torchrun starts one worker
per GPU (one per host on CPU); the workers see torchrun's RANK/WORLD_SIZE/... variables, so their
own `maybe_launch` returns None and they train.

Where the topology comes from, first match wins:
  1. flags `--nodes --node-rank --master-addr --master-port` or their `DOGBREED_*` variables
     (EC2 hosts, `docker run --network host`);
  2. SageMaker's resourceconfig.json (`TrainingEnv.hosts`, `current_host`): node rank = index of
     the current host in the sorted host list, master = the first host.

Why not the sagemaker-training toolkit's TorchDistributedRunner (script mode uses it,
dogbreed.train.toolkit): it builds its torchrun command from the toolkit's Environment, so it
needs SageMaker's config files and knows neither EC2's explicit topology (1. above), nor waiting
for the other hosts' names to resolve, nor forwarding SIGTERM so that the workers checkpoint
within SageMaker's 120 s, nor the test-only host map.

This module imports nothing heavy: torch only runs in the child.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING

from dogbreed.settings import SettingError, add_arguments, from_environ, given_flags, setting

if TYPE_CHECKING:
    from dogbreed.train.environment import TrainingEnv

log = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = 7777  # what the AWS PyTorch images use
DEFAULT_DNS_TIMEOUT = 300.0
# After SIGTERM torchrun waits this long for its workers (finish the step, write a checkpoint)
# before SIGKILL; below SageMaker's 120 s between SIGTERM and SIGKILL.
SHUTDOWN_TIMEOUT = 100
# Test-only: "algo-1=127.0.0.1,algo-2=127.0.0.1" makes SageMaker host names resolve without
# touching /etc/hosts, so two "hosts" can run on one machine.
ENV_HOST_ADDRESSES = "DOGBREED_HOST_ADDRESSES"
# torchrun sets these in every worker; their presence means "train, do not launch again".
WORKER_MARKERS = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK")
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class LaunchError(RuntimeError):
    """A topology that cannot be launched; the message says what to fix."""


@dataclass(frozen=True)
class LaunchOptions:
    """Explicit topology (EC2); None fields fall back to resourceconfig.json."""

    nodes: int | None = setting(None, "number of hosts in the job", env="DOGBREED_NODES")
    node_rank: int | None = setting(
        None, "this host's index, 0 = the master", env="DOGBREED_NODE_RANK"
    )
    master_addr: str | None = setting(
        None, "address of node 0, reachable from every host", env="DOGBREED_MASTER_ADDR"
    )
    master_port: int = setting(
        DEFAULT_MASTER_PORT, "rendezvous port on node 0", env="DOGBREED_MASTER_PORT"
    )
    network_interface: str | None = setting(
        None,
        "interface for NCCL/gloo traffic, e.g. eth0 (SageMaker: from resourceconfig.json)",
        env="DOGBREED_NETWORK_INTERFACE",
    )
    dns_timeout: float = setting(
        DEFAULT_DNS_TIMEOUT,
        "seconds to wait for the other hosts' names to resolve",
        env="DOGBREED_DNS_TIMEOUT",
        minimum=0,
    )

    @classmethod
    def from_args(
        cls, args: argparse.Namespace | None, environ: Mapping[str, str] = os.environ
    ) -> LaunchOptions:
        """Flags win over `DOGBREED_*` variables, which win over the defaults."""
        try:
            values = from_environ(cls, environ)
        except SettingError as exc:
            raise LaunchError(str(exc)) from None
        options = cls(**{**values, **(given_flags(cls, args) if args is not None else {})})
        if not 0 < options.master_port < 65536:
            raise LaunchError(f"master port must be in 1..65535, got {options.master_port}")
        return options


@dataclass(frozen=True)
class LaunchPlan:
    """One host's part of the job: what its torchrun gets."""

    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int
    network_interface: str | None
    wait_for: tuple[str, ...]  # host names that must resolve before the launch

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The EC2 topology flags of `dogbreed train` (SageMaker needs none of them)."""
    group = parser.add_argument_group(
        "multi-host training (EC2; on SageMaker the hosts come from resourceconfig.json)"
    )
    add_arguments(group, LaunchOptions)


def is_worker(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside a process that torchrun (or another launcher) started."""
    return any(marker in environ for marker in WORKER_MARKERS)


def plan_launch(env: TrainingEnv, options: LaunchOptions) -> LaunchPlan:
    """Rank, master and process count of this host; raises LaunchError for a bad topology."""
    nproc = max(1, int(env.num_gpus))
    interface = options.network_interface or env.network_interface or None
    if options.nodes is not None or options.node_rank is not None:
        return _explicit_plan(options, nproc, interface)
    hosts = sorted(env.hosts) or [env.current_host]
    if env.current_host not in hosts:
        raise LaunchError(
            f"current host {env.current_host!r} is not in the host list {hosts} "
            "(resourceconfig.json)"
        )
    if len(set(hosts)) != len(hosts):
        raise LaunchError(f"duplicate host names in resourceconfig.json: {hosts}")
    return LaunchPlan(
        nnodes=len(hosts),
        node_rank=hosts.index(env.current_host),
        nproc_per_node=nproc,
        # One host (several GPUs): loopback, as the default host name may not resolve (EC2).
        master_addr=options.master_addr or (hosts[0] if len(hosts) > 1 else "127.0.0.1"),
        master_port=options.master_port,
        network_interface=interface,
        wait_for=tuple(hosts) if len(hosts) > 1 else (),
    )


def _explicit_plan(options: LaunchOptions, nproc: int, interface: str | None) -> LaunchPlan:
    nodes = 1 if options.nodes is None else options.nodes
    rank = 0 if options.node_rank is None else options.node_rank
    if nodes < 1:
        raise LaunchError(f"--nodes must be >= 1, got {nodes}")
    if not 0 <= rank < nodes:
        raise LaunchError(f"--node-rank must be in 0..{nodes - 1}, got {rank}")
    if nodes > 1 and not options.master_addr:
        raise LaunchError(
            f"--nodes {nodes} needs --master-addr (or DOGBREED_MASTER_ADDR): the address of "
            "node 0 that every host can reach"
        )
    master = options.master_addr or "127.0.0.1"
    return LaunchPlan(
        nnodes=nodes,
        node_rank=rank,
        nproc_per_node=nproc,
        master_addr=master,
        master_port=options.master_port,
        network_interface=interface,
        wait_for=(master,) if nodes > 1 else (),
    )


def parse_host_addresses(text: str | None) -> dict[str, str]:
    """`name=address,name=address` (the test-only DOGBREED_HOST_ADDRESSES) as a dict."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, address = item.partition("=")
        if not sep or not name.strip() or not address.strip():
            raise LaunchError(f"{ENV_HOST_ADDRESSES}: expected name=address, got {item!r}")
        mapping[name.strip()] = address.strip()
    return mapping


def wait_for_hosts(
    hosts: Sequence[str],
    timeout: float,
    overrides: Mapping[str, str] | None = None,
    interval: float = 1.0,
    resolve: Callable[[str], str] | None = None,
) -> dict[str, str]:
    """Wait until every host name resolves (SageMaker's DNS entries appear late).

    Returns name -> address. Raises LaunchError naming the hosts that never resolved.
    """
    overrides = overrides or {}
    resolve = resolve or _resolve
    deadline = time.monotonic() + timeout
    addresses = {name: overrides[name] for name in hosts if name in overrides}
    pending = [name for name in hosts if name not in addresses]
    attempts = 0
    while pending:
        attempts += 1
        for name in list(pending):
            try:
                addresses[name] = resolve(name)
                pending.remove(name)
            except OSError:
                pass
        if not pending:
            break
        if time.monotonic() + interval > deadline:
            raise LaunchError(
                f"host(s) {', '.join(pending)} did not resolve within {timeout:g} s "
                f"({attempts} attempts); check that all instances are in the same network, "
                "or raise --dns-timeout / DOGBREED_DNS_TIMEOUT"
            )
        log.info("waiting for DNS of %s", ", ".join(pending))
        time.sleep(interval)
    return addresses


def _resolve(name: str) -> str:
    return str(socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)[0][4][0])


def torchrun_command(plan: LaunchPlan, argv: Sequence[str], module: str = "dogbreed") -> list[str]:
    """The child command line: every worker runs `python -m MODULE ARGV`."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={plan.nnodes}",
        f"--node-rank={plan.node_rank}",
        f"--nproc-per-node={plan.nproc_per_node}",
        f"--master-addr={plan.master_addr}",
        f"--master-port={plan.master_port}",
        "--max-restarts=0",  # a failed rank fails the job: no silent re-runs
        f"--shutdown-timeout={SHUTDOWN_TIMEOUT}",
        "--module",
        module,
        *argv,
    ]


def child_environment(plan: LaunchPlan, environ: Mapping[str, str]) -> dict[str, str]:
    """The launcher's environment plus the socket interface for NCCL and gloo."""
    env = dict(environ)
    if plan.network_interface:
        # A value the user set explicitly wins.
        env.setdefault("NCCL_SOCKET_IFNAME", plan.network_interface)
        env.setdefault("GLOO_SOCKET_IFNAME", plan.network_interface)
    return env


def run_child(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Run `cmd`, forwarding SIGTERM/SIGINT to it; its exit code (128+N when killed by N).

    The child gets its own session so that a signal sent to our whole process group (tini -g,
    Ctrl-C) reaches it once, through us, not twice; it is told to die with us, so it cannot
    outlive a launcher killed with SIGKILL.
    """
    child: subprocess.Popen[bytes] | None = None
    early: list[int] = []  # a signal that came before the child existed

    def forward(signum: int, _frame: FrameType | None) -> None:
        log.warning("received %s, stopping the distributed job", signal.Signals(signum).name)
        if child is None:
            early.append(signum)
        elif child.poll() is None:
            child.send_signal(signum)

    # Handlers first: a SIGTERM right after the child starts must not kill only us.
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        child = subprocess.Popen(
            list(cmd), env=dict(env), start_new_session=True, preexec_fn=_die_with_parent
        )
        if early:
            child.send_signal(early[0])
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the launcher dies (Linux prctl)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def maybe_launch(
    env: TrainingEnv,
    argv: Sequence[str],
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    module: str = "dogbreed",
) -> int | None:
    """None: train in this process. Otherwise run torchrun for this host; its exit code.

    `argv` is the `dogbreed` command line (["train", ...]) the workers are started with; `args`
    the parsed namespace holding the `add_launch_arguments` flags; `module` what the workers run
    (tests put a small stand-in there). Raises LaunchError.
    """
    environ = os.environ if environ is None else environ
    if is_worker(environ):
        return None
    options = LaunchOptions.from_args(args, environ)
    plan = plan_launch(env, options)
    if plan.world_size <= 1:
        return None
    overrides = parse_host_addresses(environ.get(ENV_HOST_ADDRESSES))
    wait_for_hosts(plan.wait_for, options.dns_timeout, overrides)
    if plan.master_addr in overrides:
        plan = replace(plan, master_addr=overrides[plan.master_addr])
    cmd = torchrun_command(plan, argv, module)
    log.info(
        "launching %d x %d processes: node_rank=%d master=%s:%d interface=%s",
        plan.nnodes,
        plan.nproc_per_node,
        plan.node_rank,
        plan.master_addr,
        plan.master_port,
        plan.network_interface or "(auto)",
    )
    code = run_child(cmd, child_environment(plan, environ))
    log.log(logging.INFO if code == 0 else logging.ERROR, "torchrun exited with code %d", code)
    return code

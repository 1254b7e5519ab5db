"""Unit tests of the multi-host launcher: topology, DNS wait, command line, signal forwarding."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from loopback_http import free_port

from dogbreed.config import base_dir
from dogbreed.train import launch
from dogbreed.train.environment import TrainingEnv, training_env
from dogbreed.train.launch import LaunchError, LaunchOptions, LaunchPlan


def make_env(
    hosts: list[str] | None = None,
    current_host: str = "algo-1",
    num_gpus: int = 0,
    network_interface: str | None = "eth0",
) -> TrainingEnv:
    return TrainingEnv(hosts or ["algo-1"], current_host, num_gpus, network_interface)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    launch.add_launch_arguments(parser)
    return parser.parse_args(argv)


def test_sagemaker_hosts_give_rank_from_sorted_index_and_first_host_as_master() -> None:
    env = make_env(hosts=["algo-3", "algo-1", "algo-2"], current_host="algo-2")
    plan = launch.plan_launch(env, LaunchOptions())
    assert plan == LaunchPlan(
        nnodes=3,
        node_rank=1,
        nproc_per_node=1,  # CPU: one process per host
        master_addr="algo-1",
        master_port=7777,
        network_interface="eth0",
        wait_for=("algo-1", "algo-2", "algo-3"),
    )
    assert plan.world_size == 3


def test_one_process_per_gpu() -> None:
    plan = launch.plan_launch(make_env(hosts=["algo-1", "algo-2"], num_gpus=8), LaunchOptions())
    assert (plan.nproc_per_node, plan.world_size) == (8, 16)


def test_one_host_with_several_gpus_uses_loopback() -> None:
    plan = launch.plan_launch(make_env(num_gpus=4), LaunchOptions())
    assert (plan.nnodes, plan.nproc_per_node, plan.master_addr) == (1, 4, "127.0.0.1")
    assert plan.wait_for == ()  # nothing to resolve: "algo-1" may be no real name (EC2)


def test_current_host_missing_from_hosts_is_a_clear_error() -> None:
    with pytest.raises(LaunchError, match=r"current host 'algo-9' is not in the host list"):
        launch.plan_launch(
            make_env(hosts=["algo-1", "algo-2"], current_host="algo-9"), LaunchOptions()
        )


def test_single_host_single_device_trains_in_process() -> None:
    assert launch.maybe_launch(make_env(), ["train"], parse([]), environ={}) is None
    assert launch.maybe_launch(make_env(num_gpus=1), ["train"], parse([]), environ={}) is None


def test_a_torchrun_worker_never_launches_again() -> None:
    env = make_env(hosts=["algo-1", "algo-2"])
    worker_env = {"LOCAL_RANK": "0", "RANK": "1", "WORLD_SIZE": "2"}
    assert launch.maybe_launch(env, ["train"], parse([]), environ=worker_env) is None
    assert launch.is_worker({"TORCHELASTIC_RUN_ID": "x"})
    assert not launch.is_worker({"RANK": "0"})  # RANK alone is too common a name to trust


def test_ec2_flags_override_resourceconfig() -> None:
    args = parse("--nodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29400".split())
    plan = launch.plan_launch(make_env(num_gpus=4), LaunchOptions.from_args(args, {}))
    assert (plan.nnodes, plan.node_rank, plan.nproc_per_node) == (2, 1, 4)
    assert (plan.master_addr, plan.master_port, plan.wait_for) == ("10.0.0.1", 29400, ("10.0.0.1",))


def test_environment_variables_and_flag_precedence() -> None:
    environ = {
        "DOGBREED_NODES": "2",
        "DOGBREED_NODE_RANK": "0",
        "DOGBREED_MASTER_ADDR": "10.0.0.1",
        "DOGBREED_MASTER_PORT": "1234",
        "DOGBREED_NETWORK_INTERFACE": "ens5",
        "DOGBREED_DNS_TIMEOUT": "2.5",
    }
    options = LaunchOptions.from_args(parse(["--node-rank", "1"]), environ)
    assert options == LaunchOptions(
        nodes=2,
        node_rank=1,
        master_addr="10.0.0.1",
        master_port=1234,
        network_interface="ens5",
        dns_timeout=2.5,
    )
    assert launch.plan_launch(make_env(network_interface=None), options).network_interface == "ens5"


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ("--nodes 2 --node-rank 2 --master-addr h".split(), {}, r"--node-rank must be in 0\.\.1"),
        ("--nodes 0".split(), {}, r"--nodes must be >= 1"),
        ("--nodes 2 --node-rank 1".split(), {}, r"needs --master-addr"),
        ([], {"DOGBREED_NODES": "two"}, r"DOGBREED_NODES: not a number: 'two'"),
        ("--master-port 70000".split(), {}, r"master port must be in 1\.\.65535"),
    ],
)
def test_bad_topology_is_a_clear_error(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(LaunchError, match=message):
        launch.plan_launch(make_env(), LaunchOptions.from_args(parse(argv), environ))


def test_host_address_overrides_parse_and_reject_garbage() -> None:
    assert launch.parse_host_addresses("algo-1=127.0.0.1, algo-2=127.0.0.2") == {
        "algo-1": "127.0.0.1",
        "algo-2": "127.0.0.2",
    }
    assert launch.parse_host_addresses(None) == {}
    with pytest.raises(LaunchError, match="expected name=address"):
        launch.parse_host_addresses("algo-1")


def test_dns_wait_resolves_real_names_and_overrides() -> None:
    found = launch.wait_for_hosts(["localhost", "algo-2"], 5, {"algo-2": "127.0.0.2"})
    assert found["algo-2"] == "127.0.0.2"
    assert found["localhost"] in ("127.0.0.1", "::1")


def test_dns_wait_retries_until_a_late_name_appears() -> None:
    calls: list[str] = []

    def resolve(name: str) -> str:  # DNS that answers on the third try, as on SageMaker
        calls.append(name)
        if len(calls) < 3:
            raise OSError("Name or service not known")
        return "10.0.0.2"

    assert launch.wait_for_hosts(["algo-2"], 5, interval=0.01, resolve=resolve) == {
        "algo-2": "10.0.0.2"
    }
    assert len(calls) == 3


def test_dns_wait_gives_up_with_a_clear_error() -> None:
    start = time.monotonic()
    with pytest.raises(LaunchError, match=r"host\(s\) algo-7\.invalid did not resolve within 1 s"):
        launch.wait_for_hosts(["localhost", "algo-7.invalid"], 1, interval=0.2)
    assert time.monotonic() - start < 10


def test_torchrun_command_and_socket_interface() -> None:
    plan = LaunchPlan(2, 1, 1, "algo-1", 7777, "lo", ("algo-1", "algo-2"))
    cmd = launch.torchrun_command(plan, ["train", "--epochs", "2"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:] == [
        "--nnodes=2",
        "--node-rank=1",
        "--nproc-per-node=1",
        "--master-addr=algo-1",
        "--master-port=7777",
        "--max-restarts=0",
        "--shutdown-timeout=100",
        "--module",
        "dogbreed",
        "train",
        "--epochs",
        "2",
    ]
    env = launch.child_environment(plan, {"PATH": "/bin", "NCCL_SOCKET_IFNAME": "ib0"})
    assert env["GLOO_SOCKET_IFNAME"] == "lo"
    assert env["NCCL_SOCKET_IFNAME"] == "ib0"  # an explicit user setting wins
    assert env["PATH"] == "/bin"


LAUNCHER = textwrap.dedent(
    """
    import sys
    from dogbreed.train.launch import run_child
    child = [sys.executable, "-c", sys.argv[1], sys.argv[2]]
    sys.exit(run_child(child, {"PATH": "/usr/bin:/bin"}))
    """
)
# A stand-in for torchrun: logs every SIGTERM it gets, then exits with a distinctive code.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time, pathlib
    marker = pathlib.Path(sys.argv[1])
    got = []
    def stop(signum, frame):
        got.append(signal.Signals(signum).name)
        marker.write_text(" ".join(got))
    signal.signal(signal.SIGTERM, stop)
    marker.with_suffix(".tmp").write_text(str(os.getpid()))
    os.replace(marker.with_suffix(".tmp"), marker.with_suffix(".ready"))  # atomic: no half file
    end = time.monotonic() + 60
    while not got and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(1)  # room for a duplicate signal to arrive
    sys.exit(7 if got else 3)
    """
)


def start_launcher(marker: Path) -> subprocess.Popen[bytes]:
    """The launcher in its own process group, like PID 1 under `tini -g` in the image."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, CHILD, str(marker)], start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not marker.with_suffix(".ready").exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the child never started")
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("whole_group", [False, True], ids=["launcher", "process-group"])
def test_sigterm_reaches_the_child_once_and_its_exit_code_is_returned(
    tmp_path: Path, whole_group: bool
) -> None:
    marker = tmp_path / "got"
    proc = start_launcher(marker)
    try:
        child_pid = int(marker.with_suffix(".ready").read_text())
        # Its own group: a group-wide signal reaches it once, through the launcher, not twice
        # (two close SIGTERMs often coalesce, so the count alone would not prove this).
        assert os.getpgid(child_pid) != os.getpgid(proc.pid)
        if whole_group:  # tini -g / Ctrl-C: every process of the group gets the signal
            os.killpg(proc.pid, signal.SIGTERM)
        else:  # docker stop without tini -g: only PID 1
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 7
        assert marker.read_text() == "SIGTERM"  # once, not twice
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_child_does_not_outlive_a_killed_launcher(tmp_path: Path) -> None:
    marker = tmp_path / "got"
    proc = start_launcher(marker)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the child kept running after its launcher died"
        time.sleep(0.05)
    assert marker.read_text() == "SIGTERM"


def test_a_child_killed_by_a_signal_reports_128_plus_n() -> None:
    code = launch.run_child(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        os.environ,
    )
    assert code == 128 + signal.SIGKILL


# --- two launchers on this machine, one per "host", running a stand-in worker under torchrun ---

# One "host": its own SAGEMAKER_BASE_DIR whose resourceconfig.json names it, as on SageMaker.
FAKE_HOST = textwrap.dedent(
    """
    import sys
    from dogbreed.config import base_dir
    from dogbreed.train.environment import training_env
    from dogbreed.train.launch import maybe_launch

    sys.exit(maybe_launch(training_env(base_dir()), sys.argv[1:], module="fakeworker"))
    """
)
# What a training worker does with the process group: a rank line, one all-reduce, then
# steps that communicate (so that a dead peer is noticed, as in DDP's backward).
FAKE_WORKER = textwrap.dedent(
    """
    import sys, time
    from datetime import timedelta
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"world_size={world} rank={rank}", flush=True)
    total = torch.tensor([rank + 1.0])
    dist.all_reduce(total)
    print(f"rank={rank} sum={total.item():g}", flush=True)
    mode = sys.argv[1]
    if mode == "fail" and rank == 1:
        raise SystemExit("rank 1 fails on purpose")
    if mode in ("fail", "hang"):
        for _ in range(600):
            dist.all_reduce(torch.ones(1))
            time.sleep(0.1)
    dist.destroy_process_group()
    """
)


HOSTS = ("algo-1", "algo-2")


def write_resourceconfig(base: Path, host: str) -> None:
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    resource = {"current_host": host, "hosts": ["algo-2", "algo-1"], "network_interface_name": "lo"}
    (config / "resourceconfig.json").write_text(json.dumps(resource))


def test_resourceconfig_is_read_into_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_resourceconfig(tmp_path, "algo-2")
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    plan = launch.plan_launch(training_env(base_dir()), LaunchOptions())
    assert (plan.nnodes, plan.node_rank, plan.master_addr) == (2, 1, "algo-1")
    assert plan.network_interface == "lo"


class Host:
    """One fake host: a process with its own SAGEMAKER_BASE_DIR; its output read by a thread."""

    def __init__(self, base: Path, argv: list[str], env: dict[str, str]) -> None:
        self.base = base
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv,
            env={**env, "SAGEMAKER_BASE_DIR": str(base)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.base.name} never printed {text!r}:\n{self.output[-3000:]}")
            time.sleep(0.2)


def start_hosts(
    tmp_path: Path, argv_of: Callable[[str], list[str]], env: dict[str, str] | None = None
) -> list[Host]:
    """algo-1 and algo-2 on this machine: both names resolve to loopback (test-only override)."""
    common = {
        **os.environ,
        "DOGBREED_HOST_ADDRESSES": "algo-1=127.0.0.1,algo-2=127.0.0.1",
        "DOGBREED_MASTER_PORT": str(free_port()),
        "DOGBREED_DNS_TIMEOUT": "5",
        **(env or {}),
    }
    for marker in launch.WORKER_MARKERS:
        common.pop(marker, None)
    hosts = []
    for name in HOSTS:
        write_resourceconfig(tmp_path / name, name)
        hosts.append(Host(tmp_path / name, argv_of(name), common))
    return hosts


def finish(hosts: list[Host], timeout: float) -> list[tuple[int, str]]:
    """Every host's exit code and output; kills what is still running after `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        for host in hosts:
            host.proc.wait(timeout=max(deadline - time.monotonic(), 1))
            host._reader.join(timeout=10)
    finally:
        for host in hosts:
            if host.proc.poll() is None:
                host.proc.kill()
                host.proc.wait()
    return [(host.proc.returncode, host.output) for host in hosts]


def start_fake_job(tmp_path: Path, mode: str) -> list[Host]:
    (tmp_path / "fakeworker.py").write_text(FAKE_WORKER)
    argv = [sys.executable, "-c", FAKE_HOST, mode]
    return start_hosts(tmp_path, lambda _host: argv, {"PYTHONPATH": str(tmp_path)})


def test_two_hosts_form_one_job(tmp_path: Path) -> None:
    (code1, out1), (code2, out2) = finish(start_fake_job(tmp_path, "ok"), 180)
    assert (code1, code2) == (0, 0), out1 + out2
    assert "world_size=2 rank=0" in out1 and "world_size=2 rank=1" in out2
    assert "rank=0 sum=3" in out1 and "rank=1 sum=3" in out2  # one group, not two jobs


def test_a_failing_rank_stops_the_other_host(tmp_path: Path) -> None:
    start = time.monotonic()
    (code1, out1), (code2, out2) = finish(start_fake_job(tmp_path, "fail"), 180)
    assert code2 != 0 and "rank 1 fails on purpose" in out2
    assert code1 != 0, out1  # rank 0 noticed its peer is gone instead of training on alone
    assert time.monotonic() - start < 150


def test_sigterm_on_one_host_stops_the_whole_job(tmp_path: Path) -> None:
    hosts = start_fake_job(tmp_path, "hang")
    hosts[1].wait_for("rank=1 sum=3", 120)  # the job is really running
    hosts[1].proc.send_signal(signal.SIGTERM)  # what `docker stop` does to algo-2
    (code1, out1), (code2, _) = finish(hosts, 120)
    assert code2 != 0
    assert code1 != 0, out1

"""The EC2 recipe of docs/distributed.md, for real: two training containers with
`--network host`, `IMAGE train --nodes 2 --node-rank R --master-addr ...`, one DDP job.

Both "hosts" are containers on this machine, so the master address is 127.0.0.1 and the
interface `lo`; on EC2 they are the private IP and e.g. `ens5`.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from test_containers import TRAIN_IMAGE, docker, free_port, images  # noqa: F401 (images: fixture)

from dogbreed.data.sample import generate_sample
from dogbreed.model.artifact import WEIGHTS_FILE


@pytest.mark.docker
@pytest.mark.usefixtures("images")
def test_two_containers_with_host_network_train_one_model(tmp_path: Path) -> None:
    data = generate_sample(tmp_path / "data", classes=3, per_class=8, seed=0)
    port = str(free_port())
    names = [f"dogbreed-ec2-{uuid.uuid4().hex[:8]}-node{rank}" for rank in (0, 1)]
    try:
        for rank, name in enumerate(names):
            job = tmp_path / f"node{rank}"
            job.mkdir()
            docker(
                "run", "-d", "--name", name, "--network", "host",
                "--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp",
                "-e", "OMP_NUM_THREADS=1",  # two containers on a small machine
                "-v", f"{data}:/data:ro", "-v", f"{job}:/opt/ml",
                TRAIN_IMAGE, "train", "--data", "/data",  # EC2 form: IMAGE train FLAGS
                "--nodes", "2", "--node-rank", str(rank),
                "--master-addr", "127.0.0.1", "--master-port", port, "--network-interface", "lo",
                *"--backbone resnet18 --image-size 32 --epochs 1".split(),
                *"--batch-size 4 --workers 0".split(),
            )  # fmt: skip
        codes = [docker("wait", name, timeout=600).stdout.strip() for name in names]
        logs = [docker("logs", name) for name in names]
        logs = [f"{r.stdout}{r.stderr}" for r in logs]
        assert codes == ["0", "0"], logs
    finally:
        docker("rm", "-f", *names, check=False)
    assert "world_size=2 rank=0" in logs[0] and "world_size=2 rank=1" in logs[1]
    counts = [re.findall(r"rank=\d+ .*train_samples=(\d+)", log) for log in logs]
    assert counts == [["12"], ["12"]]  # 24 training images, split in two
    assert (tmp_path / "node0" / "model" / WEIGHTS_FILE).is_file()
    assert not (tmp_path / "node1" / "model").exists()  # only rank 0 writes

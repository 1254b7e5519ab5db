"""Trainer parts in isolation: the SageMaker environment, checkpoints, schedule, sampler, lines."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pytest
import torch
from torch.utils.data import RandomSampler

from dogbreed import config
from dogbreed.config import ConfigError, TrainConfig
from dogbreed.data.sample import generate_sample
from dogbreed.train import checkpoint, distributed, environment, report
from dogbreed.train.environment import JobError, JobPaths
from dogbreed.train.loop import (
    STOP_POLL_SECONDS,
    StopPoll,
    TrainingDiverged,
    _ResumableSampler,
    _StopFlag,
    check_finite,
    lr_lambda,
    train,
)


@pytest.fixture(autouse=True)
def no_sagemaker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SAGEMAKER_BASE_DIR", "SM_HOSTS", "SM_CURRENT_HOST", "SM_NUM_GPUS",
                "SM_MODEL_DIR", "SM_OUTPUT_DIR", "SM_OUTPUT_DATA_DIR", "SM_CHANNEL_TRAINING",
                "SM_CHANNEL_TRAIN", "SM_CHANNEL_VALID", "SM_CHANNEL_TEST"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)


def _base(tmp_path: Path, channels: tuple[str, ...] = ("training",)) -> Path:
    for name in channels:
        (tmp_path / "input" / "data" / name).mkdir(parents=True)
    (tmp_path / "input" / "config").mkdir(parents=True, exist_ok=True)
    return tmp_path


# --- environment -------------------------------------------------------------------------


def test_sagemaker_defaults_under_the_base_dir(tmp_path: Path) -> None:
    base = _base(tmp_path)
    paths = environment.job_paths(base)
    assert paths.data == {"training": base / "input/data/training"}
    assert paths.model_dir == base / "model"
    assert paths.output_data_dir == base / "output/data"
    assert paths.failure_file == base / "output/failure"
    assert paths.checkpoint_dir == base / "checkpoints"


def test_base_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert config.base_dir() == Path("/opt/ml")
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert config.base_dir() == tmp_path
    assert config.base_dir(tmp_path / "x") == tmp_path / "x"  # --base-dir wins


def test_separate_channels_and_the_validation_alias(tmp_path: Path) -> None:
    base = _base(tmp_path, ("train", "validation", "test"))
    assert environment.job_paths(base).data == {
        "train": base / "input/data/train",
        "valid": base / "input/data/validation",
        "test": base / "input/data/test",
    }


def test_toolkit_variables_then_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = _base(tmp_path)
    elsewhere = tmp_path / "elsewhere" / "training"
    elsewhere.mkdir(parents=True)
    monkeypatch.setenv("SM_CHANNEL_TRAINING", str(elsewhere))
    monkeypatch.setenv("SM_MODEL_DIR", "/sm/model")
    monkeypatch.setenv("SM_OUTPUT_DIR", "/sm/output")
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", "/sm/output/data2")
    paths = environment.job_paths(base)
    assert paths.data == {"training": elsewhere}
    assert (paths.model_dir, paths.output_dir) == (Path("/sm/model"), Path("/sm/output"))
    assert paths.output_data_dir == Path("/sm/output/data2")
    flags = environment.job_paths(base, "/d", "/m", "/o", "/c")
    assert flags == JobPaths({"training": Path("/d")}, Path("/m"), Path("/o"), Path("/c"))
    assert flags.output_data_dir == Path("/o/data")


def test_inputdataconfig_names_the_channels(tmp_path: Path) -> None:
    base = _base(tmp_path, ("training", "unused"))
    config = base / "input/config/inputdataconfig.json"
    config.write_text(json.dumps({"training": {"TrainingInputMode": "FastFile"}}))
    assert environment.job_paths(base).data == {"training": base / "input/data/training"}
    config.write_text(json.dumps({"training": {}, "test": {}}))
    with pytest.raises(JobError, match=r"channel folder.*input/data/test"):
        environment.job_paths(base)
    config.write_text(json.dumps({"training": {"TrainingInputMode": "Pipe"}}))
    with pytest.raises(JobError, match="Pipe input mode"):
        environment.job_paths(base)


def test_resourceconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _base(tmp_path)
    resource = {"current_host": "algo-2", "hosts": ["algo-2", "algo-1"],
                "network_interface_name": "eth1"}  # fmt: skip
    (base / "input/config/resourceconfig.json").write_text(json.dumps(resource))
    monkeypatch.setenv("SM_NUM_GPUS", "4")
    env = environment.training_env(base)
    assert (env.hosts, env.current_host, env.host_rank) == (["algo-1", "algo-2"], "algo-2", 1)
    assert (env.num_gpus, env.network_interface) == (4, "eth1")


def test_no_resourceconfig_is_one_host(tmp_path: Path) -> None:
    env = environment.training_env(_base(tmp_path))
    assert (env.hosts, env.current_host, env.num_gpus) == (["algo-1"], "algo-1", 0)


def test_bad_resourceconfig_and_hyperparameters(tmp_path: Path) -> None:
    base = _base(tmp_path)
    config = base / "input/config"
    (config / "resourceconfig.json").write_text('{"current_host": "algo-9", "hosts": ["algo-1"]}')
    with pytest.raises(JobError, match="algo-9"):
        environment.training_env(base)
    (config / "hyperparameters.json").write_text('["epochs", 3]')
    with pytest.raises(JobError, match="JSON object"):
        environment.load_config(base)


def test_flags_replace_file_values(tmp_path: Path) -> None:
    base = _base(tmp_path)
    hps = {"epochs": '"bad"', "batch-size": "4", "backbone": '"resnet18"'}
    (base / "input/config/hyperparameters.json").write_text(json.dumps(hps))
    cfg = environment.load_config(base, {"epochs": "2", "batch_size": "6"})
    assert (cfg.epochs, cfg.batch_size, cfg.backbone) == (2, 6, "resnet18")


def test_failure_reason_is_capped_at_1024(tmp_path: Path) -> None:
    environment.write_failure(tmp_path / "out", "x" * 5000)
    assert (tmp_path / "out" / "failure").read_text() == "x" * 1024


# --- checkpoint, schedule, sampler ---------------------------------------------------------


def test_checkpoint_round_trip_restores_rng(tmp_path: Path) -> None:
    assert checkpoint.load_checkpoint(tmp_path) is None
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()  # optimizer state with tensors and step counts
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(10, 2))
    checkpoint.seed_everything(5)
    saved_rng = checkpoint.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    state = {"epoch": 2, "best_loss": math.inf, "best_weights": model.state_dict(), "history": []}
    checkpoint.save_checkpoint(
        tmp_path,
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
         "scheduler": scheduler.state_dict(), "state": state, "rng": [saved_rng]},
    )  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    loaded = checkpoint.load_checkpoint(tmp_path)  # weights_only=True: our types pass it
    assert loaded is not None and loaded["state"]["epoch"] == 2
    assert torch.equal(loaded["model"]["weight"], model.weight)
    optimizer.load_state_dict(loaded["optimizer"])
    scheduler.load_state_dict(loaded["scheduler"])
    checkpoint.set_rng_state(loaded["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class _RunsCode:
    """What a tampered checkpoint could carry: unpickling it runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _checkpoint_with(state: object) -> dict[str, object]:
    return {"model": {}, "optimizer": {}, "scheduler": {}, "state": state, "rng": []}


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda f, tmp: torch.save(_checkpoint_with(_RunsCode(tmp / "ran")), f),
         r"holds objects a dogbreed checkpoint never holds \(posix\.system\); refused"),
        (lambda f, tmp: torch.save(_checkpoint_with(np.zeros(3)), f),  # numpy: not ours
         r"never holds \(numpy\._core\.multiarray\._reconstruct, numpy\.dtype, numpy\.ndarray\)"),
        (lambda f, tmp: f.write(b"PK\x03\x04 not really a zip"),
         r"is not a complete torch\.save archive"),
        (lambda f, tmp: torch.save({"model": {}}, f),
         r"lacks optimizer, rng, scheduler, state"),
        (lambda f, tmp: torch.save(torch.zeros(2), f), r"lacks model, optimizer"),
    ],
    ids=["runs-code", "numpy-array", "not-a-zip", "missing-keys", "not-a-dict"],
)  # fmt: skip
def test_a_foreign_checkpoint_is_refused(
    tmp_path: Path, write: Callable[[IO[bytes], Path], object], reason: str
) -> None:
    (tmp_path / "c").mkdir()
    with open(tmp_path / "c" / "last.pt", "wb") as f:
        write(f, tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match=reason + ".*use another --checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "c")
    assert not (tmp_path / "ran").exists()  # nothing in the file was executed


def test_a_checkpoint_that_runs_code_fails_the_job_with_exit_2(tmp_path: Path) -> None:
    from dogbreed.cli import main

    data = generate_sample(tmp_path / "data", classes=2, per_class=2, seed=3)
    torch.save(_checkpoint_with(_RunsCode(tmp_path / "ran")), tmp_path / "last.pt")
    (tmp_path / "c").mkdir()
    os.replace(tmp_path / "last.pt", tmp_path / "c" / "last.pt")  # as S3 would sync it in
    flags = "--backbone resnet18 --image-size 32 --batch-size 4 --epochs 1 --workers 0"
    argv = ["train", "--data", str(data), "--model-dir", str(tmp_path / "m"),
            "--output-dir", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c"),
            *flags.split()]  # fmt: skip
    assert main(argv) == 2
    reason = (tmp_path / "o" / "failure").read_text()
    assert reason.startswith(f"CheckpointError: {tmp_path / 'c' / 'last.pt'} holds objects")
    assert "posix.system" in reason and "weights_only" not in reason
    assert not (tmp_path / "ran").exists() and not (tmp_path / "m").exists()


def test_warmup_then_cosine() -> None:
    factor = lr_lambda(total_steps=100, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    values = [factor(s) for s in range(10, 101)]
    assert values == sorted(values, reverse=True)


def test_resumable_sampler_repeats_the_epoch_order_and_skips_done_batches() -> None:
    data = list(range(20))
    sampler = _ResumableSampler(RandomSampler(data, generator=torch.Generator()), 4, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert sorted(full) == data
    sampler.set_epoch(2, skip_batches=3)
    assert list(sampler) == full[12:] and len(sampler) == 8
    sampler.set_epoch(3)
    assert list(sampler) != full


class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _stop_poll(
    monkeypatch: pytest.MonkeyPatch, world_size: int
) -> tuple[StopPoll, _StopFlag, _FakeClock, list[torch.Tensor]]:
    """A StopPoll on a fake clock whose all-reduce records its inputs (every rank the same)."""
    reduced: list[torch.Tensor] = []

    def all_reduce_sum(values: torch.Tensor, info: distributed.DistInfo) -> torch.Tensor:
        reduced.append(values.clone())
        return values * info.world_size

    monkeypatch.setattr(distributed, "all_reduce_sum", all_reduce_sum)
    info = distributed.DistInfo(0, world_size, 0, torch.device("cpu"))
    flag, clock = _StopFlag(), _FakeClock()
    return StopPoll(flag, info, clock), flag, clock, reduced


def test_ranks_agree_on_a_sigterm_every_few_seconds_not_every_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    poll, flag, clock, reduced = _stop_poll(monkeypatch, world_size=2)
    step_seconds = 1.0
    poll.start_epoch(first_step=0)
    stopped_at = None
    for step in range(1, 100):
        clock.now += step_seconds
        if step == 13:
            flag.requested = True  # SIGTERM on this rank between the polls
        if poll.stop_now(step):
            stopped_at = step
            break
    every = int(STOP_POLL_SECONDS / step_seconds)
    # One collective after the first step (nothing measured yet), then one per `every` steps:
    # the interval is computed from the reduced result, so it is the same on every rank.
    assert poll.polls == len(reduced) == 1 + (stopped_at - 1) // every
    assert stopped_at is not None and 13 <= stopped_at < 13 + every
    assert reduced[-1][0] == 1.0  # this rank's flag went into the collective


def test_one_process_reads_its_flag_at_every_step_without_a_collective(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    poll, flag, _, reduced = _stop_poll(monkeypatch, world_size=1)
    assert not poll.stop_now(1)
    flag.requested = True
    assert poll.stop_now(2) and poll.stop_now(3)
    assert reduced == []


def test_train_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    state = checkpoint.TrainState(epoch=3, step=2, best_loss=0.5, best_epoch=2,
                                  best_weights={"w": torch.ones(2)}, history=[{"epoch": 1.0}],
                                  partial=[4.0, 2.0, 8.0], partial_seconds=1.5)  # fmt: skip
    checkpoint.save_checkpoint(tmp_path, _checkpoint_with(state.to_dict()))
    loaded = checkpoint.TrainState.from_dict(checkpoint.load_checkpoint(tmp_path)["state"])
    assert torch.equal(loaded.best_weights["w"], torch.ones(2))
    assert {**loaded.to_dict(), "best_weights": None} == {**state.to_dict(), "best_weights": None}


def test_single_process_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.setup()
    assert (info.rank, info.world_size, info.is_main(), info.enabled) == (0, 1, True, False)
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(distributed.all_reduce_sum(values, info), values)
    assert distributed.any_true(True, info) and not distributed.any_true(False, info)


def test_a_broken_connection_is_a_lost_peer_with_a_plain_reason() -> None:
    gloo = RuntimeError(
        "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection "
        "closed by peer [10.0.0.2]:4321. This is typically caused by a remote worker crashing."
    )
    lost = distributed.lost_peer(gloo)
    assert lost is not None
    assert str(lost).startswith(
        "lost contact with another process of this job (Connection closed by peer "
        "[10.0.0.2]:4321): another host crashed, was stopped or lost the network"
    )
    assert distributed.lost_peer(RuntimeError("CUDA out of memory")) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", " must be at least 1, not 0.0"),
        ("-5", " must be at least 1, not -5.0"),
        ("soon", ": not a number: 'soon'"),
        ("nan", ": not a finite number: 'nan'"),
    ],
)
def test_a_bad_peer_timeout_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv(distributed.ENV_PEER_TIMEOUT, value)
    with pytest.raises(ConfigError, match=re.escape(f"DOGBREED_PEER_TIMEOUT{reason}")):
        distributed.peer_timeout()


def test_the_peer_timeout_defaults_to_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(distributed.ENV_PEER_TIMEOUT, raising=False)
    assert distributed.peer_timeout() == 60
    monkeypatch.setenv(distributed.ENV_PEER_TIMEOUT, "7.5")
    assert distributed.peer_timeout() == 7.5


# --- metric lines ------------------------------------------------------------------------


def test_metric_lines_round_trip_through_the_regexes() -> None:
    metrics = {"train_loss": 1.23456, "train_acc": 0.5, "valid_loss": 0.1, "valid_acc": 1.0,
               "lr": 1.5e-7, "images_per_sec": 1234.56}  # fmt: skip
    line = report.epoch_line(12, metrics)
    assert line == (
        "epoch=12 train_loss=1.2346 train_acc=0.5000 valid_loss=0.1000 valid_acc=1.0000 "
        "lr=1.5e-07 images_per_sec=1234.6"
    )
    final = {"valid_loss": 0.05, "valid_acc": 0.9, "test_loss": 0.25, "test_acc": 0.75}
    final_line = report.final_line(final)
    assert final_line == "final valid_loss=0.0500 valid_acc=0.9000 test_loss=0.2500 test_acc=0.7500"
    text = f"INFO noise\n{line}\n{final_line}\n"
    scraped = report.parse_metric_lines(text)
    assert scraped["epoch"] == [12.0]
    assert scraped["lr"] == [1.5e-7]
    # The last valid_loss is the best epoch's: what a SageMaker tuning job scores.
    assert scraped["train_loss"] == [1.2346] and scraped["valid_loss"] == [0.1, 0.05]
    assert scraped["test_acc"] == [0.75]


# --- the training API that the tuner calls -----------------------------------------------


class Pruned(Exception):
    pass


def test_report_callback_is_called_and_its_exception_propagates(tmp_path: Path) -> None:
    generate_sample(tmp_path / "data", classes=3, per_class=8, seed=2)
    paths = JobPaths.from_root(tmp_path / "data", tmp_path / "m", tmp_path / "o", tmp_path / "c")
    cfg = TrainConfig(backbone="resnet18", image_size=32, epochs=3, batch_size=8, workers=0)
    seen: list[tuple[int, dict[str, float]]] = []

    def prune_after_first(epoch: int, metrics: dict[str, float]) -> None:
        seen.append((epoch, metrics))
        raise Pruned

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Pruned):
        train(cfg, paths, report=prune_after_first)
    assert signal.getsignal(signal.SIGTERM) == before  # the SIGTERM handler was put back
    assert [epoch for epoch, _ in seen] == [1]
    assert set(seen[0][1]) == set(report.EPOCH_KEYS)
    assert all(math.isfinite(v) for v in seen[0][1].values())
    assert not (tmp_path / "m").exists()  # a pruned trial writes no model


def _saved(cfg: TrainConfig, world_size: int = 1) -> dict[str, object]:
    from dataclasses import asdict

    return {
        **_checkpoint_with({}),
        "config": asdict(cfg),
        "classes": ["a", "b"],
        "world_size": world_size,
    }


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"backbone": "resnet34"}, "backbone"),
        ({"image_size": 96}, "image_size"),
        ({"batch_size": 4}, "batch_size"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"freeze": "layer2"}, "freeze"),
    ],
)
def test_checkpoint_from_another_config_is_refused(
    tmp_path: Path, change: dict[str, object], key: str
) -> None:
    where = tmp_path / "c"
    cfg = TrainConfig(backbone="resnet18", image_size=64, batch_size=8)
    checkpoint.check_compatible(_saved(cfg), cfg, ["a", "b"], where, 1)  # the same run: accepted
    other = TrainConfig(**{**_saved(cfg)["config"], **change})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"from a run with {key}=.*use another --checkpoint"):
        checkpoint.check_compatible(_saved(other), cfg, ["a", "b"], where, 1)


def test_checkpoint_from_another_world_size_or_classes_is_refused(tmp_path: Path) -> None:
    where = tmp_path / "c"
    cfg = TrainConfig()
    with pytest.raises(ConfigError, match="world_size=2, this run has 1"):
        checkpoint.check_compatible(_saved(cfg, world_size=2), cfg, ["a", "b"], where, 1)
    with pytest.raises(ConfigError, match="world_size=None"):  # written before it was saved
        checkpoint.check_compatible({**_saved(cfg), "world_size": None}, cfg, ["a", "b"], where, 1)
    with pytest.raises(ConfigError, match="other classes"):
        checkpoint.check_compatible(_saved(cfg), cfg, ["a", "c"], where, 1)


def test_incompatible_checkpoint_fails_the_job_with_exit_2(tmp_path: Path) -> None:
    from dogbreed.cli import main

    data = generate_sample(tmp_path / "data", classes=2, per_class=2, seed=3)
    cfg = TrainConfig(backbone="resnet18", image_size=32, batch_size=4, optimizer="sgd")
    saved = {**_saved(cfg), "classes": ["Affenpinscher", "Afghan_hound"]}
    checkpoint.save_checkpoint(tmp_path / "c", saved)
    flags = "--backbone resnet18 --image-size 32 --batch-size 4 --epochs 1 --workers 0"
    argv = ["train", "--data", str(data), "--model-dir", str(tmp_path / "m"),
            "--output-dir", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c"),
            *flags.split()]  # fmt: skip
    assert main(argv) == 2
    reason = (tmp_path / "o" / "failure").read_text()
    assert reason.startswith("ConfigError: checkpoint in") and "optimizer='sgd'" in reason
    assert not (tmp_path / "m").exists()


def test_a_non_finite_loss_is_divergence() -> None:
    check_finite(1, {"train_loss": 2.3, "valid_loss": 2.2})
    with pytest.raises(TrainingDiverged, match="train_loss is nan at epoch 3; lower learning"):
        check_finite(3, {"train_loss": math.nan, "valid_loss": 2.2})
    with pytest.raises(TrainingDiverged, match="valid_loss is inf at epoch 1"):
        check_finite(1, {"train_loss": 2.3, "valid_loss": math.inf})


def test_an_absurd_learning_rate_fails_the_job(tmp_path: Path) -> None:
    from dogbreed.cli import main

    data = generate_sample(tmp_path / "data", classes=2, per_class=4, seed=3)
    flags = ("--backbone resnet18 --image-size 32 --batch-size 4 --epochs 2 --workers 0 "
             "--optimizer sgd --learning-rate 1e30 --warmup-epochs 0")  # fmt: skip
    argv = ["train", "--data", str(data), "--model-dir", str(tmp_path / "m"),
            "--output-dir", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c"),
            *flags.split()]  # fmt: skip
    assert main(argv) == 1
    reason = (tmp_path / "o" / "failure").read_text()
    assert reason.startswith("TrainingDiverged: training diverged: train_loss is nan at epoch 1")
    assert not (tmp_path / "m").exists()  # no model from garbage weights


def test_cli_environment_and_report_import_no_torch() -> None:
    # `dogbreed --help`, the launcher and the AWS tooling import these without paying for torch.
    code = (
        "import sys; from dogbreed.cli import build_parser; build_parser('train'); "
        "import dogbreed.train.environment, dogbreed.train.report; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0

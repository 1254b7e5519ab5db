"""`dogbreed tune` with the real trainer on tiny generated data: persistence, resume, pruning,
best-parameters file, summary and plots. Also checks that SageMaker's MetricDefinitions parse
the trainer's real stdout."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from dogbreed.cli import main as dogbreed
from dogbreed.config import TrainConfig
from dogbreed.train.environment import load_config
from dogbreed.train.report import METRIC_DEFINITIONS
from dogbreed.tune import local

EPOCHS = 3
# Everything but the learning rate fixed: small, fast, and the trials differ only where we
# choose (the enqueued learning rates below).
FIXED = (
    f"--backbone resnet18 --image-size 64 --epochs {EPOCHS} --batch-size 8 --workers 0 "
    "--freeze backbone --optimizer adamw --warmup-epochs 0 --label-smoothing 0 "
    "--weight-decay 0.0001 --seed 0"
).split()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dogbreed.data.sample import generate_sample

    # Smaller than the shared sample_data: each trial runs 3 epochs on 2 shared CPU cores.
    return generate_sample(tmp_path_factory.mktemp("tune") / "data", classes=3, per_class=8)


def tune(data: Path, out: Path, n_trials: int, *extra: str) -> int:
    argv = ["tune", "--data", str(data), "--output-dir", str(out), "--n-trials", str(n_trials)]
    return dogbreed([*argv, "--pruner-startup-trials", "2", *FIXED, *extra])


# 10.0 is outside the searched range on purpose: Optuna warns and runs it anyway.
@pytest.mark.filterwarnings("ignore:Fixed parameter learning_rate:UserWarning")
def test_study_persists_resumes_and_prunes_a_hopeless_trial(
    tiny_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tuning"
    storage = f"sqlite:///{out / 'study.db'}"
    out.mkdir()
    # Two sensible learning rates first, so that the median pruner has a reference.
    seed_study = optuna.create_study(storage=storage, study_name="dogbreed")
    seed_study.enqueue_trial({"learning_rate": 3e-3})
    seed_study.enqueue_trial({"learning_rate": 1e-3})

    assert tune(tiny_data, out, 2) == 0
    first = capfd.readouterr().out
    study = optuna.load_study(storage=storage, study_name="dogbreed")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(len(t.intermediate_values) == EPOCHS for t in study.trials)
    assert re.search(r"^trial\s+state\s+valid_loss\s+epochs", first, re.MULTILINE)
    assert (out / local.HISTORY_PLOT).stat().st_size > 0
    assert (out / local.INTERMEDIATE_PLOT).stat().st_size > 0
    for t in study.trials:
        assert (Path(t.user_attrs["dir"]) / "model" / "model.onnx").is_file()

    # The best parameters, read the way `dogbreed train --base-dir OUT/best` reads them.
    best_cfg = load_config(out / local.BEST_BASE_DIR)
    best = study.best_trial
    assert best_cfg.learning_rate == best.params["learning_rate"]
    assert (best_cfg.backbone, best_cfg.epochs, best_cfg.image_size) == ("resnet18", EPOCHS, 64)

    # Resume: the same storage and name continue the study; an absurd learning rate is pruned
    # well before its last epoch.
    study.enqueue_trial({"learning_rate": 10.0})
    assert tune(tiny_data, out, 3) == 0
    study = optuna.load_study(storage=storage, study_name="dogbreed")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = study.trials[2]
    assert bad.params["learning_rate"] == 10.0
    assert bad.last_step is not None and bad.last_step < EPOCHS
    assert not (Path(bad.user_attrs["dir"]) / "model").exists()  # stopped before saving
    summary = capfd.readouterr().out
    assert re.search(r"^2\s+PRUNED", summary, re.MULTILINE)

    # Already 3 finished trials: nothing more runs.
    assert tune(tiny_data, out, 3) == 0
    assert len(optuna.load_study(storage=storage, study_name="dogbreed").trials) == 3


def test_resuming_with_other_fixed_values_is_refused(
    tiny_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tuning"
    settings = local.StudySettings(
        storage=f"sqlite:///{tmp_path / 'study.db'}", fixed=frozenset({"epochs"})
    )
    local.open_study(settings, TrainConfig(epochs=5))
    code = dogbreed(
        ["tune", "--data", str(tiny_data), "--output-dir", str(out), "--epochs", "2",
         "--storage", settings.storage, "--n-trials", "1"]
    )  # fmt: skip
    assert code == 2
    err = capfd.readouterr().err
    assert "error: study 'dogbreed'" in err and "new --study-name" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n-trials", "0"], "--n-trials must be at least 1"),
        (["--learning-rate", "fast"], "learning_rate"),
        (["--storage", "nosuchdb://x"], "cannot open study storage"),
        (["--backbone", "nosuchnet", "--n-trials", "1"], "nosuchnet"),
    ],
)
def test_bad_input_is_a_clear_error(
    tiny_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    code = dogbreed(["tune", "--data", str(tiny_data), "--output-dir", str(tmp_path), *argv])
    assert code == 2
    assert message in capfd.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    assert dogbreed(["tune", "--data", str(tmp_path / "nope"), "--output-dir", str(tmp_path)]) == 2
    assert "does not exist" in capfd.readouterr().err


def test_metric_definitions_parse_real_trainer_output(
    tiny_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """SageMaker applies each Regex to the job's log; run the real trainer and do the same."""
    work = tmp_path / "job"
    code = dogbreed(
        ["train", "--data", str(tiny_data), "--model-dir", str(work / "model"),
         "--output-dir", str(work / "output"), "--checkpoint-dir", str(work / "ckpt"),
         *FIXED, "--epochs", "2", "--learning-rate", "0.001"]
    )  # fmt: skip
    assert code == 0
    log = capfd.readouterr().out
    found = {d["Name"]: [float(v) for v in re.findall(d["Regex"], log)] for d in METRIC_DEFINITIONS}
    metrics = json.loads((work / "output" / "data" / "metrics.json").read_text())
    history = metrics["history"]
    assert found["epoch"] == [1.0, 2.0]
    for key in ("train_loss", "train_acc"):
        assert found[key] == pytest.approx([h[key] for h in history], abs=1e-4)
    # Per epoch, then the best epoch's again on the final line: SageMaker's tuner scores the
    # LAST value, which must be the model that is kept.
    for key in ("valid_loss", "valid_acc"):
        expected = [h[key] for h in history] + [metrics["final"][key]]
        assert found[key] == pytest.approx(expected, abs=1e-4)
    assert found["valid_loss"][-1] == pytest.approx(min(found["valid_loss"]), abs=1e-4)
    assert found["test_acc"] == pytest.approx([metrics["final"]["test_acc"]], abs=1e-4)
    # The tuning objectives are among the scraped names.
    assert {"valid_loss", "valid_acc"} <= found.keys()


# study.ask() stands in for the dead process's trial; Optuna warns that ask() has no heartbeat.
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_left_running_by_a_dead_process_is_retried(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real timings are 60 s / 180 s; shortened so the test does not wait minutes.
    monkeypatch.setattr(local, "HEARTBEAT_INTERVAL_S", 1)
    monkeypatch.setattr(local, "HEARTBEAT_GRACE_S", 2)
    base = TrainConfig(backbone="resnet18", image_size=64, epochs=1, batch_size=8, workers=0)
    fixed = frozenset({"backbone", "image_size", "epochs", "batch_size", "workers"})
    settings = local.StudySettings(storage=f"sqlite:///{tmp_path / 'study.db'}", fixed=fixed)
    study = local.open_study(settings, base)
    # What a killed `dogbreed tune` leaves behind: a RUNNING trial whose heartbeat stopped.
    dead = study.ask()
    space_params = {p.name: p.suggest(dead) for p in local.active_space(fixed)}
    study._storage.record_heartbeat(dead._trial_id)  # private, but what optimize() does per trial
    time.sleep(3)

    study = local.run_study(tiny_data, tmp_path / "out", base, settings, n_trials=1)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE"]
    assert study.trials[1].params == space_params  # the same parameters, tried again


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_pruner_choices(name: str, kind: type) -> None:
    assert isinstance(local.make_pruner(local.StudySettings(storage="", pruner=name)), kind)


def test_unknown_objective_is_refused(tmp_path: Path) -> None:
    settings = local.StudySettings(storage=f"sqlite:///{tmp_path / 's.db'}", objective="test_acc")
    with pytest.raises(local.TuneError, match="unknown objective 'test_acc'"):
        local.open_study(settings, TrainConfig())


def test_ctrl_c_keeps_the_study_and_prints_the_summary(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuning"
    cmd = [sys.executable, "-m", "dogbreed", "tune", "--data", str(tiny_data),
           "--output-dir", str(out), "--n-trials", "5", *FIXED]  # fmt: skip
    # A shell that starts a job in the background without job control (a CI runner's `cmd &`)
    # sets SIGINT to SIG_IGN; exec keeps an ignored signal ignored and Python then installs no
    # KeyboardInterrupt handler, so the child would sleep through our Ctrl-C and finish all five
    # trials (exit 0). A user's terminal gives the default action: give the child that.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        # Interrupt in the middle of the first trial, after its first epoch line.
        for line in proc.stdout:
            if line.startswith("epoch=1 ") or time.monotonic() > deadline:
                break
        else:
            pytest.fail("the tuner's stdout ended before its first epoch line")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "interrupted: re-run the same command" in stderr
    assert re.search(r"^0\s+FAIL", stdout, re.MULTILINE)  # the interrupted trial, recorded
    study = optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="dogbreed")
    assert [t.state.name for t in study.trials] == ["FAIL"]

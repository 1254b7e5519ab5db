"""Serving settings: SageMaker's variables read through sagemaker-inference, ours parsed here."""

from __future__ import annotations

import os

import pytest

from dogbreed.serve.settings import ServeSettings, resolve_parallelism
from dogbreed.settings import SettingError


def test_the_toolkit_variables_come_through_sagemaker_inference() -> None:
    settings = ServeSettings.from_env(
        {
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SAGEMAKER_STARTUP_TIMEOUT": "120",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
            "SAGEMAKER_SAFE_PORT_RANGE": "21000-21100",
            "SAGEMAKER_MODEL_SERVER_VMARGS": "-Xmx300m",
            "SAGEMAKER_MODEL_SERVER_BATCH_SIZE": "4",  # MMS batching: not the toolkit's
            "DOGBREED_MAX_BUFFERED_MB": "64",
        }
    )
    assert (settings.workers, settings.port, settings.startup_timeout_s) == (3, 9090, 120)
    assert settings.max_payload_mb == 20 and settings.batch_size == 4
    assert (settings.safe_port_range, settings.vmargs) == ("21000-21100", "-Xmx300m")


def test_unset_toolkit_variables_keep_our_defaults() -> None:
    """The toolkit's own defaults (a 60-MINUTE timeout, JVM flags without container support)
    apply only when the variable is set."""
    settings = ServeSettings.from_env({})
    assert settings == ServeSettings()
    assert settings.response_timeout_s == 60 and settings.vmargs is None


@pytest.mark.parametrize(
    ("environ", "seconds"),
    [
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT": "2"}, 120),  # minutes, as MMS reads it
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "45"}, 45),
        (
            {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "45"},
            45,
        ),
    ],
)
def test_the_response_timeout_in_either_unit(environ: dict[str, str], seconds: int) -> None:
    assert ServeSettings.from_env(environ).response_timeout_s == seconds


@pytest.mark.parametrize(
    "environ",
    [{"SAGEMAKER_MODEL_SERVER_WORKERS": "two"}, {"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "1m"}],
)
def test_a_non_number_is_a_settings_error(environ: dict[str, str]) -> None:
    with pytest.raises(SettingError, match="must be an integer"):
        ServeSettings.from_env(environ)


def test_checking_another_environment_leaves_ours_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "7")
    before = dict(os.environ)
    assert ServeSettings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}).workers == 2
    assert dict(os.environ) == before
    assert ServeSettings.from_env().workers == 7


@pytest.mark.parametrize(
    ("cpus", "workers", "threads"), [(1, 1, 1), (2, 1, 2), (3, 1, 3), (16, 8, 2), (64, 32, 2)]
)
def test_default_workers_and_threads_fill_the_cpus_without_oversubscribing(
    cpus: int, workers: int, threads: int
) -> None:
    resolved = resolve_parallelism(ServeSettings(), cpus, gpus=0)
    assert (resolved.workers, resolved.threads) == (workers, threads)
    assert resolved.workers * resolved.threads <= cpus


def test_a_gpu_gets_one_worker_each_and_given_workers_split_the_cpus() -> None:
    on_gpus = resolve_parallelism(ServeSettings(), cpus=16, gpus=2)
    assert (on_gpus.workers, on_gpus.threads) == (2, 8)
    asked = resolve_parallelism(ServeSettings(workers=3), cpus=16, gpus=0)
    assert (asked.workers, asked.threads) == (3, 5)  # 15 of 16 cores, none shared

"""Reduced precision on CPU: the agreement gate, the choice per CPU flags, forcing it, and the
real OpenVINO bf16 path against ONNX Runtime fp32 on a model from the real trainer."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from nested_signals import SEND_NESTED_SIGNALS

from dogbreed import hostcpu
from dogbreed.model import artifact, precision
from dogbreed.serve import precision_gate
from dogbreed.serve.backends import choose_cpu_precision, describe_precision
from dogbreed.serve.settings import ServeSettings
from dogbreed.settings import SettingError

# /proc/cpuinfo as three real machines show it (flags shortened to the ones that matter).
XEON_AMX = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_int8 amx_tile\n"  # noqa: E501
EPYC_ZEN4 = "model name\t: AMD EPYC 9R14 96-Core Processor\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n"  # noqa: E501
EPYC_AVX2 = "model name\t: AMD EPYC 7R13 Processor\nflags\t\t: sse4_2 avx avx2 fma\n"
PASSED = {"measured": True, "passed": True, "top1_agreement": 1.0, "images": 30}
FAILED = {"measured": True, "passed": False, "top1_agreement": 0.9, "images": 30}


@pytest.fixture()
def cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Point hostcpu at a fake /proc/cpuinfo holding the given text."""

    def use(text: str) -> frozenset[str]:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(hostcpu, "CPUINFO", path)
        return hostcpu.cpu_flags()

    return use


def meta_with(bf16: dict | None = None) -> artifact.ModelMetadata:
    meta = artifact.ModelMetadata("resnet18", 5, 64, 73)
    if bf16 is not None:
        meta.precisions["bf16"] = bf16
    return meta


def test_compare_counts_top1_agreement_and_the_largest_probability_difference() -> None:
    fp32 = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    reduced = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 0.0]])  # last one flips
    result = precision.compare(fp32, reduced)
    assert result["top1_agreement"] == 0.75 and result["images"] == 4
    assert result["passed"] is False
    flip = 1 / (1 + np.exp(-1.0)) - 1 / (1 + np.exp(1.0))  # softmax of (0, 1) against (1, 0)
    assert result["max_prob_diff"] == pytest.approx(flip, abs=1e-6)


def test_gate_refuses_a_path_below_99_percent_and_records_it(
    tmp_path: Path, cpuinfo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    artifact.write_metadata(tmp_path, meta_with())
    flags = cpuinfo(XEON_AMX)
    agree = np.eye(5)[np.arange(100) % 5]
    disagree = agree.copy()
    disagree[:2] = np.roll(disagree[:2], 1, axis=1)  # 98 of 100 agree

    def fake_measure(model_dir: Path, images: list, name: str, threads: int) -> dict:
        return {**precision.compare(agree, disagree), "measured_on": precision.cpu_model()}

    monkeypatch.setattr(precision_gate, "measure", fake_measure)
    with caplog.at_level(logging.WARNING):
        results = precision_gate.gate(tmp_path, [tmp_path / "x.jpg"], threads=1)
    assert "top-1 agreement 98.00%" in caplog.text and "bf16 is not used" in caplog.text
    recorded = json.loads((tmp_path / artifact.METADATA_FILE).read_text())["precisions"]
    assert recorded == results
    assert recorded["bf16"]["passed"] is False and recorded["bf16"]["top1_agreement"] == 0.98
    assert recorded["bf16"]["measured_on"] == "Intel(R) Xeon(R) Platinum 8488C"
    choice = choose_cpu_precision("auto", artifact.read_metadata(tmp_path), flags)
    assert (choice.precision, choice.runtime) == ("fp32", "onnxruntime")
    assert "failed" in choice.reason


def test_gate_says_not_measured_on_a_cpu_without_bf16(
    tmp_path: Path, cpuinfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact.write_metadata(tmp_path, meta_with())
    cpuinfo(EPYC_AVX2)
    monkeypatch.setattr(precision_gate, "measure", lambda *a: pytest.fail("nothing to measure"))
    results = precision_gate.gate(tmp_path, [tmp_path / "x.jpg"])
    assert results["bf16"] == {
        "passed": False,
        "measured": False,
        "reason": "this CPU (AMD EPYC 7R13 Processor) has neither amx_bf16 nor avx512_bf16",
    }


@pytest.mark.parametrize(
    ("text", "gate", "expected"),
    [
        (XEON_AMX, PASSED, "bf16"),
        (EPYC_ZEN4, PASSED, "bf16"),
        (EPYC_AVX2, PASSED, "fp32"),  # no hardware bf16: fp32 is the fast path there
        (XEON_AMX, FAILED, "fp32"),  # gate failed
        (XEON_AMX, None, "fp32"),  # never measured (a model from before the gate)
    ],
)
def test_auto_picks_bf16_only_on_a_fast_bf16_cpu_with_a_passed_gate(
    cpuinfo, text: str, gate: dict | None, expected: str
) -> None:
    choice = choose_cpu_precision("auto", meta_with(gate), cpuinfo(text))
    assert choice.precision == expected
    assert choice.runtime == {"bf16": "openvino", "fp32": "onnxruntime"}[expected]


def test_the_setting_forces_a_precision(cpuinfo, caplog: pytest.LogCaptureFixture) -> None:
    amx = cpuinfo(XEON_AMX)
    forced = ServeSettings.from_env({"DOGBREED_PRECISION": "FP32"})
    assert forced.precision == "fp32"
    assert choose_cpu_precision(forced.precision, meta_with(PASSED), amx).precision == "fp32"
    with caplog.at_level(logging.WARNING):
        choice = choose_cpu_precision("bf16", meta_with(FAILED), amx)
    assert choice.precision == "bf16" and "forced" in choice.reason
    assert "did not pass" in caplog.text
    with pytest.raises(artifact.ArtifactError, match="neither amx_bf16 nor avx512_bf16"):
        choose_cpu_precision("bf16", meta_with(PASSED), cpuinfo(EPYC_AVX2))
    with pytest.raises(artifact.ArtifactError, match="torch backend on a GPU"):
        choose_cpu_precision("fp16", meta_with(PASSED), amx)
    with pytest.raises(SettingError, match="DOGBREED_PRECISION must be one of"):
        ServeSettings.from_env({"DOGBREED_PRECISION": "int4"})


def test_bf16_agrees_with_fp32_on_a_trained_model(
    trained_model_dir: Path, sample_data: Path, tmp_path: Path
) -> None:
    """`dogbreed export` measures the gate; serving then runs what it recorded. On a CPU with
    hardware bf16 (this test's home: a Xeon with AMX) OpenVINO bf16 must agree with ONNX Runtime
    fp32 on every test image; elsewhere the record must say it was not measured, and fp32 runs."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained_model_dir, model_dir)
    result = subprocess.run(
        [sys.executable, "-m", "dogbreed", "export", str(model_dir), "--data", str(sample_data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    record = artifact.read_metadata(model_dir).precisions["bf16"]
    assert json.loads(result.stdout)["bf16"] == record
    choice = describe_precision(model_dir, "auto", "auto")
    if precision.unavailable("bf16", hostcpu.cpu_flags()):
        assert record["measured"] is False and choice.precision == "fp32"
        return
    valid = len(precision.validation_images(sample_data))
    assert record["measured"] and record["passed"] and record["images"] == valid
    assert record["top1_agreement"] >= 0.99 and record["max_prob_diff"] < 0.05
    assert choice.precision == "bf16"
    # In a child process, as in serving: OpenVINO's threads never share this one with torch's.
    script = f"""
import json, numpy as np
from pathlib import Path
from dogbreed.data.images import is_image_file
from dogbreed.model import artifact
from dogbreed.serve.backends import cpu_backend
from dogbreed.serve.preprocess import Preprocessor
model_dir = Path({str(model_dir)!r})
files = sorted(p for p in Path({str(sample_data / "test")!r}).rglob("*") if is_image_file(p))
preprocess = Preprocessor(artifact.read_metadata(model_dir))
batch = np.stack([preprocess(p.read_bytes()) for p in files])
fp32, bf16 = cpu_backend(model_dir, "fp32", 2), cpu_backend(model_dir, "bf16", 2)
print(json.dumps([bf16.description, fp32.run(batch).argmax(1).tolist(),
                  bf16.run(batch).argmax(1).tolist()]))
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    description, fp32_top1, bf16_top1 = json.loads(run.stdout)
    assert description.startswith("openvino") and fp32_top1 and bf16_top1 == fp32_top1


def test_a_bf16_backend_survives_nested_signals(trained_model_dir: Path) -> None:
    """OpenVINO's CPU plugin gives the thread that compiles a model a 20 KB alternate signal
    stack, too small for two nested signal frames once the thread has run AMX code; the bf16
    backend replaces it (hostcpu.ensure_signal_stack). Without that, this child died in 3 of
    3 runs on a Xeon with AMX."""
    script = (
        f"""
import numpy as np
from pathlib import Path
from dogbreed import hostcpu
from dogbreed.model.artifact import ArtifactError
from dogbreed.serve.backends import cpu_backend
try:
    backend = cpu_backend(Path({str(trained_model_dir)!r}), "bf16", 1)
except ArtifactError:
    raise SystemExit("refused")
for _ in range(5):
    backend.run(np.zeros((4, 3, 64, 64), np.float32))
print(hostcpu.signal_stack_size())
"""
        + SEND_NESTED_SIGNALS
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    if precision.unavailable("bf16", hostcpu.cpu_flags()):
        assert result.stderr.strip().endswith("refused"), result.stderr[-2000:]
        return
    assert result.returncode == 0, result.stderr[-2000:]
    size, alive = result.stdout.split()
    assert int(size) >= hostcpu.SIGNAL_STACK_BYTES and alive == "alive"

"""loadtest and invoke against the REAL model server (`dogbreed serve`) on the trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runtime_standin import running_standin

from dogbreed.cli import main
from dogbreed.model.artifact import read_classes


@pytest.mark.slow
def test_loadtest_and_invoke_against_the_real_server(
    model_server: str,
    trained_model_dir: Path,
    sample_data: Path,
    aws_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = next((sample_data / "test").rglob("*.jpg"))
    result_file = tmp_path / "loadtest.json"
    # Bounded: two levels, 2 s each, at most 30 requests each, on shared CPU cores.
    argv = ["loadtest", "--url", model_server, "--image", str(image), "--concurrency", "1,2"]
    argv += ["--duration", "2", "--max-requests", "30", "--p95-ms", "10000"]
    assert main([*argv, "--json", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert all(level["errors"] == 0 for level in result["levels"])
    assert result["max_rps"] > 0
    assert result["autoscaling_target"] == max(1, int(result["max_rps"] * 0.5 * 60))
    capsys.readouterr()

    # invoke -> runtime stand-in (moto's runtime answers canned bodies) -> the real server.
    with running_standin("dogbreed-prod", model_server) as runtime:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
        argv = ["sagemaker", "invoke", "--endpoint-name", "dogbreed-prod", "--image", str(image)]
        assert main([*argv, "--top-k", "2"]) == 0
    answer = json.loads(capsys.readouterr().out)
    labels = [item["label"] for item in answer["top_k"]]
    assert len(labels) == 2
    assert set(labels) <= set(read_classes(trained_model_dir))

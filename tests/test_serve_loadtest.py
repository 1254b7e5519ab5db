"""dogbreed loadtest against a real HTTP server on 127.0.0.1 with a known capacity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_fake_container import running_container, write_jpeg

from dogbreed.cli import main
from dogbreed.serve.loadtest import autoscaling_target, percentile


@pytest.fixture()
def jpeg(tmp_path: Path) -> Path:
    return write_jpeg(tmp_path / "dog.jpg")


def test_finds_max_rps_and_prints_target(
    jpeg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2 requests at a time, 50 ms each: at most ~40 req/s; 16 clients queue to ~400 ms.
    out_json = tmp_path / "result.json"
    with running_container(workers=2, delay_s=0.05) as server:
        rc = main(
            [
                "loadtest",
                "--url",
                server.url,
                "--image",
                str(jpeg),
                "--concurrency",
                "1,2,16",
                "--duration",
                "1.5",
                "--max-requests",
                "200",
                "--p95-ms",
                "250",
                "--json",
                str(out_json),
            ]
        )
        assert server.last_body == jpeg.read_bytes()
        assert server.last_headers["Content-Type"] == "application/x-image"
    assert rc == 0
    out = capsys.readouterr().out
    result = json.loads(out_json.read_text())
    levels = {lv["concurrency"]: lv for lv in result["levels"]}
    assert levels[1]["sustainable"] and levels[2]["sustainable"]
    assert not levels[16]["sustainable"]  # queueing pushes p95 past 250 ms
    assert levels[16]["p95_ms"] > 250
    assert result["at_concurrency"] == 2
    assert 15 < result["max_rps"] <= 41  # loose: 2 CPU cores shared with other work
    assert result["autoscaling_target"] == int(result["max_rps"] * 0.5 * 60)
    assert "stopped at concurrency 16" in out
    assert f"--target {result['autoscaling_target']}" in out


def test_errors_make_a_level_unsustainable(jpeg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_container() as server:
        server.status = 415
        rc = main(["loadtest", "--url", server.url, "--image", str(jpeg), "--duration", "0.5"])
    assert rc == 1
    assert "refused the first request: HTTP 415" in capsys.readouterr().err


def test_unreachable_server_and_bad_settings(
    jpeg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["loadtest", "--image", str(jpeg)]
    assert main([*base, "--url", "http://127.0.0.1:9", "--duration", "0.5"]) == 1
    assert "cannot reach" in capsys.readouterr().err
    assert main([*base, "--concurrency", "4,2"]) == 1
    assert "must rise" in capsys.readouterr().err
    assert main([*base, "--duration", "1000"]) == 1
    assert "--duration" in capsys.readouterr().err
    assert main(["loadtest", "--image", "/nonexistent.jpg"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_dry_run_sends_nothing(jpeg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_container() as server:
        assert main(["loadtest", "--url", server.url, "--image", str(jpeg), "--dry-run"]) == 0
        assert server.requests == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["concurrency"] == [1, 2, 4, 8, 16]


def test_target_rule_and_percentile() -> None:
    assert autoscaling_target(10.0, 0.5) == 300  # AWS's example shape: rps x 0.5 x 60
    assert autoscaling_target(0.001, 0.5) == 1
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([], 0.95) == 0.0

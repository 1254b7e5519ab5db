"""The train and serve images, run the way SageMaker, EC2 and docker compose run them.

Every test here drives the real Docker engine (real images, real containers, real HTTP on
127.0.0.1). Without Docker they fail, they do not skip: in CI a missing engine is a bug.
The images are built by `.ci/run` (scripts/build_images.sh); the `images` fixture builds any
that are missing, so the file also runs on its own.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from loopback_http import free_port

from dogbreed.config import TrainConfig, config_from_hyperparameters
from dogbreed.model import artifact

REPO = Path(__file__).resolve().parent.parent
TRAIN_IMAGE = os.environ.get("DOGBREED_TRAIN_IMAGE", "dogbreed-train:latest")
SERVE_IMAGE = os.environ.get("DOGBREED_SERVE_IMAGE", "dogbreed-serve:latest")
OFFLINE_BASE = "dogbreed-base:bookworm-py311"
# Tiny job for 2 CPU cores; the values go through hyperparameters.json as SageMaker sends them.
TINY_CONFIG = TrainConfig(
    backbone="resnet18", image_size=64, epochs=2, batch_size=16, learning_rate=0.003, workers=0
)
PING_BUDGET_S = 15.0  # the serving image's start-up target on a CPU host


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def image_exists(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


def wait_for_ping(url: str, budget_s: float, container: str | None = None) -> float:
    """Seconds until GET /ping answered 200; fails with the container's log after budget_s."""
    start = time.monotonic()
    while time.monotonic() - start < budget_s:
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.25)
    logs = docker("logs", "--tail", "60", container, check=False) if container else None
    pytest.fail(
        f"{url}/ping not healthy within {budget_s} s\n{logs.stdout + logs.stderr if logs else ''}"
    )


@pytest.fixture(scope="session")
def images() -> None:
    """Both images present; builds what is missing (offline base when Docker Hub is unreachable)."""
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("Docker engine not available: container tests need `docker info` to work")
    missing = [
        t for t, img in (("train", TRAIN_IMAGE), ("serve", SERVE_IMAGE)) if not image_exists(img)
    ]
    if not missing:
        return
    build_images(*missing)


def build_images(*targets: str) -> subprocess.CompletedProcess:
    """scripts/build_images.sh on the base setup.sh uses (offline when Docker Hub is not here)."""
    env = dict(os.environ)
    if "BASE_IMAGE" not in env and not image_exists("python:3.11-slim-bookworm"):
        subprocess.run([str(REPO / "scripts/build_base_image.sh")], check=True, timeout=900)
        env["BASE_IMAGE"] = OFFLINE_BASE
    return subprocess.run(
        [str(REPO / "scripts/build_images.sh"), *targets],
        check=True,
        timeout=2400,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )


@pytest.fixture()
def container_name() -> Iterator[str]:
    """A unique `dogbreed-test-*` name; the container is removed whatever the test did."""
    name = f"dogbreed-test-{uuid.uuid4().hex[:10]}"
    yield name
    docker("rm", "-f", name, check=False)


def sagemaker_dirs(root: Path, hyperparameters: dict[str, str]) -> Path:
    """/opt/ml as SageMaker lays it out for one host, under root."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
        )
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps({"training": {"TrainingInputMode": "File"}})
    )
    for sub in ("model", "output", "checkpoints"):
        (root / sub).mkdir()
    return root


def run_training(opt_ml: Path, data: Path, name: str) -> subprocess.CompletedProcess:
    """`docker run IMAGE train` with SageMaker's mounts: what a training job executes."""
    return docker(
        "run", "--name", name, "--network", "none",
        "-v", f"{opt_ml / 'input' / 'config'}:/opt/ml/input/config:ro",
        "-v", f"{data}:/opt/ml/input/data/training:ro",
        "-v", f"{opt_ml / 'model'}:/opt/ml/model",
        "-v", f"{opt_ml / 'output'}:/opt/ml/output",
        "-v", f"{opt_ml / 'checkpoints'}:/opt/ml/checkpoints",
        TRAIN_IMAGE, "train",
        timeout=900, check=False,
    )  # fmt: skip


def sample_jpeg(sample_data: Path) -> bytes:
    return next((sample_data / "test").rglob("*.jpg")).read_bytes()


@pytest.fixture(scope="module")
def model_tarball(
    images: None, sample_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """model.tar.gz from a training job run in the training image, as SageMaker would upload it."""
    opt_ml = sagemaker_dirs(tmp_path_factory.mktemp("opt_ml"), TINY_CONFIG.to_hyperparameters())
    name = f"dogbreed-test-train-{uuid.uuid4().hex[:8]}"
    try:
        result = run_training(opt_ml, sample_data, name)
    finally:
        docker("rm", "-f", name, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test_acc=" in result.stdout + result.stderr  # the metric line SageMaker scrapes
    assert not (opt_ml / "output" / "failure").exists()
    model_dir = opt_ml / "model"
    for required in (artifact.ONNX_FILE, artifact.CLASSES_FILE, artifact.METADATA_FILE):
        assert (model_dir / required).is_file(), (
            f"{required} missing from {sorted(model_dir.iterdir())}"
        )
    tarball = tmp_path_factory.mktemp("s3") / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return tarball


@pytest.fixture()
def served_model(model_tarball: Path, tmp_path: Path) -> Path:
    """The tarball extracted the way SageMaker extracts ModelDataUrl into /opt/ml/model."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with tarfile.open(model_tarball) as tar:
        tar.extractall(model_dir, filter="data")
    model_dir.chmod(0o755)
    return model_dir


def start_serving(
    name: str, model_dir: Path, port: int, *env: str, container_port: int = 8080
) -> str:
    docker(
        "run", "-d", "--name", name,
        "-p", f"127.0.0.1:{port}:{container_port}",
        "-v", f"{model_dir}:/opt/ml/model:ro",
        *(arg for item in env for arg in ("-e", item)),
        SERVE_IMAGE, "serve",
    )  # fmt: skip
    return f"http://127.0.0.1:{port}"


@pytest.mark.docker
def test_train_image_trains_and_serve_image_serves_top_k(
    served_model: Path, sample_data: Path, container_name: str
) -> None:
    classes = artifact.read_classes(served_model)
    url = start_serving(container_name, served_model, free_port())
    seconds = wait_for_ping(url, budget_s=60, container=container_name)
    response = requests.post(
        f"{url}/invocations",
        data=sample_jpeg(sample_data),
        headers={"Content-Type": "image/jpeg", "Accept": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    top_k = response.json()["top_k"]
    assert 1 <= len(top_k) <= len(classes)
    assert all(item["label"] in classes for item in top_k)
    probabilities = [item["probability"] for item in top_k]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0.0 < probabilities[0] <= 1.0
    print(f"serve container: /ping healthy {seconds:.1f} s after docker run")


@pytest.mark.docker
def test_serving_container_is_healthy_within_budget(
    served_model: Path, container_name: str
) -> None:
    url = start_serving(container_name, served_model, free_port())
    seconds = wait_for_ping(url, budget_s=PING_BUDGET_S, container=container_name)
    print(f"/ping healthy after {seconds:.1f} s")


@pytest.mark.docker
def test_serve_honours_sagemaker_bind_to_port(served_model: Path, container_name: str) -> None:
    url = start_serving(
        container_name,
        served_model,
        free_port(),
        "SAGEMAKER_BIND_TO_PORT=9091",
        container_port=9091,
    )
    wait_for_ping(url, budget_s=60, container=container_name)


@pytest.mark.docker
def test_bad_request_gets_a_client_error_not_a_crash(
    served_model: Path, container_name: str
) -> None:
    url = start_serving(container_name, served_model, free_port())
    wait_for_ping(url, budget_s=60, container=container_name)
    bad = requests.post(
        f"{url}/invocations",
        data=b"not an image",
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert 400 <= bad.status_code < 500, bad.text
    assert requests.get(f"{url}/ping", timeout=5).status_code == 200  # still serving


# Inside the container: every process but this script's own, with its real uid.
PROCESSES = (
    "import json, os, psutil; print(json.dumps([(p.uids().real, ' '.join(p.cmdline())) "
    "for p in psutil.process_iter() if p.pid != os.getpid()]))"
)


def root_only(model_dir: Path) -> None:
    """As a tarball made on a laptop can leave it: root-owned, unreadable to anyone else."""
    for path in [model_dir, *model_dir.rglob("*")]:
        os.chown(path, 0, 0)
        path.chmod(0o700 if path.is_dir() else 0o600)


@pytest.mark.docker
def test_serve_starts_as_root_and_serves_a_root_only_model_unprivileged(
    served_model: Path, sample_data: Path, container_name: str
) -> None:
    root_only(served_model)
    url = start_serving(container_name, served_model, free_port())
    wait_for_ping(url, budget_s=60, container=container_name)
    photo = sample_jpeg(sample_data)
    answer = requests.post(
        f"{url}/invocations", data=photo, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    processes = json.loads(docker("exec", container_name, "python", "-c", PROCESSES).stdout)
    serving = [(uid, cmd) for uid, cmd in processes if "tini" not in cmd]
    assert any("java" in cmd for _, cmd in serving) and any("mms" in cmd for _, cmd in serving)
    assert all(uid == 1000 for uid, _ in serving), serving  # supervisor, MMS, its workers
    parameters = requests.get(f"{url}/execution-parameters", timeout=5).json()
    assert parameters["BatchStrategy"] == "MULTI_RECORD" and parameters["MaxPayloadInMB"] == 6
    line = json.dumps({"image": base64.b64encode(photo).decode()})
    lines = requests.post(
        f"{url}/invocations",
        data=f'{line}\n{{"image": 1}}\n{line}\n',
        headers={"Content-Type": "application/jsonlines"},
        timeout=30,
    )
    answers = [json.loads(text) for text in lines.text.splitlines()]
    assert [a.get("error") for a in answers] == [None, "bad_request", None]
    assert answers[0] == answers[2] == answer.json()


@pytest.mark.docker
def test_serve_image_serves_a_model_with_its_own_inference_code(
    images: None, tmp_path: Path, container_name: str
) -> None:
    model = shutil.copytree(REPO / "tests/user_code/inference_model", tmp_path / "model")
    root_only(model)
    url = start_serving(container_name, model, free_port())
    wait_for_ping(url, budget_s=60, container=container_name)
    answer = requests.post(f"{url}/invocations", json={"values": [2]}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"scaled": [6]}


@pytest.mark.docker
def test_failing_job_writes_output_failure_and_exits_non_zero(
    images: None, sample_data: Path, tmp_path: Path, container_name: str
) -> None:
    hyperparameters = {**TINY_CONFIG.to_hyperparameters(), "epochs": '"many"'}
    opt_ml = sagemaker_dirs(tmp_path / "opt_ml", hyperparameters)
    result = run_training(opt_ml, sample_data, container_name)
    assert result.returncode != 0
    failure = (opt_ml / "output" / "failure").read_text()
    assert "epochs" in failure, failure
    assert not (opt_ml / "model" / artifact.ONNX_FILE).exists()


@pytest.mark.docker
def test_entrypoint_runs_any_other_command(images: None) -> None:
    for image in (TRAIN_IMAGE, SERVE_IMAGE):
        result = docker("run", "--rm", "--network", "none", image, "dogbreed", "--help")
        assert "serve" in result.stdout
        result = docker(
            "run", "--rm", "--network", "none", image, "sh", "-c", "exit 3", check=False
        )
        assert result.returncode == 3


@pytest.mark.docker
def test_the_training_image_runs_a_tuning_study(
    images: None, sample_data: Path, tmp_path: Path
) -> None:
    """`docker run IMAGE dogbreed tune ...` on an EC2 GPU host: Optuna is in the image."""
    out = tmp_path / "tune"
    out.mkdir()
    result = docker(
        "run", "--rm", "--network", "none",
        "-v", f"{sample_data}:/data:ro", "-v", f"{out}:/out",
        TRAIN_IMAGE, "dogbreed", "tune", "--data", "/data", "--output-dir", "/out",
        "--n-trials", "2", "--pruner", "none", "--epochs", "1", "--backbone", "resnet18",
        "--image-size", "64", "--batch-size", "16", "--workers", "0", "--freeze", "backbone",
        timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(re.findall(r"^\d+\*?\s+COMPLETE", result.stdout, re.MULTILINE)) == 2, result.stdout[
        -2000:
    ]
    best = json.loads((out / "best" / "input" / "config" / "hyperparameters.json").read_text())
    assert config_from_hyperparameters(best).backbone == "resnet18"  # SageMaker's encoding
    assert (out / "study.db").is_file()


@pytest.mark.docker
def test_sigterm_reaches_the_python_process(images: None, container_name: str) -> None:
    """`docker stop` (SageMaker's StopTrainingJob) must not wait for SIGKILL."""
    docker("run", "-d", "--name", container_name, "--network", "none", TRAIN_IMAGE,
           "python", "-c", "import time; time.sleep(300)")  # fmt: skip
    start = time.monotonic()
    docker("stop", "-t", "60", container_name, timeout=90)
    assert time.monotonic() - start < 20
    exit_code = docker("inspect", "-f", "{{.State.ExitCode}}", container_name).stdout.strip()
    assert exit_code == "143"  # 128 + SIGTERM: terminated by the signal, not killed


@pytest.mark.docker
def test_serve_image_starts_as_root_is_small_and_labelled(images: None) -> None:
    info = json.loads(docker("image", "inspect", SERVE_IMAGE).stdout)[0]
    labels = info["Config"]["Labels"]
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert info["Config"]["User"] in ("", "root", "0", "0:0")  # as SageMaker expects
    # The CPU image's budget (0.8 GB; 0.79 GB on the offline base as of this writing).
    assert info["Size"] < 0.8e9, f"serving image is {info['Size'] / 1e9:.3f} GB"
    # The CPU flavour carries no torch (and so no CUDA libraries).
    result = docker("run", "--rm", "--network", "none", SERVE_IMAGE, "python", "-c", "import torch",
                    check=False)  # fmt: skip
    assert result.returncode != 0 and "No module named 'torch'" in result.stderr


@pytest.mark.docker
def test_a_rebuild_removes_the_untagged_images_earlier_builds_left(
    images: None, tmp_path: Path
) -> None:
    # What a rebuild after a code or requirements change leaves: an untagged image carrying
    # our stage label (made here from two builds of one tag, as a rebuild makes it).
    tag = f"dogbreed-test-leftover:{uuid.uuid4().hex[:8]}"
    ids = []
    for content in ("first", "second"):
        (tmp_path / "Dockerfile").write_text(
            f"FROM {SERVE_IMAGE}\nLABEL org.dogbreed.stage=test dogbreed.test={content}\n"
        )
        docker("build", "-q", "-t", tag, str(tmp_path))
        ids.append(docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.strip())
    assert ids[0] != ids[1]
    try:
        build_images("serve")
        assert not image_exists(ids[0]), "the untagged leftover of an earlier build is still here"
        # ...and what the next build needs stays: the image, its tagged build stage (the venv).
        assert image_exists(SERVE_IMAGE) and image_exists(ids[1])
        name, _, image_tag = SERVE_IMAGE.rpartition(":")
        assert image_exists(f"{name}-build:{image_tag}")
        dangling = docker("images", "-q", "--filter", "dangling=true",
                          "--filter", "label=org.dogbreed.stage").stdout.split()  # fmt: skip
        assert dangling == []
    finally:
        docker("rmi", "-f", tag, ids[0], check=False)


def test_dockerfiles_pass_hadolint() -> None:
    dockerfiles = [str(REPO / f"containers/{name}/Dockerfile") for name in ("train", "serve")]
    result = subprocess.run(["hadolint", *dockerfiles], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where installed, else docker-compose 1.29."""
    if docker("compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed")


@pytest.fixture()
def compose(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    """A compose command line on a private project and ./local dir; torn down afterwards."""
    project = f"dogbreed-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DOGBREED_LOCAL_DIR": str(tmp_path / "local"),
        "DOGBREED_PORT": str(free_port()),
    }
    command = [*compose_command(), "-p", project, "-f", str(REPO / "docker-compose.yml")]
    yield command, env
    down = [*command, "--profile", "multi", "down", "-v"]
    subprocess.run(down, cwd=REPO, env=env, capture_output=True, timeout=120)


def run_compose(compose: tuple[list[str], dict[str, str]], *args: str) -> str:
    command, env = compose
    result = subprocess.run(
        [*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.docker
def test_compose_up_generates_data_trains_and_serves(
    images: None, compose: tuple[list[str], dict[str, str]]
) -> None:
    local = Path(compose[1]["DOGBREED_LOCAL_DIR"])
    run_compose(compose, "up", "-d", "--no-build")  # returns once serve started after train
    assert (local / "data" / "train").is_dir()  # generated because absent
    assert (local / "model" / artifact.ONNX_FILE).is_file()
    url = f"http://127.0.0.1:{compose[1]['DOGBREED_PORT']}"
    wait_for_ping(url, budget_s=60)
    image = next((local / "data" / "test").rglob("*.jpg")).read_bytes()
    response = requests.post(
        f"{url}/invocations", data=image, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["top_k"]
    # The compose health check (python urllib against /ping inside the container) agrees.
    project = compose[0][compose[0].index("-p") + 1]
    serve_id = docker(
        "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
        "--filter", "label=com.docker.compose.service=serve",
    ).stdout.strip()  # fmt: skip
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline and status != "healthy":
        status = docker("inspect", "-f", "{{.State.Health.Status}}", serve_id).stdout.strip()
        time.sleep(1)
    assert status == "healthy"


@pytest.mark.docker
def test_compose_multi_instance_runs_one_distributed_job(
    images: None, compose: tuple[list[str], dict[str, str]]
) -> None:
    """algo-1 and algo-2, each with its own resourceconfig.json, train as one 2-process job."""
    local = Path(compose[1]["DOGBREED_LOCAL_DIR"])
    run_compose(compose, "run", "--rm", "data")
    logs = run_compose(compose, "--profile", "multi", "up", "--no-build", "algo-1", "algo-2")
    assert "world_size=2 rank=0" in logs and "world_size=2 rank=1" in logs, logs[-3000:]
    assert "test_acc=" in logs
    project = compose[0][compose[0].index("-p") + 1]
    exit_codes = docker(
        "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
        "--format", "{{.Names}} {{.Status}}",
    ).stdout  # fmt: skip
    assert exit_codes.count("Exited (0)") == 2, exit_codes
    # Rank 0's host writes the model, as SageMaker uploads /opt/ml/model from algo-1.
    assert (local / "multi" / "algo-1" / "model" / artifact.ONNX_FILE).is_file()

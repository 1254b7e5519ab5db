"""scripts/push_ecr.sh end to end: ECR API on moto's server, image layers to a real registry.

moto cannot take layer uploads, so `ECR_REGISTRY_OVERRIDE` points `docker push` at Debian's
`docker-registry` (the Distribution registry) on 127.0.0.1, while `aws ecr ...` goes to moto.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from loopback_http import free_port

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "push_ecr.sh"
REGISTRY_BIN = "/usr/bin/docker-registry"


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[str]:
    """A real registry on 127.0.0.1 (docker trusts loopback registries without TLS)."""
    assert Path(REGISTRY_BIN).exists(), "Debian's docker-registry package is required"
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        [REGISTRY_BIN, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "registry did not start"
                time.sleep(0.2)
        yield host
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def tiny_image() -> Iterator[str]:
    """A one-file image made with `docker import` (no base image, no network)."""
    assert shutil.which("docker"), "docker is required"
    name = f"dogbreed-push-test:{os.getpid()}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"dogbreed push test\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["docker", "import", "-", name], input=buffer.getvalue(), check=True, capture_output=True
    )
    image_id = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        yield name
    finally:
        # By id: also removes every registry tag the test pushed or pulled back.
        subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.docker
def test_push_creates_repository_and_pushes_pullable_image(
    moto_server: str, registry: str, tiny_image: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "ECR_REGISTRY_OVERRIDE": registry,
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),  # docker login writes here
    }
    result = run_script("--keep", "5", tiny_image, "dogbreed-serve", "1.0.0", env=env)
    assert result.returncode == 0, result.stderr
    uris = result.stdout.split()
    # Other commits may land meanwhile: check the tag names a real commit of this repository.
    pattern = rf"{registry}/dogbreed-serve:git-([0-9a-f]{{12}})(-dirty-\d{{14}})?"
    match = re.fullmatch(pattern, uris[0])
    assert match, uris[0]
    revision = match.group(1)
    subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{revision}^{{commit}}"], check=True)
    assert uris[1] == f"{registry}/dogbreed-serve:1.0.0"
    assert "created repository dogbreed-serve" in result.stderr
    (repo,) = boto3.client("ecr").describe_repositories(repositoryNames=["dogbreed-serve"])[
        "repositories"
    ]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["imageTagMutability"] == "IMMUTABLE"
    policy = boto3.client("ecr").get_lifecycle_policy(repositoryName="dogbreed-serve")
    rules = {
        r["rulePriority"]: r["selection"]
        for r in json.loads(policy["lifecyclePolicyText"])["rules"]
    }
    # Release tags first (an image matched by a rule is out of reach of the lower ones), then
    # untagged and git-* builds, each beyond the newest --keep expired.
    assert rules[1]["tagPatternList"] == ["*.*"]
    assert (rules[2]["tagStatus"], rules[2]["countNumber"]) == ("untagged", 5)
    assert (rules[3]["tagPatternList"], rules[3]["countNumber"]) == (["git-*"], 5)
    assert "lifecycle policy on dogbreed-serve" in result.stderr
    tags = urllib.request.urlopen(f"http://{registry}/v2/dogbreed-serve/tags/list").read()
    assert b"1.0.0" in tags and revision.encode() in tags
    # Pull it back through docker after dropping the local tags.
    subprocess.run(["docker", "rmi", *uris], check=True, capture_output=True)
    subprocess.run(["docker", "pull", uris[1]], check=True, capture_output=True, timeout=120)
    listing = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", uris[1], tiny_image],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert listing[0] == listing[1]  # the same image came back
    # Second push: the repository exists, so it is not created again.
    again = run_script(tiny_image, "dogbreed-serve", env=env)
    assert again.returncode == 0, again.stderr
    assert "created repository" not in again.stderr
    assert "lifecycle policy" not in again.stderr  # there already: left as it is


@pytest.mark.docker
def test_push_errors_are_clear(moto_server: str, tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    missing = run_script("dogbreed-no-such-image:1", "dogbreed-serve", env=env)
    assert missing.returncode == 1
    assert "no local image dogbreed-no-such-image:1" in missing.stderr
    bad = run_script("x", "Bad_Repo", env=env)
    assert bad.returncode == 1 and "invalid repository name" in bad.stderr
    usage = run_script("only-one-arg", env=env)
    assert usage.returncode == 2 and "Usage: scripts/push_ecr.sh" in usage.stderr
    keep = run_script("--keep", "0", "x", "dogbreed-serve", env=env)
    assert keep.returncode == 2 and "--keep takes a count" in keep.stderr


@pytest.mark.docker
def test_dry_run_prints_commands_and_calls_nothing(aws_env: None) -> None:
    # No moto and no image: a dry run makes no AWS call and needs no local image with --build.
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    result = run_script(
        "--dry-run", "--build", "--region", "eu-west-1", "dogbreed-serve:gpu", "dogbreed-serve",
        "2.0", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # dogbreed-serve:gpu is what build_images.sh serve-gpu makes with IMAGE_TAG=latest.
    assert lines[0].endswith("IMAGE_TAG=latest " + str(REPO / "scripts/build_images.sh serve-gpu"))
    assert "IMAGE_PREFIX=dogbreed" in lines[0]
    commands = "\n".join(lines)
    describe = "+ aws ecr describe-repositories --region eu-west-1 --repository-names"
    assert f"{describe} dogbreed-serve" in commands
    assert "--image-scanning-configuration scanOnPush=true --image-tag-mutability IMMUTABLE" in (
        commands
    )
    lifecycle = "+ aws ecr get-lifecycle-policy --region eu-west-1 --repository-name dogbreed-serve"
    assert f"{lifecycle} || aws ecr put-lifecycle-policy" in commands
    assert '"tagPatternList":["git-*"],"countType":"imageCountMoreThan","countNumber":20' in (
        commands
    )  # the default --keep
    registry = "ACCOUNT_ID.dkr.ecr.eu-west-1.amazonaws.com"
    assert f"docker login --username AWS --password-stdin {registry}" in commands
    assert f"+ docker push {registry}/dogbreed-serve:2.0" in lines
    assert lines[-1] == f"{registry}/dogbreed-serve:2.0"

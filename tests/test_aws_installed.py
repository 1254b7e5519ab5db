"""The AWS commands from an installed wheel, outside the checkout (what `pip install dogbreed`
gives a user): the Lambda handler and the IAM documents must come with the package.

The wheel is built from a copy of pyproject.toml, README.md and src/ only, so nothing outside
the package can leak in. It goes into a venv of its own, cached across runs with the pinned
core and `aws` dependencies (keyed by those pins; rebuilt when they change), and is reinstalled
there every run with --no-deps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from dogbreed import __version__
from dogbreed.aws import lambda_deploy

REPO = Path(__file__).resolve().parent.parent


def pinned_requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["aws"]]


@pytest.fixture(scope="module")
def venv_python() -> Path:
    """A venv holding the pinned dependencies of `dogbreed[aws]` and nothing else."""
    pins = pinned_requirements()
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = cache / "dogbreed" / f"installed-{key}"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import boto3, numpy, PIL"]
    if not (python.exists() and subprocess.run(probe, capture_output=True).returncode == 0):
        shutil.rmtree(venv, ignore_errors=True)  # an install that was cut short
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *pins], check=True, timeout=900
        )
    return python


@pytest.fixture(scope="module")
def installed(venv_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv's bin/ with this checkout's wheel installed in it."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    build = (
        "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", build, str(dist)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    wheel = dist / done.stdout.strip().splitlines()[-1]
    install = [str(venv_python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*install, "--force-reinstall", str(wheel)], check=True, timeout=300)
    check = subprocess.run([str(venv_python), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout  # the wheel's own requirements are all there
    return venv_python.parent


def run(bin_dir: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`dogbreed ARGV` from the venv, in a folder outside the checkout, dummy credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [str(bin_dir / "dogbreed"), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_installed_wheel_deploys_without_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = run(installed, tmp_path, "--version")  # also proves the console script is the venv's
    assert where.returncode == 0 and where.stdout.strip() == f"dogbreed {__version__}"
    found = subprocess.run(
        [str(installed / "python"), "-c", "import dogbreed; print(dogbreed.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert Path(found.stdout.strip()).is_relative_to(installed.parent)  # not the checkout

    lam = ["lambda", "deploy", "--function-name", "dogbreed-client", "--endpoint-name", "dogs"]
    done = run(installed, tmp_path, *lam, "--dry-run", "--region", "us-east-1", "--output", "json")
    assert done.returncode == 0, done.stderr
    calls = {c["operation"]: c["params"] for c in json.loads(done.stdout)["calls"]}
    trust = json.loads(calls["CreateRole"]["AssumeRolePolicyDocument"])
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    inline = json.loads(calls["PutRolePolicy"]["PolicyDocument"])
    assert inline["Statement"][0]["Action"] == "sagemaker:InvokeEndpoint"
    assert calls["CreateFunction"]["Code"]["ZipFile"].endswith("bytes>")

    zipped = tmp_path / "fn.zip"
    assert run(installed, tmp_path, "lambda", "package", "--output", str(zipped)).returncode == 0
    assert zipped.read_bytes() == lambda_deploy.package()  # the very handler of this checkout
    with zipfile.ZipFile(zipped) as archive:
        assert archive.namelist() == ["handler.py", "index.html", "webpage.py"]

    role = "arn:aws:iam::123456789012:role/dogbreed-sagemaker-execution"
    deploy = ["sagemaker", "deploy", "--endpoint-name", "dogs", "--image", "i", "--role", role]
    deploy += [
        "--model-data",
        "s3://dogbreed-bucket/m.tar.gz",
        "--dry-run",
        "--region",
        "eu-west-1",
    ]
    done = run(installed, tmp_path, *deploy, "--output", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert [c["operation"] for c in document["calls"]] == [
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
    ]

"""What the SageMaker SDK local-mode scripts share (they import it from this folder): our
image names, the tiny built-in job they train, and an SDK without an AWS account."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TRAIN_IMAGE = os.environ.get("DOGBREED_TRAIN_IMAGE", "dogbreed-train:latest")
SERVE_IMAGE = os.environ.get("DOGBREED_SERVE_IMAGE", "dogbreed-serve:latest")
# The SDK wants a role ARN even in local mode; nothing checks it.
ROLE = "arn:aws:iam::111111111111:role/dogbreed-local"
# Typed values on purpose: each SDK encodes them its own way (v2 Estimator: str(value); v3:
# json.dumps of non-strings); the training image must read both.
TINY_JOB: dict[str, Any] = {
    "backbone": "resnet18",
    "image_size": 64,
    "epochs": 2,
    "batch_size": 16,
    "learning_rate": 0.003,
    "workers": 0,
}


def without_an_account() -> None:
    """Dummy credentials and a region: local mode makes no AWS call, but boto3 wants them."""
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)


def v2_local_session(work: Path) -> Any:
    """SDK v2's LocalSession, with file:// code and data (no S3) and its scratch folders under
    `work`: by default each job and endpoint leaves one in /tmp (the model, the compose file)."""
    without_an_account()
    from sagemaker.local import LocalSession

    container_root = work / "sdk-scratch"
    container_root.mkdir(parents=True, exist_ok=True)
    session = LocalSession()
    session.config = {"local": {"local_code": True, "container_root": str(container_root)}}
    return session

"""A model with its own code/inference.py (the SageMaker PyTorch serving convention) is served
through sagemaker-inference's handler service, behind our front: the real server, over HTTP."""

from __future__ import annotations

import shutil
from pathlib import Path

import requests
from serving import running_server

USER_MODEL = Path(__file__).parent / "user_code" / "inference_model"


def test_a_model_with_its_own_inference_code_answers(tmp_path: Path) -> None:
    model = shutil.copytree(USER_MODEL, tmp_path / "model")
    with running_server(model) as url:
        about = requests.get(f"{url}/ping", timeout=5).json()
        assert about == {"status": "Healthy", "handler": "dogbreed.serve.user_code:handle"}
        answer = requests.post(f"{url}/invocations", json={"values": [1, 2.5]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json() == {"scaled": [3, 7.5]}
        # The user's input_fn refuses: a 5xx from the toolkit, our body, never its traceback.
        refused = requests.post(
            f"{url}/invocations", data=b"x", headers={"Content-Type": "text/csv"}, timeout=30
        )
        assert refused.status_code == 500
        assert refused.json()["error"] == "internal_error" and "request_id" in refused.json()
        assert "Traceback" not in refused.text and "text/csv" not in refused.text

"""The real server (`dogbreed serve`: Java MMS, our handler, the gateway) over HTTP, on a model
from the real trainer. Nothing is mocked."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from serving import bomb_png, jpeg, png, raw_request, running_server, split_response

from dogbreed.data.images import is_image_file
from dogbreed.model import artifact

TIMEOUT = 60
JSON = "application/json"


def post(url: str, data: bytes, content_type: str | None, **headers: str) -> requests.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(f"{url}/invocations", data=data, headers=headers, timeout=TIMEOUT)


def sample_test_images(sample_data: Path, n: int = 6) -> list[Path]:
    files = sorted(p for p in (sample_data / "test").rglob("*") if is_image_file(p))
    return files[:: max(1, len(files) // n)][:n]


def reference_probabilities(model_dir: Path, images: list[bytes]) -> np.ndarray:
    """What the trainer's own stack says: weights.pt in torch eager with its eval transform, on
    the pixels serving decodes (reduced-size JPEG decoding; test_serve_preprocess bounds how far
    that is from a full decode)."""
    import torch

    from dogbreed.data.images import open_rgb
    from dogbreed.data.transforms import eval_transform
    from dogbreed.model.build import build_model

    meta = artifact.read_metadata(model_dir)
    model = build_model(meta.architecture, meta.num_classes)
    model.load_state_dict(torch.load(model_dir / artifact.WEIGHTS_FILE, map_location="cpu"))
    model.eval()
    transform = eval_transform(meta.image_size)
    batch = torch.stack([transform(open_rgb(data, meta.resize_size)) for data in images])
    with torch.no_grad():
        return torch.softmax(model(batch), dim=1).numpy()


def test_ping_is_healthy_json_and_says_what_serves(model_server: str) -> None:
    response = requests.get(f"{model_server}/ping", timeout=5)
    assert response.status_code == 200
    about = response.json()
    assert about["status"] == "Healthy" and about["handler"] == "dogbreed.serve.handler:handle"
    # TEST_ENV forces fp32: the answers below are compared with torch's to 1e-4.
    assert (about["backend"], about["precision"], about["runtime"]) == (
        "onnx",
        "fp32",
        "onnxruntime",
    )


def test_execution_parameters_for_batch_transform(model_server: str) -> None:
    response = requests.get(f"{model_server}/execution-parameters", timeout=5)
    assert response.status_code == 200
    # TEST_ENV: 1 worker; default batch size 8 and payload limit 6 MB.
    assert response.json() == {
        "MaxConcurrentTransforms": 8,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


def test_jsonlines_over_http_is_answered_as_jsonlines(model_server: str, sample_data: Path) -> None:
    photo = base64.b64encode(sample_test_images(sample_data)[0].read_bytes()).decode()
    body = f'{{"image": "{photo}"}}\n{{"image": "?"}}\n{{"image": "{photo}"}}\n'
    response = requests.post(
        f"{model_server}/invocations",
        data=body,
        headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/jsonlines"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line.get("line") for line in lines] == [None, 2, None]
    assert lines[0] == lines[2] and lines[0]["top_k"]


def test_jpeg_prediction_matches_the_trainers_torch_model(
    model_server: str, trained_model_dir: Path, sample_data: Path
) -> None:
    files = sample_test_images(sample_data)
    images = [p.read_bytes() for p in files]
    expected = reference_probabilities(trained_model_dir, images)
    classes = artifact.read_classes(trained_model_dir)
    for data, want in zip(images, expected, strict=True):
        response = post(model_server, data, "image/jpeg")
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/json"
        top = response.json()["top_k"]
        assert len(top) == min(5, len(classes))
        assert top[0]["class_index"] == int(np.argmax(want))
        assert top[0]["label"] == classes[top[0]["class_index"]]
        for entry in top:
            # onnxruntime vs torch eager, both fp32; serving resizes only the crop's source
            # region (preprocess.crop_resize), pixels within one 8-bit level of the trainer's
            # transform (test_serve_preprocess): probabilities move by well under 1e-3.
            assert entry["probability"] == pytest.approx(want[entry["class_index"]], abs=1e-3)
        probabilities = [e["probability"] for e in top]
        assert probabilities == sorted(probabilities, reverse=True)


def test_every_content_type_and_option(model_server: str, sample_data: Path) -> None:
    path = sample_test_images(sample_data, 1)[0]
    data = path.read_bytes()
    baseline = post(model_server, data, "image/jpeg").json()["top_k"]

    png = io.BytesIO()
    Image.open(path).convert("RGBA").save(png, "PNG")
    b64 = base64.b64encode(data).decode()
    for content_type, body in [
        ("image/png", png.getvalue()),
        ("application/x-image", data),
        ("application/octet-stream", data),
        ("application/json", json.dumps({"image": b64}).encode()),
        ("application/json; charset=utf-8", json.dumps({"image": b64}).encode()),
    ]:
        response = post(model_server, body, content_type)
        assert response.status_code == 200, (content_type, response.text)
        assert response.json()["top_k"][0]["class_index"] == baseline[0]["class_index"]

    # k from the SageMaker custom attributes header, from the JSON field (which wins), clamped.
    response = post(
        model_server, data, "image/jpeg", **{"X-Amzn-SageMaker-Custom-Attributes": "top_k=2"}
    )
    assert [e["class_index"] for e in response.json()["top_k"]] == [
        e["class_index"] for e in baseline[:2]
    ]
    body = json.dumps({"image": b64, "top_k": 1, "return_logits": True}).encode()
    response = post(
        model_server,
        body,
        "application/json",
        **{"X-Amzn-SageMaker-Custom-Attributes": "top_k=3"},
    )
    result = response.json()
    assert len(result["top_k"]) == 1
    assert len(result["logits"]) == len(baseline)  # 5 classes in the sample model
    assert int(np.argmax(result["logits"])) == baseline[0]["class_index"]
    assert "logits" not in post(model_server, data, "image/jpeg").json()
    big_k = post(model_server, json.dumps({"image": b64, "top_k": 1000}).encode(), JSON)
    assert len(big_k.json()["top_k"]) == len(baseline)

    # Batches: {"instances": [...]} and a bare list, strings or {"image": ...} objects.
    for document in (
        {"instances": [b64, {"image": b64}], "top_k": 2},
        [b64, {"image": b64}],
    ):
        response = post(model_server, json.dumps(document).encode(), JSON)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert len(predictions) == 2
        for prediction in predictions:
            assert prediction["top_k"][0]["class_index"] == baseline[0]["class_index"]
            assert prediction["top_k"][0]["probability"] == pytest.approx(
                baseline[0]["probability"], abs=1e-5
            )


@pytest.mark.parametrize(
    ("name", "body", "content_type", "headers", "status", "error"),
    [
        ("empty body", b"", "image/jpeg", {}, 400, "bad_request"),
        ("not an image", b"hello, this is text" * 20, "image/jpeg", {}, 400, "invalid_image"),
        ("truncated jpeg", jpeg()[:2000], "image/jpeg", {}, 400, "invalid_image"),
        ("image bomb", bomb_png(), "image/png", {}, 400, "invalid_image"),
        # The test model resizes to 73 px: 1x10000 would become 73x730000 (53 Mpx > 50 Mpx).
        ("extreme aspect ratio", png(1, 10_000), "image/png", {}, 400, "invalid_image"),
        ("over 6 MB", os.urandom(6 * 1024 * 1024 + 100), "image/jpeg", {}, 413, None),
        ("unsupported type", b"a,b\n1,2\n", "text/csv", {}, 415, "unsupported_media_type"),
        ("malformed json", b'{"image": ', JSON, {}, 400, "bad_request"),
        ("malformed base64", b'{"image": "not*base64!"}', JSON, {}, 400, "bad_request"),
        ("json without image", b'{"picture": "abc"}', JSON, {}, 400, "bad_request"),
        ("url fetching is off", b'{"url": "http://169.254.169.254/"}', JSON, {}, 400, None),
        ("base64 of text", b'{"image": "aGVsbG8gd29ybGQ="}', JSON, {}, 400, "invalid_image"),
        ("bad top_k", jpeg(), "image/jpeg", {"X-Amzn-SageMaker-Custom-Attributes": "top_k=0"},
         400, "bad_request"),
        ("wrong accept", jpeg(), "image/jpeg", {"Accept": "text/csv"}, 406, "not_acceptable"),
        ("too many instances", json.dumps([base64.b64encode(b"x").decode()] * 33).encode(),
         JSON, {}, 413, "payload_too_large"),
    ],
)  # fmt: skip
def test_bad_input_is_a_json_4xx_and_the_server_stays_healthy(
    model_server: str,
    name: str,
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    status: int,
    error: str | None,
) -> None:
    response = post(model_server, body, content_type, **headers)
    assert response.status_code == status, (name, response.text)
    document = response.json()
    assert set(document) == {"error", "message"}, document
    assert document["message"]
    if error:
        assert document["error"] == error
    assert requests.get(f"{model_server}/ping", timeout=5).status_code == 200
    good = post(model_server, jpeg(), "image/jpeg")
    assert good.status_code == 200 and good.json()["top_k"]


def test_one_bad_instance_fails_only_its_request(model_server: str) -> None:
    good = base64.b64encode(jpeg()).decode()
    bad = base64.b64encode(jpeg()[:1500]).decode()
    response = post(model_server, json.dumps({"instances": [good, bad]}).encode(), JSON)
    assert response.status_code == 400
    assert response.json()["message"].startswith("instance 1:")


def test_wrong_method_and_path(model_server: str) -> None:
    assert requests.get(f"{model_server}/invocations", timeout=5).status_code == 405
    response = requests.post(f"{model_server}/models", data=b"x", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_other_methods_get_a_json_405(model_server: str) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        response = requests.request(method, f"{model_server}/invocations", data=jpeg(), timeout=5)
        assert response.status_code == 405, method
        assert response.headers["Content-Type"] == "application/json"
        document = response.json()
        assert set(document) == {"error", "message"}, document
        assert document["error"] == "method_not_allowed"
    head = requests.head(f"{model_server}/invocations", timeout=5)
    assert 400 <= head.status_code < 600 and not head.content
    assert head.headers["Content-Type"] == "application/json"


def test_negative_chunk_size_is_a_quick_json_400(model_server: str) -> None:
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n-1\r\n" + b"x" * 1000
    )
    start = time.perf_counter()
    status, headers, body = split_response(raw_request(model_server, request))
    assert time.perf_counter() - start < 5
    assert status == 400
    assert headers["connection"] == "close"
    assert set(json.loads(body)) == {"error", "message"}
    good = post(model_server, jpeg(), "image/jpeg")
    assert good.status_code == 200 and good.json()["top_k"]


def test_malformed_request_line_is_a_json_error(model_server: str) -> None:
    too_many_headers = b"".join(b"X-%d: y\r\n" % i for i in range(150))
    request = b"GET /ping HTTP/1.1\r\nHost: x\r\n" + too_many_headers + b"\r\n"
    status, headers, body = split_response(raw_request(model_server, request))
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert set(json.loads(body)) == {"error", "message"}


def test_chunked_body_to_an_unknown_route_closes_the_connection(model_server: str) -> None:
    """Its body is not drained, so the connection must not be reused: the chunk would be read
    as the next request."""
    request = (
        b"POST /other HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
        b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    raw = raw_request(model_server, request)
    status, headers, body = split_response(raw)
    assert status == 404
    assert headers["connection"] == "close"
    assert json.loads(body)["error"] == "not_found"
    assert raw.count(b"HTTP/1.1 ") == 1  # nothing answered the chunk or the pipelined /ping


def test_concurrent_requests_share_forward_passes(trained_model_dir: Path) -> None:
    """One worker, a 1.5 s batch window: alone, a request waits out the window; six concurrent
    ones are answered together from one vectorised pass (about one window, not six), with
    exactly the answers they get alone."""
    colours = [(40 * i, 200 - 30 * i, 90) for i in range(6)]
    images = [jpeg(colour=c) for c in colours]
    env = {
        "SAGEMAKER_MODEL_SERVER_BATCH_SIZE": "6",
        "SAGEMAKER_MODEL_SERVER_MAX_BATCH_DELAY": "1500",
    }
    with running_server(trained_model_dir, env) as url:
        alone = [post(url, data, "image/jpeg").json() for data in images[:2]]
        start = time.perf_counter()
        with ThreadPoolExecutor(len(images)) as pool:
            together = list(pool.map(lambda d: post(url, d, "image/jpeg"), images))
        elapsed = time.perf_counter() - start
    assert all(r.status_code == 200 for r in together)
    assert elapsed < 3 * 1.5, f"six requests took {elapsed:.1f} s: not batched"
    for single, batched in zip(alone, together[:2], strict=True):
        for a, b in zip(single["top_k"], batched.json()["top_k"], strict=True):
            assert a["class_index"] == b["class_index"]
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_sustained_concurrent_load_never_kills_a_worker(model_server: str) -> None:
    """Batched replies of varied sizes (MMS 1.1.11 drops a worker when a socket read splits a
    reply at the wrong byte; mms.worker_reply pads around it): 16 clients, all answered."""
    images = [jpeg(colour=(i * 13 % 255, 90, 200 - i)) for i in range(8)]

    def client(k: int) -> list[int]:
        codes = []
        with requests.Session() as session:
            for i in range(8):
                headers = {
                    "Content-Type": "image/jpeg",
                    "X-Amzn-SageMaker-Custom-Attributes": f"top_k={1 + (i + k) % 5}; "
                    f"return_logits={'true' if (i * k) % 3 == 0 else 'false'}",
                }
                response = session.post(
                    f"{model_server}/invocations",
                    data=images[(i + k) % len(images)],
                    headers=headers,
                    timeout=TIMEOUT,
                )
                codes.append(response.status_code)
        return codes

    with ThreadPoolExecutor(16) as pool:
        codes = [c for batch in pool.map(client, range(16)) for c in batch]
    assert codes == [200] * len(codes)
    assert requests.get(f"{model_server}/ping", timeout=5).status_code == 200

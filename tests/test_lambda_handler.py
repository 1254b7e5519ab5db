"""lambda/handler.py end to end: real event shapes -> handler -> boto3 -> runtime stand-in ->
the REAL model server with the sample-trained model.

`model_server` (tests/serving.py) is the real `dogbreed serve` (MMS + our handler) on the
model `dogbreed train` made from the sample data. Only the SageMaker runtime itself is
replaced (tests/runtime_standin.py says why); the context object is built here because only
the Lambda runtime makes real ones.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_fake_container import running_container
from conftest import SAMPLE_CLASSES
from loopback_http import LoopbackServer, QuietHandler, serving
from PIL import Image
from runtime_standin import ACCOUNT, RuntimeStandIn, load_handler, running_standin

EVENTS = Path(__file__).resolve().parent / "lambda_events"
PAGE_FILE = Path(__file__).resolve().parent.parent / "src/dogbreed/serve/assets/index.html"
ENDPOINT = "Dogbreed-Endpoint"
SECRET_MARKERS = (ACCOUNT, "arn:aws", "log-group", "LogStream", "Traceback", "aws_request_id")


class LambdaContext:
    """The attributes the Lambda runtime's context object has, with values that must not leak."""

    function_name = "dogbreed-client"
    function_version = "3"
    invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:dogbreed-client:live"
    memory_limit_in_mb = "512"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    log_group_name = "/aws/lambda/dogbreed-client"
    log_stream_name = "2026/11/24/[3]abcdef0123456789"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def jpeg_bytes(size: int = 80, color: tuple[int, int, int] = (180, 120, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (70, 50), (20, 200, 90, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def event(name: str, body: str | None, base64_encoded: bool, **headers: str) -> dict[str, Any]:
    """A documented sample event with our body; `headers` replace same-named ones (any case)."""
    data = json.loads((EVENTS / f"{name}.json").read_text())
    data["body"] = body
    data["isBase64Encoded"] = base64_encoded
    for key in ("headers", "multiValueHeaders"):
        if data.get(key) is None:
            continue
        for header, value in headers.items():
            wanted = header.replace("_", "-").lower()
            for existing in [h for h in data[key] if h.lower() == wanted]:
                del data[key][existing]
            data[key][header.replace("_", "-")] = [value] if key == "multiValueHeaders" else value
    return data


@pytest.fixture()
def standin(model_server: str) -> Iterator[RuntimeStandIn]:
    with running_standin(ENDPOINT, model_server) as server:
        yield server


@pytest.fixture()
def lam(aws_env: None, standin: RuntimeStandIn, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", standin.url)
    monkeypatch.setenv("ENDPOINT_MAX_ATTEMPTS", "2")
    monkeypatch.delenv("CORS_ALLOW_ORIGIN", raising=False)
    return load_handler()  # a fresh module: a fresh client built from this environment


def call(lam: ModuleType, evt: Any) -> tuple[int, dict[str, str], Any]:
    result = lam.handler(copy.deepcopy(evt), LambdaContext())
    text = json.dumps(result)
    for marker in SECRET_MARKERS:
        assert marker not in text, f"{marker!r} leaked into {text}"
    headers = result["headers"]
    assert headers["Content-Type"] == "application/json"
    body = json.loads(result["body"]) if result["body"] else None
    if result["statusCode"] >= 400:
        assert set(body) == {"error", "message"}, body
    return result["statusCode"], headers, body


def assert_top_k(body: Any, k: int) -> None:
    """The serving stack's top-k JSON, passed through unchanged."""
    assert isinstance(body, dict | list), body
    text = json.dumps(body)
    predictions = (
        body if isinstance(body, list) else next(v for v in body.values() if isinstance(v, list))
    )
    assert len(predictions) == k, text


# --- every event shape ---------------------------------------------------------------------


def test_direct_invocation(lam: ModuleType, standin: RuntimeStandIn) -> None:
    status, _, body = call(lam, {"image_base64": b64(jpeg_bytes()), "top_k": 2})
    assert status == 200
    assert_top_k(body, 2)
    assert standin.last_headers["X-Amzn-SageMaker-Custom-Attributes"] == "top_k=2"


def test_direct_invocation_default_top_k_and_image_alias(
    lam: ModuleType, standin: RuntimeStandIn
) -> None:
    status, _, body = call(lam, {"image": b64(png_bytes())})
    assert status == 200
    assert "X-Amzn-SageMaker-Custom-Attributes" not in standin.last_headers  # server default
    assert_top_k(body, SAMPLE_CLASSES)  # its default (5) covers all sample classes


def test_rest_v1_json_body(lam: ModuleType) -> None:
    body = json.dumps({"image_base64": b64(jpeg_bytes()), "top_k": 4})
    status, _, result = call(lam, event("apigw_rest_v1", body, False))
    assert status == 200
    assert_top_k(result, 4)


def test_rest_v1_binary_body_multi_value_headers_only(lam: ModuleType) -> None:
    evt = event("apigw_rest_v1", b64(jpeg_bytes()), True, **{"Content-Type": "image/jpeg"})
    evt["headers"] = None  # some integrations send only multiValueHeaders
    evt["multiValueQueryStringParameters"] = {"top_k": ["1"]}
    status, _, result = call(lam, evt)
    assert status == 200
    assert_top_k(result, 1)


def test_http_v2_raw_png_with_query_top_k(lam: ModuleType) -> None:
    evt = event("apigw_http_v2", b64(png_bytes()), True, **{"content-type": "image/png"})
    evt["rawQueryString"] = "top_k=2"
    evt["queryStringParameters"] = {"top_k": "2"}
    status, _, result = call(lam, evt)
    assert status == 200
    assert_top_k(result, 2)


def test_top_k_from_the_custom_attributes_header_as_the_page_sends_it(lam: ModuleType) -> None:
    headers = {"content-type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "top_k=4"}
    evt = event("function_url", b64(jpeg_bytes()), True, **headers)
    status, _, result = call(lam, evt)
    assert status == 200
    assert_top_k(result, 4)
    evt["queryStringParameters"] = {"top_k": "1"}  # the query wins over the header
    assert_top_k(call(lam, evt)[2], 1)


def test_http_v2_json_not_base64(lam: ModuleType) -> None:
    body = json.dumps({"image_base64": b64(jpeg_bytes()), "top_k": 3})
    status, _, result = call(lam, event("apigw_http_v2", body, False))
    assert status == 200
    assert_top_k(result, 3)


def test_function_url_octet_stream(lam: ModuleType) -> None:
    evt = event("function_url", b64(jpeg_bytes()), True)
    evt["queryStringParameters"] = {"top_k": "3"}
    status, _, result = call(lam, evt)
    assert status == 200
    assert_top_k(result, 3)


def test_function_url_json_body_base64_encoded_mixed_case_header(lam: ModuleType) -> None:
    body = b64(json.dumps({"image_base64": b64(jpeg_bytes()), "top_k": 2}).encode())
    evt = event("function_url", body, True, **{"Content-Type": "application/json; charset=utf-8"})
    status, _, result = call(lam, evt)
    assert status == 200
    assert_top_k(result, 2)


def test_alb_event(lam: ModuleType) -> None:
    status, _, result = call(lam, event("alb", b64(jpeg_bytes()), True))
    assert status == 200
    assert_top_k(result, 2)
    answer = lam.handler(event("alb", b64(jpeg_bytes()), True), LambdaContext())
    assert answer["statusDescription"] == "200 OK"


def test_alb_with_multi_value_headers_gets_them_back(lam: ModuleType) -> None:
    # A target group with lambda.multi_value_headers.enabled sends only the multi-value maps
    # and reads only `multiValueHeaders` from the answer.
    evt = event("alb", b64(jpeg_bytes()), True)
    evt["multiValueHeaders"] = {k: [v] for k, v in evt.pop("headers").items()}
    evt["multiValueQueryStringParameters"] = {"top_k": ["3"]}
    del evt["queryStringParameters"]
    answer = lam.handler(evt, LambdaContext())
    assert answer["statusCode"] == 200 and answer["statusDescription"] == "200 OK"
    assert "headers" not in answer
    assert answer["multiValueHeaders"]["Content-Type"] == ["application/json"]
    assert_top_k(json.loads(answer["body"]), 3)
    evt["httpMethod"] = "DELETE"  # GET is the page
    refused = lam.handler(evt, LambdaContext())
    assert refused["statusDescription"] == "405 Method Not Allowed"
    assert refused["multiValueHeaders"]["Allow"] == ["GET, POST, OPTIONS"]


def test_no_content_type_sniffs_json_or_image(lam: ModuleType) -> None:
    evt = event("apigw_http_v2", json.dumps({"image_base64": b64(jpeg_bytes())}), False)
    del evt["headers"]["content-type"]
    assert call(lam, evt)[0] == 200
    evt = event("apigw_http_v2", b64(jpeg_bytes()), True)
    del evt["headers"]["content-type"]
    assert call(lam, evt)[0] == 200


# --- client errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "evt, code",
    [
        ({}, "missing_input"),
        ({"image_base64": ""}, "missing_input"),
        ({"image_base64": "%%% not base64 %%%"}, "bad_input"),
        ({"image_base64": 12}, "bad_input"),
        ({"image_base64": "aGVsbG8=", "top_k": 0}, "bad_input"),
        ({"image_base64": "aGVsbG8=", "top_k": "three"}, "bad_input"),
        ({"image_base64": "aGVsbG8=", "top_k": 10_000}, "bad_input"),
        ({"image_base64": "aGVsbG8=", "top_k": True}, "bad_input"),
        ("just a string", "bad_input"),
    ],
)
def test_direct_bad_input_is_400(lam: ModuleType, standin: RuntimeStandIn, evt: Any, code: str):
    status, _, body = call(lam, evt)
    assert (status, body["error"]) == (400, code)
    assert standin.requests == 0  # refused before any endpoint call


def test_http_missing_body_or_bad_json(lam: ModuleType, standin: RuntimeStandIn) -> None:
    assert call(lam, event("apigw_rest_v1", None, False))[2]["error"] == "missing_input"
    assert call(lam, event("apigw_http_v2", "{not json", False))[0] == 400
    assert call(lam, event("apigw_http_v2", '["a list"]', False))[0] == 400
    assert call(lam, event("apigw_http_v2", '{"top_k": 2}', False))[2]["error"] == "missing_input"
    assert standin.requests == 0


def test_other_content_types_are_image_bytes_for_the_model_to_judge(
    lam: ModuleType, standin: RuntimeStandIn
) -> None:
    # curl --data-binary @dog.jpg labels the body application/x-www-form-urlencoded.
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert call(lam, event("apigw_http_v2", b64(jpeg_bytes()), True, **form))[0] == 200
    status, _, body = call(
        lam, event("apigw_http_v2", "hello", False, **{"content-type": "text/plain"})
    )
    assert status == 400 and body["error"] != "model_error"  # the server's own refusal
    assert standin.requests == 2


def test_multipart_form_upload(lam: ModuleType) -> None:
    # A browser <form enctype="multipart/form-data"> upload, encoded by urllib3 (boto3's HTTP).
    from urllib3 import encode_multipart_formdata

    body, content_type = encode_multipart_formdata(
        {"top_k": "2", "image": ("dog.jpg", jpeg_bytes(), "image/jpeg")}
    )
    evt = event("function_url", b64(body), True, **{"content-type": content_type})
    status, _, result = call(lam, evt)
    assert status == 200
    assert_top_k(result, 2)

    body, content_type = encode_multipart_formdata({"top_k": "2"})
    evt = event("function_url", b64(body), True, **{"content-type": content_type})
    assert call(lam, evt)[2]["error"] == "missing_input"


def test_minimal_and_malformed_proxy_fields(lam: ModuleType) -> None:
    # Hand-written events: no requestContext, odd types where maps are expected.
    evt = {
        "httpMethod": "POST",
        "headers": ["x"],
        "queryStringParameters": "top_k=2",
        "body": b64(jpeg_bytes()),
        "isBase64Encoded": True,
    }
    assert call(lam, evt)[0] == 200
    assert call(lam, {"body": json.dumps({"image_base64": b64(jpeg_bytes())})})[0] == 200


def test_body_given_as_an_object(lam: ModuleType) -> None:
    # Console test events and some tools put the JSON document itself in "body".
    evt = event("apigw_rest_v1", None, False)
    evt["body"] = {"image_base64": b64(jpeg_bytes()), "top_k": 1}
    status, _, result = call(lam, evt)
    assert status == 200
    assert_top_k(result, 1)


def test_image_the_model_cannot_read_is_400_with_the_servers_message(
    lam: ModuleType, standin: RuntimeStandIn
) -> None:
    evt = event("function_url", b64(b"this is not an image at all"), True)
    status, _, body = call(lam, evt)
    assert status == 400
    assert body["error"] != "model_error"  # the server's own code, e.g. invalid_image
    assert body["message"] and "Received client error" not in body["message"]
    assert standin.requests == 1  # the container refused it: a ModelError, not retried


def test_too_large_is_413(lam: ModuleType, standin: RuntimeStandIn) -> None:
    big = b"\xff\xd8\xff" + bytes(6 * 1024 * 1024)
    assert call(lam, {"image_base64": b64(big)})[0] == 413
    assert call(lam, event("function_url", b64(big), True))[0] == 413
    # A raw (not base64) body over the limit is refused before it is decoded.
    huge = event("apigw_http_v2", "x" * (9 * 1024 * 1024), False)
    assert call(lam, huge)[0] == 413
    assert standin.requests == 0


def test_wrong_method_is_405_and_options_is_preflight(
    lam: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    evt = event("apigw_rest_v1", None, False)
    evt["httpMethod"] = "PUT"  # GET is the page (test_get_is_the_page_for_every_http_event)
    status, headers, _ = call(lam, evt)
    assert status == 405 and headers["Allow"] == "GET, POST, OPTIONS"

    # No CORS configured: no Access-Control headers at all (never `*` by default).
    preflight = event("function_url", None, False)
    preflight["requestContext"]["http"]["method"] = "OPTIONS"
    result = lam.handler(preflight, LambdaContext())
    assert result["statusCode"] == 204
    assert not any(h.startswith("Access-Control") for h in result["headers"])

    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "https://other.example, https://app.example.com")
    result = lam.handler(preflight, LambdaContext())
    assert result["statusCode"] == 204
    assert result["headers"]["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in result["headers"]["Access-Control-Allow-Methods"]
    assert "Content-Type" in result["headers"]["Access-Control-Allow-Headers"]

    # An origin not on the list gets no grant.
    preflight["headers"]["origin"] = "https://evil.example"
    result = lam.handler(preflight, LambdaContext())
    assert "Access-Control-Allow-Origin" not in result["headers"]


def test_cors_header_on_success(lam: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "https://app.example.com")
    status, headers, _ = call(lam, event("function_url", b64(jpeg_bytes()), True))
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"


# --- endpoint errors -------------------------------------------------------------------------


def test_throttling_is_429_after_retries(lam: ModuleType, standin: RuntimeStandIn) -> None:
    standin.mode = "throttle"
    status, _, body = call(lam, {"image_base64": b64(jpeg_bytes())})
    assert (status, body["error"]) == (429, "throttled")
    assert standin.requests == 2  # ENDPOINT_MAX_ATTEMPTS


def test_timeout_is_504(
    lam: ModuleType, standin: RuntimeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDPOINT_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("ENDPOINT_MAX_ATTEMPTS", "1")
    lam._client = None  # the client reads its time-outs when it is created
    standin.mode, standin.sleep_s = "sleep", 2.0
    status, _, body = call(lam, {"image_base64": b64(jpeg_bytes())})
    assert (status, body["error"]) == (504, "timeout")


def test_container_missing_its_60_s_is_504(lam: ModuleType, standin: RuntimeStandIn) -> None:
    standin.mode = "container_timeout"
    status, _, body = call(lam, {"image_base64": b64(jpeg_bytes())})
    assert (status, body["error"]) == (504, "timeout")


def test_unknown_endpoint_is_500_without_internals(
    lam: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", "no-such-endpoint")
    status, _, body = call(lam, {"image_base64": b64(jpeg_bytes())})
    assert (status, body) == (500, {"error": "internal_error", "message": "internal error"})


def test_missing_endpoint_name_is_500(lam: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENDPOINT_NAME")
    assert call(lam, {"image_base64": b64(jpeg_bytes())})[0] == 500


def test_model_server_error_is_502_with_its_message(
    lam: ModuleType, standin: RuntimeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in reproduces the runtime's ModelError for a container 5xx: point it at a port
    # where the "container" answers 500 (a closed model server would be a connection error).
    class Broken(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # keep-alive: all of it
            payload = b'{"error": "model_failed", "message": "worker died"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serving(LoopbackServer(Broken)) as broken:
        standin.model = standin.model._replace(netloc=f"127.0.0.1:{broken.server_address[1]}")
        status, _, body = call(lam, {"image_base64": b64(jpeg_bytes())})
    assert (status, body) == (502, {"error": "model_error", "message": "worker died"})


def test_unexpected_exception_is_500_and_logged(
    lam: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"secret detail {ACCOUNT}")

    monkeypatch.setattr(lam, "invoke", explode)
    status, _, body = call(lam, {"image_base64": b64(jpeg_bytes())})
    assert (status, body["error"]) == (500, "internal_error")
    assert "RuntimeError" in capsys.readouterr().out  # in the logs, not in the answer


def test_logs_are_json_with_the_request_id(
    lam: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    call(lam, {"image_base64": b64(jpeg_bytes()), "top_k": 2})
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    final = records[-1]
    assert final["request_id"] == LambdaContext.aws_request_id
    assert final["status"] == 200 and final["top_k"] == 2
    assert final["latency_ms"] >= final["endpoint_ms"] > 0
    # Lambda's JSON log format reads an RFC 3339 `timestamp` and filters on `level`.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", final["timestamp"])
    assert final["level"] == "INFO"


def emf_metrics(record: dict[str, Any]) -> dict[tuple[str, ...], dict[str, float]]:
    """Check `record` against the Embedded Metric Format spec; {dimension set: {metric: value}}."""
    meta = record["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    found: dict[tuple[str, ...], dict[str, float]] = {}
    for directive in meta["CloudWatchMetrics"]:
        assert directive["Namespace"] == "dogbreed"
        for dimensions in directive["Dimensions"]:
            assert all(isinstance(record[d], str) for d in dimensions)
            values = {}
            for metric in directive["Metrics"]:
                assert metric["Unit"] in ("Milliseconds", "Count")
                value = record[metric["Name"]]
                assert isinstance(value, int | float) and not isinstance(value, bool)
                values[metric["Name"]] = value
            found[tuple(record[d] for d in dimensions)] = values
    return found


def test_each_request_line_is_an_embedded_metric_format_record(
    lam: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "dogbreed-client")
    capsys.readouterr()
    call(lam, {"image_base64": b64(jpeg_bytes())})
    call(lam, {"image_base64": "%%%"})  # 400: no endpoint call, so no endpoint time
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    ok, bad = [r for r in lines if r["message"] == "request"]
    good = emf_metrics(ok)
    assert set(good) == {("dogbreed-client",), ("dogbreed-client", "2xx")}
    assert good[("dogbreed-client", "2xx")]["EndpointLatency"] == ok["endpoint_ms"]
    assert good[("dogbreed-client",)]["Latency"] == ok["latency_ms"]
    assert good[("dogbreed-client",)]["Requests"] == 1
    refused = emf_metrics(bad)
    assert set(refused[("dogbreed-client", "4xx")]) == {"Latency", "Requests"}
    monkeypatch.setenv("METRICS_NAMESPACE", "")
    call(lam, {"image_base64": b64(jpeg_bytes())})
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "_aws" not in last


@pytest.mark.parametrize("cause", ["connection refused", "DNS failure"])
def test_unreachable_endpoint_is_503_not_500(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, cause: str
) -> None:
    # No stand-in at all: nothing listens on port 9 (discard) of loopback, or the name does
    # not resolve (getaddrinfo fails as it does for an unknown host).
    url = "http://127.0.0.1:9" if cause == "connection refused" else "http://runtime.invalid"
    if cause == "DNS failure":

        def no_such_host(*args: object, **kwargs: object) -> None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
    monkeypatch.setenv("ENDPOINT_MAX_ATTEMPTS", "1")
    status, _, body = call(load_handler(), {"image_base64": b64(jpeg_bytes())})
    assert (status, body["error"]) == (503, "endpoint_unreachable")


def test_client_is_created_once_per_container(lam: ModuleType) -> None:
    call(lam, {"image_base64": b64(jpeg_bytes())})
    first = lam._client
    call(lam, {"image_base64": b64(jpeg_bytes())})
    assert lam._client is first
    config = first.meta.config
    assert config.read_timeout == 65  # above SageMaker's 60 s limit for /invocations
    assert config.connect_timeout == 3
    assert config.retries["total_max_attempts"] == 2  # from ENDPOINT_MAX_ATTEMPTS


def test_every_log_line_has_a_level_lambda_knows(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Lambda files a line whose level is not one of its names as INFO, so a "WARNING" would
    # escape --application-log-level WARN. A small container that refuses the image (415)
    # gives the 4xx path its WARN line; the real model is not needed for that.
    with running_container() as container, running_standin(ENDPOINT, container.url) as runtime:
        container.status = 415
        monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
        capsys.readouterr()
        status, _, _ = call(load_handler(), {"image_base64": b64(jpeg_bytes())})
    assert status == 400
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [(r["message"], r["level"]) for r in records] == [
        ("endpoint call failed", "WARN"),
        ("request", "INFO"),
    ]


class HangUp(socketserver.BaseRequestHandler):
    """Reads one whole HTTP request, then closes the connection without answering."""

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.request.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += self.request.recv(65536)


def test_a_connection_broken_before_the_answer_is_502(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real server that takes the request and hangs up: botocore's ConnectionClosedError.
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), HangUp) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.server_address
        monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://{host}:{port}")
        monkeypatch.setenv("ENDPOINT_MAX_ATTEMPTS", "1")
        try:
            status, _, body = call(load_handler(), {"image_base64": b64(jpeg_bytes())})
        finally:
            server.shutdown()
    assert (status, body["error"]) == (502, "upstream_error")


# --- GET: the try-the-model page ---------------------------------------------------------------


def get_event(name: str) -> dict[str, Any]:
    """A documented sample event turned into a browser's GET of the page."""
    evt = event(name, None, False)
    if name == "apigw_rest_v1":
        evt["httpMethod"] = evt["requestContext"]["httpMethod"] = "GET"
    else:
        evt["requestContext"]["http"]["method"] = "GET"
    return evt


@pytest.mark.parametrize("name", ["apigw_rest_v1", "apigw_http_v2", "function_url"])
def test_get_is_the_page_for_every_http_event(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "https://app.example.com")
    lam, evt = load_handler(), get_event(name)
    result = lam.handler(copy.deepcopy(evt), LambdaContext())
    assert result["statusCode"] == 200 and result["isBase64Encoded"] is False
    headers = result["headers"]
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "Cache-Control" in headers
    assert headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'sha256-")
    cors = lam.cors_headers(evt)  # CORS as configured for the API, whatever the Origin
    assert {name: headers.get(name) for name in cors} == cors
    page = result["body"]
    assert page == PAGE_FILE.read_text()  # empty predict URL: the page posts to its own URL
    assert '<input id="file" type="file" accept="image/*"' in page

"""Lambda client for the dog-breed endpoint: image in, the endpoint's top-k JSON out.

Needs nothing but the Lambda Python runtime (stdlib + boto3/botocore); it must not import
`dogbreed`. Accepted events:

- direct invocation: `{"image_base64": "<base64>", "top_k": 3}` (`image` is an alias);
- API Gateway REST (v1) and HTTP (v2) proxy events, Lambda Function URL events and ALB events:
  a JSON body like the above, a multipart/form-data upload, or the raw image bytes (any other
  Content-Type), base64 when `isBase64Encoded`; `top_k` may also be a query parameter or, as
  for the endpoint, `top_k=N` in X-Amzn-SageMaker-Custom-Attributes.
  A GET gets the try-the-model page (index.html, with its security headers from webpage.py;
  both ship next to this file), which POSTs the image back to the same URL.

Every answer, direct invocation included, has the proxy-integration shape
`{"statusCode", "headers", "body"}` with a JSON body (the page's HTML for a GET): top-k on success,
`{"error": <code>, "message": <text>}` otherwise; for an ALB also `statusDescription`, and
`multiValueHeaders` instead of `headers` when the event came with them (an ALB target with
multi-value headers on rejects anything else). Nothing from the context, the environment or
the endpoint's internals (account id, ARNs, log streams, stack traces) reaches the caller.

Logs: one JSON object per line with `timestamp` and `level` (Lambda's JSON log format filters on
them); each request's line is also a CloudWatch Embedded Metric Format record (latency,
endpoint time, requests by status class), so CloudWatch makes metrics of it with no agent and
no extra dependency.

Environment: ENDPOINT_NAME (required), CORS_ALLOW_ORIGIN (comma-separated origins, unset: no
CORS headers), ENDPOINT_CONNECT_TIMEOUT (s, 3), ENDPOINT_READ_TIMEOUT (s, 65),
ENDPOINT_MAX_ATTEMPTS (3), MAX_TOP_K (20), METRICS_NAMESPACE (dogbreed; empty: no metrics).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import json
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import boto3
import webpage  # next to this file: the Lambda runtime puts the function's folder on sys.path
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as NoConnectionError

# SageMaker real-time endpoints and synchronous Lambda invocations both cap payloads at 6 MB.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_MESSAGE_CHARS = 500
IMAGE_TYPES = ("image/", "application/octet-stream", "application/x-image")
JSON_TYPES = ("application/json", "text/json")
THROTTLING_CODES = frozenset(
    ("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded")
)
UNAVAILABLE_CODES = frozenset(("ServiceUnavailable", "ModelNotReadyException"))
ALLOWED_METHODS = "GET, POST, OPTIONS"
# Empty predict URL: the page posts to the URL it came from, which is this function.
PAGE = webpage.load(Path(__file__).with_name(webpage.PAGE_NAME))

_client: Any = None  # one sagemaker-runtime client per container, created on first use


class HttpError(Exception):
    """An answer other than 200: status, a stable error code and a message safe to show."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def get_client() -> Any:
    """The container's client: keep-alive connections are reused across invocations."""
    global _client
    if _client is None:
        config = Config(
            connect_timeout=_env_float("ENDPOINT_CONNECT_TIMEOUT", 3.0),
            # The endpoint has 60 s to answer /invocations: read a little longer than that.
            read_timeout=_env_float("ENDPOINT_READ_TIMEOUT", 65.0),
            retries={
                "mode": "standard",
                "total_max_attempts": max(1, int(_env_float("ENDPOINT_MAX_ATTEMPTS", 3))),
            },
        )
        _client = boto3.client("sagemaker-runtime", config=config)
    return _client


def log(level: str, message: str, **fields: Any) -> None:
    """One JSON object per line on stdout: CloudWatch Logs Insights parses the fields, and with
    the JSON log format Lambda reads `timestamp` (RFC 3339) and filters on `level`."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record = {"timestamp": stamp, "level": level, "message": message, **fields}
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


# --- the request -------------------------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _headers(event: dict[str, Any]) -> dict[str, str]:
    """Lower-cased header names; v1 may carry only `multiValueHeaders`."""
    merged: dict[str, str] = {}
    for name, values in _mapping(event.get("multiValueHeaders")).items():
        if isinstance(values, list) and values:
            merged[str(name).lower()] = str(values[-1])
    for name, value in _mapping(event.get("headers")).items():
        if value is not None:
            merged[str(name).lower()] = str(value)
    return merged


def _method(event: dict[str, Any]) -> str:
    context = _mapping(event.get("requestContext"))
    http = _mapping(context.get("http"))
    method = event.get("httpMethod") or http.get("method") or context.get("httpMethod") or ""
    return str(method).upper()


def is_http_event(event: dict[str, Any]) -> bool:
    """Proxy events (API Gateway v1/v2, Function URL, ALB) versus a direct invocation."""
    if any(key in event for key in ("httpMethod", "requestContext", "routeKey", "rawPath")):
        return True
    return "body" in event and "image_base64" not in event and "image" not in event


def _query_top_k(event: dict[str, Any]) -> Any:
    params = _mapping(event.get("queryStringParameters"))
    if "top_k" in params:
        return params["top_k"]
    values = _mapping(event.get("multiValueQueryStringParameters")).get("top_k")
    return values[-1] if isinstance(values, list) and values else None


def _attribute_top_k(event: dict[str, Any]) -> Any:
    """`top_k=5` in X-Amzn-SageMaker-Custom-Attributes, as the endpoint itself reads it (the
    try-the-model page sends it there, to both)."""
    attributes = _headers(event).get("x-amzn-sagemaker-custom-attributes", "")
    for part in attributes.replace(",", ";").split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == "top_k":
            return value.strip()
    return None


def _raw_body(event: dict[str, Any]) -> bytes:
    body = event.get("body")
    if body is None or body == "":
        raise HttpError(400, "missing_input", "the request has no body: send an image")
    if isinstance(body, dict):  # test tools sometimes put the JSON object itself here
        body = json.dumps(body)
    if not isinstance(body, str):
        raise HttpError(400, "bad_input", "the body must be a string")
    # Check before decoding: a huge body should not be decoded at all.
    if len(body) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
        raise HttpError(413, "payload_too_large", _too_large_message())
    if event.get("isBase64Encoded"):
        data = _b64decode(body, "body")
    else:
        data = body.encode("utf-8", errors="replace")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise HttpError(413, "payload_too_large", _too_large_message())
    return data


def _too_large_message() -> str:
    return f"the image must be at most {MAX_PAYLOAD_BYTES} bytes"


def _b64decode(text: str, what: str) -> bytes:
    if text.startswith("data:") and "," in text[:100]:
        text = text.split(",", 1)[1]  # a data URL: data:image/jpeg;base64,....
    if len(text) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
        raise HttpError(413, "payload_too_large", _too_large_message())
    # Be liberal: MIME line breaks, the URL-safe alphabet and missing padding are all common.
    text = "".join(text.split()).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, "bad_input", f"{what} is not valid base64") from None
    if len(data) > MAX_PAYLOAD_BYTES:
        raise HttpError(413, "payload_too_large", _too_large_message())
    return data


def _from_json(document: Any) -> tuple[bytes, Any]:
    """(image bytes, top_k or None) from `{"image_base64"|"image": ..., "top_k": ...}`."""
    if not isinstance(document, dict):
        raise HttpError(400, "bad_input", 'expected a JSON object {"image_base64": ...}')
    encoded = document.get("image_base64", document.get("image"))
    if encoded is None or encoded == "":
        raise HttpError(400, "missing_input", 'the JSON has no "image_base64" field')
    if not isinstance(encoded, str):
        raise HttpError(400, "bad_input", '"image_base64" must be a base64 string')
    image = _b64decode(encoded.strip(), '"image_base64"')
    if not image:
        raise HttpError(400, "missing_input", "the image is empty")
    return image, document.get("top_k")


def _from_multipart(body: bytes, content_header: str) -> tuple[bytes, Any]:
    """An HTML form upload: the first file (or the field `image`) and an optional `top_k`."""
    head = f"Content-Type: {content_header}\r\n\r\n".encode("latin-1", errors="replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise HttpError(400, "bad_input", "the multipart body has no boundary or parts")
    image, top_k = None, None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "top_k":
            top_k = payload.decode("utf-8", errors="replace").strip()
        elif image is None and (part.get_filename() or name == "image"):
            image = payload
    if not image:
        raise HttpError(400, "missing_input", "the form has no image file")
    return image, top_k


def _parse_top_k(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise HttpError(400, "bad_input", "top_k must be an integer")
    try:
        value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
    except (TypeError, ValueError):
        value = None
    limit = int(_env_float("MAX_TOP_K", 20))
    if value is None or not 1 <= value <= limit:
        raise HttpError(400, "bad_input", f"top_k must be an integer from 1 to {limit}")
    return value


def parse_request(event: Any) -> tuple[bytes, int | None]:
    """(image bytes, top_k) from any accepted event shape, or an HttpError."""
    if not isinstance(event, dict):
        raise HttpError(400, "bad_input", "the event must be a JSON object")
    if not is_http_event(event):
        image, top_k = _from_json(event)
        return image, _parse_top_k(top_k)
    body = _raw_body(event)
    content_header = _headers(event).get("content-type", "")
    content_type = content_header.split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        image, top_k = _from_multipart(body, content_header)
    elif (
        content_type in JSON_TYPES
        or content_type.endswith("+json")
        or (not content_type.startswith(IMAGE_TYPES) and body.lstrip()[:1] == b"{")
    ):
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HttpError(400, "bad_input", "the body is not valid JSON") from None
        image, top_k = _from_json(document)
    else:
        # Image bytes, whatever the label (curl --data-binary says form-urlencoded): the
        # endpoint decodes them and refuses what is not an image.
        image, top_k = body, None
    for fallback in (_query_top_k, _attribute_top_k):
        top_k = top_k if top_k is not None else fallback(event)
    return image, _parse_top_k(top_k)


# --- the endpoint call -------------------------------------------------------------------------


def _endpoint_error(original: Any, default_code: str) -> tuple[str, str]:
    """(code, message) from the container's own `{"error", "message"}` JSON, else its text."""
    text = str(original or "").strip()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    code = default_code
    if isinstance(document, dict):
        if isinstance(document.get("error"), str) and document["error"].isidentifier():
            code = document["error"][:64]
        if document.get("message"):
            text = str(document["message"])
    return code, text[:MAX_MESSAGE_CHARS] or "the model could not process the request"


def _map_client_error(exc: ClientError) -> HttpError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    if code == "ModelError":
        # The container answered 4xx/5xx. Its OriginalMessage is ours (the serving stack's JSON);
        # `Message` is not: it names the account and the log stream, so it never leaves.
        original_status = int(exc.response.get("OriginalStatusCode") or 0)
        original = exc.response.get("OriginalMessage")
        if original_status == 413:
            return HttpError(413, *_endpoint_error(original, "payload_too_large"))
        if 400 <= original_status < 500:  # the caller's image was refused
            return HttpError(400, *_endpoint_error(original, "bad_input"))
        if not original_status and "timed out" in str(original).lower():
            # The container did not answer within SageMaker's 60 s (status 0, no body).
            return HttpError(504, "timeout", "the model did not answer in time")
        return HttpError(502, "model_error", _endpoint_error(original, "model_error")[1])
    if code in THROTTLING_CODES:
        return HttpError(429, "throttled", "too many requests: retry later")
    if code in UNAVAILABLE_CODES:
        return HttpError(503, "endpoint_unavailable", "the model is not available: retry later")
    return HttpError(500, "internal_error", "internal error")


def invoke(image: bytes, top_k: int | None) -> str:
    """The endpoint's JSON text; raises HttpError for every failure."""
    endpoint = os.environ.get("ENDPOINT_NAME", "").strip()
    if not endpoint:
        log("ERROR", "ENDPOINT_NAME is not set")
        raise HttpError(500, "internal_error", "internal error")
    params: dict[str, Any] = {
        "EndpointName": endpoint,
        "Body": image,
        # The serving stack decodes the bytes itself, whatever the format.
        "ContentType": "application/x-image",
        "Accept": "application/json",
    }
    if top_k is not None:
        params["CustomAttributes"] = f"top_k={top_k}"
    try:
        response = get_client().invoke_endpoint(**params)
        body = response["Body"].read()
    except ClientError as exc:
        mapped = _map_client_error(exc)
        log(
            # Lambda's level names: an unknown one ("WARNING") would be filed as INFO.
            "ERROR" if mapped.status >= 500 else "WARN",
            "endpoint call failed",
            aws_error=exc.response.get("Error", {}).get("Code"),
            original_status=exc.response.get("OriginalStatusCode"),
            status=mapped.status,
        )
        raise mapped from None
    except (ReadTimeoutError, ConnectTimeoutError) as exc:
        log("ERROR", "endpoint call timed out", error=type(exc).__name__)
        raise HttpError(504, "timeout", "the model did not answer in time") from None
    except NoConnectionError as exc:  # refused, DNS, TLS or proxy failure: upstream, not ours
        log("ERROR", "endpoint unreachable", error=type(exc).__name__, detail=str(exc))
        raise HttpError(
            503, "endpoint_unreachable", "the model cannot be reached: retry later"
        ) from None
    except HTTPClientError as exc:  # connected, then the connection broke before the answer
        log("ERROR", "endpoint connection lost", error=type(exc).__name__, detail=str(exc))
        raise HttpError(
            502, "upstream_error", "the connection to the model broke: retry later"
        ) from None
    except BotoCoreError as exc:
        log("ERROR", "endpoint call failed", error=type(exc).__name__, detail=str(exc))
        raise HttpError(500, "internal_error", "internal error") from None
    try:
        text = body.decode("utf-8")
        json.loads(text)
    except (UnicodeDecodeError, ValueError):
        log("ERROR", "endpoint answered something that is not JSON", bytes=len(body))
        raise HttpError(502, "model_error", "the model answered an unreadable result") from None
    return text


# --- the response ------------------------------------------------------------------------------


def cors_headers(event: Any) -> dict[str, str]:
    """CORS headers for an allowed Origin only; `*` only when configured explicitly."""
    allowed = [o.strip() for o in os.environ.get("CORS_ALLOW_ORIGIN", "").split(",") if o.strip()]
    if not allowed:
        return {}
    origin = _headers(event).get("origin", "") if isinstance(event, dict) else ""
    if "*" in allowed:
        allow = "*"
    elif origin in allowed:
        allow = origin
    else:
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": allow,
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": (
            "Content-Type, Authorization, X-Amz-Date, X-Amz-Security-Token, X-Amz-Content-Sha256"
        ),
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def _is_alb(event: Any) -> bool:
    return isinstance(event, dict) and "elb" in _mapping(event.get("requestContext"))


def response(status: int, body: str, event: Any, extra: dict[str, str] | None = None) -> dict:
    """The answer in the shape the event came in."""
    headers = {"Content-Type": "application/json", **cors_headers(event), **(extra or {})}
    result: dict[str, Any] = {"statusCode": status, "body": body, "isBase64Encoded": False}
    if _is_alb(event):
        result["statusDescription"] = f"{status} {HTTPStatus(status).phrase}"
    if _is_alb(event) and "multiValueHeaders" in event:
        # A target group with multi-value headers on sends them and reads only them back.
        result["multiValueHeaders"] = {name: [value] for name, value in headers.items()}
    else:
        result["headers"] = headers
    return result


def metrics(fields: dict[str, Any]) -> dict[str, Any]:
    """CloudWatch Embedded Metric Format members for the request's log line: latency, endpoint
    time and a request count, per function and per function and status class (2xx/4xx/5xx)."""
    namespace = os.environ.get("METRICS_NAMESPACE", "dogbreed").strip()
    if not namespace:
        return {}
    values = {"Latency": fields["latency_ms"], "Requests": 1}
    if "endpoint_ms" in fields:
        values["EndpointLatency"] = fields["endpoint_ms"]
    units = {"Latency": "Milliseconds", "EndpointLatency": "Milliseconds", "Requests": "Count"}
    directive = {
        "Namespace": namespace,
        "Dimensions": [["FunctionName"], ["FunctionName", "StatusClass"]],
        "Metrics": [{"Name": name, "Unit": units[name]} for name in values],
    }
    return {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [directive]},
        "FunctionName": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local"),
        "StatusClass": f"{fields['status'] // 100}xx",
        **values,
    }


def error_body(error: HttpError) -> str:
    return json.dumps({"error": error.code, "message": error.message})


def handler(event: Any, context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    request_id = getattr(context, "aws_request_id", None)
    http = isinstance(event, dict) and is_http_event(event)
    method = _method(event) if http else "INVOKE"
    fields: dict[str, Any] = {"request_id": request_id, "method": method}
    try:
        if method == "OPTIONS":
            result = response(204, "", event)
        elif http and method == "GET":
            result = response(200, PAGE.body.decode("utf-8"), event, dict(PAGE.headers))
        elif http and method not in ("", "POST"):
            raise HttpError(405, "method_not_allowed", "use POST with an image, or GET the page")
        else:
            image, top_k = parse_request(event)
            fields.update(image_bytes=len(image), top_k=top_k)
            called = time.perf_counter()
            text = invoke(image, top_k)
            fields["endpoint_ms"] = round((time.perf_counter() - called) * 1000, 1)
            result = response(200, text, event)
    except HttpError as exc:
        fields["error"] = exc.code
        extra = {"Allow": ALLOWED_METHODS} if exc.status == 405 else None
        result = response(exc.status, error_body(exc), event, extra)
    except Exception as exc:  # the last line of defence: log it, never show it
        log(
            "ERROR",
            "unhandled error",
            request_id=request_id,
            error=type(exc).__name__,
            trace=traceback.format_exc(),
        )
        result = response(
            500, error_body(HttpError(500, "internal_error", "internal error")), event
        )
    fields["status"] = result["statusCode"]
    fields["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    level = "INFO" if result["statusCode"] < 500 else "ERROR"
    log(level, "request", **fields, **metrics(fields))
    return result

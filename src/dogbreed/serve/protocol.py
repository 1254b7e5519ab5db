"""The /invocations wire format: parse a request into image bytes, render the JSON answer.

Requests
  image/jpeg, image/png, application/x-image, application/octet-stream: the body is one image.
  application/json: {"image": "<base64>"} (one image), or {"instances": [...]} / a JSON list
  (a batch; each item a base64 string or {"image": "<base64>"}). Optional fields "top_k" (int)
  and "return_logits" (bool). k can also come from the X-Amzn-SageMaker-Custom-Attributes
  header ("top_k=3"); the JSON field wins.
  application/jsonlines: one {"image": "<base64>"} per line (what Batch Transform sends with
  SplitType=Line and BatchStrategy=MultiRecord); each line is answered on its own.
Responses (application/json)
  one image: {"top_k": [{"label", "class_index", "probability"}, ...], "logits": [...]?}
  a batch:   {"predictions": [<one-image object>, ...]}
  jsonlines: one line per input line, in order: a one-image object, or {"error", "message",
             "line"} for a line that could not be answered (application/jsonlines)
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dogbreed.serve.errors import (
    BadRequest,
    NotAcceptable,
    PayloadTooLarge,
    ServeError,
    UnsupportedMediaType,
    shown,
)

JSON_TYPE = "application/json"
JSONLINES_TYPE = "application/jsonlines"
JSONLINES_TYPES = frozenset({JSONLINES_TYPE, "application/x-jsonlines", "application/jsonl"})
RAW_IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "application/x-image", "application/octet-stream"}
)
ACCEPTABLE = frozenset({JSON_TYPE, *JSONLINES_TYPES, "application/*", "*/*"})
CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
# Set by the gateway on what it forwards to MMS: its id for the request, and the client's
# Content-Type (MMS itself gets application/octet-stream: it would parse form bodies).
REQUEST_ID_HEADER = "x-dogbreed-request-id"
CONTENT_TYPE_HEADER = "x-dogbreed-content-type"
_WHITESPACE = b" \t\r\n"
# Our JSON is shallow: an object, a list of instances, an object per instance. Brackets and
# commas beyond one per image plus this slack are refused before json.loads, which would
# otherwise recurse once per bracket and build one object per value.
JSON_SLACK = 16


@dataclass
class ParsedRequest:
    images: list[bytes | ServeError]  # a ServeError only for a jsonlines line refused alone
    top_k: int
    return_logits: bool
    batch: bool  # answer {"predictions": [...]} rather than one result object
    lines: bool = False  # jsonlines: one answer line per image, errors per line


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def check_accept(accept: str | None) -> None:
    """Only JSON is produced; a missing Accept header means anything goes."""
    if not accept or not accept.strip():
        return
    for part in accept.split(","):
        kind, _, params = part.partition(";")
        if kind.strip().lower() in ACCEPTABLE and "q=0" not in params.replace(" ", "").split(";"):
            return
    raise NotAcceptable(f"cannot produce {shown(accept)}; this endpoint answers {JSON_TYPE}")


def parse_custom_attributes(header: str | None) -> dict[str, str]:
    """`top_k=3; return_logits=true` (';' or ',' separated) -> dict; other text is ignored."""
    attributes: dict[str, str] = {}
    for part in (header or "").replace(",", ";").split(";"):
        key, sep, value = part.partition("=")
        if sep:
            attributes[key.strip().lower()] = value.strip()
    return attributes


def parse_request(
    body: bytes | bytearray | None,
    headers: Mapping[str, str],
    *,
    default_top_k: int,
    max_bytes: int,
    max_instances: int,
) -> ParsedRequest:
    """Validate one request; `headers` has lower-case names. Raises a ServeError subclass."""
    check_accept(headers.get("accept"))
    body = body or b""
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {max_bytes}")
    if not body:
        raise BadRequest("empty request body: send image bytes or JSON")
    attributes = parse_custom_attributes(headers.get(CUSTOM_ATTRIBUTES))
    top_k = _top_k(attributes.get("top_k", default_top_k))
    return_logits = _flag(attributes.get("return_logits", False), "return_logits")
    kind = media_type(headers.get("content-type")) or "application/octet-stream"
    if kind in RAW_IMAGE_TYPES:
        return ParsedRequest([bytes(body)], top_k, return_logits, batch=False)
    if kind in JSONLINES_TYPES:
        return ParsedRequest(_lines(body, max_instances), top_k, return_logits, True, lines=True)
    if kind != JSON_TYPE:
        raise UnsupportedMediaType(
            f"content type {shown(kind)} is not supported; send one of "
            f"{', '.join(sorted(RAW_IMAGE_TYPES))}, {JSON_TYPE} or {JSONLINES_TYPE}"
        )
    document = load_json(body, max_instances)
    if isinstance(document, list):
        items, options, batch = document, {}, True
    elif isinstance(document, dict):
        options = document
        if "instances" in document:
            items, batch = document["instances"], True
        elif "image" in document:
            items, batch = [document], False
        elif "url" in document:
            raise BadRequest("fetching images from a URL is disabled; send the image bytes")
        else:
            raise BadRequest('JSON body needs "image" (base64) or "instances" (a list)')
    else:
        raise BadRequest("JSON body must be an object or a list")
    if not isinstance(items, list) or not items:
        raise BadRequest('"instances" must be a non-empty list')
    if len(items) > max_instances:
        raise PayloadTooLarge(f"{len(items)} images in one request; the limit is {max_instances}")
    if "top_k" in options:
        top_k = _top_k(options["top_k"])
    if "return_logits" in options:
        return_logits = _flag(options["return_logits"], "return_logits")
    images = [_decode_base64(item, i if batch else None) for i, item in enumerate(items)]
    return ParsedRequest(images, top_k, return_logits, batch)


def _lines(body: bytes | bytearray, max_instances: int) -> list[bytes | ServeError]:
    """One image per non-blank line; a line that is not {"image": base64} is refused alone."""
    lines = [line for line in bytes(body).splitlines() if line.strip()]
    if not lines:
        raise BadRequest("empty jsonlines body")
    if len(lines) > max_instances:
        raise PayloadTooLarge(
            f"{len(lines)} lines in one request; the limit is {max_instances} "
            "(DOGBREED_MAX_INSTANCES; or a smaller MaxPayloadInMB for the transform job)"
        )
    images: list[bytes | ServeError] = []
    for line in lines:
        try:
            document = load_json(line, 1)
            if not isinstance(document, dict) or "image" not in document:
                raise BadRequest('each line must be {"image": "<base64>"}')
            images.append(_decode_base64(document, None))
        except ServeError as exc:
            images.append(exc)
    return images


def load_json(body: bytes | bytearray, max_instances: int) -> Any:
    """json.loads with the nesting and the number of values bounded by two linear, C-speed
    counts (base64 has no bracket or comma, a data URL one comma: honest requests pass)."""
    containers = body.count(b"[") + body.count(b"{")
    values = body.count(b",")
    if containers > max_instances + JSON_SLACK or values > 2 * max_instances + JSON_SLACK:
        raise BadRequest(
            f"JSON body has {containers} brackets and {values} commas; a request holds at most "
            f'{max_instances} images as base64 strings or {{"image": ...}} objects'
        )
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also ints over 4300 digits
        raise BadRequest(f"malformed JSON: {exc}") from None


def _decode_base64(item: Any, index: int | None) -> bytes:
    where = "" if index is None else f" (instance {index})"
    if isinstance(item, dict):
        item = item.get("image")
    if not isinstance(item, str) or not item:
        raise BadRequest(f'expected a base64 string or {{"image": "<base64>"}}{where}')
    if item.startswith("data:"):  # data URL: data:image/jpeg;base64,....
        item = item.partition(",")[2]
    try:
        # Line breaks (as `base64` wraps its output) are fine; any other stray byte is not.
        data = base64.b64decode(item.encode("ascii").translate(None, _WHITESPACE), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise BadRequest(f"malformed base64{where}: {exc}") from None
    if not data:
        raise BadRequest(f"empty image{where}")
    return data


def _top_k(value: Any) -> int:
    if isinstance(value, bool):
        raise BadRequest("top_k must be a positive integer")
    try:
        k = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1e999 is infinity
        raise BadRequest(f"top_k must be a positive integer, not {shown(value)}") from None
    if k < 1 or (isinstance(value, float) and not value.is_integer()):
        raise BadRequest(f"top_k must be a positive integer, not {shown(value)}")
    return k


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise BadRequest(f"{name} must be true or false, not {shown(value)}")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def render(
    request: ParsedRequest,
    logits: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    refused: Sequence[ServeError | None] = (),
) -> str:
    """The answer for one request; rows of `logits` are its answered images in order, and
    `refused` (jsonlines) says, per line, which ones were refused instead."""
    results = _results(request, logits, probabilities, classes)
    if request.lines:
        answered = iter(results)
        lines = [
            json.dumps(next(answered))
            if error is None
            else json.dumps({"error": error.code, "message": error.message, "line": number})
            for number, error in enumerate(refused, start=1)
        ]
        return "\n".join(lines) + "\n"
    return json.dumps({"predictions": results} if request.batch else results[0])


def _results(
    request: ParsedRequest, logits: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]
) -> list[dict[str, Any]]:
    k = min(request.top_k, len(classes))
    results = []
    for row_logits, row in zip(logits, probabilities, strict=True):
        top = np.argsort(-row, kind="stable")[:k]
        result: dict[str, Any] = {
            "top_k": [
                {"label": classes[i], "class_index": int(i), "probability": round(float(row[i]), 6)}
                for i in top
            ]
        }
        if request.return_logits:
            result["logits"] = [round(float(v), 6) for v in row_logits]
        results.append(result)
    return results

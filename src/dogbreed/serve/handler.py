"""The multi-model-server entry point: `dogbreed.serve.handler:handle`.

MMS calls `handle(None, context)` once when a worker loads the model, then `handle(batch,
context)` with up to `batch_size` requests that arrived within `max_batch_delay` ms. All images
of all valid requests in the batch go through ONE forward pass; each request gets its own HTTP
status, so a bad image fails only its own request.

Nothing raises out of `handle` for a batch: MMS would answer every request of the batch with
its own error text (and a reply it mis-decodes can cost the worker). Whatever a request's bytes
make parsing or decoding raise becomes that request's 400; only a failure of the model itself
is a 500, with our body and the request id that the log line names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import numpy as np

from dogbreed.serve.errors import BadRequest, ServeError, error_body
from dogbreed.serve.predictor import Predictor
from dogbreed.serve.protocol import (
    CONTENT_TYPE_HEADER,
    REQUEST_ID_HEADER,
    ParsedRequest,
    parse_request,
    render,
    softmax,
)
from dogbreed.serve.settings import ServeSettings

log = logging.getLogger(__name__)


class InferenceService:
    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        self.predictor = predictor
        self.settings = settings

    def parse(self, body: bytes | bytearray | None, headers: Mapping[str, str]) -> ParsedRequest:
        return parse_request(
            body,
            headers,
            default_top_k=self.settings.top_k,
            max_bytes=self.settings.max_payload_bytes,
            max_instances=self.settings.max_instances,
        )

    def parse_safely(
        self, item: Mapping[str, Any], headers: Mapping[str, str], request_id: str
    ) -> ParsedRequest | ServeError:
        try:
            return self.parse(_body(item), headers)
        except ServeError as exc:
            return exc
        except Exception:  # a request the parser did not foresee is still only that request's
            log.exception("request %s: unexpected error parsing the request", request_id)
            return BadRequest("the request could not be parsed")

    def answer(self, requests: list[ParsedRequest | ServeError]) -> list[tuple[int, str]]:
        """(HTTP status, JSON body) per request, with one forward pass for all their images."""
        flat = [img for r in requests if isinstance(r, ParsedRequest) for img in r.images]
        decoded = iter(self.predictor.decode_all(flat))
        outcomes: list[ServeError | list[np.ndarray]] = []
        for request in requests:
            if isinstance(request, ServeError):
                outcomes.append(request)
                continue
            pixels = [next(decoded) for _ in request.images]
            error = next((p for p in pixels if isinstance(p, ServeError)), None)
            if error is not None and request.batch:
                index = next(i for i, p in enumerate(pixels) if isinstance(p, ServeError))
                error.message = f"instance {index}: {error.message}"
            outcomes.append(error if error is not None else pixels)  # type: ignore[arg-type]
        good = [o for o in outcomes if not isinstance(o, ServeError)]
        if good:
            logits = self.predictor.logits(self.predictor.batch([p for o in good for p in o]))
            probabilities = softmax(logits)
        answers: list[tuple[int, str]] = []
        row = 0
        for request, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, ServeError):
                answers.append((outcome.status, outcome.to_json()))
                continue
            assert isinstance(request, ParsedRequest)
            rows = slice(row, row + len(outcome))
            row = rows.stop
            body = render(request, logits[rows], probabilities[rows], self.predictor.classes)
            answers.append((200, body))
        return answers


_service: InferenceService | None = None


def _headers(context: Any, idx: int) -> dict[str, str]:
    # MMS mixes request headers (name -> str) with per-parameter dicts; names keep their case.
    raw = context.get_all_request_header(idx) or {}
    headers = {k.lower(): v for k, v in raw.items() if isinstance(v, str)}
    headers["content-type"] = headers.pop(CONTENT_TYPE_HEADER, "")  # the client's (gateway)
    return headers


def _request_id(context: Any, idx: int, headers: Mapping[str, str]) -> str:
    """The gateway's id for the request (what the client sees), else MMS's own."""
    return headers.get(REQUEST_ID_HEADER) or context.get_request_id(idx) or ""


def _body(item: Mapping[str, Any]) -> bytes | bytearray | None:
    body = item.get("body")
    if body is None and item:
        body = next(iter(item.values()))
    return body if isinstance(body, (bytes, bytearray)) or body is None else str(body).encode()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    global _service
    if _service is None:
        settings = ServeSettings.from_env()
        props = context.system_properties
        predictor = Predictor(props["model_dir"], settings, props.get("gpu_id"))
        predictor.warm_up(settings.batch_size)
        _service = InferenceService(predictor, settings)
    if data is None:
        return None
    headers = [_headers(context, idx) for idx in range(len(data))]
    request_ids = [_request_id(context, idx, h) for idx, h in enumerate(headers)]
    requests = [
        _service.parse_safely(item, h, rid)
        for item, h, rid in zip(data, headers, request_ids, strict=True)
    ]
    try:
        answers = _service.answer(requests)
    except Exception:  # the model itself failed: every request of the batch gets a 500
        log.exception("inference failed for request(s) %s", ", ".join(request_ids))
        answers = [
            (500, error_body("internal_error", "inference failed", rid)) for rid in request_ids
        ]
    bodies, phrases = [], []
    for idx, (status, body) in enumerate(answers):
        phrase = HTTPStatus(status).phrase
        # No content type or headers here: the gateway sets Content-Type (see mms_safe_bodies).
        context.set_response_status(status, phrase, idx)
        bodies.append(body)
        phrases.append(phrase)
    mms_ids = [context.get_request_id(idx) or "" for idx in range(len(data))]
    return mms_safe_bodies(bodies, phrases, mms_ids)


# MMS 1.1.11's frontend decodes a worker's reply (mms/protocol/otf_message_handler.py layout)
# with a Netty decoder that checks for a partial frame before every length-prefixed string but
# NOT before each prediction's 4-byte HTTP status code, nor inside the response-header map.
# When a socket read ends inside one of those, the decoder throws, the frontend drops the
# worker ("Worker died") and every request of the batch gets a 500. Reads end at multiples of
# 16 bytes (Netty's adaptive buffer sizes), so: send no headers, and pad each JSON body with
# trailing spaces so that the next status code never straddles a multiple of 16.
_MMS_SUCCESS = "Prediction success"


def mms_safe_bodies(bodies: list[str], phrases: list[str], request_ids: list[str]) -> list[str]:
    out: list[str] = []
    offset = 4 + 4 + len(_MMS_SUCCESS)  # code, message
    for body, phrase, request_id in zip(bodies, phrases, request_ids, strict=True):
        offset += 4 + len(request_id.encode()) + 4  # request id, empty content type
        misaligned = offset % 16 == 0 or offset % 16 > 12  # [offset, offset + 4) has a 16k
        if misaligned and out:
            pad = (1 - offset) % 16
            out[-1] += " " * pad
            offset += pad
        offset += 4 + 4 + len(phrase.encode()) + 4  # status, phrase, zero headers
        offset += 4 + len(body.encode())
        out.append(body)
    return out

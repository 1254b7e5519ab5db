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
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from dogbreed.serve import mms
from dogbreed.serve.errors import BadRequest, ServeError, error_body
from dogbreed.serve.predictor import Predictor
from dogbreed.serve.protocol import (
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
        self, body: bytes | bytearray | None, headers: Mapping[str, str], request_id: str
    ) -> ParsedRequest | ServeError:
        try:
            return self.parse(body, headers)
        except ServeError as exc:
            return exc
        except Exception:  # a request the parser did not foresee is still only that request's
            log.exception("request %s: unexpected error parsing the request", request_id)
            return BadRequest("the request could not be parsed")

    def answer(self, requests: list[ParsedRequest | ServeError]) -> list[tuple[int, str]]:
        """(HTTP status, body) per request, with one forward pass for all their images."""
        flat = [
            image
            for r in requests
            if isinstance(r, ParsedRequest)
            for image in r.images
            if not isinstance(image, ServeError)
        ]
        decoded = iter(self.predictor.decode_all(flat))
        outcomes = [_outcome(request, decoded) for request in requests]
        good = [p for o in outcomes if isinstance(o, list) for p in o if isinstance(p, np.ndarray)]
        logits = self.predictor.logits(self.predictor.batch(good)) if good else np.zeros((0, 0))
        probabilities = softmax(logits) if good else logits
        answers: list[tuple[int, str]] = []
        row = 0
        for request, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, ServeError):
                answers.append((outcome.status, outcome.to_json()))
                continue
            assert isinstance(request, ParsedRequest)
            refused = [p if isinstance(p, ServeError) else None for p in outcome]
            rows = slice(row, row + refused.count(None))
            row = rows.stop
            classes = self.predictor.classes
            body = render(request, logits[rows], probabilities[rows], classes, refused)
            answers.append((200, body))
        return answers


def _outcome(
    request: ParsedRequest | ServeError, decoded: Iterator[np.ndarray | ServeError]
) -> ServeError | list[np.ndarray | ServeError]:
    """A request's decoded images; one bad image refuses the whole request, except for
    jsonlines, where each line stands alone."""
    if isinstance(request, ServeError):
        return request
    pixels = [i if isinstance(i, ServeError) else next(decoded) for i in request.images]
    if request.lines:
        return pixels
    index = next((i for i, p in enumerate(pixels) if isinstance(p, ServeError)), None)
    if index is None:
        return pixels
    error = pixels[index]
    assert isinstance(error, ServeError)
    if request.batch:
        error.message = f"instance {index}: {error.message}"
    return error


_service: InferenceService | None = None


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
    requests = mms.worker_requests(data, context)
    parsed = [_service.parse_safely(r.body, r.headers, r.request_id) for r in requests]
    try:
        answers = _service.answer(parsed)
    except Exception:  # the model itself failed: every request of the batch gets a 500
        request_ids = [r.request_id for r in requests]
        log.exception("inference failed for request(s) %s", ", ".join(request_ids))
        answers = [
            (500, error_body("internal_error", "inference failed", rid)) for rid in request_ids
        ]
    return mms.worker_reply(context, answers)

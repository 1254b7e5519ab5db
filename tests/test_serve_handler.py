"""The handler inside MMS's own worker code (mms.service.Service, as a worker runs it): a batch
that mixes hostile requests with good photos answers each request on its own, and MMS always
sees a successful batch (its failure path answers every request with its own text)."""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mms.service import Service
from PIL import Image
from serving import jpeg

from dogbreed.serve import handler
from dogbreed.serve.protocol import CONTENT_TYPE_HEADER, REQUEST_ID_HEADER


def truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()[:200]


def wire_request(index: int, body: bytes, content_type: str, **headers: str) -> dict[str, Any]:
    """One request as MMS's frontend hands it to a worker (mms/protocol), as the gateway
    forwards it: the client's Content-Type in our header, octet-stream for MMS."""
    fields = {CONTENT_TYPE_HEADER: content_type, REQUEST_ID_HEADER: f"req-{index}", **headers}
    return {
        "requestId": f"mms-{index}".encode(),
        "headers": [{"name": k.encode(), "value": v.encode()} for k, v in fields.items()],
        "parameters": [{"name": "body", "contentType": "application/octet-stream", "value": body}],
    }


@pytest.fixture()
def service(trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.setattr(handler, "_service", None)  # a fresh worker: handle() loads the model
    mms = Service("model", str(trained_model_dir), None, handler.handle, None, 8)
    handler.handle(None, mms.context)
    yield mms


def run(service: Service, batch: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
    """What `Service.predict` does, keeping the per-request statuses and bodies readable."""
    headers, inputs, ids = Service.retrieve_data_for_inference(batch)
    service.context.request_ids, service.context.request_processor = ids, headers
    bodies = handler.handle(inputs, service.context)
    assert bodies is not None and len(bodies) == len(batch)
    statuses = [service.context.get_response_status(i)[0] for i in range(len(batch))]
    return list(zip(statuses, [b.encode() for b in bodies], strict=True))


HOSTILE = [
    (b"[" * 50_000 + b"]" * 50_000, "application/json", {}),
    (b"[" + b"0," * 40_000 + b"0]", "application/json", {}),
    (b'{"image": "eA==", "top_k": 1e999}', "application/json", {}),
    (b'{"image": "eA==", "top_k": ' + b"7" * 5000 + b"}", "application/json", {}),
    (b'{"image": "' + b"!" * 2_000_000 + b'"}', "application/json", {}),
    (b'{"image": "eA==", "return_logits": "' + b"y" * 100_000 + b'"}', "application/json", {}),
    (truncated_png(), "image/png", {}),
    (b"\xff\xd8\xff" + b"\x00" * 5000, "image/jpeg", {}),
    (b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x", {}),
    (jpeg(), "image/jpeg", {"accept": "text/csv"}),
]


def test_hostile_requests_fail_alone_and_mms_sees_a_successful_batch(service: Service) -> None:
    good = jpeg()
    as_json = f'{{"image": "{base64.b64encode(good).decode()}"}}'.encode()
    mixed = [(good, "image/jpeg", {}), *HOSTILE, (as_json, "application/json", {})]
    batch = [wire_request(i, body, kind, **h) for i, (body, kind, h) in enumerate(mixed)]
    answers = run(service, batch)
    assert answers[0][0] == 200 and answers[-1][0] == 200
    assert answers[0][1].strip() == answers[-1][1].strip()  # the same photo, the same answer
    for status, body in answers[1:-1]:
        assert 400 <= status < 500, body[:200]
        assert len(body) < 1000  # a huge value is not echoed back
    reply = service.predict(batch)  # the frame a worker sends back to MMS's frontend
    code, length = struct.unpack("!ii", reply[:8])
    assert (code, reply[8 : 8 + length]) == (200, b"Prediction success")


def test_a_model_failure_is_our_500_with_the_request_id(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(batch: object) -> object:
        raise RuntimeError("the backend fell over")

    assert handler._service is not None
    monkeypatch.setattr(handler._service.predictor, "logits", broken)
    answers = run(service, [wire_request(i, jpeg(), "image/jpeg") for i in range(2)])
    for index, (status, body) in enumerate(answers):
        assert status == 500
        assert b'"error": "internal_error"' in body and f'"req-{index}"'.encode() in body
        assert b"fell over" not in body


def test_jsonlines_answers_each_line_in_order_and_a_bad_line_alone(service: Service) -> None:
    """What Batch Transform sends with SplitType=Line, BatchStrategy=MultiRecord."""
    photo = base64.b64encode(jpeg()).decode()
    lines = [
        f'{{"image": "{photo}"}}',
        '{"image": "not base64!"}',
        "not json",
        f'{{"image": "{base64.b64encode(truncated_png()).decode()}"}}',
        f'{{"image": "{photo}"}}',
    ]
    body = ("\n".join(lines) + "\n").encode()
    single = run(service, [wire_request(0, jpeg(), "image/jpeg")])[0][1]
    [(status, answer)] = run(service, [wire_request(1, body, "application/jsonlines")])
    assert status == 200
    out = [json.loads(line) for line in answer.decode().strip().split("\n")]
    assert len(out) == len(lines)
    assert out[0] == out[4] == json.loads(single)  # a line is answered as the photo alone
    assert [o.get("line") for o in out] == [None, 2, 3, 4, None]
    assert [o.get("error") for o in out[1:4]] == ["bad_request", "bad_request", "invalid_image"]


def test_jsonlines_where_every_line_is_bad_still_answers_every_line(service: Service) -> None:
    body = b'{"image": ""}\n{"picture": "eA=="}\n'
    [(status, answer)] = run(service, [wire_request(0, body, "application/x-jsonlines")])
    assert status == 200
    assert [json.loads(line)["line"] for line in answer.decode().strip().splitlines()] == [1, 2]

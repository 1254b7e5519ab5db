"""Request parsing details that the HTTP tests do not spell out (pure functions, no server)."""

from __future__ import annotations

import base64
import json

import pytest

from dogbreed.serve.errors import BadRequest, NotAcceptable, PayloadTooLarge
from dogbreed.serve.protocol import (
    ParsedRequest,
    check_accept,
    parse_custom_attributes,
    parse_request,
)

LIMITS = {"default_top_k": 5, "max_bytes": 1000, "max_instances": 3}


def parse(body: bytes, content_type: str = "application/json", **headers: str) -> ParsedRequest:
    return parse_request(body, {"content-type": content_type, **headers}, **LIMITS)


@pytest.mark.parametrize(
    "accept",
    [None, "", "*/*", "application/json", "application/*", "text/html, application/json;q=0.9"],
)
def test_accept_headers_that_allow_json(accept: str | None) -> None:
    check_accept(accept)


@pytest.mark.parametrize("accept", ["text/csv", "image/png", "application/json;q=0"])
def test_accept_headers_that_refuse_json(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        check_accept(accept)


def test_custom_attributes_with_either_separator() -> None:
    assert parse_custom_attributes("top_k=3; return_logits=true") == {
        "top_k": "3",
        "return_logits": "true",
    }
    assert parse_custom_attributes("trace=abc,Top_K=2") == {"trace": "abc", "top_k": "2"}
    assert parse_custom_attributes(None) == {}


def test_wrapped_base64_and_data_urls_are_accepted() -> None:
    data = bytes(range(256)) * 2
    encoded = base64.encodebytes(data).decode()  # wrapped at 76 characters
    assert "\n" in encoded
    assert parse(json.dumps({"image": encoded}).encode()).images == [data]
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    request = parse(json.dumps({"instances": [{"image": url}], "top_k": 2}).encode())
    assert request.images == [data] and request.top_k == 2 and request.batch


def test_json_field_beats_the_header_and_limits_apply() -> None:
    body = json.dumps({"image": base64.b64encode(b"x").decode(), "top_k": 1}).encode()
    attributes = {"x-amzn-sagemaker-custom-attributes": "top_k=4; return_logits=yes"}
    request = parse(body, **attributes)
    assert (request.top_k, request.return_logits, request.batch) == (1, True, False)
    with pytest.raises(PayloadTooLarge):
        parse(b"x" * 1001, "image/jpeg")
    with pytest.raises(PayloadTooLarge):
        parse(json.dumps(["eA=="] * 4).encode())
    for bad in ({"image": "eA==", "top_k": 2.5}, {"image": "eA==", "top_k": True}, {"x": 1}, []):
        with pytest.raises(BadRequest):
            parse(json.dumps(bad).encode())


def test_json_nesting_and_size_are_bounded_before_parsing() -> None:
    """Deep or wide JSON is refused by a linear count (json.loads would recurse once per
    bracket, or build a million objects); huge numbers and values are 400s, never echoed."""

    def parse(body: bytes) -> ParsedRequest:
        limits = {**LIMITS, "max_bytes": 10_000_000}
        return parse_request(body, {"content-type": "application/json"}, **limits)

    for body in (b"[" * 50_000 + b"]" * 50_000, b"[" + b"0," * 100_000 + b"0]"):
        with pytest.raises(BadRequest, match="brackets"):
            parse(body)
    image = base64.b64encode(b"x").decode()
    data_urls = [f"data:image/jpeg;base64,{image}"] * 3  # a comma each: still accepted
    assert len(parse(json.dumps({"instances": data_urls}).encode()).images) == 3
    for bad in (b'{"image": "eA==", "top_k": 1e999}', b'{"top_k": ' + b"9" * 5000 + b"}"):
        with pytest.raises(BadRequest):
            parse(bad)
    with pytest.raises(BadRequest) as caught:
        parse(json.dumps({"image": "eA==", "top_k": "9" * 100_000}).encode())
    assert len(caught.value.message) < 200

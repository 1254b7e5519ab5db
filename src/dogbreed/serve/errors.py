"""Client-facing errors: each one is an HTTP status plus a JSON `{"error", "message"}` body."""

from __future__ import annotations

import json


class ServeFailure(RuntimeError):
    """Not a client's error: serving cannot start or went down; the message is the log line."""


class ServeError(Exception):
    """A request the server refuses; `code` is a stable machine-readable name."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> str:
        return error_body(self.code, self.message)


class BadRequest(ServeError):
    pass


class InvalidImage(ServeError):
    code = "invalid_image"


class PayloadTooLarge(ServeError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServeError):
    status = 415
    code = "unsupported_media_type"


class NotAcceptable(ServeError):
    status = 406
    code = "not_acceptable"


def error_body(code: str, message: str, request_id: str | None = None) -> str:
    document = {"error": code, "message": message}
    if request_id is not None:
        document["request_id"] = request_id
    return json.dumps(document)


def shown(value: object, limit: int = 60) -> str:
    """repr() of a client's value for a message, cut short: a 6 MB string is not echoed."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"

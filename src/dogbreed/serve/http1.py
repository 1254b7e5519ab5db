"""HTTP/1.1 on an asyncio stream, as much as the gateway needs: a strict request head
parser, body framing (Content-Length, chunked) and response bytes.

Strict where leniency lets two parsers disagree about where a request ends (request
smuggling): CRLF line ends only, no obsolete line folding, no header without a name, no body
with both Content-Length and Transfer-Encoding, conflicting lengths refused.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from dogbreed.serve.errors import error_body

MAX_HEAD_BYTES = 64 * 1024  # request line + headers
MAX_HEADERS = 100
READ_CHUNK = 64 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")

Headers = tuple[tuple[str, str], ...]
Answer = tuple[int, str | bytes, Headers]  # status, JSON body, extra response headers
RETRY_AFTER = (("Retry-After", "1"),)  # with a 503: the client may retry after a second


class HttpError(Exception):
    """An answer to send instead of going on with the request; `close` ends the connection
    (the default: after a framing error nothing more on it can be trusted)."""

    def __init__(
        self, status: int, code: str, message: str, *, close: bool = True, headers: Headers = ()
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.close, self.headers = close, headers

    def answer(self) -> Answer:
        return self.status, error_body(self.code, self.message), self.headers


class ClientGone(Exception):
    """The client closed its connection in the middle of a request."""


@dataclass
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    keep_alive: bool = True
    body: bytearray = field(default_factory=bytearray)


async def read_head(reader: asyncio.StreamReader, first: bytes) -> Request | None:
    """The head whose first byte is `first`; None for blank lines between two requests."""
    try:
        head = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(
            431,
            "request_header_fields_too_large",
            f"request line and headers exceed {MAX_HEAD_BYTES} bytes",
        ) from None
    head = head.lstrip(b"\r\n")
    return parse_head(head[:-4]) if head else None


def parse_head(head: bytes) -> Request:
    """Request line and header lines, without the blank line that ends them."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1].startswith(b"/"):
        raise HttpError(400, "bad_request", "malformed request line")
    method, path, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        status = 505 if re.fullmatch(r"HTTP/\d\.\d", version) else 400
        raise HttpError(status, "bad_request", f"unsupported protocol {version[:20]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "request_header_fields_too_large", f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also refuses obsolete line folding
            raise HttpError(400, "bad_request", "malformed header line")
        key, text = name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")
        if key == "content-length" and headers.get(key, text) != text:
            raise HttpError(400, "bad_request", "conflicting Content-Length headers")
        repeated = key in headers and key != "content-length"
        headers[key] = f"{headers[key]}, {text}" if repeated else text
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
    return Request(method, path, version, headers, keep_alive)


def content_length(request: Request) -> int:
    """The declared body length (0 when none); huge values come back as a huge int."""
    text = request.headers.get("content-length", "0")
    if not (text.isascii() and text.isdigit()):
        raise HttpError(400, "bad_request", "invalid Content-Length header")
    return int(text) if len(text) <= 15 else 1 << 62


def is_chunked(request: Request) -> bool:
    coding = request.headers.get("transfer-encoding")
    if coding is None:
        return False
    if "content-length" in request.headers:
        raise HttpError(400, "bad_request", "both Content-Length and Transfer-Encoding")
    if coding.lower() != "chunked":
        raise HttpError(501, "not_implemented", "only chunked transfer coding is supported")
    return True


async def read_exact(
    reader: asyncio.StreamReader, length: int, sink: Callable[[bytes], None] | None
) -> None:
    """Read `length` body bytes, handing each chunk to `sink` (None: drop them)."""
    while length > 0:
        chunk = await reader.read(min(length, READ_CHUNK))
        if not chunk:
            raise ClientGone
        length -= len(chunk)
        if sink is not None:
            sink(chunk)


async def read_chunked(
    reader: asyncio.StreamReader, limit: int, sink: Callable[[bytes], None]
) -> None:
    total = 0
    while True:
        size_text = (await _read_line(reader)).split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):  # also refuses "-1": no negative reads
            raise HttpError(400, "bad_request", "malformed chunked body")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise HttpError(
                413, "payload_too_large", f"request body exceeds the limit of {limit} bytes"
            )
        await read_exact(reader, size, sink)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "bad_request", "malformed chunked body")
    for _ in range(MAX_HEADERS + 1):  # trailers, ignored
        if await _read_line(reader) == b"":
            return
    raise HttpError(431, "request_header_fields_too_large", "too many trailer lines")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return (await reader.readuntil(b"\r\n"))[:-2]
    except asyncio.LimitOverrunError:
        raise HttpError(400, "bad_request", "malformed chunked body") from None


def response_bytes(
    status: int, body: bytes, headers: Headers, close: bool, head_only: bool = False
) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    typed = any(name.lower() == "content-type" for name, _ in headers)
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Server: dogbreed",
        *([] if typed else ["Content-Type: application/json"]),  # all our answers but jsonlines
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    if close:
        lines.append("Connection: close")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (b"" if head_only else body)

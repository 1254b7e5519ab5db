"""The try-the-model page (assets/index.html) and the headers it is served with.

Standard library only, and no `dogbreed` import: the Lambda function ships this file next to
its handler (aws/assets/lambda-function/ links to it and to the page), so `dogbreed serve`
and the Lambda answer with the same page and the same headers from one source.

Why inline blocks with hashes rather than separate .js/.css files: the page stays one file
with one route, which matters for the Lambda (a Function URL or API Gateway stage then needs
no extra paths), while the Content-Security-Policy still allows nothing but these exact
blocks: the hashes are computed here when the page is loaded, so an edit cannot leave them
stale, and any injected script or style fails them.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from pathlib import Path

PAGE_NAME = "index.html"
PREDICT_URL_TAG = '<meta name="predict-url" content="">'
_BLOCK = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True)
class Page:
    body: bytes
    headers: tuple[tuple[str, str], ...]


def content_security_policy(text: str) -> str:
    """Only this page's own inline blocks, images it shows (blob:) and calls to its origin."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, block in _BLOCK.findall(text):
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    return (
        f"default-src 'none'; script-src {' '.join(hashes['script'])}; "
        f"style-src {' '.join(hashes['style'])}; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def load(path: Path, predict_url: str = "") -> Page:
    """The page at `path`, posting images to `predict_url` (empty: the page's own URL)."""
    text = path.read_text(encoding="utf-8")
    if PREDICT_URL_TAG not in text:
        raise ValueError(f"{path} has no {PREDICT_URL_TAG}")
    tag = f'<meta name="predict-url" content="{html.escape(predict_url)}">'
    text = text.replace(PREDICT_URL_TAG, tag, 1)
    headers = (
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Security-Policy", content_security_policy(text)),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        # The page is small and changes with the package: revalidate rather than keep it.
        ("Cache-Control", "no-cache"),
    )
    return Page(text.encode("utf-8"), headers)

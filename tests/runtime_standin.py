"""A local stand-in for the SageMaker runtime's `POST /endpoints/<name>/invocations`.

Why it exists: the real runtime cannot run here and moto's `invoke_endpoint` answers canned
bodies without calling any container. This small HTTP server on 127.0.0.1 forwards the request
to a REAL model server's `/invocations` and answers the way the runtime does (botocore's
`sagemaker-runtime` service model, rest-json protocol):

- container 2xx  -> 200 with the container's body and Content-Type;
- container 4xx/5xx -> 424 `ModelError` with `OriginalStatusCode`, `OriginalMessage`,
  `LogStreamArn` and a `Message` that names the account and log stream, as AWS's does (the
  handler must not leak those);
- unknown endpoint -> 400 `ValidationError`;
- `mode = "throttle"` -> 400 `ThrottlingException`; `mode = "sleep"` sleeps `sleep_s` first;
  `mode = "container_timeout"` -> the 424 `ModelError` (status 0) the runtime sends when the
  container misses its 60 s.

boto3 reaches it through `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`. Used by the tests and by
bench/bench_lambda.py only.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

from loopback_http import LoopbackServer, QuietHandler, serving

ACCOUNT = "123456789012"
REGION = "us-east-1"
FORWARDED_HEADERS = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")
ROUTE = re.compile(r"^/endpoints/([^/]+)/invocations$")
CONTAINER_TIMEOUT = (
    "Your invocation timed out while waiting for a response from container primary. Review the "
    "latency metrics for each container in Amazon CloudWatch, resolve the issue, and try again."
)
HANDLER_FILE = Path(__file__).resolve().parent.parent / "lambda" / "handler.py"


def load_handler() -> ModuleType:
    """A fresh copy of lambda/handler.py (a new container: no client yet), loaded by path as
    the Lambda runtime does (`lambda` is a Python keyword, not an importable package)."""
    if str(HANDLER_FILE.parent) not in sys.path:  # as the runtime does: its webpage.py
        sys.path.insert(0, str(HANDLER_FILE.parent))
    spec = importlib.util.spec_from_file_location("lambda_handler", HANDLER_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RuntimeStandIn(LoopbackServer):
    def __init__(self, endpoint_name: str, model_url: str) -> None:
        super().__init__(_Handler)
        self.endpoint_name = endpoint_name
        self.model = urlsplit(model_url)
        self.mode = "forward"  # forward | throttle | sleep | container_timeout
        self.sleep_s = 0.0
        self.requests = 0
        self.last_headers: dict[str, str] = {}


class _Handler(QuietHandler):
    server: RuntimeStandIn

    def _error(self, status: int, code: str, document: dict) -> None:
        self._send(status, json.dumps(document).encode(), "application/json", code)

    def _send(self, status: int, body: bytes, content_type: str, error: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", "0c1b2a39-0000-4000-8000-000000000000")
        if error:
            self.send_header("x-amzn-ErrorType", error)
        else:
            self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        server = self.server
        server.requests += 1
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server.last_headers = {k: v for k, v in self.headers.items()}
        match = ROUTE.match(urlsplit(self.path).path)
        name = unquote(match.group(1)) if match else ""
        if name != server.endpoint_name:
            message = f"Endpoint {name} of account {ACCOUNT} not found."
            self._error(400, "ValidationError", {"message": message})
            return
        if server.mode == "throttle":
            self._error(400, "ThrottlingException", {"message": "Rate exceeded"})
            return
        if server.mode == "container_timeout":
            self._model_error(name, 0, CONTAINER_TIMEOUT)
            return
        if server.mode == "sleep":
            time.sleep(server.sleep_s)
        conn = http.client.HTTPConnection(server.model.hostname, server.model.port, timeout=60)
        try:
            headers = {h: self.headers[h] for h in FORWARDED_HEADERS if self.headers.get(h)}
            conn.request("POST", "/invocations", body=body, headers=headers)
            answer = conn.getresponse()
            payload = answer.read()
        finally:
            conn.close()
        if answer.status < 400:
            self._send(200, payload, answer.getheader("Content-Type") or "application/json")
            return
        self._model_error(name, answer.status, payload.decode(errors="replace"))

    def _model_error(self, name: str, status: int, original: str) -> None:
        kind = "client" if 400 <= status < 500 else "server"
        log_group = f"/aws/sagemaker/Endpoints/{name}"
        self._error(
            424,
            "ModelError",
            {
                "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
                "LogStreamArn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{log_group}",
                "Message": (
                    f'Received {kind} error ({status}) from primary with message "{original}". '
                    f"See https://{REGION}.console.aws.amazon.com/cloudwatch/home?region="
                    f"{REGION}#logEventViewer:group={log_group} in account {ACCOUNT} for more "
                    "information."
                ),
                "OriginalMessage": original,
                "OriginalStatusCode": status,
            },
        )


@contextmanager
def running_standin(endpoint_name: str, model_url: str) -> Iterator[RuntimeStandIn]:
    with serving(RuntimeStandIn(endpoint_name, model_url)) as server:
        yield server

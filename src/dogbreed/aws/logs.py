"""Follow a SageMaker job while it runs: status changes, and its CloudWatch log lines as they come.

The SageMaker SDK's `logs=True`: training containers log to the group
`/aws/sagemaker/TrainingJobs`, one stream per host named `<job>/algo-<n>-<epoch>`. `LogTail`
lists the streams under a prefix, reads each from where it left off (`nextForwardToken`) and
prints new lines with the stream's host; `follow` polls a job until it ends, printing a line
whenever its status changes and the new log lines in between.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import IO, Any

from dogbreed.aws.clients import AwsError

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL_STATES = ("Completed", "Failed", "Stopped")


def console_url(region: str, kind: str, name: str) -> str:
    """The job's page in the SageMaker console (`kind`: jobs, hyper-tuning-jobs)."""
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/{kind}/{name}"


class LogTail:
    """New lines of the streams of LOG_GROUP whose names start with `prefix` (and match
    `pattern`, when given), each printed as `[<stream name after the prefix>] <line>`."""

    def __init__(
        self, logs: Any, prefix: str, out: IO[str], pattern: re.Pattern[str] | None = None
    ) -> None:
        self.logs = logs
        self.prefix = prefix
        self.out = out
        self.pattern = pattern
        self.tokens: dict[str, str | None] = {}

    def poll(self) -> int:
        """Print every line written since the last poll; how many there were."""
        return sum(self._read(stream) for stream in self._streams())

    def _streams(self) -> list[str]:
        import botocore.exceptions

        pages = self.logs.get_paginator("describe_log_streams").paginate(
            logGroupName=LOG_GROUP, logStreamNamePrefix=self.prefix
        )
        try:
            names = [s["logStreamName"] for page in pages for s in page.get("logStreams", [])]
        except botocore.exceptions.ClientError as exc:
            # The group appears with the account's first training job's first line.
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return []
            raise
        return sorted(n for n in names if self.pattern is None or self.pattern.match(n))

    def _read(self, stream: str) -> int:
        params: dict[str, Any] = {
            "logGroupName": LOG_GROUP,
            "logStreamName": stream,
            "startFromHead": True,
        }
        host = stream[len(self.prefix) :]
        count = 0
        token = self.tokens.get(stream)
        while True:
            if token:
                params["nextToken"] = token
            answer = self.logs.get_log_events(**params)
            for event in answer.get("events", []):
                print(f"[{host}] {event['message'].rstrip()}", file=self.out, flush=True)
                count += 1
            # At the end of the stream AWS hands back the token it was given.
            if answer.get("nextForwardToken") in (None, token):
                break
            token = answer["nextForwardToken"]
        self.tokens[stream] = token
        return count


def follow(
    describe: Callable[[], tuple[str, str]],
    tail: LogTail | None,
    poll_s: float,
    timeout_s: float,
    out: IO[str],
    still_running: str,
) -> str:
    """Poll `describe() -> (status, line)` until the status is terminal; print `line` whenever
    it changes and the tail's new log lines after each poll. `still_running` ends the error
    raised when `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        status, line = describe()
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if tail is not None:
            tail.poll()  # after the describe: a job seen finished has its last lines read
        if status in TERMINAL_STATES:
            return status
        if time.monotonic() + poll_s > deadline:
            raise AwsError(f"still {status} after {timeout_s:.0f}s; {still_running}")
        sleep(poll_s)


def sleep(seconds: float) -> None:
    """The wait between polls (one place, so that tests can skip it)."""
    time.sleep(seconds)

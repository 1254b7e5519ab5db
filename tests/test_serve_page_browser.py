"""The try-the-model page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, scripts/setup.sh) driven over WebDriver's HTTP JSON protocol, against the
real `dogbreed serve` on the sample-trained model (`model_server`, tests/serving.py).

Every wait polls the page's DOM with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from serving import free_port

DRIVER_START_S = 30
PAGE_WAIT_S = 60  # one prediction on two shared cores, JVM round trip included
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element reference key
PHONE_WIDTH = 390  # a narrow screen: the page must not scroll sideways there
POLL_S = 0.1  # between two looks at the page (a polling interval, not a synchronisation)
# Kept after the run, passed or failed (pytest deletes a passed test's tmp_path).
ARTEFACTS = Path(
    os.environ.get("DOGBREED_TEST_ARTEFACTS")
    or Path(__file__).resolve().parent.parent / "local" / "test-artefacts"
)


class WebDriver:
    """The few WebDriver commands the tests need, on one Chromium session."""

    def __init__(self, base: str, session: str) -> None:
        self.url = f"{base}/session/{session}"

    def command(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = requests.request(method, f"{self.url}{path}", json=payload, timeout=60)
        value = response.json()["value"]
        assert response.status_code == 200, value
        return value

    def script(self, source: str) -> Any:
        return self.command("POST", "/execute/sync", {"script": source, "args": []})

    def choose_file(self, selector: str, path: Path) -> None:
        """What a user picking a file does: the input gets it and fires `change`."""
        found = self.command("POST", "/element", {"using": "css selector", "value": selector})
        self.command("POST", f"/element/{found[ELEMENT]}/value", {"text": str(path)})

    def wait_for(self, source: str, done: Callable[[Any], bool]) -> Any:
        """Run `source` until `done` accepts its value, for at most PAGE_WAIT_S."""
        deadline = time.monotonic() + PAGE_WAIT_S
        value = self.script(source)
        while not done(value):
            assert time.monotonic() < deadline, f"page never got there; last state {value!r}"
            time.sleep(POLL_S)
            value = self.script(source)
        return value

    def screenshot(self, name: str) -> Path:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTEFACTS / name
        path.write_bytes(base64.b64decode(self.command("GET", "/screenshot")))
        print(f"screenshot: {path}")
        return path


@pytest.fixture()
def browser() -> Iterator[WebDriver]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "apt-get install chromium chromium-driver (scripts/setup.sh)"
    port = free_port()
    proc = subprocess.Popen(
        [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_driver(base)
        options = {
            "binary": binary,
            # --no-sandbox: Chromium's sandbox refuses to run as root, as tests here do.
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            # A phone's viewport (a headless window is at least 500 px wide).
            "mobileEmulation": {"deviceMetrics": {"width": PHONE_WIDTH, "height": 844}},
        }
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        created = requests.post(f"{base}/session", json=caps, timeout=60).json()["value"]
        driver_session = WebDriver(base, created["sessionId"])
        try:
            yield driver_session
        finally:
            requests.delete(driver_session.url, timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for_driver(base: str) -> None:
    deadline = time.monotonic() + DRIVER_START_S
    while True:
        try:
            if requests.get(f"{base}/status", timeout=2).json()["value"]["ready"]:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "chromedriver did not start"
        time.sleep(POLL_S)


RESULTS = """return Array.from(document.querySelectorAll('#results li')).map((li) =>
  [li.querySelector('.label').textContent, li.querySelector('.row span:last-child').textContent,
   li.querySelector('.bar span').style.width]);"""
STATUS = "const s = document.getElementById('status'); return [s.className, s.textContent];"
NOT_A_PHOTO = "This file is not a photo the model can read; a JPEG or PNG photo works."


def expected_top5(model_server: str, image: bytes, content_type: str) -> requests.Response:
    """The server's own answer for these bytes, asked the way the page asks."""
    headers = {
        "Content-Type": content_type,
        "Accept": "application/json",
        "X-Amzn-SageMaker-Custom-Attributes": "top_k=5",
    }
    return requests.post(f"{model_server}/invocations", data=image, headers=headers, timeout=60)


def test_a_photo_shows_the_servers_top5_and_a_text_file_its_refusal_in_words(
    browser: WebDriver, model_server: str, sample_data: Path, tmp_path: Path
) -> None:
    photo = sorted((sample_data / "test").glob("*/*.jpg"))[0]
    answer = expected_top5(model_server, photo.read_bytes(), "image/jpeg")
    assert answer.status_code == 200, answer.text
    top = answer.json()["top_k"]
    assert len(top) == 5

    browser.command("POST", "/url", {"url": f"{model_server}/"})
    # The style block ran under the CSP (its hash matched): the drop zone has its dashed border.
    assert (
        browser.script("return getComputedStyle(document.getElementById('drop')).borderStyle")
        == "dashed"
    )
    browser.choose_file("#file", photo)
    shown = browser.wait_for(RESULTS, lambda rows: len(rows) == 5)
    assert [label for label, _, _ in shown] == [p["label"].replace("_", " ") for p in top]
    for (_, percent, width), prediction in zip(shown, top, strict=True):
        assert percent == f"{100 * prediction['probability']:.1f}%"
        # The bar's width is the same percentage as CSS writes it back: "28%" for "28.0%".
        assert float(width.removesuffix("%")) == float(percent.removesuffix("%"))
    status = browser.script(STATUS)
    assert status[0] == "" and status[1].startswith("The model answered in ")
    assert status[1].endswith(" ms.")
    assert browser.script("return document.getElementById('preview').naturalWidth") > 0
    # Narrow screen: nothing wider than the phone-sized viewport.
    width, viewport = browser.script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert width <= viewport <= PHONE_WIDTH
    browser.screenshot("page-prediction.png")

    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a photo of a dog\n")
    # The page sends what is not JPEG or PNG as bytes for the server to decode or refuse.
    refused = expected_top5(model_server, text_file.read_bytes(), "application/octet-stream")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_image"
    message = refused.json()["message"]
    browser.choose_file("#file", text_file)
    status = browser.wait_for(STATUS, lambda s: s[0] == "error")
    assert status[1] == f"{NOT_A_PHOTO} Details: {message}"
    assert "{" not in status[1]  # words, not JSON
    assert browser.script(RESULTS) == []
    assert browser.script("return document.getElementById('preview').hidden") is True
    browser.screenshot("page-refused.png")

    # A WebP photo (no name the server takes as a content type) goes as bytes and is answered.
    webp = tmp_path / "photo.webp"
    with Image.open(photo) as image:
        buffer = io.BytesIO()
        image.save(buffer, "WEBP", quality=95)
    webp.write_bytes(buffer.getvalue())
    answer = expected_top5(model_server, webp.read_bytes(), "application/octet-stream")
    assert answer.status_code == 200, answer.text
    browser.choose_file("#file", webp)
    shown = browser.wait_for(RESULTS, lambda rows: len(rows) == 5)
    assert [label for label, _, _ in shown] == [
        p["label"].replace("_", " ") for p in answer.json()["top_k"]
    ]
    assert browser.script(STATUS)[0] == ""


def test_the_page_is_usable_with_the_keyboard_alone(browser: WebDriver, model_server: str) -> None:
    """Tab reaches the file input first (a native control: Enter or Space opens the picker)."""
    browser.command("POST", "/url", {"url": f"{model_server}/"})
    tab = "\ue004"  # WebDriver's Tab key
    browser.command("POST", "/actions", {"actions": [{
        "type": "key", "id": "keyboard",
        "actions": [{"type": "keyDown", "value": tab}, {"type": "keyUp", "value": tab}],
    }]})  # fmt: skip
    focused = browser.script("return [document.activeElement.id, document.activeElement.type]")
    assert focused == ["file", "file"]
    # Focus is visible: the drop zone highlights while its input has focus.
    highlighted = "return getComputedStyle(document.getElementById('drop')).borderColor"
    assert browser.script(highlighted) == "rgb(6, 80, 168)"

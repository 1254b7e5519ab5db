"""fetch against a real HTTP server on 127.0.0.1; upload against moto's real S3 server."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback_http import LoopbackServer, serving

from dogbreed.aws.clients import Aws, UsageError
from dogbreed.aws.s3 import PART_BYTES, parse_s3_uri
from dogbreed.cli import main as cli_main
from dogbreed.data.fetch import Progress, fetch
from dogbreed.data.layout import DataError
from dogbreed.data.sample import generate_sample


class Server:
    """Serves `files` (name -> bytes) with `Range: bytes=N-` support and counts the requests;
    `cut_after` bytes, when set, ends the next answer early (a dropped connection)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.ranges: list[str | None] = []
        self.cut_after: int | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.ranges.append(self.headers.get("Range"))
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut, server.cut_after = server.cut_after, None
                self.wfile.write(body[start:cut])

            def log_message(self, *args: object) -> None:
                pass

        # HTTP/1.0 (BaseHTTPRequestHandler's default), not QuietHandler's keep-alive: a cut
        # answer must end with the connection, as a dropped download does.
        self.httpd = LoopbackServer(Handler)
        self.url = self.httpd.url


@pytest.fixture()
def server() -> Iterator[Server]:
    srv = Server()
    with serving(srv.httpd):
        yield srv


def zip_of(root: Path, top: str = "dogImages") -> bytes:
    """The same shape as the real dogImages.zip: one top folder, then the splits."""
    out = root.parent / f"{root.name}.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, f"{top}/{path.relative_to(root).as_posix()}")
        zf.writestr("__MACOSX/dogImages/._train", b"resource fork")
    return out.read_bytes()


@pytest.fixture(scope="module")
def small_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = generate_sample(tmp_path_factory.mktemp("zip") / "data", classes=2, per_class=3)
    return zip_of(root)


def test_fetch_unpacks_checks_and_is_idempotent(
    server: Server, small_zip: bytes, tmp_path: Path
) -> None:
    server.files["dogImages.zip"] = small_zip
    sha = hashlib.sha256(small_zip).hexdigest()
    out = tmp_path / "data"
    splits = fetch(out, f"{server.url}/dogImages.zip", sha256=sha.upper())
    assert splits.classes == ["Affenpinscher", "Afghan_hound"]
    assert splits.roots["train"] == out / "train"  # the zip's dogImages/ level is dropped
    assert len(splits.samples["train"]) == 6
    # No zip, no temporary folder, no __MACOSX left behind.
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "valid"]
    assert server.requests == ["/dogImages.zip"]
    # Second run: the data is there, nothing is downloaded.
    assert fetch(out, f"{server.url}/dogImages.zip").classes == splits.classes
    assert server.requests == ["/dogImages.zip"]


def test_fetch_cli(server: Server, small_zip: bytes, tmp_path: Path, capsys) -> None:
    server.files["d.zip"] = small_zip
    assert cli_main(["data", "fetch", str(tmp_path / "o"), "--url", f"{server.url}/d.zip"]) == 0
    assert "2 classes, images: train=6, valid=6, test=6" in capsys.readouterr().out
    assert cli_main(["data", "fetch", str(tmp_path / "p"), "--url", f"{server.url}/none"]) == 1
    assert "404" in capsys.readouterr().err


def test_fetch_from_a_local_file_url(small_zip: bytes, tmp_path: Path) -> None:
    archive = tmp_path / "dogImages.zip"
    archive.write_bytes(small_zip)
    assert len(fetch(tmp_path / "o", archive.as_uri()).samples["test"]) == 6


def test_sha256_mismatch(server: Server, small_zip: bytes, tmp_path: Path) -> None:
    server.files["dogImages.zip"] = small_zip
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        fetch(tmp_path / "d", f"{server.url}/dogImages.zip", sha256="0" * 64)
    assert list((tmp_path / "d").iterdir()) == []


def test_corrupt_zip_is_rejected(server: Server, small_zip: bytes, tmp_path: Path) -> None:
    server.files["not-a-zip.zip"] = b"PK\x03\x04 but nothing else"
    with pytest.raises(DataError, match="not a valid zip"):
        fetch(tmp_path / "a", f"{server.url}/not-a-zip.zip")
    # A real zip with one member's data flipped: the CRC check catches it before unpacking.
    broken = bytearray(small_zip)
    at = broken.index(b"JFIF") + 200
    broken[at : at + 50] = bytes(b ^ 0xFF for b in broken[at : at + 50])
    server.files["flipped.zip"] = bytes(broken)
    with pytest.raises(DataError, match="corrupt"):
        fetch(tmp_path / "b", f"{server.url}/flipped.zip")
    assert list((tmp_path / "b").iterdir()) == []


@pytest.mark.parametrize("name", ["../evil.txt", "dogImages/../../evil.txt", "/abs/evil.txt"])
def test_path_traversal_is_rejected(server: Server, tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("dogImages/train/001.A/x.jpg", b"x")
        zf.writestr(name, b"gotcha")
    server.files["evil.zip"] = archive.read_bytes()
    out = tmp_path / "deep" / "out"
    with pytest.raises(DataError, match="outside the target folder"):
        fetch(out, f"{server.url}/evil.zip")
    assert not list(tmp_path.rglob("evil.txt"))
    assert list(out.iterdir()) == []


def test_zip_without_the_layout_is_rejected(server: Server, tmp_path: Path) -> None:
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("photos/cat.jpg", b"x")
    server.files["other.zip"] = archive.read_bytes()
    with pytest.raises(DataError, match="missing: train, valid, test"):
        fetch(tmp_path / "o", f"{server.url}/other.zip")


def test_unreachable_server_times_out_cleanly(tmp_path: Path) -> None:
    # Nothing listens on port 9 (discard) of loopback: connection refused, a clear error.
    with pytest.raises(DataError, match=r"download of .* failed"):
        fetch(tmp_path / "o", "http://127.0.0.1:9/dogImages.zip", timeout=2)


def test_an_interrupted_download_continues_where_it_stopped(
    server: Server, small_zip: bytes, tmp_path: Path
) -> None:
    server.files["dogImages.zip"] = small_zip
    server.cut_after = len(small_zip) // 2
    out = tmp_path / "data"
    with pytest.raises(DataError, match="run again to continue"):
        fetch(out, f"{server.url}/dogImages.zip")
    assert (out / ".dogImages.zip.part").stat().st_size == len(small_zip) // 2
    sha = hashlib.sha256(small_zip).hexdigest()
    assert fetch(out, f"{server.url}/dogImages.zip", sha256=sha).classes  # whole-file SHA
    assert server.ranges == [None, f"bytes={len(small_zip) // 2}-"]  # only the rest again
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "valid"]


def test_progress_line_shows_files_bytes_and_rate() -> None:
    terminal = io.StringIO()
    progress = Progress(terminal, total_bytes=3_000_000, total_files=3, verb="uploaded")
    progress.add(1_000_000, files=1)
    progress.add(2_000_000, files=2)
    progress.done()
    last = terminal.getvalue().split("\r")[-1]
    assert re.fullmatch(r"uploaded 3/3 files, 3\.0 of 3\.0 MB, \d+\.\d MB/s\x1b\[K\n", last), last
    silent = Progress(None, 10)
    silent.add(10)
    silent.done()  # no terminal: nothing to write to, nothing fails


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    for bad in ("bucket/a", "s3:///a", "https://x", "s3://b/p"):
        with pytest.raises(UsageError, match="must be an S3 URI"):
            parse_s3_uri(bad)


def test_upload_to_moto(moto_server: str, sample_data: Path, capsys) -> None:
    import boto3

    s3 = boto3.client("s3")  # reaches moto through AWS_ENDPOINT_URL
    s3.create_bucket(Bucket="dogs")
    code = cli_main(["data", "upload", str(sample_data), "s3://dogs/datasets/sample/"])
    assert code == 0, capsys.readouterr().err
    expected = sorted(
        f"datasets/sample/{p.relative_to(sample_data).as_posix()}"
        for p in sample_data.rglob("*")
        if p.is_file()
    )
    keys = sorted(
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="dogs")
        for obj in page.get("Contents", [])
    )
    assert keys == expected
    some = expected[0]
    body = s3.get_object(Bucket="dogs", Key=some)["Body"].read()
    assert body == (sample_data / some.removeprefix("datasets/sample/")).read_bytes()


def test_upload_errors(moto_server: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "f.txt").write_text("x")
    assert cli_main(["data", "upload", str(tmp_path), "s3://no-such-bucket/p"]) == 1
    assert "NoSuchBucket" in capsys.readouterr().err
    assert cli_main(["data", "upload", str(tmp_path), "dogs/p"]) == 2
    assert "must be an S3 URI" in capsys.readouterr().err
    assert cli_main(["data", "upload", str(tmp_path / "nope"), "s3://dogs/p"]) == 2
    assert "not a directory" in capsys.readouterr().err


def sent_keys(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of every PutObject and CreateMultipartUpload our S3 clients send."""
    sent: list[str] = []
    make_client = Aws.client

    def recording(self: Aws, service: str, **kwargs: Any) -> Any:
        client = make_client(self, service, **kwargs)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            if model.name in ("PutObject", "CreateMultipartUpload"):
                sent.append(params["Key"])

        client.meta.events.register("provide-client-params.s3.*", record)
        return client

    monkeypatch.setattr(Aws, "client", recording)
    return sent


def test_a_rerun_sends_only_what_is_missing_or_changed(
    moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="dogs")
    root = tmp_path / "d"
    for i in range(6):
        (root / "train" / f"{i:03d}.Breed").mkdir(parents=True)
        (root / "train" / f"{i:03d}.Breed" / "a.jpg").write_bytes(bytes([i]) * (1000 + i))
    big = root / "big.bin"
    big.write_bytes(bytes(range(256)) * (PART_BYTES // 256 + 1000))  # two parts
    sent = sent_keys(monkeypatch)
    argv = ["data", "upload", str(root), "s3://dogs/set", "--output", "json"]
    assert cli_main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["uploaded"], first["skipped"]) == (7, 0)
    assert s3.head_object(Bucket="dogs", Key="set/big.bin")["ETag"].endswith('-2"')  # multipart
    # "Interrupted": two objects never arrived; one file changed since (same size, new bytes).
    s3.delete_object(Bucket="dogs", Key="set/train/001.Breed/a.jpg")
    s3.delete_object(Bucket="dogs", Key="set/big.bin")
    (root / "train" / "002.Breed" / "a.jpg").write_bytes(b"\xff" * 1002)
    sent.clear()
    assert cli_main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["uploaded"], again["skipped"]) == (3, 4)
    assert sorted(sent) == ["set/big.bin", "set/train/001.Breed/a.jpg", "set/train/002.Breed/a.jpg"]
    body = s3.get_object(Bucket="dogs", Key="set/train/002.Breed/a.jpg")["Body"].read()
    assert body == b"\xff" * 1002
    sent.clear()
    assert cli_main(argv) == 0  # all there, big multipart file included: nothing sent
    assert json.loads(capsys.readouterr().out)["skipped"] == 7 and sent == []

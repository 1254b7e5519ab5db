"""Download, verify and unpack dogImages.zip; upload a dataset folder to S3."""

from __future__ import annotations

import hashlib
import logging
import shutil
import stat
import tempfile
import time
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from dogbreed.aws.common import check_s3_uri
from dogbreed.data.layout import DataError, Splits, find_splits

if TYPE_CHECKING:
    from dogbreed.aws.clients import Aws

log = logging.getLogger(__name__)

# The URL from the original write-up (Udacity's course bucket).
DATASET_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
ZIP_NAME = "dogImages.zip"
DOWNLOAD_TIMEOUT = 60.0  # seconds without data before giving up (a socket timeout, not total)
MAX_DOWNLOAD_BYTES = 4 << 30  # the real zip is about 1.1 GB
MAX_UNPACKED_BYTES = 8 << 30
MAX_MEMBERS = 100_000
CHUNK = 1 << 20
UPLOAD_THREADS = 8


def download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT) -> str:
    """Stream `url` to `dest` (via a `.part` file); return the SHA-256 of what was written."""
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    written = 0
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            if total > MAX_DOWNLOAD_BYTES:
                raise DataError(f"{url} is {total} bytes, more than {MAX_DOWNLOAD_BYTES}")
            while chunk := response.read(CHUNK):
                written += len(chunk)
                if written > MAX_DOWNLOAD_BYTES:
                    raise DataError(f"{url} sent more than {MAX_DOWNLOAD_BYTES} bytes")
                digest.update(chunk)
                out.write(chunk)
            if total and written != total:
                raise DataError(f"{url}: got {written} of {total} bytes (connection cut?)")
    except OSError as exc:  # URLError, HTTPError, timeouts, disk full
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    log.info("downloaded %s (%d bytes) in %.1f s", url, written, time.monotonic() - started)
    return digest.hexdigest()


def _member_target(info: zipfile.ZipInfo, dest: Path) -> Path | None:
    """Where a member goes; None for macOS metadata; DataError for anything escaping `dest`."""
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "__MACOSX" or parts[-1] == ".DS_Store":
        return None
    if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise DataError(f"zip member {name!r} points outside the target folder; refusing it")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"zip member {name!r} is a symbolic link; refusing it")
    target = dest.joinpath(*parts).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DataError(f"zip member {name!r} points outside the target folder; refusing it")
    return target


def unpack(archive: Path, dest: Path) -> None:
    """Check the whole archive (CRCs, names, sizes) before writing anything, then extract."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise DataError(f"{archive} has {len(infos)} members, more than {MAX_MEMBERS}")
            size = sum(i.file_size for i in infos)
            if size > MAX_UNPACKED_BYTES:
                raise DataError(f"{archive} unpacks to {size} bytes, more than the limit")
            targets = [(info, _member_target(info, dest)) for info in infos]
            bad = zf.testzip()
            if bad is not None:
                raise DataError(f"{archive} is corrupt: member {bad!r} fails its CRC check")
            for info, target in targets:
                if target is None:
                    continue
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataError(f"{archive} is not a valid zip file: {exc}") from None


def fetch(
    out: Path,
    url: str = DATASET_URL,
    sha256: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> Splits:
    """Download and unpack the dataset so that `out` holds train/ valid/ test/; return them.

    Idempotent: when `out` already holds a valid layout nothing is downloaded. The archive is
    unpacked into a temporary folder inside `out` and moved into place only after the layout
    check passes, so a failed run leaves nothing half-written behind.
    """
    out = Path(out)
    if out.is_dir():
        try:
            splits = find_splits(out)
        except DataError:
            pass  # not there yet (or broken): fetch it
        else:
            log.info("%s already holds the dataset (%s); nothing to do", out, splits.summary())
            return splits
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out) as work:
        archive = Path(work) / ZIP_NAME
        got = download(url, archive, timeout)
        if sha256 and got.lower() != sha256.strip().lower():
            raise DataError(f"SHA-256 mismatch for {url}: expected {sha256}, got {got}")
        unpacked = Path(work) / "unpacked"
        unpack(archive, unpacked)
        archive.unlink()
        splits = find_splits(unpacked)
        # OUT becomes the dataset root: the real zip's `dogImages/` level is dropped.
        top = splits.roots["train"].parent
        children = sorted(top.iterdir())
        clashes = [str(out / c.name) for c in children if (out / c.name).exists()]
        if clashes:
            raise DataError(f"already there: {', '.join(clashes)}; remove or fetch elsewhere")
        for child in children:
            child.rename(out / child.name)
    splits = find_splits(out)
    log.info("dataset ready in %s: %s", out, splits.summary())
    return splits


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> ("bucket", "some/prefix"); AwsError if not an S3 URI."""
    bucket, _, prefix = check_s3_uri(uri, "the destination")[5:].partition("/")
    return bucket, prefix.strip("/")


def upload(directory: Path, uri: str, aws: Aws) -> list[str]:
    """Upload every file under `directory` to `uri`, keeping relative paths; return the keys."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    bucket, prefix = parse_s3_uri(uri)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{directory} holds no files to upload")
    client = aws.client("s3")

    def put(path: Path) -> str:
        key = "/".join(filter(None, (prefix, path.relative_to(directory).as_posix())))
        with path.open("rb") as body:
            client.put_object(Bucket=bucket, Key=key, Body=body)
        return key

    # botocore clients are thread-safe; small files are latency-bound, so a few threads help.
    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        keys = list(pool.map(put, files))
    log.info("uploaded %d files to s3://%s/%s", len(keys), bucket, prefix)
    return keys

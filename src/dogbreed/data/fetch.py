"""Download, verify and unpack dogImages.zip (resuming an interrupted download), with progress
on a terminal. The upload to S3 is `dogbreed.aws.s3` (data does not depend on aws)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

from dogbreed.data.layout import DataError, Splits, find_splits

log = logging.getLogger(__name__)

# The URL from the original write-up (Udacity's course bucket).
DATASET_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
ZIP_NAME = "dogImages.zip"
DOWNLOAD_TIMEOUT = 60.0  # seconds without data before giving up (a socket timeout, not total)
MAX_DOWNLOAD_BYTES = 4 << 30  # the real zip is about 1.1 GB
MAX_UNPACKED_BYTES = 8 << 30
MAX_MEMBERS = 100_000
CHUNK = 1 << 20
REDRAW_S = 0.2  # progress line refresh


class Progress:
    """One status line on a terminal: files (when counted), bytes, rate; redrawn at most every
    REDRAW_S. `add` may be called from several threads (S3 transfers). No `out`: silent."""

    def __init__(
        self,
        out: IO[str] | None,
        total_bytes: int,
        total_files: int = 0,
        verb: str = "",
        already: int = 0,
    ) -> None:
        self.out = out
        self.total_bytes, self.total_files, self.verb = total_bytes, total_files, verb
        self.bytes, self.files, self.already = already, 0, already
        self.started = self.drawn = time.monotonic()
        self.lock = threading.Lock()

    def add(self, nbytes: int, files: int = 0) -> None:
        if self.out is None:
            return
        with self.lock:
            self.bytes += nbytes
            self.files += files
            now = time.monotonic()
            if now - self.drawn >= REDRAW_S:
                self._draw(now)

    def line(self, now: float) -> str:
        # The rate counts this run's bytes only (a resumed download started with some).
        rate = (self.bytes - self.already) / max(now - self.started, 1e-3) / 1e6
        files = f"{self.files}/{self.total_files} files, " if self.total_files else ""
        total = f" of {self.total_bytes / 1e6:.1f}" if self.total_bytes else ""
        return f"{self.verb} {files}{self.bytes / 1e6:.1f}{total} MB, {rate:.1f} MB/s".strip()

    def _draw(self, now: float) -> None:
        assert self.out is not None
        self.out.write(f"\r{self.line(now)}\x1b[K")  # \x1b[K: clear the rest of the line
        self.out.flush()
        self.drawn = now

    def done(self) -> None:
        if self.out is not None:
            with self.lock:
                self._draw(time.monotonic())
                self.out.write("\n")


class _Resumable(DataError):
    """A download that stopped early: its `.part` file stays for the next run to continue."""


def download(
    url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT, out: IO[str] | None = None
) -> str:
    """Stream `url` to `dest` via `dest.part`; return the SHA-256 of the whole file.

    A `.part` left by an interrupted run is continued with an HTTP Range request (when the
    server answers 206; otherwise the file comes again from its start).
    """
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if getattr(response, "status", None) != 206:
                have = 0  # a full answer: the server ignored the range (or there was none)
            digest = _sha256_of(part) if have else hashlib.sha256()
            with part.open("ab" if have else "wb") as sink:
                written = _copy(response, sink, digest, have, url, out)
    except _Resumable:
        raise
    except DataError:  # a size limit broken: nothing worth resuming
        part.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range is past the end: the .part is useless
            part.unlink()
            return download(url, dest, timeout, out)
        raise DataError(f"download of {url} failed: {exc}") from None
    except OSError as exc:  # URLError, timeouts, a cut connection, disk full: .part stays
        raise DataError(f"download of {url} failed: {exc}; run again to continue") from None
    part.replace(dest)
    log.info("downloaded %s (%d bytes) in %.1f s", url, written, time.monotonic() - started)
    return digest.hexdigest()


def _sha256_of(path: Path) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest


def _copy(
    response: Any, sink: IO[bytes], digest: Any, have: int, url: str, out: IO[str] | None
) -> int:
    """Append the response to `sink` (which holds `have` bytes); the file's size."""
    rest = int(response.headers.get("Content-Length") or 0)
    total = have + rest if rest else 0
    if total > MAX_DOWNLOAD_BYTES:
        raise DataError(f"{url} is {total} bytes, more than {MAX_DOWNLOAD_BYTES}")
    progress = Progress(out, total, verb="downloaded", already=have)
    written = have
    while chunk := response.read(CHUNK):
        written += len(chunk)
        if written > MAX_DOWNLOAD_BYTES:
            raise DataError(f"{url} sent more than {MAX_DOWNLOAD_BYTES} bytes")
        digest.update(chunk)
        sink.write(chunk)
        progress.add(len(chunk))
    progress.done()
    if total and written != total:
        raise _Resumable(
            f"{url}: got {written} of {total} bytes (connection cut?); run again to continue"
        )
    return written


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
    progress: IO[str] | None = None,
) -> Splits:
    """Download and unpack the dataset so that `out` holds train/ valid/ test/; return them.

    Idempotent: when `out` already holds a valid layout nothing is downloaded; an interrupted
    download (`out/.dogImages.zip.part`) is continued. The archive is unpacked into a temporary
    folder inside `out` and moved into place only after the layout check passes, so a failed
    run leaves nothing half-written behind. `progress`: a terminal for the progress line.
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
    archive = out / f".{ZIP_NAME}"  # a stable name: its .part survives an interruption
    got = download(url, archive, timeout, progress)
    try:
        if sha256 and got.lower() != sha256.strip().lower():
            raise DataError(f"SHA-256 mismatch for {url}: expected {sha256}, got {got}")
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out) as work:
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
    finally:
        archive.unlink(missing_ok=True)  # complete but unusable (or used): never resumed
    splits = find_splits(out)
    log.info("dataset ready in %s: %s", out, splits.summary())
    return splits

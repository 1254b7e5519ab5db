"""Writing job files so that a failure says which file, why, and (disk full) how much it needed.

torch reports a full disk as `RuntimeError: [enforce fail at inline_container.cc:672] .
unexpected pos ...` and Python's own ENOSPC carries no file name: true, but nobody can act on
either. `write_file` turns any OSError while writing into a StorageError naming the file, and
`storage_reason` turns such an error (or any OSError from reading: permission denied, a missing
file) into a line for output/failure. No torch import here.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

_SPACE = (errno.ENOSPC, errno.EDQUOT)
# errno -> (what happened, what to do about it)
_PROBLEMS = {
    errno.ENOSPC: (
        "no space left on device",
        "free space there or give the job a larger volume (SageMaker: VolumeSizeInGB)",
    ),
    errno.EDQUOT: ("disk quota exceeded", "free space there or raise the quota"),
    errno.EACCES: (
        "permission denied",
        "check the owner and mode of the folder, or the mount's options (root squash)",
    ),
    errno.EPERM: ("operation not permitted", "check the file's attributes and the mount"),
    errno.EROFS: ("read-only file system", "mount it read-write or use another folder"),
    errno.ENOENT: ("no such file or directory", "check that the path exists"),
}


class StorageError(OSError):
    """An OSError while writing `filename`; `needed` is the whole file's size, when known."""

    def __init__(self, cause: OSError, filename: Path, needed: int | None = None) -> None:
        super().__init__(cause.errno, cause.strerror, str(filename))
        self.needed = needed


class _Counter:
    """A sink that only counts bytes: the size a failed write needed, without a disk."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def write_file(path: Path, write: Callable[[BinaryIO], object], sync: bool = False) -> None:
    """Create `path` and let `write(f)` fill it (torch.save, an ONNX export, text bytes).

    An OSError becomes a StorageError naming `path`. A partial file is removed (it is useless,
    and holds the space the failure reason needs); on a full disk the error also carries the
    size the file needed, counted by writing it once more into a counter.
    """
    try:
        f = open(path, "wb")  # noqa: SIM115 -- closed below; an error here left no file
    except OSError as exc:
        raise StorageError(exc, path) from exc
    try:
        with f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    except Exception as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        with suppress(OSError):
            path.unlink()
        raise StorageError(cause, path, _size_of(write) if cause.errno in _SPACE else None) from exc


def _size_of(write: Callable[[BinaryIO], object]) -> int:
    counter = _Counter()
    write(counter)  # type: ignore[arg-type]  # a stand-in file: write() and flush() suffice
    return counter.size


def write_text(path: Path, text: str) -> None:
    write_file(path, lambda f: f.write(text.encode()))


def _os_error(exc: BaseException) -> OSError | None:
    """The first OSError with an errno we can explain in `exc` and its causes (torch wraps the
    OSError of a failed write in a RuntimeError: `unexpected pos ...`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _PROBLEMS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def storage_reason(exc: BaseException) -> str | None:
    """One line for output/failure: the problem, the file, the space, what to do; None when
    `exc` is no OSError we can explain."""
    if not isinstance(exc, OSError) or exc.errno not in _PROBLEMS:
        return None
    problem, hint = _PROBLEMS[exc.errno]
    if isinstance(exc, StorageError):
        text = f"{problem} writing {exc.filename}"
    else:
        text = f"{problem}: {exc.filename}" if exc.filename else problem
    if exc.errno in _SPACE and exc.filename:
        needed = exc.needed if isinstance(exc, StorageError) else None
        sizes = [f"needs {_size(needed)}"] if needed is not None else []
        sizes.append(f"{_size(_free_bytes(Path(exc.filename)))} free there")
        text += f" ({', '.join(sizes)})"
    return f"{text}: {hint}"


def _free_bytes(path: Path) -> int:
    folder = next(p for p in (path, *path.parents) if p.exists())  # "/" or "." at the latest
    return shutil.disk_usage(folder).free


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"

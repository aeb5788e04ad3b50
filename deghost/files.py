"""Safe file writing and hashing, torch-free: every artifact deghost writes goes through here.

`atomic_write` writes to a temporary name in the target's folder and renames it over the target, so
an interrupted write never leaves a truncated file under the real name (a manifest, an engine, an
image, a checkpoint). New files get the usual permissions (0o666 less the umask). A write that fails
because the disk filled up is reported as such (DiskFullError), whatever the writer said about it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# A write that fails with less than this free on its disk failed because the disk filled: some writers
# hide the OS error (torch.save's zip writer says "[enforce fail at inline_container.cc] unexpected pos").
DISK_FULL_BELOW = 1 << 20
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(OSError):
    """The disk holding `path` filled up while it was written; nothing was left under its name."""

    def __init__(self, path: Path, written: int, free: int | None):
        left = "" if free is None else f" with {free / 1e6:,.1f} MB free"
        super().__init__(
            errno.ENOSPC,
            f"no space left on the disk holding {path.parent}: writing {path.name} stopped after "
            f"{written / 1e6:,.1f} MB{left}. Nothing was written under that name; "
            f"free some space there (df -h {path.parent}) or write to a folder on another disk, then run again",
            str(path),
        )

    def __str__(self) -> str:  # the message alone: it already names the file (OSError's adds "[Errno 28]" and it)
        return self.strerror


def _says_no_space(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            return True
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def disk_full_reported(path: Path, partial: Sequence[Path]) -> Iterator[None]:
    """Around a write of `path`: an error raised because its disk filled up becomes a DiskFullError, judged
    while the `partial` files are still there (their bytes are what filled it; the caller removes them)."""
    try:
        yield
    except Exception as error:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:  # the folder went away or cannot be read: judge by the error alone
            free = None
        if _says_no_space(error) or (free is not None and free < DISK_FULL_BELOW):
            written = sum(file.stat().st_size for file in partial if file.exists())
            raise DiskFullError(path, written, free) from error
        raise


_TEMPORARY_NAME = re.compile(r"\.(.+)\.[0-9a-f]{8}\.tmp")


def temporary_path(path: Path) -> Path:
    """Where atomic_write writes `path` first: `.<name>.<8 hex>.tmp` beside it (hidden, unique per write)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def temporary_target(temporary: Path) -> Path | None:
    """The file a `temporary_path` was written for (`.a.png.0123abcd.tmp` → `a.png` beside it), else None:
    how a clean-up finds the temporary files a killed writer left behind."""
    match = _TEMPORARY_NAME.fullmatch(temporary.name)
    return temporary.with_name(match[1]) if match else None


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, then rename it to `path` (removed on failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with disk_full_reported(path, [temporary]):
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(descriptor, "wb") as file:
                write(file)
            os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda file: file.write(data))


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as the bytes of a .npy file (no pickle), for atomic_write_bytes."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()

"""A disk that fills up for real: a 2 MiB tmpfs mounted on a test's folder (needs root with CAP_SYS_ADMIN)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SMALL_DISK_BYTES = 2 << 20


@contextmanager
def small_disk_at(folder: Path) -> Iterator[Path]:
    """Mount a SMALL_DISK_BYTES tmpfs on `folder` (created) for the block; skip the test where that is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("needs the mount command to make a small file system")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={SMALL_DISK_BYTES}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a 2 MiB tmpfs needs root with CAP_SYS_ADMIN: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)

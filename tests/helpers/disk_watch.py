"""Peak disk use of the test session's temporary folder, per test module: a pytest plugin.

    python -m pytest tests/test_x.py -p tests.helpers.disk_watch [--disk-report disk.json]

A thread sums the allocated size of every file under the session's basetemp every 0.2 s and keeps, for
each module, the largest total seen while that module's tests ran (setup and teardown included); the
terminal summary lists them, largest first. The suite's peak is the largest of these: passing tests'
folders are removed as they end (pyproject's tmp_path_retention_policy) and module data at the end of
its module (conftest's module_tmp_path). Files a module writes outside basetemp are not counted.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

INTERVAL_S = 0.2


def pytest_addoption(parser):
    parser.addoption("--disk-report", default=None, help="also write the peak bytes per module as JSON here")


def folder_bytes(root: Path) -> int:
    """Allocated bytes under `root`, each file once however many hard links it has (symbolic links: 0)."""
    total, seen = 0, set()
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                status = os.lstat(os.path.join(folder, name))
            except OSError:  # removed while we looked
                continue
            if (status.st_dev, status.st_ino) not in seen:
                seen.add((status.st_dev, status.st_ino))
                total += status.st_blocks * 512
    return total


class DiskWatch:
    def __init__(self, root: Path):
        self.root = root
        self.module: str | None = None
        self.peaks: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="disk-watch", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(INTERVAL_S):
            self.sample()

    def sample(self) -> None:
        module = self.module
        if module is not None:
            size = folder_bytes(self.root)
            self.peaks[module] = max(self.peaks.get(module, 0), size)


_KEY = pytest.StashKey[DiskWatch]()


def pytest_sessionstart(session):
    watch = DiskWatch(session.config._tmp_path_factory.getbasetemp())
    session.config.stash[_KEY] = watch
    watch.thread.start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    watch = item.config.stash[_KEY]
    watch.module = item.nodeid.split("::", 1)[0]
    yield
    watch.sample()  # a module's teardown ends inside its last test's protocol


def pytest_terminal_summary(terminalreporter, config):
    watch = config.stash.get(_KEY, None)
    if watch is None:
        return
    watch.stop.set()
    watch.thread.join()
    terminalreporter.section("peak temporary disk per module")
    for module, size in sorted(watch.peaks.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{size / 1e9:8.3f} GB  {module}")
    report = config.getoption("--disk-report")
    if report:
        Path(report).write_text(json.dumps(watch.peaks, indent=1))

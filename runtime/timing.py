"""Wall-clock milliseconds accumulated per key: the `timings_ms` every result and clip report carries."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def timed(store: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall time, in milliseconds, to store[key]."""
    started = time.perf_counter()
    try:
        yield
    finally:
        store[key] = store.get(key, 0.0) + (time.perf_counter() - started) * 1e3


def add_timings(store: dict[str, float], more: Mapping[str, float]) -> None:
    """store += more, key by key."""
    for key, ms in more.items():
        store[key] = store.get(key, 0.0) + ms

"""Bit-for-bit comparison of nested training state (tensors in dicts, lists and tuples), for resume tests."""

from __future__ import annotations

import torch


def assert_same(a, b, path: str = "") -> None:
    """Every tensor equal bit for bit, every other leaf equal, the same keys and lengths; the first
    difference is named by its path (e.g. `g_optim.state.3.exp_avg`)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys differ"
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: lengths differ"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{index}]")
    else:
        assert a == b, f"{path}: {a} != {b}"

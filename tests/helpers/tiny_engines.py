"""The engines folder the demo tests serve: the session's tiny untrained build (`tiny_onnx_dir`,
~2 min once per session), or an already built tiny folder named by DEGHOST_DEMO_ENGINES."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def demo_engines(request: pytest.FixtureRequest) -> Path:
    prebuilt = os.environ.get("DEGHOST_DEMO_ENGINES")
    return Path(prebuilt) if prebuilt else request.getfixturevalue("tiny_onnx_dir")

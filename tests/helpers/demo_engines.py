"""The engines folder the demo tests serve: the session's tiny untrained build (`tiny_onnx_dir`,
~2 min once per session), or an already built tiny folder named by DEGHOST_DEMO_ENGINES."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest


def demo_engines(request: pytest.FixtureRequest) -> Path:
    prebuilt = os.environ.get("DEGHOST_DEMO_ENGINES")
    return Path(prebuilt) if prebuilt else request.getfixturevalue("tiny_onnx_dir")


def engines_copy(engines: Path, folder: Path, directions: bool = True) -> Path:
    """`engines` in `folder`: its manifest (without directions unless `directions`) and directions/ copied,
    its graphs linked, so a test may add or remove direction files."""
    from deghost.manifest import DIRECTIONS_FOLDER

    manifest = json.loads((engines / "manifest.json").read_text())
    if directions:
        shutil.copytree(engines / DIRECTIONS_FOLDER, folder / DIRECTIONS_FOLDER)
    else:
        manifest["directions"] = {}
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for artifact in manifest["artifacts"]:
        (folder / artifact["file"]).symlink_to(engines / artifact["file"])
    return folder

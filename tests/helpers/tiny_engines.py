"""The tiny untrained engines folder the runtime, demo, service and Ray tests use: an already built one
named by DEGHOST_TINY_ENGINES (e.g. `deghost build --preset tiny --random-init 0 --onnx-only --out DIR`),
else the session's own build (`tiny_onnx_dir`, ~2 min once per session)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ENVIRONMENT = "DEGHOST_TINY_ENGINES"


def tiny_engines(request: pytest.FixtureRequest) -> Path:
    prebuilt = os.environ.get(ENVIRONMENT)
    if not prebuilt:
        return request.getfixturevalue("tiny_onnx_dir")
    folder = Path(prebuilt)
    if not (folder / "manifest.json").is_file():
        pytest.fail(f"{ENVIRONMENT}={prebuilt} has no manifest.json: build it with `deghost build --preset tiny "
                    f"--random-init 0 --onnx-only --out {prebuilt}`, or unset {ENVIRONMENT} to build one per session")
    return folder


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

"""The package installs as one `deghost` whose subpackages come from the top-level folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_non_editable_install_imports_every_subpackage_from_another_folder(tmp_path):
    """Also the files beside the code: the face models and the demo's sample photos, with their notices."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import deghost.training.models.zoo, deghost.export.graphs, deghost.runtime.blend\n"
        "import deghost.training.checkpoints\n"
        "import deghost.apps.cli, deghost.apps.edit.ray_batch, deghost.apps.serve.app, deghost.apps.eval.methods\n"
        "from deghost.runtime.faces import FaceFinder; FaceFinder()\n"
        "from deghost.runtime.faces.face_model import MODEL_DIR; assert (MODEL_DIR / 'NOTICE').is_file()\n"
        "from deghost.apps.demo.session import BUNDLED_SAMPLES, find_samples\n"
        "assert [p.name for p in find_samples([BUNDLED_SAMPLES])] == ['astronaut.png', 'grace_hopper.jpg']\n"
        "assert (BUNDLED_SAMPLES / 'NOTICE').is_file(); print(BUNDLED_SAMPLES)\n"
        "print(deghost.training.__file__); print(deghost.runtime.__file__); print(deghost.apps.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n{code}"],
                            capture_output=True, text=True, cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.split():
        assert line.startswith(str(target)), f"imported from the source tree, not the install: {line}"
    # The licence travels with the install (PEP 639): the SPDX expression and the files it names.
    (info,) = target.glob("deghost-*.dist-info")
    assert "License-Expression: Apache-2.0" in (info / "METADATA").read_text().splitlines()
    licences = info / "licenses"
    assert (licences / "LICENSE").read_text().split() == (REPO / "LICENSE").read_text().split()
    assert "Apache License" in (licences / "LICENSE").read_text() and (licences / "NOTICE").is_file()
    assert (licences / "runtime" / "faces" / "models" / "LICENSE-mediapipe").is_file()

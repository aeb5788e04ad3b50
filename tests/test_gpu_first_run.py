"""scripts/gpu_first_run.sh: the one script a person with a GPU runs first (its steps, without running them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_first_run.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_the_script_parses_and_plans_the_probe_the_gpu_tests_a_tensorrt_build_and_the_1000_image_benchmark(tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    planned = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True,
                             env={**os.environ, "DRY_RUN": "1", "PYTHON": "python3"}).stdout.splitlines()
    steps = dict(line.split(": ", 1) for line in planned)
    assert list(steps) == ["probe", "pytest", "build", "benchmark"]
    assert steps["pytest"] == "python3 -m pytest -m gpu or tensorrt -rs -q"
    assert "build" in steps["build"] and "--require-tensorrt" in steps["build"]
    assert f"--out {tmp_path}/engines" in steps["build"]
    assert "bench --preset ffhq1024 --images 1000" in steps["benchmark"]
    assert f"--engines {tmp_path}/engines" in steps["benchmark"]

"""scripts/gpu_first_run.sh: the one script a person with a GPU runs first (its steps, without running them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deghost.runtime.gpu_platform import ONNXRUNTIME_GPU_INSTALL

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_first_run.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_the_script_parses_and_plans_the_probe_the_gpu_tests_a_tensorrt_build_and_the_1000_image_benchmark(tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    planned = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True,
                             env={**os.environ, "DRY_RUN": "1", "PYTHON": "python3"}).stdout.splitlines()
    steps = dict(line.split(": ", 1) for line in planned)
    assert list(steps) == ["probe", "onnxruntime", "pytest", "build", "benchmark"]
    assert "gpu_install_problem" in steps["onnxruntime"]
    assert steps["pytest"] == "python3 -m pytest -m gpu or tensorrt -rs -q"
    assert "build" in steps["build"] and "--require-tensorrt" in steps["build"]
    assert f"--out {tmp_path}/engines" in steps["build"]
    assert "bench --preset ffhq1024 --images 1000" in steps["benchmark"]
    assert f"--engines {tmp_path}/engines" in steps["benchmark"]


def test_the_script_gives_the_install_that_leaves_onnxruntime_gpu_alone():
    header = SCRIPT.read_text().split("\nset -u", 1)[0]
    assert f"#   {ONNXRUNTIME_GPU_INSTALL}\n" in header

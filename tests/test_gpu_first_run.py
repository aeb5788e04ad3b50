"""scripts/gpu_first_run.sh, the one script a person with a GPU runs first: its steps (planned, not run), its stop
on a machine without a GPU, and the verdict on pytest's junit XML (deghost.apps.first_run), judged on XML that a real
pytest run records here from small test files standing in for the suite on a GPU machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deghost.apps.first_run import pytest_verdict
from deghost.runtime.cuda_stack import STACKS, driver_cuda_version

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_first_run.sh"

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@needs_bash
def test_the_script_parses_and_plans_the_probe_the_backends_the_gpu_tests_a_build_and_the_1000_image_benchmark(
        tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    planned = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True,
                             env={**os.environ, "DRY_RUN": "1", "PYTHON": "python3"}).stdout.splitlines()
    steps = dict(line.split(": ", 1) for line in planned)
    assert list(steps) == ["probe", "backends", "pytest_run", "pytest", "build", "benchmark"]
    assert steps["probe"] == "python3 -m deghost.runtime.cuda_stack"
    assert steps["backends"] == "python3 -m deghost.apps.first_run backends"
    assert steps["pytest_run"] == f"python3 -m pytest -m gpu or tensorrt -rs -q --junitxml {tmp_path}/pytest.xml"
    assert steps["pytest"] == f"python3 -m deghost.apps.first_run pytest {tmp_path}/pytest.xml"
    assert "--preset ffhq1024 --precision fp16 --require-tensorrt" in steps["build"]
    assert f"--out {tmp_path}/engines" in steps["build"]
    assert "bench --preset ffhq1024 --images 1000" in steps["benchmark"]
    assert f"--engines {tmp_path}/engines" in steps["benchmark"]


def test_the_scripts_install_lines_give_each_extras_onnxruntime_gpu_pin():
    header = SCRIPT.read_text().split("\nset -u", 1)[0]
    for stack in STACKS.values():
        assert f'"{stack.onnxruntime_gpu}"' in header, stack.extra
        assert f".[{stack.extra}]" in header or f".[dev,{stack.extra}]" in header


@needs_bash
def test_without_a_gpu_driver_the_script_stops_after_the_probe_with_one_line(tmp_path):
    if driver_cuda_version() is not None:
        pytest.skip("an NVIDIA driver is installed here")
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("no NVIDIA GPU driver on this machine: the first GPU run stops")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["probe.log"]  # no other step ran


# -- the pytest verdict, on junit XML recorded here -------------------------------------------------------------

STAND_IN_CONFTEST = '''
import pytest
from deghost.apps.first_run import MARKER_PROPERTY

def pytest_collection_modifyitems(config, items):  # what tests/conftest.py does, with the GPU absent
    for item in items:
        for marker in ("gpu", "tensorrt"):
            if marker in item.keywords:
                item.user_properties.append((MARKER_PROPERTY, marker))
                if item.get_closest_marker("skip_here"):
                    item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (stand-in reason)"))
'''
MODULES = {
    "test_ray_like.py": 'import pytest\npytest.importorskip("no_such_module_like_ray")\n',
    "test_gpu_passes.py": "import pytest\n\n@pytest.mark.gpu\ndef test_runs_on_the_gpu():\n    assert 1 + 1 == 2\n",
    "test_trt_skips.py": ("import pytest\n\n@pytest.mark.tensorrt\n@pytest.mark.skip_here\n"
                          "def test_engine():\n    pass\n"),
    "test_gpu_fails.py": ("import pytest\n\n@pytest.mark.gpu\ndef test_provider():\n"
                          "    assert 'CUDAExecutionProvider' in ['CPUExecutionProvider']\n"),
}


def recorded_junit(tmp_path: Path, modules: list[str]) -> Path:
    """Run a real pytest -m "gpu or tensorrt" over the stand-in modules; returns its junit XML."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(STAND_IN_CONFTEST)
    for name in modules:
        (tmp_path / "tests" / name).write_text(MODULES[name])
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: x\n    tensorrt: x\n    skip_here: x\n")
    xml = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "-p", "no:cacheprovider",
                    f"--junitxml={xml}", "tests"], cwd=tmp_path, capture_output=True, timeout=120)
    return xml


def test_a_module_skipped_at_collection_is_listed_but_every_gpu_test_passing_is_a_pass(tmp_path):
    verdict = pytest_verdict(recorded_junit(tmp_path, ["test_ray_like.py", "test_gpu_passes.py"]))
    assert verdict.ok and verdict.passed == 1 and verdict.failures == []
    (skipped,) = verdict.not_gpu
    assert skipped.startswith("tests.test_ray_like: ") and "no_such_module_like_ray" in skipped
    assert verdict.lines()[0] == "PASS: 1 GPU/TensorRT tests passed"


def test_a_tensorrt_test_that_skips_on_the_gpu_machine_fails_with_its_reason(tmp_path):
    verdict = pytest_verdict(recorded_junit(tmp_path, ["test_ray_like.py", "test_gpu_passes.py",
                                                       "test_trt_skips.py"]))
    assert not verdict.ok and verdict.passed == 1
    assert verdict.failures == ["tests.test_trt_skips::test_engine: skipped on the GPU machine (needs a CUDA GPU "
                                "(stand-in reason))"]
    assert verdict.lines()[0] == "FAIL: 1 GPU/TensorRT test(s) failed or skipped, 1 passed"


def test_a_failing_gpu_test_fails_with_its_message(tmp_path):
    verdict = pytest_verdict(recorded_junit(tmp_path, ["test_gpu_passes.py", "test_gpu_fails.py"]))
    assert not verdict.ok and verdict.passed == 1
    (failure,) = verdict.failures
    assert failure.startswith("tests.test_gpu_fails::test_provider: AssertionError: assert 'CUDAExecutionProvider' in")


def test_a_run_in_which_no_gpu_test_ran_is_no_pass(tmp_path):
    verdict = pytest_verdict(recorded_junit(tmp_path, ["test_ray_like.py"]))
    assert not verdict.ok and verdict.lines()[0] == "FAIL: no GPU/TensorRT test ran"

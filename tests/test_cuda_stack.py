"""One CUDA major version per GPU extra, the driver's CUDA version and the extra it serves, and the CUDA major each
installed GPU package is built for (deghost.runtime.cuda_stack), on the CPU.

The facts the expectations come from were read from the wheels' METADATA on PyPI (docs/gpu.md has the table):
the versions each package offers, and which CUDA each onnxruntime-gpu release's `cuda` extra asks for."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement

from deghost.runtime import cuda_stack
from deghost.runtime.cuda_stack import STACKS

REPO = Path(__file__).resolve().parents[1]

# onnxruntime-gpu on PyPI: the CUDA of the nvidia-cuda-runtime its `cuda` extra requires (1.21-1.26: -cu12 ~= 12.0,
# 1.27: -cu13 ~= 13.0, 1.28 on: nvidia-cuda-runtime ~= 13.0); 1.19 and 1.20 have no such extra (CUDA 12 builds).
ONNXRUNTIME_GPU_CUDA = {"1.18.1": 11, "1.19.2": 12, "1.20.2": 12, "1.21.0": 12, "1.24.4": 12, "1.25.1": 12,
                        "1.26.0": 12, "1.27.0": 13, "1.28.0": 13, "1.29.0": 13, "1.30.0": 13, "1.31.1": 13}
# cuda-python and cuda-bindings releases on PyPI; each one's major version is its CUDA.
CUDA_BINDINGS = ["11.8.7", "12.8.0", "12.9.10", "13.0.0", "13.4.4", "13.5.0"]
# nvidia-cuda-runtime-cu13 has only placeholder releases, so onnxruntime-gpu 1.27[cuda] cannot install.
UNINSTALLABLE = {"1.27.0"}


def extras() -> dict[str, list[Requirement]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    table = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {name: [Requirement(line) for line in lines] for name, lines in table.items()}


def majors_allowed(requirement: Requirement) -> set[int]:
    """The CUDA majors the releases a requirement admits are built for."""
    name = requirement.name
    if name.startswith("tensorrt-cu"):
        return {int(name.removeprefix("tensorrt-cu"))}
    if name == "onnxruntime-gpu":
        return {major for version, major in ONNXRUNTIME_GPU_CUDA.items() if requirement.specifier.contains(version)}
    if name in ("cuda-python", "cuda-bindings"):
        return {int(v.split(".")[0]) for v in CUDA_BINDINGS if requirement.specifier.contains(v)}
    return set()


@pytest.mark.parametrize("major", sorted(STACKS))
def test_every_gpu_pin_of_an_extra_holds_the_one_cuda_major_of_that_extra(major):
    stack = STACKS[major]
    requirements = extras()[stack.extra]
    names = {requirement.name for requirement in requirements}
    assert {"onnxruntime-gpu", f"tensorrt-cu{major}", "cuda-python", "cuda-bindings"} <= names
    for requirement in requirements:
        if requirement.name != "polygraphy":  # pure Python
            assert majors_allowed(requirement) == {major}, str(requirement)
    (onnxruntime_gpu,) = [r for r in requirements if r.name == "onnxruntime-gpu"]
    assert onnxruntime_gpu.extras == {"cuda", "cudnn"}  # the CUDA and cuDNN wheels preload_dlls loads
    assert not any(onnxruntime_gpu.specifier.contains(v) for v in UNINSTALLABLE)
    assert onnxruntime_gpu == Requirement(stack.onnxruntime_gpu)  # the runtime's install advice is the extra's pin


def test_no_core_or_cpu_extra_asks_for_a_cuda_package():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    gpu_names = {"onnxruntime-gpu", "cuda-python", "cuda-bindings", "tensorrt", "tensorrt-cu12", "tensorrt-cu13"}
    cpu_sets = {"core": project["dependencies"]} | {
        name: lines for name, lines in project["optional-dependencies"].items() if name not in
        {stack.extra for stack in STACKS.values()}}
    for name, lines in cpu_sets.items():
        assert not {Requirement(line).name for line in lines} & gpu_names, name


# -- the driver ------------------------------------------------------------------------------------------------


def fake_libcuda(version: int | None):
    """A loader standing in for ctypes.CDLL: libcuda whose cuDriverGetVersion reports `version` (None: no driver)."""

    def load(name: str):
        assert name == "libcuda.so.1"
        if version is None:
            raise OSError("libcuda.so.1: cannot open shared object file")

        def cu_driver_get_version(pointer) -> int:
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_int)).contents.value = version
            return 0

        return SimpleNamespace(cuDriverGetVersion=cu_driver_get_version)

    return load


@pytest.mark.parametrize(("reported", "version", "extra"), [
    (13000, (13, 0), "cuda13"), (13020, (13, 2), "cuda13"), (12080, (12, 8), "cuda12"), (12040, (12, 4), "cuda12"),
    (11080, (11, 8), None)])
def test_the_driver_version_decides_the_extra(reported, version, extra):
    driver = cuda_stack.driver_cuda_version(fake_libcuda(reported))
    assert driver == version
    fit = cuda_stack.fitting_stack(driver)
    assert (fit.extra if fit else None) == extra
    advice = cuda_stack.driver_advice(driver)
    assert advice.startswith(f"the NVIDIA driver serves CUDA {version[0]}.{version[1]}")
    assert (f'pip install "deghost[{extra}]"' in advice) if extra else "update the driver to 525.60.13" in advice


def test_without_a_driver_there_is_no_version_and_the_probe_exits_3():
    assert cuda_stack.driver_cuda_version(fake_libcuda(None)) is None
    if cuda_stack.driver_cuda_version() is not None:
        pytest.skip("an NVIDIA driver is installed here")
    done = subprocess.run([sys.executable, "-m", "deghost.runtime.cuda_stack"], capture_output=True, text=True)
    assert done.returncode == cuda_stack.EXIT_NO_GPU == 3
    assert done.stdout.startswith("driver: no NVIDIA GPU driver here (libcuda.so.1 not found)")


# -- the installed packages ------------------------------------------------------------------------------------

# Requires-Dist of torch 2.13.0's manylinux_2_28_x86_64 wheel on PyPI (its METADATA, abridged to the CUDA lines).
TORCH_PYPI_REQUIRES = ['cuda-toolkit[cublas,cudart,cufft]==13.0.3; platform_system == "Linux"',
                       'cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"',
                       'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"', "filelock"]


@pytest.mark.parametrize(("name", "version", "requires", "major"), [
    ("torch", "2.13.0", TORCH_PYPI_REQUIRES, 13),
    ("torch", "2.13.0+cpu", ["filelock"], None),
    ("torch", "2.9.0+cu126", [], 12),
    ("onnxruntime-gpu", "1.26.0", [], 12),
    ("onnxruntime-gpu", "1.31.1", [], 13),
    ("tensorrt-cu12", "11.4.0.106", [], 12),
    ("tensorrt-cu13-libs", "10.16.1.11", [], 13),
    ("cuda-bindings", "13.5.0", [], 13),
    ("cuda-python", "12.9.10", [], 12),
    ("nvidia-cudnn-cu12", "9.20.0.48", [], 12),
])
def test_the_cuda_major_of_an_installed_package_is_read_from_its_name_version_or_requirements(
        name, version, requires, major):
    assert cuda_stack.cuda_major(name, version, requires) == major


def installed(**packages: tuple[str, list[str]]):
    """importlib.metadata.distribution as on a machine where only `packages` (name_with_underscores=(version,
    requires)) are installed."""
    from importlib.metadata import PackageNotFoundError

    def distribution(name: str):
        key = name.replace("-", "_")
        if key not in packages:
            raise PackageNotFoundError(name)
        version, requires = packages[key]
        return SimpleNamespace(version=version, requires=requires)

    return distribution


def test_a_cuda_12_tensorrt_beside_cuda_13_torch_and_onnxruntime_is_named_with_the_fix():
    majors = cuda_stack.installed_majors(installed(
        torch=("2.13.0", TORCH_PYPI_REQUIRES), onnxruntime_gpu=("1.31.1", []), tensorrt_cu12=("10.16.1.11", []),
        cuda_python=("12.6.2.post1", []), cuda_bindings=("13.5.0", [])))
    assert majors["tensorrt-cu12"] == ("10.16.1.11", 12) and majors["torch"] == ("2.13.0", 13)
    problem = cuda_stack.disagreement(majors, (13, 0))
    assert problem.startswith("the GPU packages are built for different CUDA versions (CUDA 12: tensorrt-cu12, "
                              "cuda-python; CUDA 13: torch, onnxruntime-gpu, cuda-bindings)")
    assert problem.endswith('pip install "deghost[cuda13]"')


def test_cuda_13_packages_on_a_cuda_12_driver_are_told_to_update_it_or_take_the_cuda12_extra():
    majors = cuda_stack.installed_majors(installed(onnxruntime_gpu=("1.31.1", []), cuda_bindings=("13.5.0", [])))
    problem = cuda_stack.disagreement(majors, (12, 8))
    assert "built for CUDA 13, the driver serves CUDA 12.8: update the driver to 580.65.06 or newer" in problem
    assert 'or install the cuda12 extra instead (pip install "deghost[cuda12]")' in problem
    assert cuda_stack.disagreement(majors, (13, 0)) is None
    lines = cuda_stack.report((13, 0), majors)
    assert lines[-1] == "verdict: the installed GPU packages and the driver agree"
    assert "  onnxruntime-gpu 1.31.1: CUDA 13" in lines

"""Which CUDA major version each GPU package here is built for, which one the driver serves, and the extra that fits.

Every GPU piece of deghost (onnxruntime-gpu, TensorRT, cuda-python, and PyTorch for training and export)
must be built for one CUDA major version, and the NVIDIA driver must serve it. PyPI serves two stacks
(read from each wheel's own metadata, docs/gpu.md has the table):

- CUDA 13 (driver 580 or newer): torch 2.13.0's Linux wheel, onnxruntime-gpu 1.27 and newer, tensorrt-cu13,
  cuda-python / cuda-bindings 13.x. The `cuda13` extra; the default.
- CUDA 12 (driver 525 to 579): onnxruntime-gpu 1.19 to 1.26, tensorrt-cu12, cuda-python / cuda-bindings 12.x.
  The `cuda12` extra.

`python -m deghost.runtime.cuda_stack` prints the driver's CUDA version, the extra that fits it and the CUDA
major of every GPU package installed; its exit status says whether they agree (EXIT_* below). Torch-free:
the driver is asked through libcuda itself (`cuDriverGetVersion`), which needs no CUDA package.
"""

from __future__ import annotations

import ctypes
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class CudaStack:
    """One CUDA major version's set of wheels, as the extra of that name in pyproject.toml pins them."""

    major: int
    extra: str
    min_driver: str  # the oldest Linux driver of the CUDA major (NVIDIA's CUDA toolkit release notes)
    onnxruntime_gpu: str  # the requirement that holds onnxruntime-gpu at this major (with its CUDA/cuDNN wheels)

    @property
    def install(self) -> str:
        return f'pip install "deghost[{self.extra}]"'

    @property
    def onnxruntime_gpu_install(self) -> str:
        """onnxruntime is a core dependency, so the extra installs onnxruntime-gpu beside it, and the two write the
        same `onnxruntime` module over each other: remove both, then install the GPU one alone."""
        return f'pip uninstall -y onnxruntime onnxruntime-gpu && pip install "{self.onnxruntime_gpu}"'


# onnxruntime-gpu 1.27 is a CUDA 13 build too, but its `cuda` extra asks for nvidia-cuda-runtime-cu13 ~= 13.0, which
# PyPI has no release of (only 0.0.x placeholders): 1.28 names the CUDA 13 wheels as NVIDIA publishes them.
# 1.21: the first whose `cuda`/`cudnn` extras bring the CUDA 12 libraries, and the first with preload_dlls().
STACKS = {
    13: CudaStack(13, "cuda13", "580.65.06", "onnxruntime-gpu[cuda,cudnn]>=1.28,<2"),
    12: CudaStack(12, "cuda12", "525.60.13", "onnxruntime-gpu[cuda,cudnn]>=1.21,<1.27"),
}
DEFAULT_MAJOR = 13  # what PyPI's torch 2.13.0 is built for, and the newest onnxruntime-gpu and TensorRT wheels
# onnxruntime-gpu's PyPI wheels: 1.17-1.18 CUDA 11.8, 1.19-1.26 CUDA 12, 1.27 on CUDA 13 (their METADATA).
ONNXRUNTIME_GPU_CUDA = ((1, 27, 13), (1, 19, 12), (0, 0, 11))

EXIT_AGREE, EXIT_DISAGREE, EXIT_NO_GPU = 0, 1, 3
NO_GPU = "no NVIDIA GPU driver here"


def stack(major: int | None = None) -> CudaStack:
    return STACKS[DEFAULT_MAJOR if major is None else major]


# -- the driver --------------------------------------------------------------------------------------------------


def driver_cuda_version(load: Callable[[str], object] = ctypes.CDLL) -> tuple[int, int] | None:
    """(major, minor) of the newest CUDA the installed NVIDIA driver serves, or None without a driver.

    cuDriverGetVersion (CUDA driver API, Version Management: 1000·major + 10·minor) asks the driver library
    alone, without cuInit or a device (its only documented error is a NULL pointer), so it answers before any
    CUDA package is installed."""
    try:
        libcuda = load("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return version.value // 1000, version.value % 1000 // 10


def fitting_stack(driver: tuple[int, int] | None) -> CudaStack | None:
    """The newest stack the driver serves (a driver serves its own CUDA major and older ones), or None."""
    if driver is None:
        return None
    usable = [major for major in STACKS if major <= driver[0]]
    return STACKS[max(usable)] if usable else None


def driver_advice(driver: tuple[int, int] | None) -> str:
    """One sentence: the driver's CUDA version and the extra to install for it."""
    if driver is None:
        return f"{NO_GPU} (libcuda.so.1 not found): nothing runs on a GPU on this machine"
    fit = fitting_stack(driver)
    served = f"the NVIDIA driver serves CUDA {driver[0]}.{driver[1]}"
    if fit is None:
        oldest = STACKS[min(STACKS)]
        return (f"{served}, older than any stack deghost installs: update the driver to {oldest.min_driver} or newer "
                f"(CUDA {oldest.major}), or {STACKS[DEFAULT_MAJOR].min_driver} or newer (CUDA {DEFAULT_MAJOR})")
    return f"{served}: install the {fit.extra} extra ({fit.install})"


# -- the installed packages --------------------------------------------------------------------------------------

_SUFFIX = re.compile(r"-cu(\d+)(?:-|$)")  # tensorrt-cu13, tensorrt-cu13-libs, nvidia-cudnn-cu12 ...
_BY_VERSION = ("cuda-python", "cuda-bindings", "cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cublas")
GPU_DISTRIBUTIONS = ("torch", "onnxruntime-gpu", "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu12-libs",
                     "tensorrt-cu13-libs", "tensorrt-cu12-bindings", "tensorrt-cu13-bindings", "cuda-python",
                     "cuda-bindings", "cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cuda-runtime-cu12",
                     "nvidia-cublas", "nvidia-cublas-cu12", "nvidia-cudnn-cu12", "nvidia-cudnn-cu13")


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def onnxruntime_gpu_major(version: str) -> int:
    """The CUDA major of PyPI's onnxruntime-gpu wheel of `version` (ONNXRUNTIME_GPU_CUDA)."""
    release = _release(version)
    return next(major for *first, major in ONNXRUNTIME_GPU_CUDA if release >= tuple(first))


def torch_major(version: str, requires: Iterable[str]) -> int | None:
    """CUDA major of a torch wheel: its local label (+cu130, +cpu), else the CUDA wheels it requires (PyPI's
    Linux wheels carry no label); None for a CPU build."""
    label = version.partition("+")[2]
    if label:
        return int(label[2:4]) if label.startswith("cu") and label[2:4].isdigit() else None
    for requirement in requires:
        name = re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0].lower()
        if match := _SUFFIX.search(name):
            return int(match.group(1))
        if name in ("cuda-toolkit", "cuda-bindings") and (found := re.search(r"[=>]=\s*(\d+)\.", requirement)):
            return int(found.group(1))
    return None


def cuda_major(name: str, version: str, requires: Iterable[str] = ()) -> int | None:
    """The CUDA major version distribution `name` (installed at `version`) is built for; None: no CUDA in it."""
    if match := _SUFFIX.search(name):
        return int(match.group(1))
    if name == "onnxruntime-gpu":
        return onnxruntime_gpu_major(version)
    if name == "torch":
        return torch_major(version, requires)
    if name in _BY_VERSION:
        return _release(version)[0]
    return None


def installed_majors(distribution: Callable[[str], metadata.Distribution] = metadata.distribution
                     ) -> dict[str, tuple[str, int | None]]:
    """{distribution: (version, CUDA major)} of the GPU packages installed here."""
    found = {}
    for name in GPU_DISTRIBUTIONS:
        try:
            dist = distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = dist.version, cuda_major(name, dist.version, dist.requires or ())
    return found


def disagreement(majors: dict[str, tuple[str, int | None]], driver: tuple[int, int] | None) -> str | None:
    """Why the installed GPU packages cannot work together on this driver (a sentence), or None."""
    by_major: dict[int, list[str]] = {}
    for name, (_, major) in majors.items():
        if major is not None:
            by_major.setdefault(major, []).append(name)
    if len(by_major) > 1:
        listed = "; ".join(f"CUDA {major}: {', '.join(names)}" for major, names in sorted(by_major.items()))
        fit = fitting_stack(driver) or stack()
        return (f"the GPU packages are built for different CUDA versions ({listed}); reinstall them from one extra: "
                f"{fit.install}")
    if by_major and driver is not None and max(by_major) > driver[0]:
        major, fit = max(by_major), fitting_stack(driver)
        instead = f", or install the {fit.extra} extra instead ({fit.install})" if fit else ""
        return (f"the GPU packages are built for CUDA {major}, the driver serves CUDA {driver[0]}.{driver[1]}: update "
                f"the driver to {STACKS[major].min_driver} or newer{instead}")
    return None


def report(driver: tuple[int, int] | None, majors: dict[str, tuple[str, int | None]]) -> list[str]:
    lines = [f"driver: {driver_advice(driver)}"]
    for name, (version, major) in majors.items():
        lines.append(f"  {name} {version}: " + (f"CUDA {major}" if major is not None else "no CUDA (CPU build)"))
    problem = disagreement(majors, driver)
    if driver is None:
        lines.append("verdict: no GPU here, nothing further to check")
    else:
        lines.append(f"verdict: {problem}" if problem else "verdict: the installed GPU packages and the driver agree")
    return lines


def add_gpu_command(subparsers) -> None:
    """`deghost gpu`: this module's report, from the command line."""
    parser = subparsers.add_parser(
        "gpu", help="which CUDA the NVIDIA driver serves, the extra that fits it, and the CUDA of each GPU package",
        description="Ask the NVIDIA driver (libcuda) which CUDA version it serves, name the deghost extra built for "
        f"it ({'; '.join(f'{s.extra}: driver {s.min_driver} or newer' for s in STACKS.values())}), and list the "
        "CUDA major version each installed GPU "
        f"package is built for. Exit status {EXIT_AGREE}: they agree; {EXIT_DISAGREE}: they do not (the fix is "
        f"printed); {EXIT_NO_GPU}: no NVIDIA driver here.")
    parser.set_defaults(run=lambda args: main())


def main() -> int:
    driver = driver_cuda_version()
    majors = installed_majors()
    print("\n".join(report(driver, majors)))
    if driver is None:
        return EXIT_NO_GPU
    return EXIT_DISAGREE if disagreement(majors, driver) else EXIT_AGREE


if __name__ == "__main__":
    sys.exit(main())

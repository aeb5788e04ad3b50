"""The one probe of this machine's CUDA GPU and TensorRT (torch-free), shared by the runtime and the build.

cuda-python's runtime bindings answer for the GPU: the TensorRT backend moves its buffers with them,
so a GPU they cannot reach is no GPU for deghost. Two ways they fail on a driver that is too old
for their CUDA major version: every call returns `cudaErrorInsufficientDriver`, or initialisation
raises `DynamicLibNotFoundError` (the driver library is missing). Both become `GPUUnavailable`
with a sentence naming the driver needed. The extras pin cuda-python to CUDA_MAJOR, the CUDA of
the TensorRT and onnxruntime-gpu wheels deghost installs.

Everything is probed once per process (and a TensorRT logger made once: TensorRT warns when a
process makes several). `tensorrt` and `cuda` are imported on first use only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

CUDA_MAJOR = 12  # of the tensorrt-cu12 and onnxruntime-gpu wheels; cuda-python is pinned to it
# The oldest Linux driver of each CUDA major version (NVIDIA's CUDA toolkit release notes).
MIN_DRIVER = {12: "525.60.13", 13: "580.65.06"}
MIN_TENSORRT_MAJOR = 10
TENSORRT_INSTALL = 'pip install "deghost[tensorrt]" on a machine with an NVIDIA GPU'
# The first onnxruntime-gpu whose PyPI wheels are CUDA 12 (and cuDNN 9) builds; 1.17 and 1.18 were CUDA 11.8 ones.
ONNXRUNTIME_GPU_MIN = "1.19"
# onnxruntime is a core dependency, so the gpu extra installs both packages, and they write the same
# `onnxruntime` module over each other: remove both, then install the GPU one alone.
ONNXRUNTIME_GPU_INSTALL = ('pip uninstall -y onnxruntime onnxruntime-gpu && '
                           f'pip install "onnxruntime-gpu>={ONNXRUNTIME_GPU_MIN}"')


class GPUUnavailable(RuntimeError):
    """No usable CUDA GPU, TensorRT or cuda-python here; the message says what is missing and the fix."""


@dataclass(frozen=True)
class Platform:
    """What a TensorRT plan is tied to: the TensorRT version and the GPU it was built on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"


@functools.lru_cache(maxsize=1)
def cudart():
    """cuda-python's runtime bindings; GPUUnavailable when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:  # cuda-python before 12.6 exposed the same API as cuda.cudart
            from cuda import cudart as runtime
        except ImportError as error:
            raise GPUUnavailable(
                f"cuda-python is not installed ({error}); {TENSORRT_INSTALL} (it brings cuda-python {CUDA_MAJOR}.x)"
            ) from None
    return runtime


def _bindings_major() -> int | None:
    """The CUDA major version of the installed cuda-python (for the message only)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return int(version(dist).split(".")[0])
        except (PackageNotFoundError, ValueError):
            continue
    return None


def driver_message(major: int | None, detail: str) -> str:
    """The sentence for a driver too old for (or missing under) cuda-python of CUDA `major`."""
    major = major or CUDA_MAJOR
    needed = MIN_DRIVER.get(major, f"one for CUDA {major}")
    pinned = "" if major == CUDA_MAJOR else (
        f"; or install cuda-python {CUDA_MAJOR}.x, which deghost's extras pin: "
        f"pip install \"cuda-python>={CUDA_MAJOR},<{CUDA_MAJOR + 1}\"")
    return (f"the NVIDIA driver cannot serve CUDA {major} ({detail}): cuda-python {major}.x needs an NVIDIA "
            f"driver {needed} or newer (nvidia-smi shows the installed one); update the driver{pinned}")


def check(result: tuple, what: str):
    """cuda-python returns (error, *values): raise GPUUnavailable on an error, else return the value(s)."""
    runtime = cudart()
    error, *values = result
    if error != runtime.cudaError_t.cudaSuccess:
        if error == runtime.cudaError_t.cudaErrorInsufficientDriver:
            raise GPUUnavailable(driver_message(_bindings_major(), f"{what}: cudaErrorInsufficientDriver"))
        _, message = runtime.cudaGetErrorString(error)
        text = message.decode() if isinstance(message, bytes) else str(message)
        raise GPUUnavailable(f"CUDA error in {what}: {text} ({getattr(error, 'name', error)})")
    return values[0] if len(values) == 1 else None


def call(function, *args, what: str):
    """`check(function(*args))`, with a missing driver library (raised, not returned) said as such."""
    try:
        result = function(*args)
    except Exception as error:  # cuda.pathfinder's DynamicLibNotFoundError, or a RuntimeError wrapping it
        if "DynamicLibNotFound" in type(error).__name__ or "libcuda" in str(error):
            raise GPUUnavailable(driver_message(_bindings_major(), f"{what}: {error}")) from error
        raise
    return check(result, what)


def release(pointers: Iterable[int], stream=None) -> str | None:
    """cudaFree every pointer, then destroy `stream` when one is given: all of them, even after a failure.
    Returns None, or the first failure as a sentence (CUDA reports an earlier asynchronous error, such as
    an illegal address in a kernel, at the next call: then every call here fails with it)."""
    runtime = cudart()
    calls = [(runtime.cudaFree, pointer, "cudaFree") for pointer in pointers]
    if stream is not None:
        calls.append((runtime.cudaStreamDestroy, stream, "cudaStreamDestroy"))
    failures = []
    for function, argument, what in calls:
        try:
            call(function, argument, what=what)
        except GPUUnavailable as error:
            failures.append(str(error))
    if not failures:
        return None
    return failures[0] + (f" (and {len(failures) - 1} more failed release(s))" if len(failures) > 1 else "")


@functools.lru_cache(maxsize=1)
def gpu_properties() -> tuple[str, str]:
    """(name, compute capability "major.minor") of the current CUDA device; GPUUnavailable says why not."""
    runtime = cudart()
    device = call(runtime.cudaGetDevice, what="cudaGetDevice")
    properties = call(runtime.cudaGetDeviceProperties, device, what="cudaGetDeviceProperties")
    raw = properties.name  # char[256]: the name ends at the first NUL
    name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return name, f"{properties.major}.{properties.minor}"


def gpu_unavailable() -> str | None:
    """Why no CUDA GPU can be used here (a sentence), or None when one can."""
    return _why_not(gpu_properties)


def _why_not(probe) -> str | None:
    try:
        probe()
    except GPUUnavailable as error:
        return str(error)
    return None


@functools.lru_cache(maxsize=1)
def tensorrt():
    """The tensorrt module, at least MIN_TENSORRT_MAJOR; GPUUnavailable when absent or too old."""
    try:
        import tensorrt as trt
    except ImportError as error:
        raise GPUUnavailable(
            f"the tensorrt package is not installed ({error}); {TENSORRT_INSTALL}") from None
    if int(trt.__version__.split(".")[0]) < MIN_TENSORRT_MAJOR:
        raise GPUUnavailable(f"TensorRT {trt.__version__} is too old; deghost needs TensorRT {MIN_TENSORRT_MAJOR} "
                             "or newer")
    return trt


@functools.lru_cache(maxsize=1)
def tensorrt_logger():
    """The process's one TensorRT logger (warnings and errors)."""
    trt = tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def platform() -> Platform:
    """TensorRT version and GPU of this machine; GPUUnavailable says what is missing."""
    trt = tensorrt()
    cudart()
    name, capability = gpu_properties()
    return Platform(trt.__version__, name, capability)


def tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot run here (a sentence), or None when it can."""
    return _why_not(platform)

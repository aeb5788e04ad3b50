"""The one probe of this machine's CUDA GPU and TensorRT (torch-free), shared by the runtime and the build.

cuda-python's runtime bindings answer for the GPU: the TensorRT backend moves its buffers with them,
so a GPU they cannot reach is no GPU for deghost. Two ways they fail on a driver that is too old
for their CUDA major version: every call returns `cudaErrorInsufficientDriver`, or initialisation
raises `DynamicLibNotFoundError` (the driver library is missing). Both become `GPUUnavailable`
with a sentence naming the driver needed and the extra that fits the driver (`cuda_stack`: each extra
holds cuda-python, TensorRT and onnxruntime-gpu at one CUDA major version). Any other failed CUDA call
is a `CudaError` naming the call.

Everything is probed once per process (and a TensorRT logger made once: TensorRT warns when a
process makes several). `tensorrt` and `cuda` are imported on first use only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from . import cuda_stack

MIN_TENSORRT_MAJOR = 10


@functools.lru_cache(maxsize=1)
def fitting_stack() -> cuda_stack.CudaStack:
    """The CUDA stack (extra) this machine's driver serves; the default one where there is no driver."""
    return cuda_stack.fitting_stack(cuda_stack.driver_cuda_version()) or cuda_stack.stack()


def gpu_install() -> str:
    """The install command of deghost's GPU packages for this machine's driver."""
    return f"{fitting_stack().install} on a machine with an NVIDIA GPU"


def onnxruntime_gpu_install() -> str:
    """Remove both ONNX Runtime packages, then install the onnxruntime-gpu of this driver's CUDA alone."""
    return fitting_stack().onnxruntime_gpu_install


class GPUUnavailable(RuntimeError):
    """No usable CUDA GPU, TensorRT or cuda-python here; the message says what is missing and the fix."""


class CudaError(RuntimeError):
    """A CUDA runtime call failed; `call` names it (with what it was doing), `code` is CUDA's error name."""

    def __init__(self, call: str, code: str, text: str):
        super().__init__(f"CUDA error in {call}: {text} ({code})")
        self.call, self.code = call, code


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
                f"cuda-python is not installed ({error}); {gpu_install()} (it brings cuda-python "
                f"{fitting_stack().major}.x)"
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
    major = major or fitting_stack().major
    needed = cuda_stack.STACKS[major].min_driver if major in cuda_stack.STACKS else f"one for CUDA {major}"
    return (f"the NVIDIA driver cannot serve CUDA {major} ({detail}): cuda-python {major}.x needs an NVIDIA "
            f"driver {needed} or newer (nvidia-smi shows the installed one); update the driver, or match the packages "
            f"to it: {cuda_stack.driver_advice(cuda_stack.driver_cuda_version())}")


def check(result: tuple, what: str):
    """cuda-python returns (error, *values): the value(s), or CudaError naming `what` (GPUUnavailable when the
    driver is too old for cuda-python's CUDA)."""
    runtime = cudart()
    error, *values = result
    if error != runtime.cudaError_t.cudaSuccess:
        if error == runtime.cudaError_t.cudaErrorInsufficientDriver:
            raise GPUUnavailable(driver_message(_bindings_major(), f"{what}: cudaErrorInsufficientDriver"))
        _, message = runtime.cudaGetErrorString(error)
        text = message.decode() if isinstance(message, bytes) else str(message)
        raise CudaError(what, str(getattr(error, "name", error)), text)
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
        except (CudaError, GPUUnavailable) as error:
            failures.append(str(error))
    if not failures:
        return None
    return failures[0] + (f" (and {len(failures) - 1} more failed release(s))" if len(failures) > 1 else "")


@functools.lru_cache(maxsize=1)
def gpu_properties() -> tuple[str, str]:
    """(name, compute capability "major.minor") of the current CUDA device; GPUUnavailable says why not."""
    runtime = cudart()
    try:
        device = call(runtime.cudaGetDevice, what="cudaGetDevice")
        properties = call(runtime.cudaGetDeviceProperties, device, what="cudaGetDeviceProperties")
    except CudaError as error:  # no device (cudaErrorNoDevice), or one CUDA cannot use: no GPU for deghost
        raise GPUUnavailable(str(error)) from error
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
            f"the tensorrt package is not installed ({error}); {gpu_install()}") from None
    if int(trt.__version__.split(".")[0]) < MIN_TENSORRT_MAJOR:
        raise GPUUnavailable(f"TensorRT {trt.__version__} is too old; deghost needs TensorRT {MIN_TENSORRT_MAJOR} "
                             "or newer")
    return trt


@functools.lru_cache(maxsize=1)
def tensorrt_logger():
    """The process's one TensorRT logger (warnings and errors)."""
    trt = tensorrt()
    return trt.Logger(trt.Logger.WARNING)


@functools.lru_cache(maxsize=1)
def tensorrt_runtime():
    """The process's one trt.Runtime: every engine deserialized by it, which it outlives."""
    trt = tensorrt()
    return trt.Runtime(tensorrt_logger())


def platform() -> Platform:
    """TensorRT version and GPU of this machine; GPUUnavailable says what is missing."""
    trt = tensorrt()
    cudart()
    name, capability = gpu_properties()
    return Platform(trt.__version__, name, capability)


def tensorrt_platform_missing() -> str | None:
    """Why this machine lacks what a TensorRT engine needs (TensorRT, cuda-python, a CUDA GPU), or None.
    Whether the runtime's TensorRT backend opens is `deghost.runtime.backends.tensorrt_backend_unavailable`."""
    return _why_not(platform)

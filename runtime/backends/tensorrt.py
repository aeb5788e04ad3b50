"""TensorRT backend: a deserialized plan per stage, on one CUDA stream, with device buffers reused.

TensorRT 10/11 API: tensors by name (`set_input_shape`, `set_tensor_address`, `execute_async_v3`).
Device memory comes from cuda-python's runtime bindings (`cudaMalloc`, `cudaMemcpyAsync`, ...),
allocated once per tensor at the profile's largest shape and reused for every batch. All stages share
one stream, so a stage's output can feed the next stage where it lies (a DeviceTensor) with no
host round trip; `run` synchronizes before it returns, which keeps per-stage timings honest.

`tensorrt` and `cuda` are imported on first use, so this module (and `engine_mismatch`, a pure
function) loads on machines without them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from deghost.manifest import Artifact, Manifest, build_command

from .. import gpu_platform
from ..gpu_platform import GPUUnavailable, Platform
from . import BackendError, DeviceTensor, Feed, ManifestNames, check_feeds, host_feed

log = logging.getLogger("deghost.runtime")


def engine_mismatch(artifact: Artifact, running: Platform, folder: str = "engines") -> str | None:
    """Why the engine `artifact` must not run on the `running` platform, or None when it may.

    A plan only deserializes under the TensorRT version that built it, and its kernels are chosen
    for one GPU: a different compute capability cannot run them, and another GPU model of the same
    capability runs them with tactics tuned for the wrong chip. The answer ends with the command
    that rebuilds the engine here.
    """
    problems = []
    if artifact.tensorrt_version != running.tensorrt_version:
        problems.append(f"TensorRT {artifact.tensorrt_version} (running: {running.tensorrt_version})")
    if artifact.compute_capability != running.compute_capability:
        problems.append(f"compute capability {artifact.compute_capability} (running: {running.compute_capability})")
    if _gpu_key(artifact.gpu_name) != _gpu_key(running.gpu_name):
        problems.append(f"GPU {artifact.gpu_name!r} (running: {running.gpu_name!r})")
    if not problems:
        return None
    return (
        f"engine {artifact.file} ({artifact.stage}, {artifact.precision}) was built for " + ", ".join(problems)
        + f"; rebuild it on this machine: {build_command(folder, [artifact.stage], artifact.precision)}"
    )


def _gpu_key(name: str | None) -> str:
    return " ".join((name or "").lower().split())


def tensor_dtype(trt, engine, name: str) -> np.dtype:
    """The numpy dtype of the engine's input or output tensor `name`."""
    return np.dtype(trt.nptype(engine.get_tensor_dtype(name)))


def as_engine_input(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A host feed as the engine reads it: C-contiguous, in the input tensor's dtype (copied only when it must be).
    The engine reads raw bytes: a float32 feed of a float16 input, uncast, would be read as other numbers."""
    return np.ascontiguousarray(array, dtype=dtype)


def _libraries():
    """(tensorrt, cudart), imported once; GPUUnavailable when either is missing."""
    return gpu_platform.tensorrt(), gpu_platform.cudart()


def unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    reason = gpu_platform.tensorrt_unavailable()
    if reason is not None:
        return reason
    try:
        _shared()
    except BackendError as error:
        return str(error)
    return None


def _check(result: tuple, what: str):
    """cuda-python returns (error, *values): raise BackendError on an error, else return the value(s)."""
    try:
        return gpu_platform.check(result, what)
    except GPUUnavailable as error:
        raise BackendError(str(error)) from None


@dataclass
class _Shared:
    runtime: object  # trt.Runtime
    stream: object  # cudaStream_t, the one stream of every stage
    platform: Platform


@functools.lru_cache(maxsize=1)
def _shared() -> _Shared:
    trt, cudart = _libraries()
    try:
        platform = gpu_platform.platform()
        stream = gpu_platform.call(cudart.cudaStreamCreate, what="cudaStreamCreate")
    except GPUUnavailable as error:
        raise BackendError(f"no usable CUDA GPU: {error}") from error
    return _Shared(trt.Runtime(gpu_platform.tensorrt_logger()), stream, platform)


class TensorRTBackend(ManifestNames):
    """One stage's TensorRT plan (see `deghost.runtime.backends.Backend`)."""

    kind = "tensorrt"
    device = "cuda"
    concurrent = False  # one execution context and its buffers: the Pipeline serialises runs

    def __init__(self, manifest: Manifest, artifact: Artifact):
        trt, cudart = _libraries()
        shared = _shared()
        mismatch = engine_mismatch(artifact, shared.platform, str(manifest.folder))
        if mismatch:
            raise BackendError(mismatch)
        path = manifest.verify(artifact)
        self.stage, self.artifact, self.runs_in, self.why = artifact.stage, artifact, artifact.precision, ""
        self._stream = shared.stream
        self.engine = shared.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"{self.stage}: TensorRT could not deserialize {path} (see the TensorRT log above); rebuild it: "
                f"{build_command(manifest.folder, [self.stage])}"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{self.stage}: TensorRT could not create an execution context for {path} "
                               "(out of GPU memory? see the TensorRT log above)")
        missing = [name for name in self.input_names + self.output_names if name not in self._engine_tensors()]
        if missing:
            raise BackendError(f"{self.stage}: engine {path} has no tensors {missing}; rebuild it: "
                               f"{build_command(manifest.folder, [self.stage])}")
        self.dtypes = {name: tensor_dtype(trt, self.engine, name) for name in self.input_names + self.output_names}
        # Output shapes at the profile's largest inputs size the output buffers once for all batches.
        for name in self.input_names:
            self._set_input_shape(name, self.engine.get_tensor_profile_shape(name, 0)[2])
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_names[0], 0)[2][0])
        self._buffers: dict[str, int] = {}
        try:
            self._allocate(cudart)
        except BackendError:
            gpu_platform.release(self._buffers.values())  # the allocation's own error is the one to report
            raise

    def _allocate(self, cudart) -> None:
        """One device buffer per tensor, at its shape under the profile's largest inputs (set above)."""
        for name in self.input_names + self.output_names:
            shape = self.context.get_tensor_shape(name)
            nbytes = int(np.prod(tuple(shape), dtype=np.int64)) * self.dtypes[name].itemsize
            self._buffers[name] = _check(cudart.cudaMalloc(max(nbytes, 1)), f"cudaMalloc for {self.stage}.{name}")
            self.context.set_tensor_address(name, self._buffers[name])

    def _set_input_shape(self, name: str, shape) -> None:
        if not self.context.set_input_shape(name, tuple(shape)):
            raise BackendError(f"{self.stage}: the engine refuses shape {tuple(shape)} for '{name}' (outside its "
                               "optimisation profile?); rebuild it with a --batch range that covers it")

    def _engine_tensors(self) -> set[str]:
        return {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}

    def run(self, feeds: dict[str, Feed], keep: Collection[str] = ()) -> dict[str, np.ndarray | DeviceTensor]:
        _, cudart = _libraries()
        check_feeds(self.artifact, feeds, self.max_batch)
        staged = []  # host arrays must outlive their asynchronous copies
        for info in self.artifact.inputs:
            value = feeds[info.name]
            self._set_input_shape(info.name, value.view_shape if isinstance(value, DeviceTensor) else value.shape)
            if isinstance(value, DeviceTensor) and np.dtype(value.dtype) == self.dtypes[info.name]:
                self._copy_rows(value, self._buffers[info.name])
            else:
                array = as_engine_input(host_feed(value, info), self.dtypes[info.name])
                staged.append(array)
                _check(cudart.cudaMemcpyAsync(self._buffers[info.name], array.ctypes.data, array.nbytes,
                                              cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream),
                       f"upload of {self.stage}.{info.name}")
        if not self.context.execute_async_v3(int(self._stream)):
            raise BackendError(f"{self.stage}: TensorRT execution failed (see the TensorRT log above)")
        results = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if name in keep:
                results[name] = DeviceTensor(self._buffers[name], shape, self.dtypes[name],
                                             functools.partial(self._download, name, shape), owner=self)
            else:
                results[name] = self._download(name, shape, synchronize=False)
        _check(cudart.cudaStreamSynchronize(self._stream), f"{self.stage} run")
        return results

    def _copy_rows(self, tensor: DeviceTensor, destination: int) -> None:
        """Gather the tensor's rows into `destination`, one device-to-device copy per run of rows."""
        _, cudart = _libraries()
        offset = 0
        for first, count in tensor.row_runs():
            nbytes = count * tensor.row_bytes
            _check(cudart.cudaMemcpyAsync(destination + offset, tensor.pointer + first * tensor.row_bytes, nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self._stream),
                   f"device copy into {self.stage}")
            offset += nbytes

    def _download(self, name: str, shape: tuple[int, ...], synchronize: bool = True) -> np.ndarray:
        _, cudart = _libraries()
        array = np.empty(shape, self.dtypes[name])
        _check(cudart.cudaMemcpyAsync(array.ctypes.data, self._buffers[name], array.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream),
               f"download of {self.stage}.{name}")
        if synchronize:
            _check(cudart.cudaStreamSynchronize(self._stream), f"download of {self.stage}.{name}")
        return array

    def close(self) -> None:
        """Free this stage's buffers (outputs kept as DeviceTensors die with them). The stream is every
        stage's (`_shared`), so it stays; CUDA releases it when the process ends."""
        failure = gpu_platform.release(self._buffers.values())
        self._buffers = {}
        self.context = self.engine = None
        if failure:
            raise BackendError(f"{self.stage}: freeing the engine's GPU buffers failed: {failure}")

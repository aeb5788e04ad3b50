"""The one way deghost runs a TensorRT plan: load → activate → infer → deactivate (TensorRT 10/11, cuda-python).

The build's validation (export/tensorrt.py), the runtime's TensorRTBackend, the benchmarks (through the
backend) and comparisons with ONNX Runtime all run engines through `TensorRTRunner`, so what is validated
is what serves. The lifecycle follows Polygraphy's runners (activate / infer / deactivate):

- load (the constructor): deserialize the plan and read its I/O tensors, dtypes and profile 0.
- `activate(stream=None)`: an execution context, a CUDA stream (its own, or one shared with other
  engines) and one device buffer per I/O tensor at the profile's largest shapes, reused for every batch.
- `infer(feeds, keep=())`: checks every input against the engine (names, rank, the profile's bounds,
  floating vs integer, one batch), casts host feeds to the engine's dtypes, uploads, runs
  `execute_async_v3`, downloads and synchronizes. A `DeviceTensor` feed is copied device to device; an
  output named in `keep` stays on the GPU as a DeviceTensor (valid until the next `infer`).
- `deactivate()`: frees the buffers and its own stream and drops the context; every release is tried
  even after a failure. `with runner:` activates and deactivates.

Every failure is an `EngineRunError` (a BackendError) whose `call` names what failed: a CUDA call (with
CUDA's error), a TensorRT call that returned None/False, or `infer` refusing a feed.
TensorRT and cuda-python are imported on first use (deghost.runtime.gpu_platform).
"""

from __future__ import annotations

import functools
from collections.abc import Collection

import numpy as np

from .. import gpu_platform
from ..gpu_platform import CudaError, GPUUnavailable
from . import BackendError, DeviceTensor, Feed


class EngineRunError(BackendError):
    """A TensorRT engine that could not load, run or release; `call` names the call that failed."""

    def __init__(self, engine: str, call: str, detail: str):
        super().__init__(f"{engine}: {detail}")
        self.call, self.detail = call, detail


class TensorRTRunner:
    """One deserialized TensorRT plan and, while active, its context, stream and device buffers."""

    def __init__(self, plan: bytes, name: str = "engine"):
        trt = gpu_platform.tensorrt()
        self.name = name
        self.engine = gpu_platform.tensorrt_runtime().deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineRunError(name, "deserialize_cuda_engine", "TensorRT could not deserialize the plan "
                                 "(deserialize_cuda_engine returned None; see the TensorRT log above): built by "
                                 "another TensorRT version, or damaged")
        names = [self.engine.get_tensor_name(index) for index in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        # (min, opt, max) shapes of optimisation profile 0, the one deghost builds
        self.profile = {n: tuple(tuple(int(size) for size in shape) for shape in
                                 self.engine.get_tensor_profile_shape(n, 0)) for n in self.input_names}
        self.max_batch = self.profile[self.input_names[0]][2][0] if self.input_names else None
        self.context = None
        self._buffers: dict[str, int] = {}
        self._stream, self._own_stream = None, False

    # -- lifecycle ------------------------------------------------------------------------------------------------

    @property
    def is_active(self) -> bool:
        return self.context is not None

    def activate(self, stream=None) -> TensorRTRunner:
        """Context, stream and buffers; `stream`: a cudaStream_t shared with other engines (not destroyed here)."""
        if self.is_active:
            return self
        cudart = gpu_platform.cudart()
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineRunError(self.name, "create_execution_context", "TensorRT could not create an execution "
                                 "context (create_execution_context returned None: out of GPU memory? see the "
                                 "TensorRT log above)")
        try:
            if stream is None:
                self._stream, self._own_stream = self._cuda(cudart.cudaStreamCreate, what="cudaStreamCreate"), True
            else:
                self._stream = stream
            for name in self.input_names:  # the largest inputs size every buffer once for all batches
                self._set_input_shape(name, self.profile[name][2])
            for name in self.input_names + self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtypes[name].itemsize
                self._buffers[name] = self._cuda(cudart.cudaMalloc, max(nbytes, 1), what=f"cudaMalloc for {name}")
                self.context.set_tensor_address(name, self._buffers[name])
        except EngineRunError:
            self._release()  # the activation's own error is the one to report
            raise
        return self

    def deactivate(self) -> None:
        """Free the buffers (outputs kept as DeviceTensors die with them), the runner's own stream, the context."""
        failure = self._release()
        if failure:
            raise EngineRunError(self.name, "cudaFree", f"releasing the engine's GPU memory failed: {failure}")

    def _release(self) -> str | None:
        failure = None
        if self._buffers or self._own_stream:
            failure = gpu_platform.release(self._buffers.values(), self._stream if self._own_stream else None)
        self._buffers, self._stream, self._own_stream, self.context = {}, None, False, None
        return failure

    def __enter__(self) -> TensorRTRunner:
        return self.activate()

    def __exit__(self, kind, error, traceback) -> None:
        failure = self._release()
        if failure and error is None:  # a failed run reports its own error, the release's is secondary
            raise EngineRunError(self.name, "cudaFree", f"the engine ran, but releasing its GPU memory failed: "
                                 f"{failure}")

    # -- inference ------------------------------------------------------------------------------------------------

    def check_feeds(self, feeds: dict[str, Feed]) -> None:
        """EngineRunError unless `feeds` are exactly the engine's inputs, each of a shape its profile allows."""
        missing, unknown = sorted(set(self.input_names) - set(feeds)), sorted(set(feeds) - set(self.input_names))
        if missing or unknown:
            raise EngineRunError(self.name, "infer", f"feeds {sorted(feeds)} do not match the engine's inputs "
                                 f"{sorted(self.input_names)}")
        batches = set()
        for name in self.input_names:
            value = feeds[name]
            shape = tuple(value.view_shape if isinstance(value, DeviceTensor) else np.shape(value))
            low, _, high = self.profile[name]
            inside = len(shape) == len(high) and all(a <= s <= b for s, a, b in zip(shape, low, high, strict=True))
            if not inside:
                raise EngineRunError(self.name, "infer", f"input '{name}' has shape {shape}; the engine's profile "
                                     f"allows {low} to {high}")
            if (np.dtype(value.dtype).kind == "f") != (self.dtypes[name].kind == "f"):
                raise EngineRunError(self.name, "infer", f"input '{name}' is {np.dtype(value.dtype)}; the engine "
                                     f"reads {self.dtypes[name]}")
            batches.add(shape[0] if shape else None)
        if len(batches) > 1:
            raise EngineRunError(self.name, "infer", f"the inputs have different batch sizes {sorted(batches)}")

    def infer(self, feeds: dict[str, Feed], keep: Collection[str] = ()) -> dict[str, np.ndarray | DeviceTensor]:
        """Run once; outputs as numpy arrays, those named in `keep` as DeviceTensors (see the module docstring)."""
        if not self.is_active:
            raise EngineRunError(self.name, "infer", "the runner is not active: activate() it first (or use it in a "
                                 "with block)")
        cudart = gpu_platform.cudart()
        self.check_feeds(feeds)
        staged = []  # host arrays must outlive their asynchronous copies
        for name in self.input_names:
            value = feeds[name]
            self._set_input_shape(name, value.view_shape if isinstance(value, DeviceTensor) else np.shape(value))
            if isinstance(value, DeviceTensor) and np.dtype(value.dtype) == self.dtypes[name]:
                self._copy_rows(value, self._buffers[name])
                continue
            array = as_engine_input(value.numpy() if isinstance(value, DeviceTensor) else value, self.dtypes[name])
            staged.append(array)
            self._cuda(cudart.cudaMemcpyAsync, self._buffers[name], array.ctypes.data, array.nbytes,
                       cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream, what=f"upload of {name}")
        if not self.context.execute_async_v3(int(self._stream)):
            raise EngineRunError(self.name, "execute_async_v3", "TensorRT could not run the engine "
                                 "(execute_async_v3 returned False; see the TensorRT log above)")
        results = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if name in keep:
                results[name] = DeviceTensor(self._buffers[name], shape, self.dtypes[name],
                                             functools.partial(self._download, name, shape), owner=self)
            else:
                results[name] = self._download(name, shape, synchronize=False)
        self._cuda(cudart.cudaStreamSynchronize, self._stream, what="cudaStreamSynchronize")
        return results

    def _set_input_shape(self, name: str, shape) -> None:
        if not self.context.set_input_shape(name, tuple(shape)):
            raise EngineRunError(self.name, "set_input_shape", f"the engine refuses shape {tuple(shape)} for "
                                 f"'{name}' (set_input_shape returned False: outside its optimisation profile)")

    def _copy_rows(self, tensor: DeviceTensor, destination: int) -> None:
        """Gather the tensor's rows into `destination`, one device-to-device copy per run of rows."""
        cudart = gpu_platform.cudart()
        offset = 0
        for first, count in tensor.row_runs():
            nbytes = count * tensor.row_bytes
            self._cuda(cudart.cudaMemcpyAsync, destination + offset, tensor.pointer + first * tensor.row_bytes,
                       nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self._stream,
                       what="device-to-device copy of a kept tensor")
            offset += nbytes

    def _download(self, name: str, shape: tuple[int, ...], synchronize: bool = True) -> np.ndarray:
        cudart = gpu_platform.cudart()
        array = np.empty(shape, self.dtypes[name])
        self._cuda(cudart.cudaMemcpyAsync, array.ctypes.data, self._buffers[name], array.nbytes,
                   cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream, what=f"download of {name}")
        if synchronize:
            self._cuda(cudart.cudaStreamSynchronize, self._stream, what=f"download of {name}")
        return array

    def _cuda(self, function, *args, what: str):
        """A cuda-python call; any CUDA failure becomes an EngineRunError naming `what`."""
        try:
            return gpu_platform.call(function, *args, what=what)
        except (CudaError, GPUUnavailable) as error:
            raise EngineRunError(self.name, what, str(error)) from error


def as_engine_input(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A host feed as the engine reads it: C-contiguous, in the input tensor's dtype (copied only when it must be).
    The engine reads raw bytes: a float32 feed of a float16 input, uncast, would be read as other numbers."""
    return np.ascontiguousarray(array, dtype=dtype)

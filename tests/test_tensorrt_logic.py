"""Our decisions around TensorRT and cuda-python, checked on the CPU with small stand-ins for their API.

Nothing here builds or runs an engine: the stand-ins have only the attributes our code reads (layer
names and output dtypes, a builder config's timing-cache calls, cuda-python's error codes), so the
tests check which layers we pin, what we do with a foreign timing cache and what we say about an old
driver. The real builds are in test_tensorrt_build.py (marked tensorrt).
"""

from __future__ import annotations

import ctypes
import re
import sys
from enum import Enum
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deghost.export.tensorrt import TensorRTError, check_islands_found, pin_float_layers, run_engine, use_timing_cache
from deghost.runtime import gpu_platform
from deghost.runtime.backends import BackendError
from deghost.runtime.backends.tensorrt import TensorRTBackend
from deghost.runtime.gpu_platform import GPUUnavailable

REPO = Path(__file__).resolve().parents[1]
FAKE_TRT = SimpleNamespace(float32="f32", float16="f16", bfloat16="bf16", int32="i32", int64="i64", bool="b")


class FakeLayer:
    def __init__(self, name: str, *output_dtypes: str):
        self.name, self.precision, self.set_types = name, None, {}
        self._outputs = [SimpleNamespace(dtype=dtype) for dtype in output_dtypes]

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int):
        return self._outputs[index]

    def set_output_type(self, index: int, dtype) -> None:
        self.set_types[index] = dtype


class FakeNetwork:
    def __init__(self, *layers: FakeLayer):
        self.layers = layers
        self.num_layers = len(layers)

    def get_layer(self, index: int) -> FakeLayer:
        return self.layers[index]


def test_only_island_layers_whose_outputs_are_all_float_are_pinned_to_fp32():
    layers = {
        "demod_mul": FakeLayer("demod_mul", "f16"),
        "attention_softmax": FakeLayer("attention_softmax", "f32"),
        "shape_of_w": FakeLayer("shape_of_w", "i64"),  # Shape: integer output
        "gather_dims": FakeLayer("gather_dims", "i32"),  # Gather of shape values
        "argmax_labels": FakeLayer("argmax_labels", "i64"),  # ArgMax: float input, integer output
        "topk": FakeLayer("topk", "f16", "i32"),  # values and indices
        "conv_outside": FakeLayer("conv_outside", "f16"),  # float, but not an island
    }
    islands = set(layers) - {"conv_outside"}
    pinned = pin_float_layers(FakeNetwork(*layers.values()), islands, FAKE_TRT)
    assert pinned == ["demod_mul", "attention_softmax"]
    for name in pinned:
        assert layers[name].precision == "f32" and layers[name].set_types == {0: "f32"}
    for name in ("shape_of_w", "gather_dims", "argmax_labels", "topk", "conv_outside"):
        assert layers[name].precision is None and layers[name].set_types == {}


def test_a_stage_with_fp32_islands_none_of_which_the_network_has_is_refused():
    network = FakeNetwork(FakeLayer("/conv/Conv", "f16"), FakeLayer("/PAM/Softmax", "f16"))
    check_islands_found("suppressor", {"/PAM/Softmax", "/PAM/MatMul"}, network)  # found: pinned, no error
    check_islands_found("encoder", set(), network)  # nothing to keep in FP32
    with pytest.raises(TensorRTError, match=r"suppressor: none of the 2 nodes .*\(leave out --fp16-builder-flag\)"):
        check_islands_found("suppressor", {"PAM.softmax", "PAM.matmul"}, network)  # renamed by the parser


class FakeConfig:
    """A builder config whose TensorRT accepts only caches it wrote itself (prefix b"v10")."""

    def __init__(self, refuse_by: str = "raise"):
        self.refuse_by, self.installed = refuse_by, []

    def create_timing_cache(self, data: bytes):
        if data and not data.startswith(b"v10"):
            if self.refuse_by == "raise":
                raise RuntimeError("timing cache version mismatch")
            if self.refuse_by == "none":
                return None
        return SimpleNamespace(data=bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        if cache.data and not cache.data.startswith(b"v10"):
            return False  # refuse_by == "false"
        self.installed.append(cache.data)
        return True


@pytest.mark.parametrize("refuse_by", ["raise", "none", "false"])
def test_a_timing_cache_from_another_tensorrt_version_is_dropped_with_a_warning(tmp_path, refuse_by):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"v8-cache-entries")
    config, logged = FakeConfig(refuse_by), []
    use_timing_cache(config, path, logged.append)
    assert config.installed == [b""]  # a new, empty cache
    assert len(logged) == 1 and logged[0].startswith("warning: timing cache") and "dropped" in logged[0]


def test_a_timing_cache_of_this_version_is_used_and_none_is_started_quietly(tmp_path):
    path = tmp_path / "timing.cache"
    config, logged = FakeConfig(), []
    use_timing_cache(config, path, logged.append)  # no file yet
    path.write_bytes(b"v10-entries")
    use_timing_cache(config, path, logged.append)
    assert config.installed == [b"", b"v10-entries"] and logged == []


class FakeError(Enum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


FAKE_CUDART = SimpleNamespace(cudaError_t=FakeError,
                              cudaGetErrorString=lambda error: (FakeError.cudaSuccess, error.name.encode()))


@pytest.fixture
def fake_cudart(monkeypatch):
    monkeypatch.setattr(gpu_platform, "cudart", lambda: FAKE_CUDART)


@pytest.mark.parametrize(("major", "driver"), [(12, "525.60.13"), (13, "580.65.06")])
def test_an_insufficient_driver_names_the_driver_that_cuda_python_needs(fake_cudart, monkeypatch, major, driver):
    # The minimum Linux drivers of CUDA 12.0 and 13.0, from NVIDIA's CUDA toolkit release notes.
    monkeypatch.setattr(gpu_platform, "_bindings_major", lambda: major)
    with pytest.raises(GPUUnavailable) as refused:
        gpu_platform.check((FakeError.cudaErrorInsufficientDriver, None), "cudaGetDevice")
    message = str(refused.value)
    assert f"cuda-python {major}.x needs an NVIDIA driver {driver} or newer" in message
    assert "cudaErrorInsufficientDriver" in message
    assert ('pip install "cuda-python>=12,<13"' in message) == (major == 13)  # back to the pinned major


def test_a_missing_driver_library_raised_from_cuinit_is_the_same_driver_message(fake_cudart, monkeypatch):
    monkeypatch.setattr(gpu_platform, "_bindings_major", lambda: 13)

    class DynamicLibNotFoundError(RuntimeError):  # cuda.pathfinder's class, by name
        pass

    def cuda_get_device():
        raise DynamicLibNotFoundError("Failure finding libcuda.so.1")

    wanted = r"libcuda.so.1\): cuda-python 13.x needs an NVIDIA driver 580\.65\.06 or newer"
    with pytest.raises(GPUUnavailable, match=wanted):
        gpu_platform.call(cuda_get_device, what="cudaGetDevice")


def test_other_cuda_errors_say_which_call_failed(fake_cudart):
    with pytest.raises(GPUUnavailable, match=r"CUDA error in cudaGetDevice: cudaErrorNoDevice"):
        gpu_platform.check((FakeError.cudaErrorNoDevice, None), "cudaGetDevice")
    assert gpu_platform.check((FakeError.cudaSuccess, 7), "cudaGetDevice") == 7


def test_both_cuda_extras_pin_cuda_python_to_the_cuda_major_of_the_tensorrt_and_onnxruntime_wheels():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("gpu", "tensorrt"):
        (pin,) = [req for req in extras[extra] if req.startswith("cuda-python")]
        assert pin == "cuda-python>=12.0,<13", extra
    assert "tensorrt-cu12>=10.0" in extras["tensorrt"]  # the TensorRT wheel built for CUDA 12
    assert gpu_platform.CUDA_MAJOR == 12


def test_one_tensorrt_logger_per_process_made_only_by_the_platform_module():
    made_here = [path.relative_to(REPO) for folder in ("deghost", "export", "runtime", "training")
                 for path in (REPO / folder).rglob("*.py") if re.search(r"\bLogger\(", path.read_text())]
    assert made_here == [Path("runtime/gpu_platform.py")]


def test_without_tensorrt_the_probe_says_what_to_install():
    if "tensorrt" in sys.modules or gpu_platform.tensorrt_unavailable() is None:
        pytest.skip("TensorRT loads here")
    assert 'pip install "deghost[tensorrt]"' in gpu_platform.tensorrt_unavailable()


@pytest.mark.gpu
def test_the_gpu_probe_names_the_device_and_its_compute_capability():
    reason = gpu_platform.gpu_unavailable()
    if reason is not None and "not installed" in reason:
        pytest.skip(reason)  # a GPU seen by PyTorch alone: the probe needs cuda-python
    name, capability = gpu_platform.gpu_properties()
    assert re.fullmatch(r"\d+\.\d+", capability) and name.strip() == name and name
    torch = pytest.importorskip("torch") if "torch" in sys.modules else None
    if torch is not None:
        if torch.cuda.is_available():  # an independent reading of the same device
            assert name == torch.cuda.get_device_name(0)
            assert capability == "{}.{}".format(*torch.cuda.get_device_capability(0))


# -- run_engine and buffer release, on a stand-in GPU whose device memory is host memory ----------------


class FakeDevice:
    """cuda-python's runtime calls on host memory: cudaMalloc hands out numpy buffers, copies are memmove.
    `failing` names calls that return cudaErrorNoDevice (as CUDA's sticky errors make every call fail)."""

    cudaError_t = FakeError
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, failing: tuple[str, ...] = ()):
        self.memory: dict[int, np.ndarray] = {}
        self.freed, self.destroyed, self.failing = [], [], failing

    def _result(self, call: str, *values):
        return (FakeError.cudaErrorNoDevice if call in self.failing else FakeError.cudaSuccess, *values)

    def cudaGetErrorString(self, error):
        return FakeError.cudaSuccess, error.name.encode()

    def cudaStreamCreate(self):
        return self._result("cudaStreamCreate", 7)

    def cudaMalloc(self, nbytes: int):
        buffer = np.zeros(nbytes, np.uint8)
        self.memory[buffer.ctypes.data] = buffer
        return self._result("cudaMalloc", buffer.ctypes.data)

    def cudaMemcpyAsync(self, destination: int, source: int, nbytes: int, kind, stream):
        ctypes.memmove(destination, source, nbytes)
        return self._result("cudaMemcpyAsync")

    def cudaStreamSynchronize(self, stream):
        return self._result("cudaStreamSynchronize")

    def cudaFree(self, pointer: int):
        self.freed.append(pointer)
        return self._result("cudaFree")

    def cudaStreamDestroy(self, stream):
        self.destroyed.append(stream)
        return self._result("cudaStreamDestroy")


def host_view(pointer: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * count).from_address(pointer), dtype).reshape(shape)


class DoublingEngine:
    """An FP16 engine: input "x" float16 [B,3], output "y" float32 [B,3] = 2·x, read from device addresses."""

    num_io_tensors = 2
    dtypes = {"x": np.float16, "y": np.float32}

    def __init__(self, runs: bool = True):
        self.runs, self.shapes, self.addresses = runs, {}, {}

    def get_tensor_name(self, index: int) -> str:
        return "xy"[index]

    def get_tensor_mode(self, name: str) -> str:
        return "output" if name == "y" else "input"

    def get_tensor_dtype(self, name: str):
        return self.dtypes[name]

    def create_execution_context(self):
        return self

    def set_input_shape(self, name: str, shape) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes["x"]

    def set_tensor_address(self, name: str, pointer: int) -> None:
        self.addresses[name] = pointer

    def execute_async_v3(self, stream: int) -> bool:
        x = host_view(self.addresses["x"], self.shapes["x"], np.float16)
        host_view(self.addresses["y"], self.shapes["x"], np.float32)[:] = 2 * x.astype(np.float32)
        return self.runs


@pytest.fixture
def fake_gpu(monkeypatch):
    """run_engine's TensorRT and cuda-python, stood in for: returns (the device, the engine) it will use."""
    device, engine = FakeDevice(), DoublingEngine()
    trt = SimpleNamespace(TensorIOMode=SimpleNamespace(OUTPUT="output"), nptype=lambda dtype: dtype,
                          Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda plan: engine))
    monkeypatch.setattr(gpu_platform, "tensorrt", lambda: trt)
    monkeypatch.setattr(gpu_platform, "tensorrt_logger", lambda: None)
    monkeypatch.setattr(gpu_platform, "cudart", lambda: device)
    return device, engine


def test_run_engine_feeds_each_input_in_the_engines_dtype_and_releases_every_buffer_and_its_stream(fake_gpu):
    device, _ = fake_gpu
    x = np.arange(6, dtype=np.float64).reshape(2, 3) / 4  # float64 in; exact in float16
    outputs = run_engine(b"plan", {"x": x})
    np.testing.assert_array_equal(outputs["y"], 2 * x)
    assert outputs["y"].dtype == np.float32
    assert sorted(device.freed) == sorted(device.memory) and len(device.freed) == 2
    assert device.destroyed == [7]


def test_a_failed_release_after_a_good_run_is_an_error_naming_the_call(fake_gpu):
    device, _ = fake_gpu
    device.failing = ("cudaFree",)
    wanted = r"releasing its GPU memory failed: CUDA error in cudaFree: .* \(and 1 more failed release\(s\)\)$"
    with pytest.raises(TensorRTError, match=wanted):
        run_engine(b"plan", {"x": np.ones((1, 3), np.float16)})
    assert len(device.freed) == 2 and device.destroyed == [7]  # every release was tried


def test_a_failed_run_reports_its_own_error_and_still_releases_everything(fake_gpu):
    device, engine = fake_gpu
    engine.runs, device.failing = False, ("cudaFree", "cudaStreamDestroy")
    with pytest.raises(TensorRTError, match="execute_async_v3 returned False"):
        run_engine(b"plan", {"x": np.ones((1, 3), np.float16)})
    assert len(device.freed) == 2 and device.destroyed == [7]


def test_closing_a_backend_frees_its_buffers_and_reports_a_failed_free(monkeypatch):
    device = FakeDevice(failing=("cudaFree",))
    monkeypatch.setattr(gpu_platform, "cudart", lambda: device)
    backend = TensorRTBackend.__new__(TensorRTBackend)  # what __init__ leaves, without a GPU
    backend.stage, backend._buffers = "suppressor", {"image": 0x1000, "output": 0x2000}
    with pytest.raises(BackendError, match="suppressor: freeing the engine's GPU buffers failed: CUDA error in cudaF"):
        backend.close()
    assert device.freed == [0x1000, 0x2000] and device.destroyed == []  # the shared stream stays
    assert backend._buffers == {}
    backend.close()  # twice: nothing left to free
    assert device.freed == [0x1000, 0x2000]

"""Our decisions around TensorRT and cuda-python, checked on the CPU with small stand-ins for their API.

Nothing here builds or runs an engine: the stand-ins have only the attributes our code reads (layer
names and output dtypes, a builder config's timing-cache calls, cuda-python's error codes), so the
tests check which layers we pin, what we do with a foreign timing cache and what we say about an old
driver. The real builds are in test_tensorrt_build.py (marked tensorrt).
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import sys
from enum import Enum
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deghost.export.layer_names import layer_nodes, node_of_name
from deghost.export.tensorrt import TensorRTError, pin_fp32_islands, run_engine, use_timing_cache
from deghost.runtime import cuda_stack, gpu_platform
from deghost.runtime.backends import BackendError
from deghost.runtime.backends.tensorrt_runner import EngineRunError, TensorRTRunner
from deghost.runtime.gpu_platform import CudaError, GPUUnavailable

REPO = Path(__file__).resolve().parents[1]
FAKE_TRT = SimpleNamespace(float32="f32", float16="f16", bfloat16="bf16", int32="i32", int64="i64", bool="b")


class FakeLayer:
    def __init__(self, name: str, *output_dtypes: str, metadata: str = ""):
        self.name, self.precision, self.set_types, self.metadata = name, None, {}, metadata
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


# Layer names as onnx-tensorrt gives them (ImporterContext::registerLayer / generateUniqueName): a node's first
# layer is named after the node, its further layers `<node>_<n>` with n from one counter shared by the whole
# parse, helpers `ONNXTRT_<what>` (added while their node is imported, before its own layer); newer parsers
# also put the node's name in the layer's metadata.
PARSED = [
    FakeLayer("ONNXTRT_Broadcast", "f16"),  # broadcasts an input of /PAM/Mul
    FakeLayer("/PAM/Mul", "f16"),
    FakeLayer("/PAM/Softmax", "f16"),
    FakeLayer("/PAM/Softmax_17", "f16"),  # the softmax node's second layer
    FakeLayer("/PAM/Shape", "i64"),  # an island node whose only layer is integer
    FakeLayer("ONNXTRT_unsqueezeTensor_40", "f16", metadata="/PAM/MatMul"),
    FakeLayer("/PAM/MatMul", "f16"),
    FakeLayer("/PAM/MatMul_23", "f16", "i32"),  # values and indices: not all float
    FakeLayer("ONNXTRT_ShapeSlice_31", "f16"),  # a helper of /conv/Conv (the next node), outside the islands
    FakeLayer("/conv/Conv", "f16"),
    FakeLayer("/conv/Conv_1", "f16"),  # a node of its own (PyTorch's exporter numbers repeated ops so)
    FakeLayer("/conv/Conv_2", "f16"),  # /conv/Conv's second layer: no node is called so
]
NODES = {"/PAM/Mul", "/PAM/Softmax", "/PAM/Shape", "/PAM/MatMul", "/conv/Conv", "/conv/Conv_1"}
ISLANDS = {"/PAM/Mul", "/PAM/Softmax", "/PAM/Shape", "/PAM/MatMul"}


def test_every_layer_is_traced_to_the_node_it_was_made_for():
    names = [layer.name for layer in PARSED]
    owners = layer_nodes(names, NODES, [layer.metadata for layer in PARSED])
    assert dict(zip(names, owners, strict=True)) == {
        "ONNXTRT_Broadcast": "/PAM/Mul", "/PAM/Mul": "/PAM/Mul", "/PAM/Softmax": "/PAM/Softmax",
        "/PAM/Softmax_17": "/PAM/Softmax", "/PAM/Shape": "/PAM/Shape", "ONNXTRT_unsqueezeTensor_40": "/PAM/MatMul",
        "/PAM/MatMul": "/PAM/MatMul", "/PAM/MatMul_23": "/PAM/MatMul", "ONNXTRT_ShapeSlice_31": "/conv/Conv",
        "/conv/Conv": "/conv/Conv", "/conv/Conv_1": "/conv/Conv_1", "/conv/Conv_2": "/conv/Conv"}
    assert node_of_name("/a/Conv_1_5", {"/a/Conv", "/a/Conv_1"}) == "/a/Conv_1"  # the longest node name wins
    assert node_of_name("/b/Relu_3", {"/a/Conv"}) is None


def test_every_float_layer_of_an_island_node_is_pinned_and_counted_per_island():
    layers = [FakeLayer(layer.name, *(o.dtype for o in layer._outputs), metadata=layer.metadata) for layer in PARSED]
    pinned = pin_fp32_islands("suppressor", FakeNetwork(*layers), ISLANDS, NODES, FAKE_TRT)
    # Mul: its broadcast helper and itself; Softmax: both layers; MatMul: the helper named in metadata and its
    # first layer (the second has an integer output); Shape: integer only, nothing to pin.
    assert pinned == {"/PAM/Mul": 2, "/PAM/Softmax": 2, "/PAM/MatMul": 2, "/PAM/Shape": 0}
    by_name = {layer.name: layer for layer in layers}
    for name in ("ONNXTRT_Broadcast", "/PAM/Mul", "/PAM/Softmax", "/PAM/Softmax_17", "ONNXTRT_unsqueezeTensor_40",
                 "/PAM/MatMul"):
        assert by_name[name].precision == "f32" and by_name[name].set_types == {0: "f32"}, name
    for name in ("/PAM/Shape", "/PAM/MatMul_23", "ONNXTRT_ShapeSlice_31", "/conv/Conv", "/conv/Conv_1",
                 "/conv/Conv_2"):
        assert by_name[name].precision is None and by_name[name].set_types == {}, name


def test_an_island_node_that_became_no_layer_is_refused():
    network = FakeNetwork(FakeLayer("/conv/Conv", "f16"), FakeLayer("/PAM/Softmax", "f16"))
    assert pin_fp32_islands("encoder", network, set(), {"/conv/Conv"}, FAKE_TRT) == {}  # nothing to keep in FP32
    wanted = (r"suppressor: 2 of the 3 nodes export/fp16.py keeps in FP32 match no layer of the TensorRT network "
              r"\(first: PAM.matmul, PAM.softmax\).*\(leave out --fp16-builder-flag\)")
    with pytest.raises(TensorRTError, match=wanted):  # named otherwise by the parser
        pin_fp32_islands("suppressor", network, {"/PAM/Softmax", "PAM.softmax", "PAM.matmul"},
                         {"/conv/Conv", "/PAM/Softmax", "PAM.softmax", "PAM.matmul"}, FAKE_TRT)


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
    assert message.endswith(cuda_stack.driver_advice(cuda_stack.driver_cuda_version()))  # the extra for this driver


def test_a_missing_driver_library_raised_from_cuinit_is_the_same_driver_message(fake_cudart, monkeypatch):
    monkeypatch.setattr(gpu_platform, "_bindings_major", lambda: 13)

    class DynamicLibNotFoundError(RuntimeError):  # cuda.pathfinder's class, by name
        pass

    def cuda_get_device():
        raise DynamicLibNotFoundError("Failure finding libcuda.so.1")

    wanted = r"libcuda.so.1\): cuda-python 13.x needs an NVIDIA driver 580\.65\.06 or newer"
    with pytest.raises(GPUUnavailable, match=wanted):
        gpu_platform.call(cuda_get_device, what="cudaGetDevice")


def test_other_cuda_errors_are_one_exception_type_naming_the_call(fake_cudart):
    with pytest.raises(CudaError, match=r"CUDA error in cudaGetDevice: cudaErrorNoDevice") as failed:
        gpu_platform.check((FakeError.cudaErrorNoDevice, None), "cudaGetDevice")
    assert (failed.value.call, failed.value.code) == ("cudaGetDevice", "cudaErrorNoDevice")
    assert gpu_platform.check((FakeError.cudaSuccess, 7), "cudaGetDevice") == 7


def test_one_tensorrt_logger_per_process_made_only_by_the_platform_module():
    made_here = [path.relative_to(REPO) for folder in ("deghost", "export", "runtime", "training")
                 for path in (REPO / folder).rglob("*.py") if re.search(r"\bLogger\(", path.read_text())]
    assert made_here == [Path("runtime/gpu_platform.py")]


def test_without_tensorrt_the_probe_says_which_extra_to_install():
    if "tensorrt" in sys.modules or gpu_platform.tensorrt_platform_missing() is None:
        pytest.skip("TensorRT loads here")
    assert f'pip install "deghost[{gpu_platform.fitting_stack().extra}]"' in gpu_platform.tensorrt_platform_missing()


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


# -- the TensorRT runner, on a stand-in GPU whose device memory is host memory ------------------------------


class FakeDevice:
    """cuda-python's runtime calls on host memory: cudaMalloc hands out numpy buffers, copies are memmove.
    `failing` names calls that return cudaErrorNoDevice (as CUDA's sticky errors make every call fail)."""

    cudaError_t = FakeError
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)

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
        if "cudaMemcpyAsync" not in self.failing:
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
    """A stand-in FP16 engine and its context: input "x" float16 [B,3] with B in 1..4 (profile 0), output "y"
    float32 [B,3] = 2·x, read from and written to the device addresses it was given."""

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

    def get_tensor_profile_shape(self, name: str, profile: int):
        return (1, 3), (2, 3), (4, 3)

    def create_execution_context(self):
        return self

    def set_input_shape(self, name: str, shape) -> bool:
        self.shapes[name] = tuple(shape)
        return 1 <= shape[0] <= 4

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
    """The runner's TensorRT and cuda-python, stood in for: returns (the device, the engine) it will use."""
    device, engine = FakeDevice(), DoublingEngine()
    trt = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="input", OUTPUT="output"), nptype=lambda dtype: dtype)
    monkeypatch.setattr(gpu_platform, "tensorrt", lambda: trt)
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda plan: engine)
    monkeypatch.setattr(gpu_platform, "tensorrt_runtime", lambda: runtime)
    monkeypatch.setattr(gpu_platform, "cudart", lambda: device)
    return device, engine


def test_the_runner_loads_activates_infers_and_deactivates_releasing_everything(fake_gpu):
    device, _ = fake_gpu
    runner = TensorRTRunner(b"plan", "doubler")
    assert (runner.input_names, runner.output_names, runner.max_batch) == (["x"], ["y"], 4)
    assert not runner.is_active and device.memory == {}  # loading touches no device memory
    runner.activate()
    assert len(device.memory) == 2 and all(buffer.nbytes in (4 * 3 * 2, 4 * 3 * 4) for buffer in device.memory.values())
    for batch in (2, 4, 1):  # every batch the profile allows, in the buffers sized once for the largest
        x = np.arange(3 * batch, dtype=np.float64).reshape(batch, 3) / 4  # float64 in; exact in float16
        y = runner.infer({"x": x})["y"]
        np.testing.assert_array_equal(y, 2 * x)
        assert y.dtype == np.float32
    kept = runner.infer({"x": np.ones((2, 3), np.float16)}, keep={"y"})["y"]
    np.testing.assert_array_equal(kept.numpy(), np.full((2, 3), 2, np.float32))  # a DeviceTensor, on the "GPU"
    runner.deactivate()
    assert sorted(device.freed) == sorted(device.memory) and device.destroyed == [7]  # its own stream
    assert not runner.is_active
    with pytest.raises(EngineRunError, match="doubler: the runner is not active: activate") as refused:
        runner.infer({"x": np.ones((1, 3))})
    assert refused.value.call == "infer"


def test_a_runner_on_a_shared_stream_leaves_the_stream_to_its_owner(fake_gpu):
    device, _ = fake_gpu
    runner = TensorRTRunner(b"plan").activate(stream=99)
    runner.deactivate()
    assert len(device.freed) == 2 and device.destroyed == []


@pytest.mark.parametrize(("feeds", "problem"), [
    ({"x": np.ones((5, 3), np.float16)}, r"input 'x' has shape \(5, 3\); the engine's profile allows \(1, 3\) to "
                                          r"\(4, 3\)"),
    ({"x": np.ones((2, 4), np.float16)}, r"input 'x' has shape \(2, 4\)"),
    ({"x": np.ones((2, 3), np.int64)}, r"input 'x' is int64; the engine reads float16"),
    ({"image": np.ones((2, 3), np.float16)}, r"feeds \['image'\] do not match the engine's inputs \['x'\]"),
])
def test_the_runner_checks_every_feed_against_the_engine_before_anything_runs(fake_gpu, feeds, problem):
    device, engine = fake_gpu
    with TensorRTRunner(b"plan", "doubler") as runner:
        with pytest.raises(EngineRunError, match=f"^doubler: {problem}") as refused:
            runner.infer(feeds)
    assert refused.value.call == "infer" and "y" not in engine.shapes


def test_a_failed_cuda_call_is_an_engine_run_error_naming_the_call_and_everything_is_still_released(fake_gpu):
    device, _ = fake_gpu
    device.failing = ("cudaMemcpyAsync", "cudaFree")
    with pytest.raises(EngineRunError, match=r"^doubler: CUDA error in upload of x: cudaErrorNoDevice") as failed:
        with TensorRTRunner(b"plan", "doubler") as runner:
            runner.infer({"x": np.ones((1, 3), np.float16)})
    assert failed.value.call == "upload of x" and isinstance(failed.value, BackendError)
    assert len(device.freed) == 2 and device.destroyed == [7]  # the failed frees did not stop the others


def test_a_failed_release_after_a_good_run_is_an_error_naming_the_call(fake_gpu):
    device, _ = fake_gpu
    device.failing = ("cudaFree",)
    wanted = r"releasing its GPU memory failed: CUDA error in cudaFree: .* \(and 1 more failed release\(s\)\)$"
    with pytest.raises(EngineRunError, match=wanted):
        run_engine(b"plan", {"x": np.ones((1, 3), np.float16)})
    assert len(device.freed) == 2 and device.destroyed == [7]  # every release was tried


def test_a_failed_run_reports_its_own_error_and_still_releases_everything(fake_gpu):
    device, engine = fake_gpu
    engine.runs, device.failing = False, ("cudaFree", "cudaStreamDestroy")
    with pytest.raises(EngineRunError, match="execute_async_v3 returned False") as failed:
        run_engine(b"plan", {"x": np.ones((1, 3), np.float16)})
    assert failed.value.call == "execute_async_v3"
    assert len(device.freed) == 2 and device.destroyed == [7]


def test_the_builds_validation_runs_the_engine_through_the_runtimes_runner(fake_gpu):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(run_engine(b"plan", {"x": x})["y"], 2 * x)
    assert "TensorRTRunner(plan" in (REPO / "export" / "tensorrt.py").read_text()
    assert "TensorRTRunner(path.read_bytes()" in (REPO / "runtime" / "backends" / "tensorrt.py").read_text()


def test_the_runtime_backend_serves_through_the_runner_on_the_shared_stream(fake_gpu, tmp_path, monkeypatch):
    """TensorRTBackend over the stand-in GPU: the manifest's checks, then the same runner the build validates with;
    a stage's kept output feeds the next run on the device; closing frees the buffers, not the shared stream."""
    from deghost.manifest import Artifact, Manifest, TensorInfo
    from deghost.runtime.backends import tensorrt as trt_backend
    from deghost.runtime.gpu_platform import Platform

    device, _ = fake_gpu
    here = Platform("10.16.1", "NVIDIA H100 80GB HBM3", "9.0")
    monkeypatch.setattr(trt_backend, "_shared", lambda: trt_backend._Shared(stream=5, platform=here))
    plan = tmp_path / "doubler.fp16.plan"
    plan.write_bytes(b"plan")
    artifact = Artifact(stage="doubler", kind="tensorrt", precision="fp16", file=plan.name,
                        sha256=hashlib.sha256(b"plan").hexdigest(), inputs=[TensorInfo("x", ["B", 3], "float16")],
                        outputs=[TensorInfo("y", ["B", 3], "float32")], source="stand-in", preset="tiny",
                        tensorrt_version=here.tensorrt_version, gpu_name=here.gpu_name,
                        compute_capability=here.compute_capability)
    backend = trt_backend.TensorRTBackend(Manifest(tmp_path, [artifact]), artifact)
    assert backend.max_batch == 4 and backend.runner.is_active
    x = np.array([[0.5, 1, 2], [3, 4, 5]], np.float16)
    kept = backend.run({"x": x}, keep={"y"})["y"]
    np.testing.assert_array_equal(kept.numpy(), 2 * x.astype(np.float32))
    with pytest.raises(BackendError, match=r"^doubler: batch 5 is larger than the engine's profile allows \(4\)"):
        backend.run({"x": np.ones((5, 3), np.float32)})
    device.failing = ("cudaFree",)
    wanted = r"^doubler: releasing the engine's GPU memory failed: CUDA error in cudaFree"
    with pytest.raises(EngineRunError, match=wanted):
        backend.close()
    assert len(device.freed) == 2 and device.destroyed == []  # the shared stream stays

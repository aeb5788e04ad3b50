"""ONNX Runtime on CUDA: the CUDA and cuDNN libraries made findable, and whether a session really runs on CUDA.

- onnxruntime-gpu's CUDA provider opens libcudart, libcublas(Lt), libcufft, libcurand and libcudnn* by name.
  Installed from pip (`onnxruntime-gpu[cuda,cudnn]`, or a CUDA torch's wheels) they lie under
  site-packages/nvidia/, where the dynamic loader does not look. `onnxruntime.preload_dlls()` (onnxruntime
  1.21 and newer) loads them from there by full path; the provider then finds them by name. Under pytest
  a CUDA torch imported first did this and hid the gap; from the command line nothing did.
- preload_dlls prints what it could not load instead of raising: that output is captured, logged, and
  quoted when the provider then fails.
- `get_available_providers()` lists CUDAExecutionProvider for every GPU build, whether its libraries load
  or not; only a session opened on it, through its `get_providers()`, tells.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging

import onnxruntime as ort

log = logging.getLogger("deghost.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@functools.cache
def load_cuda_libraries() -> str:
    """Load the pip-installed CUDA/cuDNN libraries of this onnxruntime-gpu, once per process; returns what
    preload_dlls reported (empty when all loaded), or why it could not run."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return (f"onnxruntime {ort.__version__} has no preload_dlls (1.21 and newer have it): the CUDA and cuDNN "
                "libraries must be on the loader's path (LD_LIBRARY_PATH)")
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            preload()
    except (OSError, RuntimeError) as error:  # RuntimeError: a directory that does not exist
        said.write(f"preload_dlls failed: {error}")
    text = " ".join(said.getvalue().split())
    if text:
        log.info("onnxruntime.preload_dlls: %s", text)
    return text


def probe_model() -> bytes:
    """A one-node graph (Relu on float32 [1,4]) to open a session on, serialised."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "cuda_probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # read by every onnxruntime deghost supports
    return model.SerializeToString()


def session_providers() -> list[str]:
    """The providers a real session asked for CUDA (then the CPU) came up with."""
    load_cuda_libraries()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the fallback is reported by the caller, with its cause
    return ort.InferenceSession(probe_model(), options, providers=[CUDA, CPU]).get_providers()


def cuda_unavailable() -> str | None:
    """Why ONNX Runtime does not run on CUDA here (a sentence), or None when a real session does."""
    listed = CUDA in ort.get_available_providers()
    if listed and CUDA in session_providers():
        return None
    if not listed:
        return f"onnxruntime {ort.__version__} here is a CPU build (no CUDAExecutionProvider)"
    preload = load_cuda_libraries()
    return (f"onnxruntime {ort.__version__} lists CUDAExecutionProvider, but a session asked for it ran on the CPU "
            "(the provider's libraries did not load" + (f"; preload_dlls said: {preload}" if preload else "") + ")")

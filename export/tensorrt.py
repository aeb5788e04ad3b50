"""ONNX → TensorRT plan (TensorRT ≥ 10), validated against ONNX Runtime before it is written.

- Default: a strongly typed network (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`) from the FP16
  ONNX, so the FP32 islands chosen in `export/fp16.py` are kept exactly. TensorRT 11 is always
  strongly typed and has no FP16 builder flag.
- TensorRT 10 alternative (`fp16-builder-flag`): the FP32 ONNX with `BuilderFlag.FP16`; the same
  islands are pinned to FP32 by layer precision constraints.
- One optimisation profile over the batch (min, opt, max), a workspace limit, and a timing cache
  file shared by all builds in the output folder (later builds reuse the kernels' timings).
- The plan is written as TensorRT serialised it, with nothing prepended, so `trtexec
  --loadEngine` and Polygraphy load it; written via temp file + rename.

`tensorrt` is imported only inside these functions: the rest of deghost works without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deghost.files import atomic_write_bytes
from deghost.stages import Stage

from .fp16 import FP16_BOUNDS, check_finite
from .onnx_export import (
    ParityError,
    compare,
    example_inputs,
    onnxruntime_session,
    read_metadata,
    run_onnxruntime,
    worst,
)

STRONGLY_TYPED = "strongly-typed"
FP16_BUILDER_FLAG = "fp16-builder-flag"


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing: engines cannot be built here."""


class TensorRTError(RuntimeError):
    """TensorRT could not parse, build or run a graph."""


@dataclass(frozen=True)
class Environment:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"


def _gpu_properties() -> tuple[str, str]:
    """(GPU name, compute capability) of device 0: cuda-python if installed, else PyTorch's CUDA."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        cudart = None
    if cudart is not None:
        error, props = cudart.cudaGetDeviceProperties(0)
        if error != cudart.cudaError_t.cudaSuccess:
            raise TensorRTUnavailable(f"no usable CUDA GPU (cudaGetDeviceProperties: {error.name})")
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return name, f"{props.major}.{props.minor}"
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU visible (neither cuda-python nor PyTorch's CUDA finds one)")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def environment_info() -> Environment:
    """TensorRT version and GPU of this machine; TensorRTUnavailable says what is missing."""
    try:
        import tensorrt as trt
    except ImportError as error:
        raise TensorRTUnavailable(f"the tensorrt package is not installed ({error})") from error
    if int(trt.__version__.split(".")[0]) < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old; deghost needs TensorRT 10 or newer")
    name, capability = _gpu_properties()
    return Environment(trt.__version__, name, capability)


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _parse(builder, onnx_path: Path, network_mode: str, logger):
    import tensorrt as trt

    flags = 0
    if network_mode == STRONGLY_TYPED:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the path: external weights resolve beside it
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {onnx_path}:\n  {errors}")
    return network, parser  # the parser owns weights the network refers to: keep it alive


def _pin_fp32_islands(network, onnx_path: Path, stage: str) -> int:
    """FP16 builder-flag path: keep the layers that `export/fp16.py` keeps in FP32 in FP32 here too."""
    import onnx
    import tensorrt as trt

    from deghost.presets import get_preset

    from .fp16 import fp32_island_names

    image_size = get_preset(read_metadata(onnx_path).get("deghost.preset", "ffhq1024")).image_size
    islands = fp32_island_names(onnx.load(str(onnx_path)), stage, image_size)
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.name in islands:
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                if layer.get_output(output).dtype == trt.float32:
                    layer.set_output_type(output, trt.float32)
            pinned += 1
    return pinned


def _timing_cache(config, path: Path, log) -> None:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log(f"timing cache {path} was made for another GPU or TensorRT version; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def build_engine(onnx_path: Path, stage: Stage, target: Path, batch: tuple[int, int, int], network_mode: str,
                 workspace_gb: float, timing_cache: Path, reference_onnx: Path | None = None,
                 log=print) -> dict:
    """Build, validate and write the plan of `onnx_path` at `target`; returns the validation record.

    The engine is run at the profile's min and max batch and compared with ONNX Runtime on the FP32
    graph (`reference_onnx`, default `onnx_path`), within `FP16_BOUNDS` (FP32 engines use TF32).
    """
    import tensorrt as trt

    if network_mode == FP16_BUILDER_FLAG and not hasattr(trt.BuilderFlag, "FP16"):
        raise TensorRTError(f"TensorRT {trt.__version__} has no FP16 builder flag: build strongly typed from the "
                            "FP16 ONNX instead (leave out --fp16-builder-flag)")
    logger = _logger()
    builder = trt.Builder(logger)
    network, _parser = _parse(builder, onnx_path, network_mode, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if network_mode == FP16_BUILDER_FLAG:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32_islands(network, onnx_path, stage.name)
    profile = builder.create_optimization_profile()
    for spec in stage.inputs:
        profile.set_shape(spec.name, *(spec.concrete_shape(b) for b in batch))
    config.add_optimization_profile(profile)
    _timing_cache(config, timing_cache, log)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"TensorRT could not build {stage.name} from {onnx_path}; see its messages above. "
                            "Try a larger --workspace-gb or --precision fp32.")
    plan = bytes(memoryview(plan))
    atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    validation = validate_engine(plan, stage, reference_onnx or onnx_path, (batch[0], batch[2]))
    validation["network"] = network_mode
    if network_mode == FP16_BUILDER_FLAG:
        validation["fp32_layers"] = pinned  # 0 would mean the ONNX parser renamed the layers
    atomic_write_bytes(target, plan)
    return validation


def run_engine(plan: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a serialised engine once (PyTorch CUDA buffers, one stream); outputs as numpy arrays."""
    import tensorrt as trt
    import torch

    engine = trt.Runtime(_logger()).deserialize_cuda_engine(plan)
    if engine is None:
        raise TensorRTError("TensorRT could not deserialise the plan it just built")
    context = engine.create_execution_context()
    buffers = {}
    for name, array in feeds.items():
        buffers[name] = torch.from_numpy(np.ascontiguousarray(array)).cuda()
        context.set_input_shape(name, array.shape)
        context.set_tensor_address(name, buffers[name].data_ptr())
    outputs = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            buffers[name] = torch.from_numpy(np.empty(tuple(context.get_tensor_shape(name)), dtype)).cuda()
            context.set_tensor_address(name, buffers[name].data_ptr())
            outputs.append(name)
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise TensorRTError("TensorRT failed to run the engine (execute_async_v3 returned False)")
    stream.synchronize()
    return {name: buffers[name].cpu().numpy() for name in outputs}


def validate_engine(plan: bytes, stage: Stage, reference_onnx: Path, batches: Sequence[int]) -> dict:
    """Compare the engine with ONNX Runtime (CPU, FP32 graph) at `batches`; refuse NaN/Inf and excess error."""
    bound = FP16_BOUNDS[stage.name]
    feeds = example_inputs(stage, max(batches), seed=1)
    session = onnxruntime_session(reference_onnx)
    per_batch = {}
    for batch in sorted(set(batches)):
        head = {name: value[:batch] for name, value in feeds.items()}
        outputs = run_engine(plan, head)
        check_finite(stage.name, outputs)
        per_batch[str(batch)] = compare(stage, run_onnxruntime(session, head), outputs)
    measured = max(worst(errors) for errors in per_batch.values())
    if not measured <= bound:
        raise ParityError(f"{stage.name}: the TensorRT engine differs from ONNX Runtime by {measured:.3g} "
                          f"(bound {bound:g}); it is not written")
    return {"reference": "onnxruntime cpu fp32", "runtime": "tensorrt", "batches": sorted(set(batches)),
            "errors": per_batch, "worst": measured, "bound": bound}

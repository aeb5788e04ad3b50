"""ONNX → TensorRT plan (TensorRT ≥ 10), validated against ONNX Runtime before it is written.

- Default: a strongly typed network (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`) from the FP16
  ONNX, so the FP32 islands chosen in `export/fp16.py` are kept exactly. TensorRT 11 is always
  strongly typed and has no FP16 builder flag.
- TensorRT 10 alternative (`fp16-builder-flag`): the FP32 ONNX with `BuilderFlag.FP16`; the same
  islands are pinned to FP32 by layer precision constraints (matched by node name: a network in which
  none of them is found is refused, and the record counts the layers pinned).
- FP32 stays FP32: TensorRT computes FP32 layers in TF32 by default; the TF32 flag is cleared, so
  the FP32 islands (attention, demodulation) and FP32 engines get IEEE FP32 matrix maths.
- One optimisation profile over the batch (min, opt, max), a workspace limit, and a timing cache
  file shared by all builds in the output folder (later builds reuse the kernels' timings; a cache
  another TensorRT version or GPU wrote is dropped with a warning and a new one started).
- Validation runs the plan with cuda-python (the GPU probe of `deghost.runtime.gpu_platform`),
  never with PyTorch's CUDA, so a CPU-only PyTorch is no obstacle; the GPU is checked before building.
- The plan is written as TensorRT serialised it, with nothing prepended, so `trtexec
  --loadEngine` and Polygraphy load it; written via temp file + rename.

`tensorrt` and `cuda` are imported only inside these functions: the rest of deghost works without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deghost.files import atomic_write_bytes
from deghost.runtime import gpu_platform
from deghost.runtime.backends.tensorrt import as_engine_input, tensor_dtype
from deghost.runtime.gpu_platform import GPUUnavailable, Platform
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


TensorRTUnavailable = GPUUnavailable  # TensorRT, cuda-python or a CUDA GPU is missing: no engines here


class TensorRTError(RuntimeError):
    """TensorRT could not parse, build or run a graph."""


FLOAT_TYPES = ("float32", "float16", "bfloat16")  # trt.DataType names of the tensors precision can pin


def environment_info() -> Platform:
    """TensorRT version and GPU of this machine; TensorRTUnavailable (GPUUnavailable) says what is missing."""
    return gpu_platform.platform()


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


def _pin_fp32_islands(network, onnx_path: Path, stage: str) -> tuple[list[str], set[str]]:
    """FP16 builder-flag path: keep the layers that `export/fp16.py` keeps in FP32 in FP32 here too.
    Returns (the layers pinned, the island node names)."""
    import onnx

    from deghost.presets import get_preset

    from .fp16 import fp32_island_names

    image_size = get_preset(read_metadata(onnx_path).get("deghost.preset", "ffhq1024")).image_size
    islands = fp32_island_names(onnx.load(str(onnx_path)), stage, image_size)
    check_islands_found(stage, islands, network)
    return pin_float_layers(network, islands, gpu_platform.tensorrt()), islands


def check_islands_found(stage: str, islands: set[str], network) -> None:
    """TensorRTError when the stage has FP32 islands but none of them is a layer of `network`.

    Layers are matched to ONNX nodes by name; a parser that named them otherwise would leave every
    island to the FP16 builder flag, and the FP32 the graph needs would silently be lost.
    """
    layers = {network.get_layer(index).name for index in range(network.num_layers)}
    if islands and not islands & layers:
        raise TensorRTError(
            f"{stage}: none of the {len(islands)} nodes export/fp16.py keeps in FP32 is a layer of the TensorRT "
            "network (the ONNX parser named the layers otherwise), so the FP16 builder flag would run them in "
            "FP16; build strongly typed instead (leave out --fp16-builder-flag)"
        )


def pin_float_layers(network, names: set[str], trt) -> list[str]:
    """Constrain the layers of `names` whose outputs are all floating point to FP32; returns those pinned.

    A layer with an integer output (Shape, Gather of shape values, ArgMax, casts to int) computes no
    floating-point maths to protect, and OBEY_PRECISION_CONSTRAINTS may reject the build if it is
    pinned: such layers keep the precision TensorRT gives them.
    """
    floats = {getattr(trt, name) for name in FLOAT_TYPES if hasattr(trt, name)}
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if layer.name not in names or not outputs or any(tensor.dtype not in floats for tensor in outputs):
            continue
        layer.precision = trt.float32
        for output in range(layer.num_outputs):
            layer.set_output_type(output, trt.float32)
        pinned.append(layer.name)
    return pinned


def use_timing_cache(config, path: Path, log) -> None:
    """Give the build the timing cache at `path`, or a new one when that file is unusable.

    A cache written by another TensorRT version (or for another GPU) cannot be combined: TensorRT
    refuses it (an exception, None or False, by version); it is dropped with a warning and the new
    cache replaces the file after the build.
    """
    data = path.read_bytes() if path.is_file() else b""
    if data:
        try:
            cache = config.create_timing_cache(data)
            accepted = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
        except Exception as error:  # TensorRT raises a plain RuntimeError/TypeError for a foreign cache
            accepted, data = False, f"{type(error).__name__}: {error}"
        if accepted:
            return
        reason = f" ({data})" if isinstance(data, str) else ""
        log(f"warning: timing cache {path} was written by another TensorRT version or GPU{reason}; "
            "it is dropped and a new one started (this build times every kernel)")
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise TensorRTError("TensorRT refused a new, empty timing cache")


def build_engine(onnx_path: Path, stage: Stage, target: Path, batch: tuple[int, int, int], network_mode: str,
                 workspace_gb: float, timing_cache: Path, reference_onnx: Path | None = None,
                 log=print) -> dict:
    """Build, validate and write the plan of `onnx_path` at `target`; returns the validation record.

    The engine is run at the profile's min and max batch and compared with ONNX Runtime on the FP32
    graph (`reference_onnx`, default `onnx_path`), within `FP16_BOUNDS`. TF32 is cleared, so FP32 layers
    run in IEEE FP32; the record's `tf32` says whether TF32 could have been used (no flag to clear).
    """
    trt = gpu_platform.tensorrt()
    gpu_platform.gpu_properties()  # before minutes of building: validation needs the GPU through cuda-python
    if network_mode == FP16_BUILDER_FLAG and not hasattr(trt.BuilderFlag, "FP16"):
        raise TensorRTError(f"TensorRT {trt.__version__} has no FP16 builder flag: build strongly typed from the "
                            "FP16 ONNX instead (leave out --fp16-builder-flag)")
    logger = gpu_platform.tensorrt_logger()
    builder = trt.Builder(logger)
    network, _parser = _parse(builder, onnx_path, network_mode, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    tf32_flag = hasattr(trt.BuilderFlag, "TF32")
    if tf32_flag:  # FP32 means FP32: the islands exist because FP16 (and TF32's 10-bit mantissa) is too coarse
        config.clear_flag(trt.BuilderFlag.TF32)
    if network_mode == FP16_BUILDER_FLAG:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned, islands = _pin_fp32_islands(network, onnx_path, stage.name)
    profile = builder.create_optimization_profile()
    for spec in stage.inputs:
        profile.set_shape(spec.name, *(spec.concrete_shape(b) for b in batch))
    if config.add_optimization_profile(profile) < 0:
        raise TensorRTError(f"TensorRT refused the optimisation profile of {stage.name} (batch {batch}); "
                            "check --batch MIN:OPT:MAX")
    use_timing_cache(config, timing_cache, log)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"TensorRT could not build {stage.name} from {onnx_path}; see its messages above. "
                            "Try a larger --workspace-gb or --precision fp32.")
    plan = bytes(memoryview(plan))
    atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    validation = validate_engine(plan, stage, reference_onnx or onnx_path, (batch[0], batch[2]))
    validation["network"] = network_mode
    validation["tf32"] = not tf32_flag  # True only where this TensorRT offers no TF32 flag to clear
    if network_mode == FP16_BUILDER_FLAG:  # layers pinned to FP32, of the FP32 island nodes (integer ones stay)
        validation["fp32_layers"], validation["fp32_islands"] = len(pinned), len(islands)
    atomic_write_bytes(target, plan)
    return validation


def run_engine(plan: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a serialised engine once with cuda-python buffers on one stream; outputs as numpy arrays.

    Feeds are cast to the engine's input dtypes (as the runtime backend casts them). Every buffer and
    the stream are released, a failed release raising only when the run itself succeeded."""
    trt, cudart = gpu_platform.tensorrt(), gpu_platform.cudart()
    engine = trt.Runtime(gpu_platform.tensorrt_logger()).deserialize_cuda_engine(plan)
    if engine is None:
        raise TensorRTError("TensorRT could not deserialise the plan it just built")
    context = engine.create_execution_context()
    if context is None:
        raise TensorRTError("TensorRT could not create an execution context (out of GPU memory?)")
    stream = gpu_platform.call(cudart.cudaStreamCreate, what="cudaStreamCreate")
    pointers: dict[str, int] = {}
    try:
        outputs = _run_once(trt, cudart, engine, context, stream, feeds, pointers)
    finally:
        failure = gpu_platform.release(pointers.values(), stream)
    if failure:
        raise TensorRTError(f"the engine ran, but releasing its GPU memory failed: {failure}")
    return outputs


def _run_once(trt, cudart, engine, context, stream, feeds: dict[str, np.ndarray],
              pointers: dict[str, int]) -> dict[str, np.ndarray]:
    """Upload `feeds`, execute, download the outputs; every device buffer is recorded in `pointers`."""
    hosts = {name: as_engine_input(array, tensor_dtype(trt, engine, name)) for name, array in feeds.items()}
    for name, array in hosts.items():
        if not context.set_input_shape(name, array.shape):
            raise TensorRTError(f"the engine refuses shape {array.shape} for '{name}' (outside its profile)")
        pointers[name] = gpu_platform.call(cudart.cudaMalloc, max(array.nbytes, 1), what="cudaMalloc")
        gpu_platform.call(cudart.cudaMemcpyAsync, pointers[name], array.ctypes.data, array.nbytes,
                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream, what=f"upload of {name}")
    outputs = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            outputs[name] = np.empty(tuple(context.get_tensor_shape(name)), tensor_dtype(trt, engine, name))
            pointers[name] = gpu_platform.call(cudart.cudaMalloc, max(outputs[name].nbytes, 1), what="cudaMalloc")
    for name, pointer in pointers.items():
        context.set_tensor_address(name, pointer)
    if not context.execute_async_v3(int(stream)):
        raise TensorRTError("TensorRT failed to run the engine (execute_async_v3 returned False)")
    for name, array in outputs.items():
        gpu_platform.call(cudart.cudaMemcpyAsync, array.ctypes.data, pointers[name], array.nbytes,
                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream, what=f"download of {name}")
    gpu_platform.call(cudart.cudaStreamSynchronize, stream, what="cudaStreamSynchronize")
    return outputs


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

"""ONNX → TensorRT plan (TensorRT ≥ 10), validated against ONNX Runtime before it is written.

- Default: a strongly typed network (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`) from the FP16
  ONNX, so the FP32 islands chosen in `export/fp16.py` are kept exactly. TensorRT 11 is always
  strongly typed and has no FP16 builder flag.
- TensorRT 10 alternative (`fp16-builder-flag`): the FP32 ONNX with `BuilderFlag.FP16`; the same
  islands are pinned to FP32 by layer precision constraints on every layer each island node became
  (export/layer_names.py reads the parser's layer names): an island node found in no layer is
  refused, and the record counts the layers pinned per island node.
- FP32 stays FP32: TensorRT computes FP32 layers in TF32 by default; the TF32 flag is cleared, so
  the FP32 islands (attention, demodulation) and FP32 engines get IEEE FP32 matrix maths.
- One optimisation profile over the batch (min, opt, max), a workspace limit, and a timing cache
  file shared by all builds in the output folder (later builds reuse the kernels' timings; a cache
  another TensorRT version or GPU wrote is dropped with a warning and a new one started).
- Validation runs the plan with the runtime's TensorRTRunner (cuda-python, never PyTorch's CUDA, so a
  CPU-only PyTorch is no obstacle): what is validated runs as the runtime serves it. The GPU is
  checked before building.
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
from deghost.runtime.backends.tensorrt_runner import TensorRTRunner
from deghost.runtime.gpu_platform import GPUUnavailable, Platform
from deghost.stages import Stage

from .fp16 import FP16_BOUNDS, check_finite
from .layer_names import layer_nodes
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


def _pin_fp32_islands(network, onnx_path: Path, stage: str) -> dict[str, int]:
    """FP16 builder-flag path: keep the nodes `export/fp16.py` keeps in FP32 in FP32 here too, every layer of
    them. Returns {island node: layers pinned}."""
    import onnx

    from deghost.presets import get_preset

    from .fp16 import fp32_island_names

    model = onnx.load(str(onnx_path))
    nodes = {node.name for node in model.graph.node}
    image_size = get_preset(read_metadata(onnx_path).get("deghost.preset", "ffhq1024")).image_size
    islands = fp32_island_names(model, stage, image_size)
    return pin_fp32_islands(stage, network, islands, nodes, gpu_platform.tensorrt())


def pin_fp32_islands(stage: str, network, islands: set[str], nodes: set[str], trt) -> dict[str, int]:
    """Constrain every layer the island nodes became (export/layer_names.py) whose outputs are all floating
    point to FP32; returns {island node: layers pinned}.

    A layer with an integer output (Shape, Gather of shape values, ArgMax, casts to int) computes no
    floating-point maths to protect, and OBEY_PRECISION_CONSTRAINTS may reject the build if it is pinned:
    such layers keep the precision TensorRT gives them, and an island node made of them alone counts 0.
    An island node that became no layer at all is an error (TensorRTError): its layers were named otherwise,
    and the FP16 builder flag would run them in FP16 unseen.
    """
    layers = [network.get_layer(index) for index in range(network.num_layers)]
    metadata = [getattr(layer, "metadata", None) for layer in layers]  # the node's name, in newer parsers
    owners = layer_nodes([layer.name for layer in layers], nodes, metadata)
    found = {owner for owner in owners if owner in islands}
    lost = sorted(islands - found)
    if lost:
        raise TensorRTError(
            f"{stage}: {len(lost)} of the {len(islands)} nodes export/fp16.py keeps in FP32 match no layer of the "
            f"TensorRT network (first: {', '.join(lost[:3])}): the ONNX parser named their layers otherwise, so the "
            "FP16 builder flag would run them in FP16; build strongly typed instead (leave out --fp16-builder-flag)")
    floats = {getattr(trt, name) for name in FLOAT_TYPES if hasattr(trt, name)}
    pinned = dict.fromkeys(sorted(islands), 0)
    for layer, owner in zip(layers, owners, strict=True):
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if owner not in islands or not outputs or any(tensor.dtype not in floats for tensor in outputs):
            continue
        layer.precision = trt.float32
        for output in range(layer.num_outputs):
            layer.set_output_type(output, trt.float32)
        pinned[owner] += 1
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
        pinned = _pin_fp32_islands(network, onnx_path, stage.name)
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
    if network_mode == FP16_BUILDER_FLAG:  # layers pinned to FP32 in all, and per FP32 island node
        validation["fp32_layers"], validation["fp32_islands"] = sum(pinned.values()), pinned
    atomic_write_bytes(target, plan)
    return validation


def run_engine(plan: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a serialised engine once, as the runtime runs it (TensorRTRunner: feeds cast to the engine's dtypes,
    everything released after). Failures are EngineRunError naming the call."""
    with TensorRTRunner(plan, "the engine just built") as runner:
        return runner.infer(feeds)


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

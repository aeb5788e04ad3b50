"""TensorRT engines from the tiny ONNX graphs, compared with ONNX Runtime (need TensorRT and a GPU)."""

from __future__ import annotations

import shutil

import onnx
import pytest

from deghost.export.build import BuildOptions, build
from deghost.export.fp16 import convert_stage
from deghost.export.onnx_export import compare, example_inputs, onnxruntime_session, run_onnxruntime, worst
from deghost.export.tensorrt import (
    FP16_BUILDER_FLAG,
    STRONGLY_TYPED,
    TensorRTError,
    build_engine,
    environment_info,
    run_engine,
)
from deghost.manifest import Manifest
from deghost.presets import get_preset
from deghost.runtime.gpu_platform import tensorrt_logger
from deghost.stages import stage_table
from tests.helpers.fp16_rounding import fp16_tolerance

pytestmark = pytest.mark.tensorrt


def test_strongly_typed_fp16_suppressor_engine_matches_onnxruntime_and_is_a_plain_plan(tiny_onnx_dir, tmp_path):
    import tensorrt as trt

    stage = stage_table(get_preset("tiny"))["suppressor"]
    convert_stage(tiny_onnx_dir / "suppressor.onnx", stage, tmp_path / "suppressor.fp16.onnx")
    plan_path = tmp_path / "suppressor.fp16.plan"
    validation = build_engine(tmp_path / "suppressor.fp16.onnx", stage, plan_path, (1, 2, 3), STRONGLY_TYPED,
                              workspace_gb=1, timing_cache=tmp_path / "timing.cache",
                              reference_onnx=tiny_onnx_dir / "suppressor.onnx")
    assert validation["batches"] == [1, 3]
    # the engine against FP32 ONNX Runtime within FP16 rounding's own reach (tests/helpers/fp16_rounding.py)
    tolerance = fp16_tolerance(onnx.load(str(tmp_path / "suppressor.fp16.onnx")), 3 * 3 * 256 * 256)
    assert validation["worst"] <= min(validation["bound"], tolerance)
    assert (tmp_path / "timing.cache").stat().st_size > 0
    engine = trt.Runtime(tensorrt_logger()).deserialize_cuda_engine(plan_path.read_bytes())
    assert engine is not None  # as trtexec --loadEngine reads it: nothing prepended
    assert [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)] == ["image", "edit", "mask", "fused",
                                                                                  "output"]


def test_build_records_the_engine_with_its_tensorrt_version_and_gpu_and_skips_it_on_rerun(tiny_onnx_dir, tmp_path):
    for name in ("face_parser.onnx", "manifest.json"):
        shutil.copy(tiny_onnx_dir / name, tmp_path / name)
    options = BuildOptions(out=tmp_path, preset="tiny", stages=("face_parser",), random_init=0, batch=(1, 1, 2),
                           require_tensorrt=True, workspace_gb=1)
    logged: list[str] = []
    engine = build(options, log=logged.append).find("face_parser", "tensorrt", "fp16")
    environment = environment_info()
    assert "face_parser onnx fp32: unchanged, skipped" in logged
    assert engine.file == "face_parser.fp16.plan" and engine.tensorrt_version == environment.tensorrt_version
    assert (engine.gpu_name, engine.compute_capability) == (environment.gpu_name, environment.compute_capability)
    assert engine.onnx_sha256 == Manifest.load(tmp_path).find("face_parser", "onnx", "fp16").sha256
    assert engine.inputs[0].profile == [[1, 3, 256, 256], [1, 3, 256, 256], [2, 3, 256, 256]]

    logged.clear()
    build(options, log=logged.append)
    assert "face_parser tensorrt fp16: unchanged, skipped" in logged


def test_fp16_builder_flag_pins_the_fp32_islands_and_the_engine_stays_within_the_recorded_bound(tiny_onnx_dir,
                                                                                                  tmp_path):
    """TensorRT 10's alternative to strong typing: the FP32 ONNX, BuilderFlag.FP16 and the islands pinned to
    FP32 under OBEY_PRECISION_CONSTRAINTS. TensorRT 11 has no such flag, and the build must say so."""
    import tensorrt as trt

    stage = stage_table(get_preset("tiny"))["suppressor"]  # attention (PAM/CAM): FP32 islands
    fp32 = tiny_onnx_dir / "suppressor.onnx"
    build = dict(stage=stage, target=tmp_path / "suppressor.fp16.plan", batch=(1, 2, 3),
                 network_mode=FP16_BUILDER_FLAG, workspace_gb=1, timing_cache=tmp_path / "timing.cache")
    if not hasattr(trt.BuilderFlag, "FP16"):
        with pytest.raises(TensorRTError, match="has no FP16 builder flag"):
            build_engine(fp32, **build)
        return
    validation = build_engine(fp32, **build)
    assert validation["network"] == FP16_BUILDER_FLAG
    islands = validation["fp32_islands"]  # layers pinned per island node, every one of them found in the network
    assert islands and validation["fp32_layers"] == sum(islands.values()) > 0
    # the FP16 graph of the same network counts the roundings an FP16 engine makes (islands excepted)
    convert_stage(fp32, stage, tmp_path / "suppressor.fp16.onnx")
    tolerance = fp16_tolerance(onnx.load(str(tmp_path / "suppressor.fp16.onnx")), 3 * 3 * 256 * 256)
    assert validation["worst"] <= min(validation["bound"], tolerance)
    # The plan as written, on inputs the build's validation did not see, against ONNX Runtime on the CPU.
    feeds = example_inputs(stage, 2, seed=11)
    got = run_engine((tmp_path / "suppressor.fp16.plan").read_bytes(), feeds)
    assert worst(compare(stage, run_onnxruntime(onnxruntime_session(fp32), feeds), got)) <= tolerance

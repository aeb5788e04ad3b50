"""FP16 ONNX: finite, within the recorded bounds, FP32 islands where StyleGAN2 needs them, NaN/Inf refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from deghost.export import fp16, onnx_export
from deghost.export.build import BuildOptions, build
from deghost.export.fp16 import NonFiniteError
from deghost.manifest import Manifest
from deghost.presets import get_preset
from deghost.stages import BATCH, STAGE_NAMES, Stage, TensorSpec, stage_table
from tests.helpers.fp16_rounding import fp16_tolerance

TINY = get_preset("tiny")
FP16_TESTED = ("generator", "diffcam", "suppressor")  # StyleGAN2 islands, the CAM mask, attention islands


def fp16_build(fp32_dir: Path, out: Path, stages) -> Manifest:
    """Build FP16 graphs beside (hard links to) the session's FP32 ones: the build must reuse those."""
    for name in [f"{stage}.onnx" for stage in stages] + ["manifest.json"]:
        try:
            os.link(fp32_dir / name, out / name)
        except OSError:  # another file system
            shutil.copy(fp32_dir / name, out / name)
    logged: list[str] = []
    options = BuildOptions(out=out, preset="tiny", stages=stages, random_init=0, onnx_only=True, precision="fp16")
    manifest = build(options, logged.append)
    assert all(f"{stage} onnx fp32: unchanged, skipped" in logged for stage in stages)
    return manifest


@pytest.fixture(scope="module")
def fp16_dir(tiny_onnx_dir, module_tmp_path):
    out = module_tmp_path / "tiny_fp16"
    out.mkdir()
    fp16_build(tiny_onnx_dir, out, FP16_TESTED)
    return out


def assert_fp16_validated(manifest: Manifest, stages) -> None:
    for stage in stages:
        artifact = manifest.find(stage, "onnx", "fp16")
        assert artifact.onnx_sha256 == manifest.find(stage, "onnx", "fp32").sha256
        assert 0 <= artifact.validation["worst"] <= artifact.validation["bound"], stage
        assert artifact.validation["fp32_nodes"] > 0


def test_fp16_graphs_are_finite_and_within_their_recorded_bounds(fp16_dir):
    assert_fp16_validated(Manifest.load(fp16_dir), FP16_TESTED)


@pytest.mark.slow
def test_every_stage_converts_to_fp16_within_its_bound(tiny_onnx_dir, tmp_path):
    others = tuple(stage for stage in STAGE_NAMES if stage not in FP16_TESTED)
    assert_fp16_validated(fp16_build(tiny_onnx_dir, tmp_path, others), others)


def test_fp16_generator_reproduces_the_fp32_graph_and_keeps_float32_io(fp16_dir):
    stage = stage_table(TINY)["generator"]
    feeds = onnx_export.example_inputs(stage, 1, seed=5)
    want = onnx_export.run_onnxruntime(onnx_export.onnxruntime_session(fp16_dir / "generator.onnx"), feeds)
    model = onnx.load(str(fp16_dir / "generator.fp16.onnx"))
    emulated = fp16.rounding_emulation(model)
    got = onnx_export.run_onnxruntime(onnx_export.onnxruntime_session(emulated), feeds)
    assert all(value.dtype == np.float32 and np.all(np.isfinite(value)) for value in got.values())
    for name, value in want.items():  # measured 1.4e-3 of the scale against a tolerance of 2.7e-2 (tiny, seed 5)
        error = np.abs(got[name].astype(np.float64) - value).max() / np.abs(value).max()
        assert error <= fp16_tolerance(model, value.size), (name, error)
    assert {v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)} == {fp16.FLOAT}
    assert any(t.data_type == fp16.FLOAT16 for t in model.graph.initializer)


def test_stylegan2_demodulation_torgb_and_low_resolutions_stay_fp32_and_the_rest_runs_fp16(tiny_onnx_dir):
    model = onnx.load(str(tiny_onnx_dir / "generator.onnx"))
    islands = fp16.fp32_island_names(model, "generator", TINY.image_size)
    names = {node.name for node in model.graph.node}
    # tiny = 256²: FP16 from 32² up (NVIDIA's four highest resolutions); convs.4 is the first at 32².
    assert {"/convs.10/conv/MatMul", "/convs.10/conv/Sqrt", "/convs.10/conv/modulation/Gemm"} <= islands
    assert {n for n in names if n.startswith("/to_rgbs.")} <= islands
    assert {"/conv1/conv/Conv", "/convs.2/conv/ConvTranspose", "/convs.3/conv/Conv"} <= islands
    assert "/convs.5/conv/Conv" not in islands and "/convs.10/conv/ConvTranspose" not in islands
    assert {"/convs.5/conv/Conv", "/convs.10/conv/ConvTranspose"} <= names


def test_eogi_deghosting_keeps_only_its_generator_rules_in_fp32_not_its_rrdb_convs(tiny_onnx_dir):
    model = onnx.load(str(tiny_onnx_dir / "deghosting.onnx"))
    islands = fp16.fp32_island_names(model, "deghosting", TINY.image_size)
    rrdb_convs = [n.name for n in model.graph.node if n.op_type == "Conv" and "/body/" in n.name]
    assert rrdb_convs and not islands.intersection(rrdb_convs)
    assert {"/deghosting/conv1/conv/Conv", "/deghosting/convs.10/conv/MatMul"} <= islands
    assert "/deghosting/convs.10/conv/ConvTranspose" not in islands


def test_maresunet_attention_and_the_fusion_stay_fp32(tiny_onnx_dir):
    model = onnx.load(str(tiny_onnx_dir / "suppressor.onnx"))
    islands = fp16.fp32_island_names(model, "suppressor", TINY.image_size)
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    assert {n.name for n in model.graph.node if "/PAM/" in n.name or "/CAM/" in n.name} <= islands
    assert {"/Mul", "/Sub", "/Add"} <= islands  # fused = T·M + I·(1−M), exact
    assert sum(name not in islands for name in convs) > 0.8 * len(convs)


class Squares(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 1000.0
        return y * y  # up to 1e6: finite in FP32, Inf in FP16


class Overflows(nn.Module):
    """A submodule, so its nodes are not the stage wrapper's root-scope math (which stays FP32)."""

    def __init__(self):
        super().__init__()
        self.body = Squares()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_an_fp16_graph_producing_inf_is_refused_and_nothing_is_written(tmp_path):
    spec = TensorSpec("x", (BATCH, 1, 4, 4), "float32", "values in [-1,1]")
    stage = Stage("toy", (spec,), (TensorSpec("y", (BATCH, 1, 4, 4), "float32", "x²·1e6"),), "overflows")
    fp32_path = tmp_path / "toy.onnx"
    onnx_export.export_stage(Overflows().eval(), stage, fp32_path, {}, bound=1e-5)
    with pytest.raises(NonFiniteError, match="NaN/Inf in y"):
        fp16.convert_stage(fp32_path, stage, tmp_path / "toy.fp16.onnx", bound=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.onnx"]

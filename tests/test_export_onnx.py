"""ONNX export: parity with PyTorch, checker, metadata, dynamic batch, atomic publishing."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from deghost.export import onnx_export, sources
from deghost.export.onnx_export import PARITY_BOUNDS, ParityError
from deghost.files import DiskFullError
from deghost.manifest import Manifest
from deghost.presets import get_preset
from deghost.stages import BATCH, STAGE_NAMES, Stage, TensorSpec, stage_table

TINY = get_preset("tiny")


def toy_stage(name: str = "toy") -> Stage:
    spec = TensorSpec("x", (BATCH, 1, 4, 4), "float32", "values in [-1,1]")
    return Stage(name, (spec,), (TensorSpec("y", (BATCH, 1, 4, 4), "float32", "result"),), "a test graph")


def test_every_stage_onnx_matches_pytorch_at_batch_1_and_3_within_its_bound(tiny_onnx_dir):
    manifest = Manifest.load(tiny_onnx_dir)
    for stage in STAGE_NAMES:
        validation = manifest.find(stage, "onnx", "fp32").validation
        assert validation["batches"] == [1, 3]
        assert set(validation["errors"]) == {"1", "3"}
        assert validation["bound"] == PARITY_BOUNDS[stage]
        assert 0 <= validation["worst"] <= PARITY_BOUNDS[stage], stage


def test_suppressor_onnx_reproduces_the_seeded_pytorch_graph_at_batch_4(tiny_onnx_dir):
    stage = stage_table(TINY)["suppressor"]
    graph = sources.random_sources(TINY, 0, ["suppressor"])["suppressor"].load()
    feeds = onnx_export.example_inputs(stage, 4, seed=7)  # a batch size the build did not validate
    got = onnx_export.run_onnxruntime(onnx_export.onnxruntime_session(tiny_onnx_dir / "suppressor.onnx"), feeds)
    errors = onnx_export.compare(stage, onnx_export.run_torch(graph, stage, feeds), got)
    assert onnx_export.worst(errors) <= PARITY_BOUNDS["suppressor"]
    assert got["output"].shape == (4, 3, TINY.image_size, TINY.image_size)


def test_onnx_files_pass_the_checker_with_stage_table_names_a_dynamic_batch_and_provenance(tiny_onnx_dir):
    table = stage_table(TINY)
    for name, stage in table.items():
        path = tiny_onnx_dir / f"{name}.onnx"
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
        assert [i.name for i in model.graph.input] == stage.input_names()
        assert [o.name for o in model.graph.output] == stage.output_names()
        for value in list(model.graph.input) + list(model.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == BATCH, value.name
        assert model.opset_import[0].version >= 17
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["deghost.stage"] == name
        assert meta["deghost.preset"] == "tiny"
        assert meta["deghost.source"] == "untrained: seed 0"
        assert meta["deghost.precision"] == "fp32"
        assert [spec["name"] for spec in json.loads(meta["deghost.inputs"])] == stage.input_names()
        assert not (tiny_onnx_dir / f"{name}.onnx.data").exists()  # self-contained below 2 GB


def test_face_parser_onnx_labels_agree_with_pytorch_at_batch_2(tiny_onnx_dir):
    stage = stage_table(TINY)["face_parser"]
    graph = sources.random_sources(TINY, 0, ["face_parser"])["face_parser"].load()
    feeds = onnx_export.example_inputs(stage, 2, seed=3)
    got = onnx_export.run_onnxruntime(onnx_export.onnxruntime_session(tiny_onnx_dir / "face_parser.onnx"), feeds)
    errors = onnx_export.compare(stage, onnx_export.run_torch(graph, stage, feeds), got)
    assert got["labels"].dtype == np.int64
    assert errors["labels"]["mismatch_fraction"] <= PARITY_BOUNDS["face_parser"]


def test_write_onnx_moves_the_weights_to_a_data_file_only_above_the_size_limit(tmp_path):
    stage = toy_stage()
    with onnx_export.staging(tmp_path / "toy.onnx") as staged:
        graph = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 1, 3, padding=1)).eval()  # 2.3 kB
        onnx_export.trace(graph, stage, staged, {"deghost.stage": "toy"})
        model = onnx.load(str(staged))
    single = onnx_export.write_onnx(model, tmp_path / "single.onnx")
    split = onnx_export.write_onnx(onnx.load(str(single)), tmp_path / "split.onnx", external_above=2000)
    assert not (tmp_path / "single.onnx.data").exists()
    assert (tmp_path / "split.onnx.data").is_file()
    feeds = onnx_export.example_inputs(stage, 2)
    a = onnx_export.run_onnxruntime(onnx_export.onnxruntime_session(single), feeds)["y"]
    b = onnx_export.run_onnxruntime(onnx_export.onnxruntime_session(split), feeds)["y"]
    np.testing.assert_array_equal(a, b)
    assert onnx_export.read_metadata(split)["deghost.stage"] == "toy"


@pytest.mark.parametrize("external_above", [onnx_export.PROTOBUF_LIMIT, 1 << 20], ids=["one file", "data file"])
def test_a_graph_bigger_than_the_free_disk_raises_a_disk_full_error_naming_it(small_disk, external_above):
    """y = x + w with 4 MB of weights, written to a 2 MiB disk as one file or with a data file."""
    helper = onnx.helper
    weights = onnx.numpy_helper.from_array(np.ones(1 << 20, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1 << 20])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1 << 20])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(DiskFullError, match=r"writing big\.onnx stopped after"):
        onnx_export.write_onnx(model, small_disk / "big.onnx", external_above=external_above)


class CountsCalls(nn.Module):
    """Multiplies by how often it has been called: a graph that the trace freezes at a different value."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * float(self.calls)


def test_an_export_that_disagrees_with_pytorch_is_refused_and_leaves_no_file(tmp_path):
    target = tmp_path / "toy.onnx"
    with pytest.raises(ParityError, match="not published"):
        onnx_export.export_stage(CountsCalls(), toy_stage(), target, {}, bound=1e-5)
    assert list(tmp_path.iterdir()) == []


class SlicesAConstant(nn.Module):
    """x · w[..., ::2]: a strided slice of a constant, which the TorchScript exporter warns it cannot fold."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.arange(8.0).reshape(1, 1, 1, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w[..., ::2]


def test_the_export_shows_the_user_no_exporter_warnings_and_logs_them_at_debug_level(tmp_path, capfd, caplog):
    import logging
    import warnings

    with warnings.catch_warnings(record=True) as shown, caplog.at_level(logging.DEBUG, logger="deghost.export"):
        warnings.simplefilter("always")  # whatever the user's filters, nothing may surface
        onnx_export.export_stage(SlicesAConstant(), toy_stage(), tmp_path / "toy.onnx", {}, bound=1e-5)
    assert (tmp_path / "toy.onnx").is_file()
    assert [str(w.message) for w in shown] == []
    assert capfd.readouterr().err == ""
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("Constant folding" in message for message in debug)  # the warning the graph provokes, kept

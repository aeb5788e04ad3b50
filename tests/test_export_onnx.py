"""ONNX export: parity with PyTorch, checker, metadata, dynamic batch, atomic publishing."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from deghost.export import onnx_export, sources
from deghost.export.onnx_export import ParityError
from deghost.files import DiskFullError
from deghost.manifest import Manifest
from deghost.presets import get_preset
from deghost.stages import BATCH, STAGE_NAMES, Stage, TensorSpec, stage_table

TINY = get_preset("tiny")


def toy_stage(name: str = "toy") -> Stage:
    spec = TensorSpec("x", (BATCH, 1, 4, 4), "float32", "values in [-1,1]")
    return Stage(name, (spec,), (TensorSpec("y", (BATCH, 1, 4, 4), "float32", "result"),), "a test graph")


# FP32 parity from first principles, independent of the build's own bounds (export.onnx_export.PARITY_BOUNDS):
# two FP32 implementations of one network (PyTorch's kernels and ONNX Runtime's, with other summation orders
# and fusions) differ in each dot product of length K by rounding errors of about sqrt(K)·u of its terms'
# magnitude (u = 2⁻²⁴, errors of random sign); over L weighted layers these add up like a random walk, to
# sqrt(L·K)·u of the output's scale, and the largest of N outputs lies within sqrt(2·ln N) standard
# deviations. L and K are counted from the network itself (L counts every weighted layer, parallel branches
# too, so it bounds the depth from above). An exported graph that computes anything else (a wrong
# padding, interpolation, epsilon or layout) misses by 1e-3 of the scale or far more.
UNIT_ROUNDOFF = 2.0**-24


def depth_and_fan_in(network: nn.Module) -> tuple[int, int]:
    """(weighted layers, largest fan-in) of a network: every module with a ≥2-d weight is a conv or linear."""
    layers, fan_in = 0, 0
    for module in network.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim < 2:
            continue
        layers += 1
        if isinstance(module, nn.ConvTranspose2d):  # weight [in, out, k, k]
            fan_in = max(fan_in, module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        else:  # [out, in], [out, in, k, k], or StyleGAN2's modulated [1, out, in, k, k]
            fan_in = max(fan_in, int(np.prod(weight.shape[-3:])) if weight.ndim >= 4 else weight.shape[-1])
    return layers, fan_in


def fp32_tolerance(network: nn.Module, outputs: int) -> float:
    """Largest expected |ONNX Runtime − PyTorch| over `outputs` values, relative to the output's scale."""
    layers, fan_in = depth_and_fan_in(network)
    return math.sqrt(2 * math.log(outputs)) * math.sqrt(layers * fan_in) * UNIT_ROUNDOFF


def onnxruntime_outputs(path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def parser_logits(graph: nn.Module, image: np.ndarray) -> torch.Tensor:
    """BiSeNet's main-head logits as face-parsing.PyTorch's test script feeds it: [0,1], ImageNet-normalised."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        return graph.parser(((torch.from_numpy(image) + 1) / 2 - mean) / std)[0]


def assert_onnx_matches_pytorch(folder, name: str, batch: int, seed: int) -> None:
    stage = stage_table(TINY)[name]
    graph = sources.random_sources(TINY, 0, [name])[name].load()  # the seeded network the build exported
    feeds = onnx_export.example_inputs(stage, batch, seed)  # the documented ranges; seeds the build did not use
    with torch.no_grad():
        reference = graph(*(torch.from_numpy(feeds[spec.name]) for spec in stage.inputs))
    reference = reference if isinstance(reference, tuple) else (reference,)
    got = onnxruntime_outputs(folder / f"{name}.onnx", feeds)
    for spec, want in zip(stage.outputs, reference, strict=True):
        have, want = got[spec.name], want.numpy()
        assert have.shape == want.shape and have.dtype == want.dtype, (name, spec.name, have.shape, want.shape)
        if spec.dtype == "int64":  # labels: argmax of logits; only near-ties may flip
            logits = parser_logits(graph, feeds["image"])
            assert np.array_equal(logits.argmax(1).numpy(), want)  # the logits are the graph's
            top2 = logits.topk(2, dim=1).values
            margin = (top2[:, 0] - top2[:, 1]).numpy()
            decided = margin > fp32_tolerance(graph, logits.numel()) * logits.abs().max().item()
            assert decided.mean() > 0.99, f"{name}: too many near-ties for the comparison to mean anything"
            assert np.array_equal(have[decided], want[decided]), f"{name}: labels differ where PyTorch is sure"
            continue
        error = np.abs(have.astype(np.float64) - want).max() / np.abs(want).max()
        tolerance = fp32_tolerance(graph, want.size)
        assert error <= tolerance, f"{name}.{spec.name}: ONNX Runtime differs from PyTorch by {error:.3g} of the " \
                                   f"output's scale, beyond FP32 rounding ({tolerance:.3g})"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_stage_onnx_matches_an_independent_pytorch_run_within_fp32_rounding(tiny_onnx_dir, name):
    assert_onnx_matches_pytorch(tiny_onnx_dir, name, batch=2, seed=11)  # a batch size the build did not validate


def test_suppressor_onnx_matches_pytorch_at_batch_4(tiny_onnx_dir):
    assert_onnx_matches_pytorch(tiny_onnx_dir, "suppressor", batch=4, seed=7)


def test_the_manifest_records_the_builds_own_validation_at_batch_1_and_3(tiny_onnx_dir):
    manifest = Manifest.load(tiny_onnx_dir)
    for stage in STAGE_NAMES:
        validation = manifest.find(stage, "onnx", "fp32").validation
        assert validation["batches"] == [1, 3]
        assert set(validation["errors"]) == {"1", "3"}
        assert 0 <= validation["worst"] <= validation["bound"], stage


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

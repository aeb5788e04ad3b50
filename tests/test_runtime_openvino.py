"""The OpenVINO CPU backend: same outputs as ONNX Runtime (f32 exactly enough, bf16 within the recorded
per-stage bounds), explicit precision, a clear message without openvino, and `auto`'s choice and fallback."""

from __future__ import annotations

import functools
import logging
import sys

import numpy as np
import pytest

from deghost.manifest import Manifest
from deghost.runtime.backends import BackendError, open_backend
from deghost.runtime.backends import openvino as ov_backend
from deghost.runtime.images import read_image
from deghost.runtime.pipeline import Pipeline
from deghost.stages import example_feeds, stage_table
from tests.helpers.cpu_bf16 import bf16_missing, needs_cpu_bf16
from tests.test_runtime_cli import ASTRONAUT, parser

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install deghost[openvino]")

F32_TOLERANCE = 1e-4  # relative to the output's max: two FP32 engines differ by summation order only


@pytest.fixture
def without_openvino(monkeypatch):
    """This process as it is where the openvino package is not installed (its import fails)."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    ov_backend._openvino.cache_clear()
    ov_backend._core.cache_clear()
    yield
    ov_backend._openvino.cache_clear()
    ov_backend._core.cache_clear()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return read_image(ASTRONAUT).rgb


@functools.cache
def edited(folder: str, backend: str, precision: str) -> tuple[np.ndarray, dict[str, str]]:
    with Pipeline.load(folder, backend=backend, precision=precision, device="cpu") as pipe:
        result = pipe.edit(read_image(ASTRONAUT).rgb, suppress="network")
        return result.output, pipe.describe()


def relative(candidate: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(candidate - reference).max() / np.abs(reference).max())


def test_openvino_f32_equals_onnxruntime_on_the_tiny_pipeline(tiny_onnx_dir):
    reference, _ = edited(str(tiny_onnx_dir), "onnxruntime", "fp32")
    output, stages = edited(str(tiny_onnx_dir), "openvino", "fp32")
    assert set(stages.values()) == {"openvino/cpu fp32"}
    assert relative(output, reference) <= F32_TOLERANCE


@needs_cpu_bf16
def test_openvino_bf16_stays_within_the_sum_of_the_recorded_bounds_of_its_bf16_stages(tiny_onnx_dir):
    reference, _ = edited(str(tiny_onnx_dir), "onnxruntime", "fp32")
    output, stages = edited(str(tiny_onnx_dir), "openvino", "bf16")
    manifest = Manifest.load(tiny_onnx_dir)
    in_bf16 = [stage for stage, text in stages.items() if text.endswith("bf16")]
    assert in_bf16, "no stage ran in bf16"
    records = {stage: ov_backend.bf16_record(manifest, manifest.find(stage, "onnx", "fp32")) for stage in stages}
    # Each stage's relative error is bounded by its record; through the pipeline they add (to first order).
    assert relative(output, reference) <= sum(records[stage]["bound"] for stage in in_bf16)
    assert 0 < relative(output, reference)  # bf16 did run: the outputs are not bit-identical to FP32


@needs_cpu_bf16
def test_a_stage_whose_bf16_error_is_out_of_bound_runs_f32_and_says_why(tiny_onnx_dir):
    manifest = Manifest.load(tiny_onnx_dir)
    for stage in ("encoder", "diffcam"):
        record = ov_backend.bf16_record(manifest, manifest.find(stage, "onnx", "fp32"))
        backend = open_backend(manifest, stage, "openvino", "bf16", device="cpu")
        assert record["worst"] == max(record["errors"].values()) and record["bound"] == ov_backend.BF16_BOUNDS[stage]
        assert backend.runs_in == ("bf16" if record["worst"] <= record["bound"] else "fp32")
        if backend.runs_in == "fp32":
            assert "runs f32" in backend.why and f"{record['worst']:.2g}" in backend.why


def test_precision_is_always_set_explicitly_so_fp32_is_never_lowered(tiny_onnx_dir):
    manifest = Manifest.load(tiny_onnx_dir)
    backend = open_backend(manifest, "encoder", "openvino", "fp32", device="cpu")
    backend.run(example_feeds(stage_table(manifest.find("encoder", "onnx", "fp32").preset)["encoder"], 1))
    assert str(backend.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_the_first_shapes_run_static_and_other_batch_sizes_switch_to_the_dynamic_graph(tiny_onnx_dir):
    manifest = Manifest.load(tiny_onnx_dir)
    spec = stage_table(manifest.find("generator", "onnx", "fp32").preset)["generator"]
    one, three = example_feeds(spec, 1, seed=5), example_feeds(spec, 3, seed=6)
    reference = open_backend(manifest, "generator", "onnxruntime", "fp32", device="cpu")
    backend = open_backend(manifest, "generator", "openvino", "fp32", device="cpu")
    assert backend.compiled is None  # nothing compiled before the first run says the shapes
    outputs = [backend.run(one)]
    assert backend.static_shapes == {"w": list(one["w"].shape)}
    outputs += [backend.run(one), backend.run(three), backend.run(one)]
    assert backend.static_shapes is None  # switched once, and stays
    for feeds, got in zip([one, one, three, one], outputs, strict=True):
        expected = reference.run(feeds)
        for name in backend.output_names:
            assert relative(got[name], expected[name]) <= F32_TOLERANCE


def test_deghost_edit_backend_openvino_writes_the_onnxruntime_result(tiny_onnx_dir, tmp_path, photo):
    import cv2

    outputs = {}
    for backend in ("onnxruntime", "openvino"):
        out = tmp_path / backend
        args = parser().parse_args(["edit", str(ASTRONAUT), "--out", str(out), "--engines", str(tiny_onnx_dir),
                                    "--backend", backend, "--precision", "fp32", "--device", "cpu", "--quiet"])
        assert args.run(args) == 0
        outputs[backend] = cv2.imread(str(out / "astronaut_smile+20_network.png")).astype(int)
    assert np.abs(outputs["openvino"] - outputs["onnxruntime"]).max() <= 1  # one grey level of rounding


def test_asking_for_openvino_without_it_names_the_install_command(tiny_onnx_dir, without_openvino):
    with pytest.raises(BackendError, match=r"OpenVINO is not installed.*pip install \"deghost\[openvino\]\""):
        open_backend(Manifest.load(tiny_onnx_dir), "encoder", "openvino", device="cpu")


def test_auto_on_the_cpu_takes_openvino_in_fp32_and_says_why(tiny_onnx_dir):
    backend = open_backend(Manifest.load(tiny_onnx_dir), "encoder", "auto", device="cpu")
    assert (backend.kind, backend.device, backend.runs_in) == ("openvino", "cpu", "fp32")
    assert backend.why == "fastest CPU backend installed"


def test_auto_without_openvino_falls_back_to_onnxruntime_and_warns_when_bf16_was_asked(
        tiny_onnx_dir, without_openvino, caplog):
    with caplog.at_level(logging.WARNING, logger="deghost.runtime"):
        backend = open_backend(Manifest.load(tiny_onnx_dir), "encoder", "auto", "bf16", device="cpu")
    assert (backend.kind, backend.artifact.precision) == ("onnxruntime", "fp32")
    assert "OpenVINO is not installed" in backend.why
    assert "bf16 asked for, but OpenVINO is not installed" in caplog.text and "pip install" in caplog.text


@pytest.mark.parametrize(("backend", "precision", "message"), [
    ("onnxruntime", "bf16", "onnxruntime does not run bf16; bf16 runs on openvino"),
    ("openvino", "fp16", "openvino does not run fp16; fp16 runs on tensorrt or onnxruntime"),
])
def test_a_precision_the_backend_cannot_run_is_refused(tiny_onnx_dir, backend, precision, message):
    with pytest.raises(BackendError, match=message):
        open_backend(Manifest.load(tiny_onnx_dir), "encoder", backend, precision)


@pytest.mark.parametrize("command", [["edit", "in.png", "--out", "out"], ["serve"], ["demo"]])
def test_edit_serve_and_demo_share_the_backend_options(command):
    from deghost.apps.cli import build_parser

    args = build_parser().parse_args([*command, "--backend", "openvino", "--precision", "bf16", "--device", "cpu",
                                      "--threads", "1", "--aligned"])
    assert (args.backend, args.precision, args.device, args.threads, args.aligned) == ("openvino", "bf16", "cpu", 1,
                                                                                       True)


@needs_cpu_bf16
def test_a_service_replica_runs_in_the_precision_asked_for(tiny_onnx_dir):
    pytest.importorskip("ray.serve", reason="Ray Serve is an optional extra: pip install 'deghost[ray]'")
    from deghost.apps.serve.app import EditService

    replica = EditService(str(tiny_onnx_dir), backend="openvino", precision="bf16", device="cpu")
    try:
        stages = replica.pipe.describe()
    finally:
        replica.pipe.close()
    assert stages["encoder"] == "openvino/cpu bf16" and stages["diffcam"] == "openvino/cpu fp32"  # over its bound


def test_on_a_cpu_without_bf16_a_bf16_request_runs_f32_and_says_why(tiny_onnx_dir):
    """A CPU without bf16 instructions would silently compute OpenVINO's bf16 in f32; deghost says so."""
    missing = bf16_missing()
    if missing is None:
        pytest.skip("this CPU computes bf16: the refusal to pretend is tested on a CPU without it")
    manifest = Manifest.load(tiny_onnx_dir)
    backend = open_backend(manifest, "suppressor", "openvino", "bf16", device="cpu")
    assert (backend.precision, backend.runs_in) == ("bf16", "fp32")
    assert "this CPU has no bf16 instructions" in backend.why and backend.why.endswith("runs f32")
    assert "BF16" not in backend.why.split("capabilities: ")[1]  # the capabilities OpenVINO listed, without it

"""Runtime backends: feed checks, device-tensor rows, backend choice, and the TensorRT engine/platform check."""

from __future__ import annotations

import dataclasses
import logging
import sys
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deghost.files import sha256_of
from deghost.manifest import Artifact, Manifest, ManifestError, TensorInfo
from deghost.runtime.backends import (
    BackendError,
    DeviceTensor,
    check_feeds,
    choice_table,
    onnxruntime_cuda,
    open_backend,
)
from deghost.runtime.backends import onnxruntime as ort_backend
from deghost.runtime.backends.onnxruntime import has_cuda_provider
from deghost.runtime.backends.tensorrt import Platform, engine_mismatch
from deghost.runtime.cuda_stack import STACKS
from deghost.runtime.gpu_platform import fitting_stack, onnxruntime_gpu_install
from deghost.runtime.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
SIDE = 8


def toy_artifact(file: str = "toy.onnx", sha256: str = "", **fields) -> Artifact:
    """A stage with an image [B,3,8,8] and a class index [B] in, image·2 and class+1 out."""
    return Artifact(
        stage="toy", kind="onnx", precision="fp32", file=file, sha256=sha256,
        inputs=[TensorInfo("image", ["B", 3, SIDE, SIDE], "float32"), TensorInfo("class_index", ["B"], "int64")],
        outputs=[TensorInfo("doubled", ["B", 3, SIDE, SIDE], "float32"), TensorInfo("next_class", ["B"], "int64")],
        source="untrained: seed 0", preset="tiny", **fields,
    )


@pytest.fixture
def toy_manifest(tmp_path) -> Manifest:
    """A manifest with one real ONNX graph: doubled = 2·image, next_class = class_index + 1."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["image", "two"], ["doubled"]), helper.make_node("Add", ["class_index", "one"],
                                                                                  ["next_class"])],
        "toy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, SIDE, SIDE]),
         helper.make_tensor_value_info("class_index", TensorProto.INT64, ["B"])],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["B", 3, SIDE, SIDE]),
         helper.make_tensor_value_info("next_class", TensorProto.INT64, ["B"])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("one", TensorProto.INT64, [], [1])],
    )
    path = tmp_path / "toy.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    manifest = Manifest(tmp_path, [toy_artifact(sha256=sha256_of(path))])
    manifest.save()
    return Manifest.load(tmp_path)


def feeds(batch: int = 2) -> dict[str, np.ndarray]:
    image = np.random.default_rng(0).uniform(-1, 1, (batch, 3, SIDE, SIDE)).astype(np.float32)
    return {"image": image, "class_index": np.arange(batch, dtype=np.int64)}


def test_check_feeds_returns_the_batch_of_matching_feeds():
    assert check_feeds(toy_artifact(), feeds(3)) == 3


def test_a_wrong_size_tensor_is_refused_naming_the_input_and_the_expected_shape():
    bad = {**feeds(), "image": np.zeros((2, 3, SIDE + 1, SIDE), np.float32)}
    expected = r"toy: input 'image' is float32 \(2, 3, 9, 8\); expected float32 \[B,3,8,8\]"
    with pytest.raises(BackendError, match=expected):
        check_feeds(toy_artifact(), bad)


def test_a_float_fed_where_integers_are_expected_is_refused():
    with pytest.raises(BackendError, match="input 'class_index' is float32"):
        check_feeds(toy_artifact(), {**feeds(), "class_index": np.zeros(2, np.float32)})


def test_inputs_with_different_batches_are_refused():
    with pytest.raises(BackendError, match="input 'class_index' has batch 3 but an earlier input has 2"):
        check_feeds(toy_artifact(), {**feeds(2), "class_index": np.zeros(3, np.int64)})


def test_missing_and_unknown_feeds_are_named():
    with pytest.raises(BackendError, match=r"missing \['class_index'\].*unknown \['label'\]"):
        check_feeds(toy_artifact(), {"image": feeds()["image"], "label": np.zeros(2)})


def test_a_batch_above_the_engine_profile_is_refused():
    with pytest.raises(BackendError, match="batch 3 is larger than the engine's profile allows \\(2\\)"):
        check_feeds(toy_artifact(), feeds(3), max_batch=2)


def test_device_tensor_rows_compose_and_group_into_consecutive_runs():
    whole = np.arange(6 * 4, dtype=np.float32).reshape(6, 2, 2)
    tensor = DeviceTensor(pointer=1000, shape=whole.shape, dtype=whole.dtype, to_host=lambda: whole)
    view = tensor.take([4, 5, 0, 1, 2]).take([0, 1, 3, 4])  # rows 4, 5, 1, 2
    assert view.view_shape == (4, 2, 2)
    assert list(view.row_runs()) == [(4, 2), (1, 2)]
    assert view.row_bytes == 16
    np.testing.assert_array_equal(view.numpy(), whole[[4, 5, 1, 2]])


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_onnxruntime_backend_runs_the_graph_on_the_device_asked_and_returns_outputs_by_name(toy_manifest, device):
    backend = open_backend(toy_manifest, "toy", "onnxruntime", device=device)
    given = feeds(2)
    out = backend.run(given)
    # auto: CUDA where a real session runs on it (onnxruntime-gpu whose libraries load), else the CPU
    on_cuda = onnxruntime_cuda.cuda_unavailable() is None
    assert (backend.kind, backend.device) == ("onnxruntime", "cuda" if device == "auto" and on_cuda
                                              else "cpu")
    np.testing.assert_array_equal(out["doubled"], 2 * given["image"])
    np.testing.assert_array_equal(out["next_class"], [1, 2])


def test_the_memory_arena_is_off_by_default_can_be_switched_on_and_results_stay_the_same(toy_manifest):
    given = feeds(3)
    outputs = {}
    for arena in (True, False):
        chosen = {"memory_arena": True} if arena else {}  # off: the default
        backend = Pipeline(toy_manifest, backend="onnxruntime", device="cpu", **chosen).backend("toy")
        assert backend.session.get_session_options().enable_cpu_mem_arena is arena
        outputs[arena] = backend.run(given)["doubled"]
    np.testing.assert_array_equal(outputs[True], outputs[False])


def test_onnxruntime_backend_takes_a_device_tensor_feed_on_the_cpu(toy_manifest):
    backend = open_backend(toy_manifest, "toy", "onnxruntime", device="cpu")
    given = feeds(4)
    rows = DeviceTensor(0, given["image"].shape, given["image"].dtype, lambda: given["image"]).take([3, 1])
    out = backend.run({"image": rows, "class_index": np.array([7, 8])})
    np.testing.assert_array_equal(out["doubled"], 2 * given["image"][[3, 1]])


@pytest.fixture
def only_onnxruntime(monkeypatch):
    """A machine without OpenVINO (its import fails), so `auto` on the CPU has ONNX Runtime only."""
    from deghost.runtime.backends import openvino

    monkeypatch.setitem(sys.modules, "openvino", None)
    openvino._openvino.cache_clear()
    yield
    openvino._openvino.cache_clear()


def test_auto_without_engines_or_openvino_takes_onnxruntime_and_says_why(toy_manifest, only_onnxruntime, caplog):
    with caplog.at_level(logging.WARNING, logger="deghost.runtime"):
        backend = open_backend(toy_manifest, "toy", "auto", device="cpu")
    assert (backend.kind, backend.device) == ("onnxruntime", "cpu")
    assert backend.why == "OpenVINO is not installed; CPU asked for"
    assert not caplog.records  # nothing was built for another backend: no warning


def test_auto_falls_back_to_onnxruntime_with_a_warning_when_a_listed_engine_is_unusable(
        toy_manifest, only_onnxruntime, caplog):
    plan = toy_manifest.folder / "toy.fp16.plan"
    plan.write_bytes(b"not a TensorRT plan")
    toy_manifest.put(dataclasses.replace(engine(), kind="tensorrt", precision="fp16", sha256=sha256_of(plan)))
    with caplog.at_level(logging.WARNING, logger="deghost.runtime"):
        backend = open_backend(toy_manifest, "toy", "auto")
    assert backend.kind == "onnxruntime"
    # Without TensorRT: not installed; with it (a GPU machine): built on another platform / not a plan.
    assert "toy: TensorRT engine toy.fp16.plan not used: " in caplog.text
    assert [r.levelname for r in caplog.records if "toy.fp16.plan" in r.getMessage()] == ["WARNING"]
    np.testing.assert_array_equal(backend.run(feeds(1))["doubled"], 2 * feeds(1)["image"])


def test_the_choice_table_has_one_row_per_stage_with_backend_device_precision_and_why(toy_manifest):
    backend = open_backend(toy_manifest, "toy", "onnxruntime", device="cpu")
    lines = choice_table({"toy": backend, "toy2": backend}).splitlines()
    assert lines[0].split() == ["stage", "backend", "device", "precision", "why"]
    assert [line.split(None, 4) for line in lines[1:]] == [["toy", "onnxruntime", "cpu", "fp32", "asked for"],
                                                          ["toy2", "onnxruntime", "cpu", "fp32", "asked for"]]


def test_a_pipeline_logs_its_backend_choice_once_as_a_table(toy_manifest, caplog):
    pipe = Pipeline(toy_manifest, backend="onnxruntime", device="cpu")
    pipe._stages_for = lambda modes: ["toy"]  # the toy manifest has one stage
    with caplog.at_level(logging.INFO, logger="deghost.runtime"):
        pipe.prepare()
        pipe.prepare()
    tables = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backends:")]
    assert len(tables) == 1
    assert tables[0].splitlines()[-1].split(None, 4) == ["toy", "onnxruntime", "cpu", "fp32", "asked for"]


@pytest.mark.parametrize(("backend", "device"), [("tensorrt", "cpu"), ("openvino", "cuda")])
def test_a_backend_on_a_device_it_does_not_run_on_is_refused(toy_manifest, backend, device):
    with pytest.raises(BackendError, match=f"{backend} does not run on the {device.upper()}"):
        open_backend(toy_manifest, "toy", backend, device=device)


def test_asking_for_tensorrt_without_an_engine_says_how_to_build_one(toy_manifest):
    with pytest.raises(BackendError, match="TensorRT requested.*deghost build --checkpoints DIR --stages toy"):
        open_backend(toy_manifest, "toy", "tensorrt")


def test_a_stage_missing_from_the_manifest_names_the_export_command(toy_manifest):
    with pytest.raises(ManifestError, match="no ONNX graph for the 'encoder' stage.*--stages encoder"):
        open_backend(toy_manifest, "encoder", "onnxruntime", device="cpu")


def test_a_modified_graph_file_is_refused_by_its_sha256(toy_manifest):
    (toy_manifest.folder / "toy.onnx").write_bytes(b"not the graph")
    with pytest.raises(ManifestError, match="does not match its sha256"):
        open_backend(toy_manifest, "toy", "onnxruntime", device="cpu")


H100 = Platform("10.7.0", "NVIDIA H100 80GB HBM3", "9.0")


def engine(**fields) -> Artifact:
    built = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    return toy_artifact(file="toy.fp16.plan", **{**built, **fields})


def test_an_engine_built_on_this_platform_may_run():
    assert engine_mismatch(engine(gpu_name="nvidia  h100 80gb hbm3"), H100) is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"tensorrt_version": "10.3.0"}, "TensorRT 10.3.0 (running: 10.7.0)"),
        ({"compute_capability": "8.9", "gpu_name": "NVIDIA GeForce RTX 4090"},
         "compute capability 8.9 (running: 9.0), GPU 'NVIDIA GeForce RTX 4090'"),
        ({"gpu_name": "NVIDIA H100 PCIe"}, "GPU 'NVIDIA H100 PCIe' (running: 'NVIDIA H100 80GB HBM3')"),
    ],
)
def test_an_engine_from_another_tensorrt_or_gpu_is_refused_with_the_rebuild_command(fields, problem):
    message = engine_mismatch(engine(**fields), H100, "engines")
    assert problem in message
    assert message.endswith("deghost build --checkpoints DIR --stages toy --precision fp32 --out engines")



def test_the_rebuild_advice_names_the_command_every_install_has():
    from deghost.manifest import build_command

    # An installed package has no export/ folder; `deghost build` is its console script (pyproject.toml).
    assert build_command("engines", ["suppressor"], "fp16") == (
        "deghost build --checkpoints DIR --stages suppressor --precision fp16 --out engines")
    with pytest.raises(ManifestError, match=r"build the engines first: deghost build --checkpoints DIR --out /nowhere"):
        Manifest.load("/nowhere")


# -- ONNX Runtime on CUDA: "cuda" means CUDA, "auto" falls back with a warning -----------------------------


@pytest.fixture
def cuda_provider_that_fails_to_load(monkeypatch):
    """onnxruntime-gpu whose CUDA provider is listed but does not load (CUDA or cuDNN missing): ONNX Runtime
    then opens the session on the CPU alone. Here the CPU build stands in for it, told it has the provider."""
    if has_cuda_provider():
        pytest.skip("this onnxruntime has a CUDA provider, which may load here")
    monkeypatch.setattr(ort_backend, "has_cuda_provider", lambda: True)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_asked_for_is_refused_when_the_cuda_provider_did_not_load(toy_manifest, cuda_provider_that_fails_to_load):
    with pytest.raises(BackendError) as refused:
        open_backend(toy_manifest, "toy", "onnxruntime", device="cuda")
    message = str(refused.value)
    assert message.startswith("toy: ONNX Runtime on CUDA requested, but the CUDA provider of onnxruntime-gpu")
    stack = fitting_stack()  # this driver's CUDA stack; without a driver, the default (CUDA 13)
    assert "did not load" in message and f"the CUDA {stack.major} and cuDNN 9 libraries" in message
    assert f"(the {stack.extra} extra brings them)" in message
    assert f"NVIDIA driver {stack.min_driver} or newer" in message
    assert message.endswith(onnxruntime_gpu_install())


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
@pytest.mark.parametrize("backend", ["onnxruntime", "auto"])
def test_auto_runs_on_the_cpu_with_a_warning_when_the_cuda_provider_did_not_load(
        toy_manifest, cuda_provider_that_fails_to_load, only_onnxruntime, caplog, backend):
    with caplog.at_level(logging.WARNING, logger="deghost.runtime"):
        opened = open_backend(toy_manifest, "toy", backend, device="auto")
    assert (opened.kind, opened.device) == ("onnxruntime", "cpu")
    assert "toy: this stage runs on the CPU: the CUDA provider of onnxruntime-gpu" in caplog.text
    if backend == "auto":
        assert opened.why.endswith("ONNX Runtime's CUDA provider did not load")
    np.testing.assert_array_equal(opened.run(feeds(1))["doubled"], 2 * feeds(1)["image"])


def test_cuda_asked_for_without_a_cuda_provider_names_the_install_that_brings_one(toy_manifest):
    if has_cuda_provider():
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(BackendError) as refused:
        open_backend(toy_manifest, "toy", "onnxruntime", device="cuda")
    assert "ONNX Runtime on CUDA requested, but onnxruntime" in str(refused.value)
    assert "has no CUDA provider" in str(refused.value)
    assert str(refused.value).endswith(onnxruntime_gpu_install())


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_a_listed_cuda_provider_whose_real_session_runs_on_the_cpu_is_not_cuda(monkeypatch):
    """Stand-in for onnxruntime-gpu whose CUDA libraries do not load: this CPU build, made to list the CUDA
    provider; the session that then opens is real and comes up on the CPU, as the GPU build's does."""
    if ort_backend.ort.get_available_providers()[:1] == ["CUDAExecutionProvider"]:
        pytest.skip("this onnxruntime is a GPU build")
    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort_backend.ort, "get_available_providers", lambda: listed)
    assert has_cuda_provider()  # the listing says CUDA ...
    assert onnxruntime_cuda.session_providers() == ["CPUExecutionProvider"]  # ... a real session says CPU
    reason = onnxruntime_cuda.cuda_unavailable()
    assert reason.startswith(f"onnxruntime {ort_backend.ort.__version__} lists CUDAExecutionProvider, but a session "
                             "asked for it ran on the CPU")
    problem = ort_backend.gpu_install_problem()  # what the first-run script's backends step reports
    assert problem.startswith("the CUDA provider of onnxruntime-gpu") and "did not load" in problem


@pytest.mark.gpu
def test_cuda_asked_for_runs_on_cuda_where_onnxruntime_gpu_loads(toy_manifest):
    opened = open_backend(toy_manifest, "toy", "onnxruntime", device="cuda")
    assert (opened.kind, opened.device) == ("onnxruntime", "cuda")
    given = feeds(3)
    out = opened.run(given, keep={"doubled"})
    np.testing.assert_array_equal(out["doubled"].numpy(), 2 * given["image"])
    np.testing.assert_array_equal(out["next_class"], [1, 2, 3])


@pytest.mark.parametrize("major", sorted(STACKS))
def test_the_gpu_install_recipe_removes_both_packages_then_installs_the_extras_onnxruntime_gpu(major):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    stack = STACKS[major]
    pin = {12: "onnxruntime-gpu[cuda,cudnn]>=1.21,<1.27", 13: "onnxruntime-gpu[cuda,cudnn]>=1.28,<2"}[major]
    assert stack.onnxruntime_gpu_install == f'pip uninstall -y onnxruntime onnxruntime-gpu && pip install "{pin}"'
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert pin in extras[stack.extra]  # the same pin the extra installs


def installed(*names: str):
    """importlib.metadata.version as on a machine where only `names` are installed (all at 1.22.0)."""

    def version(name: str) -> str:
        if name not in names:
            raise PackageNotFoundError(name)
        return "1.22.0"

    return version


def test_onnxruntime_and_onnxruntime_gpu_installed_together_are_a_conflict_naming_both():
    assert ort_backend.install_conflict(installed("onnxruntime")) is None
    assert ort_backend.install_conflict(installed("onnxruntime-gpu")) is None
    conflict = ort_backend.install_conflict(installed("onnxruntime", "onnxruntime-gpu"))
    assert conflict.startswith("onnxruntime 1.22.0 and onnxruntime-gpu 1.22.0 are both installed")


def test_an_install_conflict_is_logged_once_per_process_with_both_fixes(toy_manifest, monkeypatch, caplog):
    monkeypatch.setattr(ort_backend, "install_conflict", lambda: "onnxruntime 1 and onnxruntime-gpu 1 are both here")
    ort_backend.warn_of_an_install_conflict.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="deghost.runtime"):
            for _ in range(2):
                open_backend(toy_manifest, "toy", "onnxruntime", device="cpu")
    finally:
        ort_backend.warn_of_an_install_conflict.cache_clear()
    (record,) = [r for r in caplog.records if "both here" in r.getMessage()]
    assert onnxruntime_gpu_install() in record.getMessage()
    assert "on the CPU pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime" in record.getMessage()


# -- auto and a TensorRT plan that is missing or changed since the build ---------------------------------


@pytest.fixture
def tensorrt_on_the_engines_platform(monkeypatch):
    """TensorRT and the GPU the engine() artifacts were built on (H100), stood in for up to the point where
    the backend reads the plan file: nothing of TensorRT or CUDA is called before manifest.verify."""
    from deghost.runtime import backends
    from deghost.runtime.backends import tensorrt

    monkeypatch.setattr(backends, "tensorrt_backend_unavailable", lambda: None)
    monkeypatch.setattr(tensorrt, "_shared", lambda: tensorrt._Shared(stream=None, platform=H100))


@pytest.mark.parametrize(("plan_bytes", "problem"), [(None, "but missing"), (b"changed", "does not match its sha256")])
def test_auto_falls_back_to_onnxruntime_naming_a_missing_or_changed_plan_and_the_rebuild_command(
        toy_manifest, only_onnxruntime, tensorrt_on_the_engines_platform, caplog, plan_bytes, problem):
    plan = toy_manifest.folder / "toy.fp16.plan"
    plan.write_bytes(b"the plan as built")
    toy_manifest.put(dataclasses.replace(engine(), kind="tensorrt", precision="fp16", sha256=sha256_of(plan)))
    if plan_bytes is None:
        plan.unlink()
    else:
        plan.write_bytes(plan_bytes)

    with caplog.at_level(logging.WARNING, logger="deghost.runtime"):
        opened = open_backend(toy_manifest, "toy", "auto")
    assert opened.kind == "onnxruntime"
    (warning,) = [r.getMessage() for r in caplog.records if "toy.fp16.plan" in r.getMessage()]
    assert warning.startswith("toy: TensorRT engine toy.fp16.plan not used: ")
    assert f"{plan} " in warning and problem in warning
    assert f"deghost build --checkpoints DIR --stages toy --out {toy_manifest.folder}" in warning
    np.testing.assert_array_equal(opened.run(feeds(1))["doubled"], 2 * feeds(1)["image"])

    with pytest.raises(ManifestError, match=problem):  # asked for by name: no fallback
        open_backend(toy_manifest, "toy", "tensorrt")

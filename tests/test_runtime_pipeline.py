"""The torch-free Pipeline on the tiny ONNX set equals the PyTorch reference pipeline built from the same seed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from deghost.manifest import Manifest
from deghost.runtime.directions import DirectionError
from deghost.runtime.images import ImageError, read_image, to_model_input
from deghost.runtime.pipeline import SUPPRESS_MODES, Pipeline

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"
SIDE = 256  # the tiny preset's image side
LEVEL = 2 / 255  # one 8-bit level in [-1, 1]


@pytest.fixture(scope="module")
def pipe(tiny_onnx_dir):
    with Pipeline.load(tiny_onnx_dir, backend="onnxruntime", device="cpu") as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def reference(tiny_onnx_dir):
    from deghost.export.torch_pipeline import TorchPipeline

    sources = {artifact.source for artifact in Manifest.load(tiny_onnx_dir).artifacts}
    assert sources == {"untrained: seed 0"}, f"the reference below is built with seed 0, the ONNX set from {sources}"
    return TorchPipeline.random("tiny", seed=0)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Two different faces, float32 [2,3,256,256] in [-1,1]: the astronaut and her mirror image, shifted."""
    rgb = read_image(ASTRONAUT).rgb
    second = np.ascontiguousarray(np.roll(rgb[:, ::-1], 40, axis=0))
    return np.concatenate([to_model_input(image, SIDE)[0] for image in (rgb, second)])


@pytest.fixture(scope="module")
def two_by_two(pipe, faces, module_tmp_path):
    """Both faces × (smile, a custom direction file with no known class), suppress "none", in one call."""
    custom = module_tmp_path / "custom.npy"
    np.save(custom, np.random.default_rng(7).standard_normal((18, 512)))
    return pipe.edit(faces, attribute=["smile", str(custom)], alpha=20.0, suppress="none")


def bound(manifest: Manifest, *stages: str, kind: str = "onnx") -> float:
    """Sum of the bounds the manifest records for the stages a tensor went through (relative errors of
    chained stages add, to first order): ONNX vs PyTorch for "onnx" graphs, TensorRT FP16 vs ONNX
    Runtime FP32 for "tensorrt" engines."""
    precision = "fp32" if kind == "onnx" else "fp16"
    return sum(manifest.find(stage, kind, precision).validation["bound"] for stage in stages)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def test_runtime_equals_the_pytorch_reference_in_every_suppress_mode(pipe, reference, faces):
    edits = pipe.edits("smile", 20.0)
    got = pipe.run(faces[:1], edits, SUPPRESS_MODES)
    want = reference.edit(faces[:1], edits, SUPPRESS_MODES)
    chain = ("encoder", "generator", "diffcam")
    m = pipe.manifest
    assert relative_error(got.w, want.w) <= bound(m, "encoder")
    assert relative_error(got.w_edit, want.w_edit) <= bound(m, "encoder")
    assert relative_error(got.mask, want.mask) <= bound(m, *chain)
    assert relative_error(got.fused, want.fused) <= bound(m, *chain)
    assert relative_error(got.outputs["network"], want.outputs["network"]) <= bound(m, *chain, "suppressor")
    assert relative_error(got.outputs["eogi"], want.outputs["eogi"]) <= bound(m, *chain, "deghosting")
    np.testing.assert_array_equal(got.outputs["none"], got.fused)
    # Poisson works on 8-bit images and label maps: a rounding or a near-tie label may flip, nothing more.
    off_by_more_than_a_level = np.abs(got.outputs["poisson"] - want.outputs["poisson"]) > LEVEL + 1e-6
    assert off_by_more_than_a_level.mean() <= 1e-3
    assert got.class_index.tolist() == want.class_index.tolist() == [15]
    assert got.untrained and set(got.timings_ms) >= {"encoder", "generator", "diffcam", "suppressor",
                                                     "deghosting", "face_parser", "blend", "glue"}


def test_two_images_and_two_attributes_run_in_one_call_with_image_major_rows(two_by_two, reference, faces, pipe):
    got = two_by_two
    want = reference.edit(faces, got.edits, "none")
    assert got.fused.shape == (4, 3, SIDE, SIDE) and got.mask.shape == (4, 1, SIDE, SIDE)
    assert [e.attribute for e in got.edits] == ["smile", "custom"] and got.row(1, 0) == 2
    chain = bound(pipe.manifest, "encoder", "generator", "diffcam")
    assert relative_error(got.fused, want.fused) <= chain
    assert relative_error(got.mask, want.mask) <= chain
    for image in range(2):
        for k, edit in enumerate(got.edits):
            expected = got.w[image] + np.float32(edit.alpha) * edit.direction
            np.testing.assert_allclose(got.w_edit[got.row(image, k)], expected, rtol=0, atol=1e-5)


def test_a_direction_of_no_known_attribute_masks_the_class_whose_logit_the_edit_moves_most(two_by_two):
    classes, logits = two_by_two.class_index, two_by_two.logits
    assert classes[[0, 2]].tolist() == [15, 15]  # smile → Smiling
    assert classes[[1, 3]].tolist() == logits[[1, 3]].argmax(1).tolist()


def test_engine_batch_limits_split_the_work_without_changing_results(pipe, faces, two_by_two, monkeypatch):
    for stage in ("encoder", "generator", "diffcam"):
        monkeypatch.setattr(pipe.backend(stage), "max_batch", 3)  # generator: 1 image + its 2 edits at most
    assert pipe._chunk_shape(2, 2, ["none"]) == (1, 2)
    chunked = pipe.run(faces, two_by_two.edits, "none")
    for name in ("fused", "mask", "w_edit", "logits"):
        assert relative_error(getattr(chunked, name), getattr(two_by_two, name)) <= 1e-5, name


def test_render_then_suppress_is_run_and_suppress_fuses_with_the_masks_given(pipe, faces):
    """The two halves a clip uses (masks steadied in between) give what one `run` gives, in every mode, also
    when the suppress stages take fewer rows per call; and the mask given to `suppress` is the one fused
    with (docs/design.md §1: F = T·M + I·(1−M); with M = 1/2 everywhere, (T + I) / 2)."""
    edits = pipe.edits(["smile", "age"], 20.0)  # rows: image 0 smile, image 0 age, image 1 smile, image 1 age
    modes = ("network", "poisson", "none")  # "eogi" takes the network's branch with another stage
    whole = pipe.run(faces, edits, modes)
    rendered = pipe.render(faces, edits)
    pipe.max_rows, kept = 2, pipe.max_rows  # suppress in chunks of 1 row (the parser sees 2)
    try:
        halves = pipe.suppress(rendered, modes)
    finally:
        pipe.max_rows = kept
    for mode in modes:
        assert relative_error(halves.outputs[mode], whole.outputs[mode]) <= 1e-5, mode
    np.testing.assert_array_equal(halves.mask, whole.mask)
    assert halves.class_index.tolist() == whole.class_index.tolist()
    images = faces[np.arange(len(rendered.edit)) // len(edits)]
    mask = np.repeat(np.repeat(whole.mask, SIDE // whole.mask.shape[-1], 2), SIDE // whole.mask.shape[-1], 3)
    np.testing.assert_allclose(whole.fused, rendered.edit * mask + images * (1 - mask), rtol=0, atol=1e-6)
    half = np.full_like(rendered.mask, 0.5)
    np.testing.assert_allclose(pipe.suppress(rendered, "none", mask=half).fused, (rendered.edit + images) / 2,
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="masks"):
        pipe.suppress(rendered, "none", mask=half[:1])


def test_edits_are_every_attribute_at_every_alpha(pipe):
    edits = pipe.edits(["smile", "age"], [10, -5])
    assert [e.label for e in edits] == ["smile+10", "smile-5", "age+10", "age-5"]
    assert [e.class_index for e in edits] == [15, 15, 16, 16]
    for edit in edits:
        assert edit.direction.shape == (14, 512)
        assert np.linalg.norm(edit.direction) == pytest.approx(1.0, abs=1e-6)


def test_an_unknown_attribute_is_refused_listing_the_available_ones(pipe):
    with pytest.raises(ValueError, match=r"unknown attribute 'smiling'; available: age, beard, bushy_eyebrows, smile"):
        pipe.edits("smiling")


def test_a_missing_direction_file_is_refused(pipe, tmp_path):
    with pytest.raises(DirectionError, match="does not exist"):
        pipe.edits(str(tmp_path / "nowhere.npy"))


def test_an_unknown_suppress_mode_is_refused_listing_the_modes(pipe, faces):
    with pytest.raises(ValueError, match="unknown suppress mode.*network, poisson, eogi, none"):
        pipe.edit(faces[:1], suppress="blur")


def test_images_of_another_size_are_resized_with_a_warning_and_wrong_arrays_refused(pipe):
    rgb = read_image(ASTRONAUT).rgb  # 512²
    batch, warnings = pipe.model_batch([rgb])
    assert batch.shape == (1, 3, SIDE, SIDE) and batch.dtype == np.float32
    assert any("resized from 512² to 256²" in w for w in warnings)
    with pytest.raises(ImageError, match=r"float32 \[B,3,256,256\]"):
        pipe.model_batch(np.zeros((1, 3, 128, 128), np.float32))
    with pytest.raises(ImageError, match="RGB uint8"):
        pipe.model_batch([rgb[..., 0]])


def test_face_mask_is_where_both_label_maps_hold_a_face_class(pipe, faces):
    face_classes = (1, 2, 3, 10, 11, 12, 13)  # docs/design.md §1: skin, brows, nose, mouth, lips
    labels = pipe.face_labels(faces)
    assert labels.shape == (2, SIDE, SIDE) and labels.dtype == np.int64
    masks = pipe.face_mask(faces, faces[::-1])
    expected = np.isin(labels[0], face_classes) & np.isin(labels[1], face_classes)
    np.testing.assert_array_equal(masks[0] == 255, expected)
    assert pipe.face_mask(faces[0], faces[1]).shape == (SIDE, SIDE)


@pytest.mark.tensorrt
def test_tensorrt_pipeline_matches_onnxruntime_with_device_handoff(tiny_onnx_dir, faces, tmp_path):
    """FP16 engines of the tiny set, then the same edit on both backends (recon rows gathered on the GPU)."""
    from deghost.export.build import BuildOptions, build

    folder = tmp_path / "engines"
    # Hard links: the build reuses the unchanged ONNX graphs and rewrites only its own manifest copy.
    shutil.copytree(tiny_onnx_dir, folder, copy_function=os.link)
    stages = ("encoder", "generator", "diffcam", "suppressor")
    build(BuildOptions(out=folder, preset="tiny", random_init=0, stages=stages, precision="fp16"))
    with (Pipeline.load(folder, backend="tensorrt") as gpu,
          Pipeline.load(folder, backend="onnxruntime", device="cpu") as cpu):  # the bound's reference: CPU
        got = gpu.edit(faces[:1], attribute=["smile", "age"], suppress="network")
        want = cpu.edit(faces[:1], attribute=["smile", "age"], suppress="network")
        assert set(gpu.describe().values()) == {"tensorrt/cuda fp16"}
    assert np.all(np.isfinite(got.output))
    chain = ("encoder", "generator", "diffcam")
    manifest = Manifest.load(folder)
    assert relative_error(got.fused, want.fused) <= bound(manifest, *chain, kind="tensorrt")
    assert relative_error(got.output, want.output) <= bound(manifest, *chain, "suppressor", kind="tensorrt")

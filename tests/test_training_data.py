"""Pair synthesis (synthetic ghosting → seamlessClone targets on disk) and the pair dataset."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.runtime.images import read_image, write_image
from deghost.training.data import DatasetError, PairDataset, PipelineGhosting, read_manifest, synthesize_pairs
from deghost.training.synthetic import FACE_THRESHOLD, SyntheticGhosting, fuse, random_heat_map

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"


def write_sources(folder: Path, count: int) -> Path:
    """`count` 192² crops of the astronaut photo as PNG sources."""
    photo = read_image(ASTRONAUT).rgb
    for index in range(count):
        top, left = 40 * (index % 4), 60 * (index // 4)
        write_image(folder / f"crop{index:02d}.png", photo[top : top + 192, left : left + 192])
    return folder


def pixels(folder: Path, entry: dict, name: str) -> np.ndarray:
    return read_image(folder / entry[name]).rgb


def laplacian(rgb: np.ndarray) -> np.ndarray:
    return cv2.Laplacian(rgb.astype(np.float32), cv2.CV_32F)


def test_fused_image_is_the_edit_where_the_mask_is_one_and_the_image_where_it_is_zero():
    rng = np.random.default_rng(0)
    image, edit = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), np.float32)
    mask[:, 4:] = 1
    mask[0, 0] = 0.5
    fused = fuse(image, edit, mask)
    assert np.array_equal(fused[:, 4:], edit[:, 4:])
    assert np.array_equal(fused[1:, :4], image[1:, :4])
    assert np.allclose(fused[0, 0], (edit[0, 0].astype(float) + image[0, 0]) / 2, atol=0.5)


def test_heat_map_is_a_soft_mask_peaking_at_one():
    heat = random_heat_map(np.random.default_rng(3), 48, 64)
    assert heat.shape == (48, 64) and heat.dtype == np.float32
    assert heat.max() == pytest.approx(1.0) and heat.min() == pytest.approx(0.0)
    assert ((heat > 0.05) & (heat < 0.95)).mean() > 0.2  # soft: a wide band between 0 and 1


def test_targets_are_the_image_outside_the_face_mask_and_cloned_ghosting_inside(tmp_path):
    sources = write_sources(tmp_path / "sources", 4)
    report = synthesize_pairs(sources, tmp_path / "pairs", SyntheticGhosting(), size=64, progress=False)
    assert report.made == 4 and not report.skipped
    interiors = 0
    for entry in read_manifest(tmp_path / "pairs"):
        image, fused, target = (pixels(tmp_path / "pairs", entry, n) for n in ("image", "fused", "target"))
        inside = pixels(tmp_path / "pairs", entry, "face_mask")[..., 0] > 0
        assert image.shape == fused.shape == target.shape == (64, 64, 3)
        assert 0 < inside.mean() < 1
        assert np.array_equal(target[~inside], image[~inside]), "seamlessClone changed pixels outside the mask"
        # seamlessClone keeps the source's Laplacian inside the mask (OpenCV erodes it by 3 pixels first).
        interior = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=5) > 0
        if interior.any():
            target_lap, fused_lap, image_lap = (laplacian(x)[interior] for x in (target, fused, image))
            assert np.abs(target_lap - fused_lap).mean() < 0.5 * np.abs(target_lap - image_lap).mean(), (
                "the fused image's gradients were not cloned in")
            interiors += 1
        ghosting = ~inside & np.any(fused != image, axis=2)
        assert ghosting.mean() > 0.05, "the faint tails of the mask (the ghosting) should lie outside the face mask"
        assert entry["attribute"] in ("smile", "age", "beard", "bushy_eyebrows") and entry["alpha"] == 20.0
    assert interiors > 0


def test_the_face_mask_of_synthetic_ghosting_is_the_heat_map_thresholded():
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    image = read_image(ASTRONAUT).rgb[:64, :64].copy()
    (pair,) = SyntheticGhosting()([image], "smile", 20.0, [rng_a])
    heat = random_heat_map(rng_b, 64, 64)
    assert np.array_equal(pair.face_mask > 0, heat >= FACE_THRESHOLD)


def test_synthesis_resumes_where_it_stopped_and_remakes_the_same_pairs(tmp_path):
    sources = write_sources(tmp_path / "sources", 5)
    out = tmp_path / "pairs"
    synthesize_pairs(sources, out, SyntheticGhosting(), size=32, seed=4, progress=False)
    first = {e["id"]: pixels(out, e, "target") for e in read_manifest(out)}
    # An interruption: the last manifest line half-written, one pair's target lost.
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    lost = json.loads(lines[-1])["id"]
    kept_file = out / json.loads(lines[0])["target"]
    kept_time = kept_file.stat().st_mtime_ns
    report = synthesize_pairs(sources, out, SyntheticGhosting(), size=32, seed=4, progress=False)
    assert (report.made, report.already_done) == (1, 4)
    assert kept_file.stat().st_mtime_ns == kept_time, "a finished pair was rewritten"
    again = {e["id"]: pixels(out, e, "target") for e in read_manifest(out)}
    assert sorted(again) == sorted(first)
    assert np.array_equal(again[lost], first[lost])


def test_corrupt_sources_are_skipped_and_listed(tmp_path):
    sources = write_sources(tmp_path / "sources", 2)
    (sources / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (sources / "empty.jpg").write_bytes(b"")
    report = synthesize_pairs(sources, tmp_path / "pairs", SyntheticGhosting(), size=32, progress=False)
    assert report.made == 2
    assert sorted(Path(s["source"]).name for s in report.skipped) == ["broken.png", "empty.jpg"]
    listed = json.loads((tmp_path / "pairs" / "skipped.json").read_text())
    assert [s["source"] for s in listed] == [s["source"] for s in report.skipped]
    assert "could not be decoded" in listed[0]["reason"] or "empty" in listed[0]["reason"]


def test_continuing_a_dataset_with_other_settings_is_refused(tmp_path):
    sources = write_sources(tmp_path / "sources", 1)
    synthesize_pairs(sources, tmp_path / "pairs", SyntheticGhosting(), size=32, progress=False)
    with pytest.raises(DatasetError, match="same settings"):
        synthesize_pairs(sources, tmp_path / "pairs", SyntheticGhosting(), size=64, progress=False)


def test_pair_dataset_crops_and_flips_the_three_images_alike_and_reproducibly(tmp_path):
    sources = write_sources(tmp_path / "sources", 2)
    synthesize_pairs(sources, tmp_path / "pairs", SyntheticGhosting(), size=64, progress=False)
    whole = PairDataset(tmp_path / "pairs")
    cropped = PairDataset(tmp_path / "pairs", crop=32, flip=True, seed=1)
    full = whole[0]
    for key in (0, 2, 4, 6):  # pair 0 in four epochs
        item = cropped[key]
        assert item["image"].shape == (3, 32, 32)
        found = [
            (top, left, flip)
            for top in range(33) for left in range(33) for flip in (False, True)
            if (full["image"][:, top : top + 32, left : left + 32].flip(-1) if flip
                else full["image"][:, top : top + 32, left : left + 32]).equal(item["image"])
        ]
        assert found, "the crop is not a window of the pair's image"
        top, left, flip = found[0]
        for name in ("fused", "target"):
            window = full[name][:, top : top + 32, left : left + 32]
            assert (window.flip(-1) if flip else window).equal(item[name]), f"{name} cropped differently"
        assert all(cropped[key][n].equal(item[n]) for n in item), "the same key must give the same crop"
    assert not cropped[0]["image"].equal(cropped[2]["image"]), "each epoch should crop differently"
    assert full["image"].min() >= -1 and full["image"].max() <= 1


def test_pairs_from_the_real_pipeline_keep_the_image_outside_the_bisenet_face_mask(tmp_path, tiny_onnx_dir):
    from deghost.runtime.pipeline import Pipeline

    ghosting = PipelineGhosting(Pipeline.load(tiny_onnx_dir, backend="onnxruntime", device="cpu"))
    sources = write_sources(tmp_path / "sources", 2)
    report = synthesize_pairs(sources, tmp_path / "pairs", ghosting, size=ghosting.size, batch_size=2,
                              progress=False)
    assert report.made == 2
    for entry in read_manifest(tmp_path / "pairs"):
        image, fused, target = (pixels(tmp_path / "pairs", entry, n) for n in ("image", "fused", "target"))
        inside = pixels(tmp_path / "pairs", entry, "face_mask")[..., 0] > 0
        assert image.shape == (ghosting.size, ghosting.size, 3)
        assert np.array_equal(target[~inside], image[~inside])
        assert np.any(fused != image)

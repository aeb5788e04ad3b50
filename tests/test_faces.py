"""Faces in ordinary photos: detection, landmarks, FFHQ alignment and paste-back (no editing networks)."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.runtime.faces import FaceFinder, NoFaceError, paste_faces
from deghost.runtime.faces.align import align_face, ffhq_quad, quad_transform
from deghost.runtime.faces.detector import FACE_IN_INPUT, INPUT_SIDE, TILE_EDGE, pyramid, ssd_anchors, weighted_nms
from deghost.runtime.faces.face_model import FaceModel
from deghost.runtime.faces.landmarks import alignment_points
from deghost.runtime.images import ImageError, read_image

IMAGES = Path(__file__).parent / "data" / "images"
PORTRAITS = ("astronaut.png", "grace_hopper.jpg")
SIDE = 1024


@pytest.fixture(scope="module")
def finder() -> FaceFinder:
    return FaceFinder()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: read_image(IMAGES / name).rgb for name in PORTRAITS}


def crop_scale(points) -> float:
    """1024-crop pixels per photo pixel for a face with these alignment points (the FFHQ quad's side)."""
    return SIDE / ffhq_quad(*points)[1]


def composite(portraits: dict[str, np.ndarray], width: int, height: int, placements
              ) -> tuple[np.ndarray, list[np.ndarray]]:
    """A grey width×height canvas with portraits pasted at (name, scale, x, y) → (canvas, per placement the
    INTER_AREA-resized copy's pixel → canvas pixel map as (scale [2], offset [2]))."""
    canvas = np.full((height, width, 3), 128, np.uint8)
    maps = []
    for name, scale, x, y in placements:
        portrait = portraits[name]
        size = (round(portrait.shape[1] * scale), round(portrait.shape[0] * scale))
        canvas[y : y + size[1], x : x + size[0]] = cv2.resize(portrait, size, interpolation=cv2.INTER_AREA)
        maps.append((np.array(size) / portrait.shape[1::-1], np.array([x, y], float)))
    return canvas, maps


def moved_points(points: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Pixel-index points of a portrait → where its resized copy puts them (pixel centres scale about −0.5)."""
    return (points + 0.5) * scale - 0.5 + offset


def warp(rgb: np.ndarray, angle: float, scale: float, shift=(0.0, 0.0), pad: int = 300
         ) -> tuple[np.ndarray, np.ndarray]:
    """The photo rotated/scaled about its centre and shifted, on a canvas `pad` larger → (image, 2×3 matrix)."""
    height, width = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    matrix[:, 2] += np.asarray(shift) + pad / 2
    return cv2.warpAffine(rgb, matrix, (width + pad, height + pad), flags=cv2.INTER_CUBIC), matrix


def test_anchors_are_the_896_ssd_centres_of_a_16x16_and_an_8x8_map():
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16])  # 2 anchors per cell on the 16² map
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8])  # then 6 per cell on the 8² map
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_weighted_nms_merges_overlapping_boxes_by_score_and_keeps_separate_ones():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.3, 0.8])
    keypoints = np.zeros((3, 6, 2))
    found = weighted_nms(boxes, scores, keypoints)
    assert len(found) == 2
    np.testing.assert_allclose(found[0].box, [0.25, 0, 10.25, 10])  # (0.9·0 + 0.3·1) / 1.2
    assert found[0].score == pytest.approx(0.9)
    np.testing.assert_allclose(found[1].box, boxes[2])


@pytest.mark.parametrize("degenerate", [[10, 10, 5, 20], [10, 10, 20, 10], [0, 0, np.nan, 5]])
def test_weighted_nms_drops_boxes_without_area_and_ends(degenerate):
    boxes = np.array([degenerate, [50, 50, 60, 60]], float)
    found: list = []
    worker = threading.Thread(target=lambda: found.extend(weighted_nms(boxes, np.array([0.9, 0.8]),
                                                                      np.zeros((2, 6, 2)))), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "weighted_nms did not end"
    assert len(found) == 1
    np.testing.assert_allclose(found[0].box, [50, 50, 60, 60])
    assert weighted_nms(boxes[:1], np.array([0.9]), np.zeros((1, 6, 2))) == []


@pytest.mark.parametrize("name", PORTRAITS)
def test_each_bundled_portrait_has_exactly_one_face(finder, photos, name):
    faces = finder.find(photos[name], SIDE)
    assert len(faces) == 1
    face = faces[0]
    assert face.crop.shape == (SIDE, SIDE, 3) and face.landmarks.shape == (468, 2)
    eye_left, eye_right, mouth_left, mouth_right = alignment_points(face.landmarks)
    x0, y0, x1, y1 = face.box
    for point in (eye_left, eye_right, mouth_left, mouth_right):
        assert x0 <= point[0] <= x1 and y0 <= point[1] <= y1
    assert eye_left[0] < eye_right[0] and mouth_left[0] < mouth_right[0]
    assert max(eye_left[1], eye_right[1]) < min(mouth_left[1], mouth_right[1])


def test_a_side_by_side_composite_has_two_faces_left_to_right(finder, photos):
    left = photos["astronaut.png"]
    right = photos["grace_hopper.jpg"][44:556]  # the same height, 512
    faces = finder.find(np.hstack([left, right]), SIDE)
    assert len(faces) == 2
    assert faces[0].box[2] < left.shape[1] <= faces[1].box[0]
    assert len(finder.find(np.hstack([left, right]), SIDE, faces="largest")) == 1
    assert finder.find(np.hstack([left, right]), SIDE, faces=1)[0].box[0] >= left.shape[1]


@pytest.mark.parametrize("left, right", [("astronaut.png", "grace_hopper.jpg"), ("grace_hopper.jpg", "astronaut.png")])
def test_largest_face_is_the_larger_one_wherever_it_is(finder, photos, left, right):
    sizes = {name: finder.find(photos[name], SIDE)[0].size for name in PORTRAITS}  # each portrait alone
    larger = max(sizes, key=sizes.get)
    assert sizes[larger] > 1.5 * min(sizes.values())  # grace_hopper's face is ~2x the astronaut's
    pair = np.hstack([photos[left][:512], photos[right][:512]])
    chosen = finder.find(pair, SIDE, faces="largest")
    assert len(chosen) == 1
    assert (chosen[0].box[0] >= 512) == (larger == right)


@pytest.fixture(scope="module")
def portraits_alone(finder, photos) -> dict[str, np.ndarray]:
    """Each portrait's alignment points [4,2], found on the portrait alone."""
    return {name: np.array(alignment_points(finder.find(photos[name], SIDE)[0].landmarks)) for name in PORTRAITS}


def assert_found_where_placed(faces, portraits_alone, placements, maps) -> None:
    """One face per placement, left to right, its alignment points within 1 px of where the pasting put them."""
    order = np.argsort([x for _, _, x, _ in placements])
    assert len(faces) == len(placements)
    for face, i in zip(faces, order, strict=True):
        expected = moved_points(portraits_alone[placements[i][0]], *maps[i])
        assert np.abs(np.array(alignment_points(face.landmarks)) - expected).max() < 1.0


def test_small_faces_in_a_12_megapixel_photo_are_found(finder, photos, portraits_alone):
    # Face boxes ~118 px (astronaut, 98 px alone) and ~120 px (grace_hopper, 200 px alone) in 4000x3000.
    placements = [("astronaut.png", 1.2, 300, 2000), ("grace_hopper.jpg", 0.6, 2900, 400)]
    canvas, maps = composite(photos, 4000, 3000, placements)
    assert_found_where_placed(finder.find(canvas, SIDE), portraits_alone, placements, maps)


def test_a_98px_face_on_a_2000px_canvas_is_found(finder, photos, portraits_alone):
    placements = [("astronaut.png", 1.0, 800, 500)]
    canvas, maps = composite(photos, 2000, 1400, placements)
    assert_found_where_placed(finder.find(canvas, SIDE), portraits_alone, placements, maps)


def test_a_small_face_in_a_4_to_1_panorama_is_found(finder, photos, portraits_alone):
    placements = [("grace_hopper.jpg", 0.3, 3000, 300)]  # a ~60 px face
    canvas, maps = composite(photos, 4000, 1000, placements)
    assert_found_where_placed(finder.find(canvas, SIDE), portraits_alone, placements, maps)


def test_faces_below_min_face_are_not_returned(finder, photos, portraits_alone):
    placements = [("astronaut.png", 0.6, 200, 300), ("grace_hopper.jpg", 0.6, 1200, 700)]  # ~59 and ~120 px
    canvas, maps = composite(photos, 2000, 1500, placements)
    assert_found_where_placed(finder.find(canvas, SIDE, min_face=40), portraits_alone, placements, maps)
    large_only = finder.find(canvas, SIDE, min_face=90)
    assert_found_where_placed(large_only, portraits_alone, placements[1:], maps[1:])
    assert all(face.size >= 90 for face in large_only)


@pytest.mark.parametrize("width, height, min_face", [(4000, 3000, 40), (4000, 1000, 40), (900, 3000, 25),
                                                     (640, 480, 40), (100, 70, 40), (3000, 3000, 300)])
def test_the_pyramid_holds_every_face_of_min_face_or_more_whole_in_a_tile_at_a_readable_size(width, height, min_face):
    levels = pyramid(width, height, min_face)
    scales = [level.size[0] / width for level in levels]
    assert max(levels[0].size) == INPUT_SIDE  # the whole photo in one tile
    assert all(1 < b / a <= 2.01 for a, b in zip(scales[:-1], scales[1:], strict=True))  # at most halving
    assert len(levels) == 1 or scales[-1] <= 1.0  # never enlarged beyond the photo's own pixels
    rng = np.random.default_rng(0)
    for _ in range(300):
        size = min_face * np.exp(rng.uniform(0, np.log(max(width, height, min_face) / min_face)))
        size = min(size, width, height)
        x, y = rng.uniform(0, width - size), rng.uniform(0, height - size)
        assert any(_whole_in_a_tile(level, scale, x, y, size) for level, scale in zip(levels, scales, strict=True)
                   if size * scale >= min(FACE_IN_INPUT, min_face * scales[-1]) - 1e-6), (x, y, size)


def _whole_in_a_tile(level, scale: float, x: float, y: float, size: float) -> bool:
    """A box (photo px) lies in some tile of the level, clear of the tile's inner edges."""
    width, height = level.size

    def inside(start: float, end: float, tiles, length: int) -> bool:
        return any((t <= 0 or start >= t + TILE_EDGE) and (t + INPUT_SIDE >= length
                                                            or end <= t + INPUT_SIDE - TILE_EDGE) for t in tiles)

    return inside(x * scale, (x + size) * scale, level.xs, width) and inside(y * scale, (y + size) * scale,
                                                                              level.ys, height)


def test_a_12_megapixel_photo_takes_under_600_detector_runs_at_min_face_40():
    assert sum(level.tiles for level in pyramid(4000, 3000, 40)) < 600


@pytest.mark.parametrize("name", PORTRAITS)
@pytest.mark.parametrize("angle, scale, shift", [(30, 1.3, (40, -20)), (-45, 0.8, (100, 50)), (45, 0.8, (100, 50)),
                                                 (10, 2.0, (0, 0)), (0, 1.0, (7.3, 3.6))])
def test_landmarks_follow_a_known_affine_transform_within_1_5px_at_1024(finder, photos, name, angle, scale, shift):
    photo = photos[name]
    pad = 300 if scale < 1.5 else 700
    moved, matrix = warp(photo, angle, scale, shift, pad)
    before = finder.find(photo, SIDE)[0]
    found = finder.find(moved, SIDE)
    assert len(found) == 1
    after = found[0]
    expected = np.array(alignment_points(before.landmarks)) @ matrix[:, :2].T + matrix[:, 2]
    got = np.array(alignment_points(after.landmarks))
    error_at_1024 = np.linalg.norm(got - expected, axis=1).max() * crop_scale(got)
    assert error_at_1024 < 1.5  # measured at most 0.9


def test_alignment_of_a_photo_and_of_its_known_transform_agree(finder, photos):
    photo = photos["grace_hopper.jpg"]
    moved, matrix = warp(photo, 25, 1.2, (30, 10))
    a, b = finder.find(photo, SIDE)[0], finder.find(moved, SIDE)[0]
    # The crop transforms agree: the crop's corners, taken to the photo by a, then to the moved photo,
    # land where b takes them, within 1 % of the side (the quad comes from 4 landmarks, each ~1 px off).
    corners = np.array([[0.0, 0], [0, SIDE - 1], [SIDE - 1, SIDE - 1], [SIDE - 1, 0]])
    in_photo = (corners - a.transform[:, 2]) @ np.linalg.inv(a.transform[:, :2]).T
    in_moved = in_photo @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(in_moved @ b.transform[:, :2].T + b.transform[:, 2] - corners).max() < 0.01 * SIDE
    # And so do the crops' pixels, up to the two resamplings.
    assert np.abs(a.crop.astype(float) - b.crop).mean() < 6.0


def test_quad_transform_takes_the_quad_corners_to_the_crop_corners():
    quad, _ = ffhq_quad(np.array([100.0, 120]), np.array([160.0, 110]), np.array([110.0, 190]), np.array([155.0, 182]))
    transform = quad_transform(quad, SIDE)
    corners = quad @ transform[:, :2].T + transform[:, 2]
    # Pixel-index convention: the quad's corner points are the crop's outer corners, −0.5 and S − 0.5.
    far = SIDE - 0.5
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [-0.5, far], [far, far], [far, -0.5]], atol=1e-9)


@pytest.mark.parametrize("side", [SIDE, 256])
def test_align_then_identity_edit_then_paste_back_returns_the_photo_exactly(finder, photos, side):
    for photo in photos.values():
        faces = finder.find(photo, side)
        out = paste_faces(photo, [face.crop for face in faces], faces)
        assert out.dtype == np.uint8 and np.array_equal(out, photo)  # nothing changed, nothing resampled


def test_an_identity_edit_off_by_a_rounding_level_comes_back_within_one_level(finder, photos):
    photo = photos["grace_hopper.jpg"]
    face = finder.find(photo, SIDE)[0]
    # What the networks' float output of an unchanged face becomes in uint8: each pixel off by up to one level.
    noise = np.random.default_rng(0).integers(-1, 2, face.crop.shape)
    rounded = np.clip(face.crop.astype(int) + noise, 0, 255).astype(np.uint8)
    out = paste_faces(photo, [rounded], [face])
    assert np.abs(out.astype(int) - photo).max() == 1


def test_a_face_larger_than_the_crop_keeps_its_own_detail_where_the_edit_left_it(finder, photos):
    big = cv2.resize(photos["astronaut.png"], None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # face ~390 px
    face = finder.find(big, 256)[0]  # a 256² crop: the photo has finer detail than the crop
    edited = face.crop.copy()
    edited[208:] = 255 - edited[208:]  # only the bottom of the crop, below the mouth
    out = paste_faces(big, [edited], [face])
    eyes = np.array(alignment_points(face.landmarks)[:2]).round().astype(int)
    for x, y in eyes:  # a patch around each eye: the photo's own pixels, bit for bit
        assert np.array_equal(out[y - 10 : y + 11, x - 10 : x + 11], big[y - 10 : y + 11, x - 10 : x + 11])
    chin_x, chin_y = (np.linalg.inv(np.vstack([face.transform, [0, 0, 1]])) @ [128, 224, 1])[:2].round().astype(int)
    assert np.abs(out[chin_y, chin_x].astype(int) - big[chin_y, chin_x]).max() > 60  # the edit is there


def test_paste_back_of_an_edit_changes_only_the_face_region(finder, photos):
    photo = photos["astronaut.png"]
    face = finder.find(photo, SIDE)[0]
    edited = np.full_like(face.crop, 255)
    out = paste_faces(photo, [edited], [face])
    changed = np.any(out != photo, axis=2)
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = face.box
    size = max(x1 - x0, y1 - y0)
    assert xs.min() > x0 - size and xs.max() < x1 + size and ys.min() > y0 - size and ys.max() < y1 + size
    eye = alignment_points(face.landmarks)[0].round().astype(int)
    assert (out[eye[1], eye[0]] == 255).all()  # the centre of the face is the edit's


def test_an_rgba_photo_is_found_as_its_rgb_and_a_raw_rgba_array_is_refused(finder, photos, tmp_path):
    rgb = photos["astronaut.png"]
    alpha = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)[None, :, None].repeat(rgb.shape[0], 0)
    bgra = np.concatenate([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha], axis=2)
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    loaded = read_image(tmp_path / "rgba.png")
    assert any("alpha channel ignored" in warning for warning in loaded.warnings)
    found, expected = finder.find(loaded.rgb, SIDE), finder.find(rgb, SIDE)
    assert len(found) == 1 and np.array_equal(found[0].landmarks, expected[0].landmarks)
    with pytest.raises(ImageError, match=r"must be RGB uint8 \[H,W,3\].*got uint8 \(512, 512, 4\)"):
        finder.find(np.ascontiguousarray(bgra), SIDE)


def test_a_photo_without_a_face_raises_no_face_error_naming_the_fix(finder):
    sky = np.full((300, 400, 3), (120, 170, 230), np.uint8)
    with pytest.raises(NoFaceError, match="no face of at least 40 px") as info:
        finder.find(sky, SIDE)
    assert isinstance(info.value, ImageError)


def test_a_face_smaller_than_min_face_is_not_edited(finder, photos):
    small = cv2.resize(photos["grace_hopper.jpg"], None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    assert len(finder.find(small, SIDE, min_face=20)) == 1
    with pytest.raises(NoFaceError):
        finder.find(small, SIDE, min_face=80)


def test_a_face_number_beyond_the_faces_found_is_a_clear_error(finder, photos):
    with pytest.raises(NoFaceError, match="face 3 asked for, but the photo has 1"):
        finder.find(photos["astronaut.png"], SIDE, faces=3)


def test_a_face_cut_by_the_border_is_aligned_with_reflect_padding(finder, photos):
    photo = photos["grace_hopper.jpg"]
    cut = photo[:, 230:]  # the left half of the face is gone
    faces = finder.find(cut, SIDE)
    assert len(faces) == 1
    out = paste_faces(cut, [faces[0].crop], faces)
    assert out.shape == cut.shape


def test_a_huge_photo_is_found_like_its_small_copy(finder, photos):
    photo = photos["astronaut.png"]
    huge = cv2.resize(photo, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)  # 4096²
    small, big = finder.find(photo, 256)[0], finder.find(huge, 256)[0]
    np.testing.assert_allclose(np.array(alignment_points(big.landmarks)) / 8,
                               np.array(alignment_points(small.landmarks)), atol=1.5)
    assert big.crop.shape == (256, 256, 3)


def test_alignment_of_a_border_face_marks_the_crop_as_padded():
    rgb = np.zeros((200, 200, 3), np.uint8)
    points = (np.array([20.0, 90]), np.array([60.0, 90]), np.array([25.0, 140]), np.array([55.0, 140]))
    assert align_face(rgb, points, 256).padded
    centred = tuple(p + 70 for p in points)
    assert not align_face(np.zeros((600, 600, 3), np.uint8), centred, 256).padded


def test_a_missing_face_model_says_how_to_get_it_back_installed_and_in_a_checkout(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        FaceModel(tmp_path / "face_detector.onnx")
    message = str(info.value)
    assert "pip install --force-reinstall deghost" in message
    converter = Path(__file__).resolve().parent.parent / "runtime" / "faces" / "models" / "convert_mediapipe.py"
    assert converter.is_file() and str(converter.relative_to(converter.parents[3])) in message

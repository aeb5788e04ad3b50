"""Face mask and Poisson blend: the cloned region lands exactly where it came from."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.runtime.blend import face_mask, poisson_blend
from deghost.runtime.images import read_image

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"
# docs/design.md §1: skin 1, brows 2 3, nose 10, mouth 11, lips 12 13 (BiSeNet's 19 classes).
DESIGN_FACE_CLASSES = (1, 2, 3, 10, 11, 12, 13)
HEIGHT, WIDTH = 64, 80


def smooth_destination(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A ramp in each channel, far from 0 and 255 so features and offsets never saturate."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([40 + xx // 2, 60 + yy // 2, 80 + (xx + yy) // 4], axis=-1).astype(np.uint8)


def textured(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2)


def box_mask(x: int, y: int, width: int, height: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[y : y + height, x : x + width] = 255
    return mask


def ellipse_mask(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 3, height // 4), 30, 0, 360, 255, -1)
    return mask


def bright_pixels_at(destination: np.ndarray, points: list[tuple[int, int]]) -> np.ndarray:
    source = destination.copy()
    for row, col in points:
        source[row, col] = 255
    return source


def assert_features_in_place(
    output: np.ndarray, destination: np.ndarray, points: list[tuple[int, int]]
) -> None:
    """Each bright pixel is at its own coordinates in the output, and nowhere next to it."""
    change = np.abs(output.astype(int) - destination).sum(axis=-1)
    for row, col in points:
        window = change[row - 1 : row + 2, col - 1 : col + 2]
        assert window[1, 1] > 200, f"feature at {(row, col)} lost: change {window[1, 1]}"
        assert np.argmax(window) == 4, f"feature at {(row, col)} moved: neighbourhood change\n{window}"
        neighbours = np.delete(window.ravel(), 4)
        assert neighbours.max() < window[1, 1] / 4, f"feature at {(row, col)} smeared:\n{window}"


# (x, y, width, height): every parity of width and height, at several positions.
BOXES = [
    (10, 10, 21, 21),
    (10, 10, 20, 20),
    (11, 7, 21, 20),
    (30, 20, 16, 17),
    (5, 5, 33, 30),
    (47, 31, 25, 24),
    (2, 40, 14, 13),
]


@pytest.mark.parametrize("box", BOXES, ids=[f"x{b[0]}y{b[1]}w{b[2]}h{b[3]}" for b in BOXES])
def test_sharp_features_stay_on_their_pixels_for_odd_and_even_boxes(box):
    x, y, width, height = box
    destination = smooth_destination()
    # Two features, near opposite corners of the box's interior, catch a shift and a scale alike.
    points = [(y + 4, x + 5), (y + height - 5, x + width - 6)]
    output = poisson_blend(bright_pixels_at(destination, points), destination, box_mask(*box))
    assert_features_in_place(output, destination, points)


# Without care, OpenCV shifts a box touching the border by a pixel for one parity of its size
# (odd at the left and top, even at the right and bottom), so both parities are here.
BORDER_BOXES = {
    "left_odd": (0, 20, 21, 20),
    "left_even": (0, 20, 20, 21),
    "top_odd": (30, 0, 21, 19),
    "top_even": (30, 0, 21, 18),
    "right_odd": (61, 20, 19, 20),
    "right_even": (60, 20, 20, 19),
    "bottom_odd": (30, 43, 20, 21),
    "bottom_even": (31, 42, 21, 22),
    "bottom_right_corner": (59, 43, 21, 21),
    "whole_image": (0, 0, WIDTH, HEIGHT),
}


@pytest.mark.parametrize("box", BORDER_BOXES.values(), ids=BORDER_BOXES.keys())
def test_mask_touching_the_border_blends_without_shift(box):
    x, y, width, height = box
    destination = smooth_destination()
    points = [(y + height // 2, x + width // 2), (y + height // 2 + 3, x + width // 2 - 4)]
    output = poisson_blend(bright_pixels_at(destination, points), destination, box_mask(*box))
    assert output.shape == destination.shape and output.dtype == np.uint8
    assert_features_in_place(output, destination, points)


def test_constant_offset_source_gives_destination_inside_mask():
    # Same gradients as the destination, boundary values from the destination: Poisson returns it.
    destination = (textured(seed=1) // 2 + 40).astype(np.uint8)
    source = destination + np.uint8(70)
    mask = ellipse_mask()
    output = poisson_blend(source, destination, mask)
    assert np.abs(output.astype(int) - destination)[mask > 0].max() <= 2


def test_pixels_outside_mask_equal_destination_exactly():
    destination, source = textured(seed=2), textured(seed=3)
    mask = ellipse_mask()
    output = poisson_blend(source, destination, mask)
    np.testing.assert_array_equal(output[mask == 0], destination[mask == 0])
    assert np.abs(output.astype(int) - destination)[mask > 0].max() > 20, "the mask's inside was not blended"


def test_empty_mask_returns_the_destination_unchanged():
    destination, source = textured(seed=4), textured(seed=5)
    output = poisson_blend(source, destination, np.zeros((HEIGHT, WIDTH), np.uint8))
    np.testing.assert_array_equal(output, destination)
    assert output is not destination


def test_bool_mask_blends_like_its_uint8_form():
    destination, source = textured(seed=6), textured(seed=7)
    mask = ellipse_mask()
    np.testing.assert_array_equal(
        poisson_blend(source, destination, mask > 0), poisson_blend(source, destination, mask)
    )


def test_callers_arrays_are_left_untouched():
    # seamlessClone writes into the mask it is given; poisson_blend must hand it a copy.
    destination, source, mask = textured(seed=8), textured(seed=9), ellipse_mask()
    copies = [array.copy() for array in (destination, source, mask)]
    poisson_blend(source, destination, mask)
    for original, copy in zip((destination, source, mask), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_photo_details_are_cloned_without_shift():
    photo = read_image(ASTRONAUT).rgb
    destination = cv2.GaussianBlur(photo, (0, 0), 4)
    height, width = photo.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2 + 7, height // 3), (61, 80), 0, 0, 360, 255, -1)
    output = poisson_blend(photo, destination, mask)
    inner = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=12) > 0
    detail = (photo.astype(np.float32) - destination).sum(axis=-1)
    cloned = (output.astype(np.float32) - destination).sum(axis=-1)

    def correlation(dy: int, dx: int) -> float:
        shifted = np.roll(cloned, (dy, dx), axis=(0, 1))
        return float(np.corrcoef(detail[inner], shifted[inner])[0, 1])

    at_rest = correlation(0, 0)
    assert at_rest > 0.98
    for dy, dx in [(-1, 0), (1, 0), (0, -1), (0, 1)]:
        assert correlation(dy, dx) < at_rest - 0.1


@pytest.mark.parametrize(
    ("source", "destination", "mask", "message"),
    [
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8), np.zeros((8, 8), np.uint8), "differ"),
        (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), "uint8"),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "RGB"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32), "mask"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4), np.uint8), "size="),
    ],
    ids=["image_shapes_differ", "float_image", "gray_image", "float_mask", "mask_shape"],
)
def test_poisson_blend_rejects_bad_inputs_with_a_clear_message(source, destination, mask, message):
    with pytest.raises(ValueError, match=message):
        poisson_blend(source, destination, mask)


def test_face_mask_is_the_intersection_of_face_classes():
    classes = np.arange(19)
    labels_a = np.repeat(classes[None], 2, axis=0)  # every class once per row
    labels_b = labels_a.copy()
    labels_b[1] = 0  # row 1: background in the second map
    mask = face_mask(labels_a, labels_b)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    expected_row0 = np.where(np.isin(classes, DESIGN_FACE_CLASSES), 255, 0)
    np.testing.assert_array_equal(mask[0], expected_row0)
    np.testing.assert_array_equal(mask[1], 0)


def test_face_mask_excludes_eyes_glasses_ears_neck_hair():
    labels = np.array([[4, 5, 6, 7, 8, 9, 14, 15, 16, 17, 18, 0]])
    assert not face_mask(labels, labels).any()


def test_face_mask_resizes_with_nearest_neighbour():
    labels_a = np.array([[1, 0, 10, 13], [2, 17, 11, 4], [1, 1, 0, 12], [3, 5, 1, 1]], dtype=np.int64)
    labels_b = np.full_like(labels_a, 1)
    labels_b[3, 3] = 17
    small = face_mask(labels_a, labels_b)
    large = face_mask(labels_a, labels_b, size=8)
    np.testing.assert_array_equal(large, np.repeat(np.repeat(small, 2, axis=0), 2, axis=1))
    assert face_mask(labels_a, labels_b, size=(6, 12)).shape == (6, 12)


def test_face_mask_rejects_mismatched_or_float_label_maps():
    with pytest.raises(ValueError, match="differ in shape"):
        face_mask(np.zeros((4, 4), np.int64), np.zeros((4, 5), np.int64))
    with pytest.raises(ValueError, match="integer class map"):
        face_mask(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int64))

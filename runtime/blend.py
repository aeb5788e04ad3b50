"""The fusion `mix`, the face mask and the Poisson (seamlessClone) blend of the classical suppressor
(torch-free).

docs/design.md §1: out = seamlessClone(F_fused → I, M_face), where M_face is the intersection of the
face classes that BiSeNet finds in F_fused and in I. Training uses the same two functions to make
its targets, so they live here once.
"""

from __future__ import annotations

import cv2
import numpy as np

from .face_classes import FACE_CLASSES
from .images import check_rgb_uint8

# OpenCV clears the outermost 1-pixel ring of the mask before taking its bounding box, so a mask
# touching the image border gets a box one pixel smaller than ours and the clone lands one pixel
# off. Padding by this margin keeps every mask pixel clear of that ring.
_BORDER_MARGIN = 1


def mix(image, edit, mask):
    """F_fused = T·M + I·(1−M) (docs/design.md §1): the edit where the mask is 1, the image where it is 0.

    Pure arithmetic, so numpy arrays and torch tensors alike: the runtime, the exported graphs and
    the synthetic training data all fuse with this one formula, each after bringing the mask to
    the image's size and layout."""
    return edit * mask + image * (1 - mask)


def face_mask(
    labels_a: np.ndarray, labels_b: np.ndarray, size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """Pixels that are face in both label maps, as uint8 {0, 255}.

    labels_a, labels_b: [H,W] integer BiSeNet class maps (e.g. of F_fused and of I, at 512²).
    size: output side (square) or (height, width); the mask is resized with nearest-neighbour
    sampling, e.g. from the parser's 512² to the images' 1024². None keeps [H,W].
    Returns [H,W] (or the requested size) uint8, 255 where both maps hold one of FACE_CLASSES.
    """
    for name, labels in (("labels_a", labels_a), ("labels_b", labels_b)):
        is_class_map = isinstance(labels, np.ndarray) and labels.ndim == 2
        if not is_class_map or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"face_mask: {name} must be an integer class map [H,W] (the face parser's argmax for one "
                f"image); got {_describe(labels)}"
            )
    if labels_a.shape != labels_b.shape:
        raise ValueError(
            f"face_mask: the label maps differ in shape, {labels_a.shape} vs {labels_b.shape}; "
            "parse both images at one size"
        )
    mask = (np.isin(labels_a, FACE_CLASSES) & np.isin(labels_b, FACE_CLASSES)).astype(np.uint8) * 255
    if size is None:
        return mask
    height, width = (size, size) if isinstance(size, int) else size
    # NEAREST_EXACT samples at pixel centres; plain NEAREST drifts by up to a pixel when shrinking.
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def poisson_blend(source_rgb: np.ndarray, destination_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Clone `source_rgb` into `destination_rgb` inside `mask` (OpenCV NORMAL_CLONE).

    source_rgb, destination_rgb: RGB uint8 [H,W,3] (here F_fused and I). NORMAL_CLONE treats the
    channels independently, so RGB goes in and comes out with no conversion.
    mask: [H,W] uint8 (non-zero = inside) or bool.
    Returns RGB uint8 [H,W,3]: inside the mask, the source's gradients with the destination's
    values on the mask's boundary; outside it, exactly the destination. OpenCV erodes the mask
    first, so source detail within 3 pixels of the mask's edge is not carried over. Nothing shifts:
    the cloned region lands on the pixels it came from, also when the mask touches the image
    border. An empty mask returns a copy of the destination.
    """
    _check_blend_inputs(source_rgb, destination_rgb, mask)
    inside = mask != 0
    if not inside.any():
        return destination_rgb.copy()
    m = _BORDER_MARGIN
    # The padded copies are ours, which matters: seamlessClone writes into the mask it is given.
    # The padding itself lies outside the mask's box, so its content never reaches the result.
    source = cv2.copyMakeBorder(source_rgb, m, m, m, m, cv2.BORDER_REFLECT_101)
    destination = cv2.copyMakeBorder(destination_rgb, m, m, m, m, cv2.BORDER_REFLECT_101)
    binary = cv2.copyMakeBorder(inside.astype(np.uint8) * 255, m, m, m, m, cv2.BORDER_CONSTANT, value=0)
    x, y, width, height = cv2.boundingRect(binary)
    # OpenCV puts the box's top-left at (center.x - width // 2, center.y - height // 2) in integer
    # arithmetic; this centre puts it back on (x, y) for odd and even sizes alike.
    center = (x + width // 2, y + height // 2)
    cloned = cv2.seamlessClone(source, destination, binary, center, cv2.NORMAL_CLONE)[m:-m, m:-m]
    # The Poisson solve covers the whole box and moves pixels outside the mask by a few levels.
    return np.where(inside[..., None], cloned, destination_rgb)


def _check_blend_inputs(source_rgb: np.ndarray, destination_rgb: np.ndarray, mask: np.ndarray) -> None:
    check_rgb_uint8(source_rgb, "poisson_blend: source_rgb")
    check_rgb_uint8(destination_rgb, "poisson_blend: destination_rgb")
    if source_rgb.shape != destination_rgb.shape:
        raise ValueError(
            f"poisson_blend: source {source_rgb.shape} and destination {destination_rgb.shape} differ "
            "in shape; resize them to one size first"
        )
    if not isinstance(mask, np.ndarray) or mask.dtype not in (np.uint8, np.bool_):
        raise ValueError(
            f"poisson_blend: mask must be uint8 or bool [H,W]; got {_describe(mask)} "
            "(face_mask returns uint8)"
        )
    if mask.shape != source_rgb.shape[:2]:
        raise ValueError(
            f"poisson_blend: mask is {mask.shape} but the images are {source_rgb.shape[:2]}; "
            "resize the mask with face_mask(..., size=...)"
        )


def _describe(value: object) -> str:
    return f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__

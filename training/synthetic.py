"""Synthetic ghosting: F_fused made without any pretrained model, so training runs and is tested on a CPU.

The pipeline's edit T (docs/design.md §1) is replaced by a warped and recoloured copy of I, and the Diff-CAM
mask M by a random soft heat map; then F_fused = T·M + I·(1 − M) as in the real pipeline. Where M
is faint, F_fused shows a translucent, shifted, off-colour copy of the image: the ghosting.

The face mask that the Poisson target uses is M thresholded at FACE_THRESHOLD, not a blob drawn on
its own: the target then keeps the edit's core and drops its faint tails, which the network can
tell from its inputs (the strength of F_fused − I). A face mask independent of both images would
make the target unpredictable, and the learning check meaningless.

Everything here is numpy/OpenCV on RGB uint8 [H,W,3]; randomness comes from the caller's
`np.random.Generator`, so a seed reproduces an item exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deghost.runtime.blend import mix

FACE_THRESHOLD = 0.5
CAM_GRID = 8  # Diff-CAM's layer4 map is 8×8 at 256² inputs; its masks are that map upsampled


@dataclass
class Ghosted:
    """One ghosted image: `fused` RGB uint8 [H,W,3]; `face_mask` uint8 [H,W] in {0, 255}."""

    fused: np.ndarray
    face_mask: np.ndarray


def random_heat_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A Diff-CAM-like mask: 1–3 Gaussian blobs on an 8×8 grid, bilinearly upsampled, min-max → [0,1].

    Returns float32 [height, width] with maximum 1.
    """
    ys, xs = np.mgrid[0:CAM_GRID, 0:CAM_GRID].astype(np.float64) + 0.5
    coarse = np.zeros((CAM_GRID, CAM_GRID))
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.25, 0.75, size=2) * CAM_GRID
        sy, sx = rng.uniform(0.8, 2.2, size=2)
        coarse += rng.uniform(0.5, 1.0) * np.exp(-0.5 * (((ys - cy) / sy) ** 2 + ((xs - cx) / sx) ** 2))
    heat = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat -= heat.min()
    return heat / heat.max()


def random_edit(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """T: `image` (RGB uint8 [H,W,3]) rotated, scaled, shifted and elastically bent, its texture
    sharpened or smoothed, and recoloured.

    Poisson blending keeps gradients and drops offsets, so the changes of shape and texture are
    what survive in the target's face region, as a real edit's new content does; the recolouring
    shows up as the ghost's tint outside it.
    """
    height, width = image.shape[:2]
    side = min(height, width)
    affine = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-6, 6), rng.uniform(0.94, 1.06))
    affine[:, 2] += rng.uniform(-0.04, 0.04, size=2) * side
    affine = affine.astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # Where each output pixel samples the input: the affine map plus a smooth random displacement.
    map_x = affine[0, 0] * xs + affine[0, 1] * ys + affine[0, 2]
    map_y = affine[1, 0] * xs + affine[1, 1] * ys + affine[1, 2]
    for coordinate in (map_x, map_y):
        coarse = rng.uniform(-0.03, 0.03, size=(4, 4)).astype(np.float32) * side
        coordinate += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
    detail = warped - cv2.GaussianBlur(warped, (0, 0), max(0.8, side / 96))
    textured = warped + rng.uniform(-0.7, 1.5) * detail
    # Strong tints: F_fused lands ~22 dB (PSNR) from its target at 64², a visible ghost like EOGI's.
    gain = rng.uniform(0.4, 1.6, size=3)
    bias = rng.uniform(-80, 80, size=3)
    return np.clip(textured * gain + bias, 0, 255).round().astype(np.uint8)


def fuse(image: np.ndarray, edit: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """F_fused (`mix`) of RGB uint8 [H,W,3] images; mask: float [H,W] in [0,1] → uint8."""
    m = mask[..., None].astype(np.float32)
    return np.clip(mix(image.astype(np.float32), edit, m), 0, 255).round().astype(np.uint8)


class SyntheticGhosting:
    """A ghosting source (see `deghost.training.data.GhostingSource`) needing no model.

    The attribute and α are recorded in the dataset's manifest but do not change the synthetic edit.
    """

    name = "synthetic"

    def __call__(
        self, images: list[np.ndarray], attribute: str, alpha: float, rngs: list[np.random.Generator]
    ) -> list[Ghosted]:
        ghosted = []
        for image, rng in zip(images, rngs, strict=True):
            mask = random_heat_map(rng, *image.shape[:2])
            fused = fuse(image, random_edit(rng, image), mask)
            ghosted.append(Ghosted(fused, (mask >= FACE_THRESHOLD).astype(np.uint8) * 255))
        return ghosted

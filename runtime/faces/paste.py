"""Paste-back: what an edit changed in the aligned crop, warped into the photo inside the face region.

The photo is changed by mask · warp(edited − aligned): the edit's change of the aligned crop it was
given, resampled to the photo, where the crop itself would be resampled twice (photo → crop → photo).
An identity edit so returns the photo bit for bit, and a face larger than the crop keeps its own
detail wherever the edit left it alone. Measured, identity edit (align → no change → paste), |Δ| inside
the mask in 8-bit levels, mean / 99th percentile / max: at 1024² astronaut.png 0.34 / 3 / 12 and
grace_hopper.jpg 0.81 / 6 / 43 when the warped crop replaced the photo, 0 / 0 / 0 now; at 256² (the
face larger than the crop) 1.43 / 11 / 67 and 3.42 / 23 / 123 before, 0 now. The trade-off: where the
edit does change the face, the photo's detail finer than the crop's resolution stays under the change
(those same replace-paste differences: negligible when the face is not larger than the crop side).

The region is the convex hull of the 468 mesh landmarks grown by REGION_GROW of the face size
(forehead, hairline, chin and beard are inside), further limited to the crop square, and feathered
with a Gaussian of FEATHER × face size. Pixels where that mask is 0 are the input's, bit for bit.
A face may also carry its own `region` (crop coordinates, any square side, values in [0,1]): where the
face parser sees the head itself (runtime/face_classes.py), so what covers the face in the photo (a
hand, a microphone) keeps its pixels; the mask is then multiplied by that region, softened by
REGION_FEATHER of the crop side so its parsed edge leaves no seam.

Feathering rather than cv2.seamlessClone: seamlessClone solves for the region's colours from its border,
so even an identity edit comes back tinted. Measured (identity edit, align → paste, mean |Δ| inside the
mask, 8-bit levels): astronaut.png 0.34 feathered (replacing, 0 residual) vs 5.9 seamlessClone,
grace_hopper.jpg 0.80 vs 8.7. The suppress modes already match the edit's colours to the face; the paste
only needs a seam-free edge.
"""

from __future__ import annotations

import cv2
import numpy as np

REGION_GROW = 0.25  # the landmark hull scaled about its centre by 1 + this
FEATHER = 0.05  # Gaussian sigma of the mask edge, × face size
SQUARE_MARGIN = 1 / 32  # the mask reaches 0 this far (× crop side) inside the crop's edges
REGION_FEATHER = 1 / 256  # Gaussian sigma of a parsed region's edge, × crop side (2 px at 512²)
_CUTOFF = 1 / 512  # mask values below this are 0: the blend could not change a level there


def face_region(landmarks: np.ndarray, transform: np.ndarray, side: int, shape: tuple[int, int],
                region: np.ndarray | None = None) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The feathered face mask: ((x0, y0, x1, y1) bounding the nonzero part, float32 mask of that box
    in [0,1]). landmarks [468,2] photo pixels; transform photo → crop 2×3 (crop side `side`); shape the
    photo's (H, W); region: float [P,P] in [0,1] over the crop (P any side), where the face may change."""
    hull = cv2.convexHull(landmarks.astype(np.float32)).reshape(-1, 2)
    centre = hull.mean(0)
    face_size = float(np.ptp(landmarks, axis=0).max())
    grown = centre + (hull - centre) * (1 + REGION_GROW)
    sigma = max(FEATHER * face_size, 1.0)
    reach = 3 * sigma
    height, width = shape
    x0, y0 = np.maximum(np.floor(grown.min(0) - reach), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(grown.max(0) + reach) + 1, [width, height]).astype(int)
    mask = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.float32)
    if mask.size == 0:
        return (0, 0, 0, 0), mask
    cv2.fillConvexPoly(mask, np.rint((grown - [x0, y0]) * 16).astype(np.int32), 1.0, cv2.LINE_AA, shift=4)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    # Limited to the crop square, faded out over its edge margin (the crop knows nothing beyond it).
    margin = max(SQUARE_MARGIN * side, 1.0)
    ramp = np.minimum(np.arange(side) + 0.5, side - 0.5 - np.arange(side)) / margin
    square = np.clip(np.minimum(ramp[:, None], ramp[None, :]), 0, 1).astype(np.float32)
    mask *= cv2.warpAffine(square, _shifted(transform, x0, y0), (x1 - x0, y1 - y0),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0)
    if region is not None:
        mask *= _warped_region(region, transform, side, (x0, y0, x1, y1))
    mask[mask < _CUTOFF] = 0
    return (int(x0), int(y0), int(x1), int(y1)), mask


def _warped_region(region: np.ndarray, transform: np.ndarray, side: int, box: tuple[int, int, int, int]
                   ) -> np.ndarray:
    """A region over the crop (float [P,P]), softened at its edge, resampled onto the photo's box."""
    region = np.asarray(region, np.float32)
    if region.ndim != 2 or region.shape[0] != region.shape[1]:
        raise ValueError(f"a face's region must be a square float map over its crop; got {region.shape}")
    parsed = region.shape[0]
    region = cv2.GaussianBlur(region, (0, 0), max(REGION_FEATHER * parsed, 0.5))
    to_parsed = transform * (parsed / side)  # photo → crop pixels at the region's own side
    x0, y0, x1, y1 = box
    return cv2.warpAffine(region, _shifted(to_parsed, x0, y0), (x1 - x0, y1 - y0),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0)


def paste_back(photo: np.ndarray, edited: np.ndarray, aligned: np.ndarray, transform: np.ndarray,
               landmarks: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """photo uint8 [H,W,3]; edited uint8 [S,S,3] the edit of `aligned`, the face's aligned crop → a new
    photo with the edit's change blended into the face region (limited to `region` where given, see
    `face_region`); every pixel outside it equals `photo`'s."""
    out = photo.copy()
    paste_into(out, edited, aligned, transform, landmarks, region)
    return out


def paste_into(photo: np.ndarray, edited: np.ndarray, aligned: np.ndarray, transform: np.ndarray,
               landmarks: np.ndarray, region: np.ndarray | None = None) -> None:
    """`paste_back` in place (several faces are pasted one after another into one copy)."""
    if edited.shape != aligned.shape:
        raise ValueError(f"the edited crop {edited.shape} and the aligned crop it edits {aligned.shape} differ in "
                         "shape; paste the edit of the face's own crop (Face.crop)")
    side = edited.shape[0]
    (x0, y0, x1, y1), mask = face_region(landmarks, transform, side, photo.shape[:2], region)
    if mask.size == 0 or not mask.any():
        return
    change = edited.astype(np.float32) - aligned  # zero wherever the edit left the crop alone
    warped = cv2.warpAffine(change, _shifted(transform, x0, y0), (x1 - x0, y1 - y0),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    region = photo[y0:y1, x0:x1]
    inside = mask > 0
    blended = region[inside] + mask[inside][:, None] * warped[inside]
    region[inside] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _shifted(transform: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """photo → crop transform as seen from a box starting at (x0, y0)."""
    return np.hstack([transform[:, :2], (transform[:, :2] @ [x0, y0] + transform[:, 2])[:, None]])

"""FFHQ alignment, as NVlabs' ffhq-dataset `recreate_aligned_images` and pSp's `align_all_parallel.py`
define it, with the forward transform kept so an edit of the crop can be mapped back into the photo.

From the eye centres and mouth corners: an oriented square (the quad) around the face; shrink the photo
when the quad is over 4× the output side; crop to the quad plus a border; where the quad leaves the
photo, reflect-pad and blur the padding towards the image's median colour; sample the quad to the
output side. Two choices of ours: OpenCV instead of PIL (INTER_AREA for PIL's antialiased resizes), and
the final resampling at k × the output side then INTER_AREA down, k = the quad's size over the output
side rounded up, capped at 4: FFHQ always samples at 4096² (k = 4 at 1024²) and pSp never
supersamples (k = 1); k only matters when the quad is larger than the output.

Coordinates are pixel-index convention (pixel (col, row) centred on (col, row)), as the landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_SUPERSAMPLE = 4


@dataclass
class Alignment:
    """An aligned face: `crop` uint8 [S,S,3]; `transform` the 2×3 affine photo pixel → crop pixel;
    `quad` [4,2] the photo points that become the crop's corners (top-left, bottom-left, bottom-right,
    top-right); `padded` whether part of the crop lies outside the photo (reflect-padded)."""

    crop: np.ndarray
    transform: np.ndarray
    quad: np.ndarray
    padded: bool


def ffhq_quad(eye_left: np.ndarray, eye_right: np.ndarray, mouth_left: np.ndarray, mouth_right: np.ndarray
              ) -> tuple[np.ndarray, float]:
    """The FFHQ script's oriented crop rectangle: (quad [4,2], its side qsize)."""
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y]).astype(np.float64)
    return quad, float(np.hypot(*x) * 2)


def quad_transform(quad: np.ndarray, side: int) -> np.ndarray:
    """2×3 affine photo pixel → crop pixel that takes the quad's corners to the [0,side]² square's."""
    # Continuous coordinates (pixel centres at +0.5; the FFHQ script's `quad + 0.5`): crop_c = L (photo_c − q0_c).
    # With photo_c = photo + 0.5 and crop = crop_c − 0.5: crop = L photo − L quad[0] − 0.5.
    to_photo = np.column_stack([(quad[3] - quad[0]) / side, (quad[1] - quad[0]) / side])  # crop unit steps
    linear = np.linalg.inv(to_photo)
    return np.hstack([linear, (-linear @ quad[0] - 0.5)[:, None]])


def align_face(rgb: np.ndarray, points: tuple[np.ndarray, ...], side: int) -> Alignment:
    """rgb uint8 [H,W,3], points (eye_left, eye_right, mouth_left, mouth_right) → the aligned `side`² face."""
    return align_quad(rgb, ffhq_quad(*points)[0], side)


def align_quad(rgb: np.ndarray, quad: np.ndarray, side: int) -> Alignment:
    """The `side`² crop of a given quad [4,2] (a video's quad steadied over time, see deghost.runtime.video)."""
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    transform = quad_transform(quad, side)
    # Each step below changes the pixels sampled, never the geometry: `local` maps photo → working image.
    local = np.eye(3)
    image = rgb
    height, width = rgb.shape[:2]

    shrink = int(np.floor(qsize / side * 0.5))  # Shrink.
    if shrink > 1:
        size = (int(np.rint(width / shrink)), int(np.rint(height / shrink)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        scale = np.array([size[0] / width, size[1] / height])
        local = _affine3(np.diag(scale), scale * 0.5 - 0.5) @ local
        qsize /= shrink
    q = _apply(local, quad)

    border = max(int(np.rint(qsize * 0.1)), 3)  # Crop.
    h, w = image.shape[:2]
    crop = (max(int(np.floor(q[:, 0].min())) - border, 0), max(int(np.floor(q[:, 1].min())) - border, 0),
            min(int(np.ceil(q[:, 0].max())) + border, w), min(int(np.ceil(q[:, 1].max())) + border, h))
    if crop[2] - crop[0] < w or crop[3] - crop[1] < h:
        image = image[crop[1] : crop[3], crop[0] : crop[2]]
        local = _affine3(np.eye(2), -np.array(crop[:2], float)) @ local
        q = _apply(local, quad)

    h, w = image.shape[:2]  # Pad.
    pad = (max(-int(np.floor(q[:, 0].min())) + border, 0), max(-int(np.floor(q[:, 1].min())) + border, 0),
           max(int(np.ceil(q[:, 0].max())) - w + border, 0), max(int(np.ceil(q[:, 1].max())) - h + border, 0))
    padded = max(pad) > border - 4
    if padded:
        pad = tuple(int(p) for p in np.maximum(pad, int(np.rint(qsize * 0.3))))
        image = _pad_blurred(image, pad, qsize)
        local = _affine3(np.eye(2), np.array(pad[:2], float)) @ local

    # Transform: crop pixel → working-image pixel, sampled at k× then area-averaged down.
    k = int(min(MAX_SUPERSAMPLE, max(1, np.ceil(qsize / side))))
    big = _affine3(np.eye(2) * k, np.full(2, (k - 1) / 2)) @ _affine3(transform[:, :2], transform[:, 2])
    sample = (big @ np.linalg.inv(local))[:2]  # working image → supersampled crop
    out = cv2.warpAffine(image, sample, (side * k, side * k), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if k > 1:
        out = cv2.resize(out, (side, side), interpolation=cv2.INTER_AREA)
    return Alignment(crop=out, transform=transform, quad=quad, padded=bool(padded))


def _pad_blurred(image: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """The FFHQ padding: reflect (numpy's 'reflect' = OpenCV's REFLECT_101), blur growing towards the
    outer edge, then fade to the median colour."""
    left, top, right, bottom = pad
    img = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT_101).astype(np.float32)
    h, w = img.shape[:2]
    y, x = np.ogrid[:h, :w]
    # Every pad is at least qsize·0.3 > 0 here, so no division by zero.
    mask = np.maximum(1.0 - np.minimum(np.float32(x) / left, np.float32(w - 1 - x) / right),
                      1.0 - np.minimum(np.float32(y) / top, np.float32(h - 1 - y) / bottom))[..., None]
    blur = qsize * 0.02
    radius = int(4.0 * blur + 0.5)  # scipy.ndimage.gaussian_filter's default truncation
    blurred = cv2.GaussianBlur(img, (2 * radius + 1, 2 * radius + 1), blur, borderType=cv2.BORDER_REFLECT)
    img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return np.uint8(np.clip(np.rint(img), 0, 255))


def _affine3(linear: np.ndarray, offset: np.ndarray) -> np.ndarray:
    return np.vstack([np.hstack([linear, np.asarray(offset, float)[:, None]]), [0, 0, 1]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]

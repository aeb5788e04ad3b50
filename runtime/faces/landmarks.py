"""468 face-mesh landmarks (MediaPipe's model, our crop and mapping) and the four points alignment needs.

The mesh model takes a 192² crop of the face, upright: a square 1.5× the face's size, rotated so the
eyes are level. The crop comes first from the detector's box and eye keypoints, then from the
landmarks found so far (as MediaPipe does when it tracks a face), which centres and levels it better
for tilted faces, repeated until the landmarks settle; those passes are averaged over nine slightly
shifted and scaled crops (one crop's landmarks wobble by ~2-5 px at 1024² when the photo is rotated
or rescaled).
Landmarks come back in photo pixels, pixel-index convention (the centre of
pixel (col, row) is (col, row)), the convention of dlib and the FFHQ alignment script.
"""

from __future__ import annotations

import cv2
import numpy as np

from .detector import LEFT_EYE, RIGHT_EYE, Detection
from .face_model import LANDMARKS_FILE, FaceModel

INPUT_SIDE = 192
N_LANDMARKS = 468
CROP_SCALE = 1.5  # crop side / face size (MediaPipe's RectTransformation scale)
MIN_PRESENCE = 0.5  # the mesh model's face-presence probability below which a detection is dropped
# Mesh indices of the contours dlib's 68-point model puts 6 points on (points 36–41 and 42–47) and of
# the mouth corners (dlib 48 and 54), image-left first: what the FFHQ alignment averages.
EYE_LEFT_CONTOUR = (33, 160, 158, 133, 153, 144)  # the person's right eye, on the image's left
EYE_RIGHT_CONTOUR = (362, 385, 387, 263, 373, 380)
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
EYE_OUTER_LEFT, EYE_OUTER_RIGHT = 33, 263  # level the second crops
# Second-pass crops: (side / face size, centre shift / face size), averaged.
REFINE_CROPS = ((1.5, (0.0, 0.0)),) + tuple((scale, shift) for scale in (1.4, 1.6)
                                            for shift in ((0.03, 0.0), (-0.03, 0.0), (0.0, 0.03), (0.0, -0.03)))
# The refinement is repeated from its own landmarks until a pass moves the alignment points by less than
# REFINE_TOLERANCE × the mesh's extent (~1 px of a 1024² crop). Measured on both portraits rotated ±45°,
# ±30°, 10° and scaled 0.8-2: the passes move them by 4-15, 1-5, 0.4-4, 0.1-2 ‰; after one pass the
# landmarks follow the photo's transform within 3.7 px at 1024², with this tolerance (~3 passes) within
# 0.9 px: the detector's box no longer matters.
REFINE_TOLERANCE = 2e-3
MAX_REFINE_PASSES = 4


def crop_matrix(centre: np.ndarray, side: float, angle: float) -> np.ndarray:
    """2×3 affine: 192² crop pixel index → photo pixel index, for a square of `side` photo pixels
    centred on `centre` (pixel-index convention), its x axis at `angle` radians (y down)."""
    cos, sin = np.cos(angle), np.sin(angle)
    linear = side / INPUT_SIDE * np.array([[cos, -sin], [sin, cos]])
    # crop index u has continuous coordinate u + 0.5; the crop centre is at continuous 96.
    offset = np.asarray(centre, np.float64) - linear @ np.full(2, INPUT_SIDE / 2 - 0.5)
    return np.hstack([linear, offset[:, None]])


class FaceLandmarker:
    """`landmarks(photo, detection)` → [468,2] photo pixels, or None when the mesh sees no face there."""

    def __init__(self):
        self.model = FaceModel(LANDMARKS_FILE)

    def landmarks(self, rgb: np.ndarray, detection: Detection) -> np.ndarray | None:
        box, eyes = detection.box, detection.keypoints[[RIGHT_EYE, LEFT_EYE]]
        centre = (box[:2] + box[2:]) / 2 - 0.5  # the detector's [0,1] coordinates are continuous
        points, presence = self._mesh(rgb, centre, detection.size * CROP_SCALE, _angle(eyes[0], eyes[1]))
        if presence < MIN_PRESENCE:
            return None
        for _ in range(MAX_REFINE_PASSES):
            refined = self._refine(rgb, points)
            moved = np.abs(np.subtract(alignment_points(refined), alignment_points(points))).max()
            points = refined
            if moved < REFINE_TOLERANCE * np.ptp(points, axis=0).max():
                break
        return points

    def follow(self, rgb: np.ndarray, previous: np.ndarray) -> np.ndarray | None:
        """The landmarks of the face that had `previous` [468,2] in the frame before (a video's tracking: no
        detection), refined until they settle; None when the mesh no longer sees a face there."""
        points = previous
        for _ in range(MAX_REFINE_PASSES):
            refined = self._refine(rgb, points, strict=True)
            if refined is None:
                return None
            moved = np.abs(np.subtract(alignment_points(refined), alignment_points(points))).max()
            points = refined
            if moved < REFINE_TOLERANCE * np.ptp(points, axis=0).max():
                break
        return points

    def _refine(self, rgb: np.ndarray, points: np.ndarray, strict: bool = False) -> np.ndarray | None:
        """The mean landmarks of the REFINE_CROPS placed on `points`' own levelled extent."""
        angle = _angle(points[EYE_OUTER_LEFT], points[EYE_OUTER_RIGHT])
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        mean = points.mean(0)
        levelled = (points - mean) @ rotation  # = rotation.T @ (p − mean) per point
        lo, hi = levelled.min(0), levelled.max(0)
        size = float((hi - lo).max())
        meshes = [self._mesh(rgb, mean + rotation @ ((lo + hi) / 2 + np.asarray(shift) * size), size * scale, angle)
                  for scale, shift in REFINE_CROPS]
        seen = [mesh for mesh, presence in meshes if presence >= MIN_PRESENCE]
        if strict and not seen:  # strict: None when no crop sees a face (else the points come back unchanged)
            return None
        return np.mean(seen or [points], axis=0)

    def _mesh(self, rgb: np.ndarray, centre: np.ndarray, side: float, angle: float) -> tuple[np.ndarray, float]:
        matrix = crop_matrix(centre, side, angle)
        crop = cv2.warpAffine(rgb, matrix, (INPUT_SIDE, INPUT_SIDE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT)
        coords, presence = self.model.run(crop.astype(np.float32)[None] / 255.0)
        # The model's x, y are continuous crop coordinates: index = coordinate − 0.5.
        uv = coords.reshape(N_LANDMARKS, 3)[:, :2] - 0.5
        return uv @ matrix[:, :2].T + matrix[:, 2], float(1.0 / (1.0 + np.exp(-float(presence.ravel()[0]))))


def alignment_points(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[468,2] → (eye_left, eye_right, mouth_left, mouth_right) as the FFHQ script takes them from dlib:
    eye centres as the mean of six contour points, mouth corners as points; image-left first."""
    return (landmarks[list(EYE_LEFT_CONTOUR)].mean(0), landmarks[list(EYE_RIGHT_CONTOUR)].mean(0),
            landmarks[MOUTH_LEFT], landmarks[MOUTH_RIGHT])


def _angle(start: np.ndarray, end: np.ndarray) -> float:
    """The direction of start → end in radians, image axes (y down)."""
    return float(np.arctan2(end[1] - start[1], end[0] - start[0]))

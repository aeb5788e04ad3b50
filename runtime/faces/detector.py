"""Face detection with BlazeFace short range (MediaPipe's model, our numpy decoding).

The model sees a 128² letterboxed copy of the photo (so a huge photo is only ever resized down once,
to 128², with INTER_AREA) and predicts, for each of 896 fixed SSD anchors, a score, a box and six
keypoints (right eye, left eye, nose tip, mouth centre, right ear, left ear; "right" = the person's).
The short-range model is trained on faces that fill a good part of the frame, so the photo is also
searched in overlapping half-size tiles: faces in group photos are found there. Boxes from all
views are merged by MediaPipe's weighted non-maximum suppression.

The decoding constants are MediaPipe's face_detection_short_range graph options
(ssd_anchors_calculator and tensors_to_detections_calculator).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .models import DETECTOR_FILE, FaceModel

INPUT_SIDE = 128
STRIDES = (8, 16, 16, 16)  # one SSD layer each; layers of one stride share a feature map
SCORE_CLIP = 100.0  # raw logits are clipped to ±this before the sigmoid
MIN_SCORE = 0.5
NMS_IOU = 0.3
N_KEYPOINTS = 6
RIGHT_EYE, LEFT_EYE = 0, 1  # keypoint rows; the person's right eye is on the image's left


@dataclass
class Detection:
    """One face in photo pixel coordinates: box (x0, y0, x1, y1), score in [0,1], keypoints [6,2] (x, y)."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray

    @property
    def size(self) -> float:
        """The box's longer side, pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def ssd_anchors() -> np.ndarray:
    """[896,2] anchor centres (x, y) in [0,1]: per feature map, row-major cells, 2 anchors per cell and
    layer (the scale's and the interpolated one's; all of size 1, `fixed_anchor_size`)."""
    anchors, layer = [], 0
    while layer < len(STRIDES):
        stride, per_cell = STRIDES[layer], 0
        while layer < len(STRIDES) and STRIDES[layer] == stride:
            per_cell += 2
            layer += 1
        cells = int(np.ceil(INPUT_SIDE / stride))
        y, x = np.mgrid[0:cells, 0:cells]
        centres = np.stack([(x + 0.5) / cells, (y + 0.5) / cells], -1).reshape(-1, 1, 2)
        anchors.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(anchors).astype(np.float32)


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, min_score: float = MIN_SCORE
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs [896,16], [896] → (boxes [n,4] x0 y0 x1 y1, scores [n], keypoints [n,6,2]) in [0,1]
    input coordinates, for anchors scoring at least `min_score`."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
    keep = scores >= min_score
    raw, centres, scores = regressors[keep] / INPUT_SIDE, anchors[keep], scores[keep]
    xy = raw[:, 0:2] + centres
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([xy - half, xy + half], 1)
    keypoints = raw[:, 4 : 4 + 2 * N_KEYPOINTS].reshape(-1, N_KEYPOINTS, 2) + centres[:, None]
    return boxes, scores, keypoints


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box [4] with each of boxes [n,4]."""
    lo, hi = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), 1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], -1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, threshold: float = NMS_IOU
                 ) -> list[Detection]:
    """MediaPipe's WEIGHTED non-maximum suppression: the best box takes every box overlapping it by more
    than `threshold` IoU and becomes their score-weighted mean (box and keypoints); its score stays."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    remaining = np.arange(len(scores))
    found = []
    while len(remaining):
        overlap = iou(boxes[remaining[0]], boxes[remaining])
        group, remaining = remaining[overlap > threshold], remaining[overlap <= threshold]
        group = group if len(group) else remaining[:1]
        weights = scores[group] / scores[group].sum()
        found.append(Detection(box=weights @ boxes[group], score=float(scores[group[0]]),
                               keypoints=np.tensordot(weights, keypoints[group], 1)))
    return found


class FaceDetector:
    """`detect(photo)` → faces as `Detection`s in photo pixels, best first."""

    def __init__(self):
        self.model = FaceModel(DETECTOR_FILE)
        self.anchors = ssd_anchors()

    def detect(self, rgb: np.ndarray, min_score: float = MIN_SCORE) -> list[Detection]:
        """rgb: uint8 [H,W,3]. Faces seen in the whole photo and in half-size tiles, merged."""
        height, width = rgb.shape[:2]
        boxes, scores, keypoints = [], [], []
        for x0, y0, side in _views(width, height):
            b, s, k = self._detect_view(rgb, x0, y0, side, min_score)
            if side < max(width, height):  # a tile: drop faces cut by its inner edges (another view has them)
                inner = _inside_tile(b, x0, y0, side, width, height)
                b, s, k = b[inner], s[inner], k[inner]
            boxes.append(b), scores.append(s), keypoints.append(k)
        merged = weighted_nms(np.concatenate(boxes), np.concatenate(scores), np.concatenate(keypoints))
        return _drop_nested(merged)

    def _detect_view(self, rgb: np.ndarray, x0: int, y0: int, side: int, min_score: float):
        """One square view [x0, x0+side)² of the photo (zero outside it) → detections in photo pixels."""
        height, width = rgb.shape[:2]
        visible = rgb[max(y0, 0) : min(y0 + side, height), max(x0, 0) : min(x0 + side, width)]
        view = _resize_view(visible, max(x0, 0) - x0, max(y0, 0) - y0, side)
        regressors, logits = self.model.run(view.astype(np.float32)[None] / 127.5 - 1.0)
        boxes, scores, keypoints = decode(regressors[0], logits[0, :, 0], self.anchors, min_score)
        to_photo = lambda p: p * side + [x0, y0]  # noqa: E731
        return to_photo(boxes.reshape(-1, 2, 2)).reshape(-1, 4), scores, to_photo(keypoints)


def _resize_view(visible: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """The visible part of a view (offset left, top inside it) → 128² uint8 with black where the view
    leaves the photo. INTER_AREA on the part alone, so a huge photo is never copied at full size."""
    scale = INPUT_SIDE / side
    h, w = visible.shape[:2]
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(visible, (out_w, out_h), interpolation=cv2.INTER_AREA)
    view = np.zeros((INPUT_SIDE, INPUT_SIDE, 3), np.uint8)
    ox, oy = round(left * scale), round(top * scale)
    view[oy : oy + out_h, ox : ox + out_w] = small[: INPUT_SIDE - oy, : INPUT_SIDE - ox]
    return view


def _views(width: int, height: int) -> list[tuple[int, int, int]]:
    """(x0, y0, side) squares: the whole photo centred in a square, then half-size tiles overlapping by half."""
    side = max(width, height)
    views = [((width - side) // 2, (height - side) // 2, side)]
    tile = side // 2
    if tile >= INPUT_SIDE:
        xs = np.unique(np.clip(np.arange(0, width - tile // 2, tile // 2), 0, max(width - tile, 0)))
        ys = np.unique(np.clip(np.arange(0, height - tile // 2, tile // 2), 0, max(height - tile, 0)))
        views += [(int(x), int(y), tile) for y in ys for x in xs]
    return views


def _inside_tile(boxes: np.ndarray, x0: int, y0: int, side: int, width: int, height: int) -> np.ndarray:
    """Boxes not touching a tile edge that lies inside the photo."""
    margin = 0.02 * side
    cut_left = (boxes[:, 0] < x0 + margin) & (x0 > 0)
    cut_top = (boxes[:, 1] < y0 + margin) & (y0 > 0)
    cut_right = (boxes[:, 2] > x0 + side - margin) & (x0 + side < width)
    cut_bottom = (boxes[:, 3] > y0 + side - margin) & (y0 + side < height)
    return ~(cut_left | cut_top | cut_right | cut_bottom)


def _drop_nested(found: list[Detection]) -> list[Detection]:
    """Drop a face lying mostly (> 60 %) inside a better one: a tile's view of part of a big face."""
    kept: list[Detection] = []
    for face in found:
        area = np.prod(face.box[2:] - face.box[:2])
        inside = [np.prod(np.clip(np.minimum(face.box[2:], k.box[2:]) - np.maximum(face.box[:2], k.box[:2]), 0, None))
                  / max(area, 1e-9) for k in kept]
        if not inside or max(inside) <= 0.6:
            kept.append(face)
    return kept

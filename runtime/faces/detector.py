"""Face detection with BlazeFace short range (MediaPipe's model, our numpy decoding and search).

The model sees a 128² input and predicts, for each of 896 fixed SSD anchors, a score, a box and six
keypoints (right eye, left eye, nose tip, mouth centre, right ear, left ear; "right" = the person's).
It finds faces whose box is at least FACE_IN_INPUT px of that input, so one look at a whole large
photo misses its small faces. The photo is searched as a pyramid instead (`pyramid`): level 0 is the
whole photo letterboxed into 128²; each finer level shows it at most 2× larger, down to the level where
a face of `min_face` photo px is FACE_IN_INPUT px (never larger than the photo's own pixels). Every
level is read in 128² tiles along both sides (a panorama is tiled along its long side at every level),
overlapping so that every face the level is there for (up to twice its smallest; larger ones are the
coarser levels') lies wholly inside some tile. A face cut by a tile's inner edge is left to the tile
that holds it whole; boxes from all tiles are merged by MediaPipe's weighted non-maximum suppression.

Cost: per level one INTER_AREA resize of the photo (no full-resolution copy) and one detector run per
tile; the graph's batch axis is fixed at 1, so the tiles run one after another. The runs grow with the
photo's pixels over min_face²: a 4000×3000 photo at min_face 40 is 5 levels and 577 runs (432 of them
at the finest level), measured 1.1-1.3 s on one thread of a busy 2-vCPU Xeon (~1.8 ms a run); at
min_face 80, 145 runs. A 512² photo takes 10 runs.

The decoding constants are MediaPipe's face_detection_short_range graph options
(ssd_anchors_calculator and tensors_to_detections_calculator).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .face_model import DETECTOR_FILE, FaceModel

INPUT_SIDE = 128
STRIDES = (8, 16, 16, 16)  # one SSD layer each; layers of one stride share a feature map
SCORE_CLIP = 100.0  # raw logits are clipped to ±this before the sigmoid
MIN_SCORE = 0.5
NMS_IOU = 0.3
N_KEYPOINTS = 6
RIGHT_EYE, LEFT_EYE = 0, 1  # keypoint rows; the person's right eye is on the image's left
# The smallest face box (px of the 128² input) searched for. Measured: each bundled portrait scaled so its
# box is f px, at 16 random places on a grey 128² input, upright and rotated ±30°, ±45°: found in every
# try from f = 18 (f = 16: 122 of 128 tries, f = 14: 45 of 64 upright); 20 leaves a margin.
FACE_IN_INPUT = 20
TILE_EDGE = 3  # px of the input: a box this close to a tile's inner edge is taken as cut by it
# Tiles overlap by the largest face a level is there for (2 × FACE_IN_INPUT: the next level has the
# larger ones) plus the cut margin on both sides, so each such face is wholly inside some tile.
TILE_STRIDE = INPUT_SIDE - 2 * FACE_IN_INPUT - 2 * TILE_EDGE


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
    than `threshold` IoU and becomes their score-weighted mean (box and keypoints); its score stays.
    Boxes without area (or not finite) are dropped first: their IoU with themselves is 0."""
    proper = np.isfinite(boxes).all(1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    order = np.argsort(-scores[proper], kind="stable")
    boxes, scores, keypoints = boxes[proper][order], scores[proper][order], keypoints[proper][order]
    remaining = np.arange(len(scores))
    found = []
    while len(remaining):
        grouped = iou(boxes[remaining[0]], boxes[remaining]) > threshold
        grouped[0] = True  # the best box is in its own group whatever the IoU says, so the loop always ends
        group, remaining = remaining[grouped], remaining[~grouped]
        weights = scores[group] / scores[group].sum()
        found.append(Detection(box=weights @ boxes[group], score=float(scores[group[0]]),
                               keypoints=np.tensordot(weights, keypoints[group], 1)))
    return found


class FaceDetector:
    """`detect(photo, min_face)` → faces as `Detection`s in photo pixels, best first."""

    def __init__(self):
        self.model = FaceModel(DETECTOR_FILE)
        self.anchors = ssd_anchors()

    def detect(self, rgb: np.ndarray, min_face: float, min_score: float = MIN_SCORE) -> list[Detection]:
        """rgb: uint8 [H,W,3]. Faces of every size down to `min_face` px (box side): the tiles of every
        level of `pyramid`, merged."""
        height, width = rgb.shape[:2]
        boxes, scores, keypoints = [], [], []
        for level in pyramid(width, height, min_face):
            image = _resized(rgb, level.size)
            to_photo = np.array([width, height]) / level.size  # continuous coordinates scale per axis
            for y0 in level.ys:
                for x0 in level.xs:
                    b, s, k = self._detect_tile(image, x0, y0, min_score)
                    inner = _inside_tile(b, x0, y0, level.size)
                    boxes.append((b[inner].reshape(-1, 2, 2) * to_photo).reshape(-1, 4))
                    scores.append(s[inner])
                    keypoints.append(k[inner] * to_photo)
        merged = weighted_nms(np.concatenate(boxes), np.concatenate(scores), np.concatenate(keypoints))
        return _drop_nested(merged)

    def _detect_tile(self, image: np.ndarray, x0: int, y0: int, min_score: float):
        """The 128² tile of `image` at (x0, y0) (zero outside it) → detections in `image` pixels."""
        tile = _tile(image, x0, y0)
        regressors, logits = self.model.run(tile.astype(np.float32)[None] / 127.5 - 1.0)
        boxes, scores, keypoints = decode(regressors[0], logits[0, :, 0], self.anchors, min_score)
        to_image = lambda p: p * INPUT_SIDE + [x0, y0]  # noqa: E731
        return to_image(boxes.reshape(-1, 2, 2)).reshape(-1, 4), scores, to_image(keypoints)


@dataclass(frozen=True)
class Level:
    """One level of the search: the photo resized to `size` (width, height), read in 128² tiles whose
    top-left corners are every (x, y) of xs × ys (a tile may reach past the image: zeros there)."""

    size: tuple[int, int]
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @property
    def tiles(self) -> int:
        return len(self.xs) * len(self.ys)


def pyramid(width: int, height: int, min_face: float) -> list[Level]:
    """The levels that find every face of at least `min_face` px in a width×height photo (module docstring).

    Level k shows the photo at scale s_k: s_0 fits the long side into 128, each next one at most 2× s_k,
    the last one makes a min_face face FACE_IN_INPUT px (or 1 when that would enlarge the photo)."""
    if min_face <= 0:
        raise ValueError(f"min_face must be positive; got {min_face}")
    long_side = max(width, height)
    coarsest = INPUT_SIDE / long_side
    finest = max(coarsest, min(FACE_IN_INPUT / min_face, 1.0))
    steps = int(np.ceil(np.log2(finest / coarsest) - 1e-9))
    scales = coarsest * (finest / coarsest) ** (np.arange(steps + 1) / max(steps, 1))
    levels = []
    for scale in scales:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        levels.append(Level(size, _tile_starts(size[0]), _tile_starts(size[1])))
    return levels


def _tile_starts(length: int) -> tuple[int, ...]:
    """Where the tiles along one side of a level image start: one centred tile when the side fits in
    128, else evenly spread from 0 to length − 128, at most TILE_STRIDE apart."""
    if length <= INPUT_SIDE:
        return ((length - INPUT_SIDE) // 2,)
    count = int(np.ceil((length - INPUT_SIDE) / TILE_STRIDE)) + 1
    return tuple(int(x) for x in np.rint(np.linspace(0, length - INPUT_SIDE, count)))


def _resized(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo at a level's size: INTER_AREA (the photo itself at scale 1: no full-size copy)."""
    if size == (rgb.shape[1], rgb.shape[0]):
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _tile(image: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The 128² uint8 tile of image at (x0, y0), zeros where it leaves the image (MediaPipe's letterbox)."""
    height, width = image.shape[:2]
    tile = np.zeros((INPUT_SIDE, INPUT_SIDE, 3), np.uint8)
    left, top = max(x0, 0), max(y0, 0)
    visible = image[top : min(y0 + INPUT_SIDE, height), left : min(x0 + INPUT_SIDE, width)]
    tile[top - y0 : top - y0 + visible.shape[0], left - x0 : left - x0 + visible.shape[1]] = visible
    return tile


def _inside_tile(boxes: np.ndarray, x0: int, y0: int, size: tuple[int, int]) -> np.ndarray:
    """Boxes (image pixels) not within TILE_EDGE of a tile edge that lies inside the image: a face cut
    there is whole in the neighbouring tile."""
    width, height = size
    x1, y1 = x0 + INPUT_SIDE, y0 + INPUT_SIDE
    cut_left = (boxes[:, 0] < x0 + TILE_EDGE) & (x0 > 0)
    cut_top = (boxes[:, 1] < y0 + TILE_EDGE) & (y0 > 0)
    cut_right = (boxes[:, 2] > x1 - TILE_EDGE) & (x1 < width)
    cut_bottom = (boxes[:, 3] > y1 - TILE_EDGE) & (y1 < height)
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

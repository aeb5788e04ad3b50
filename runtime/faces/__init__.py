"""Faces in ordinary photos, torch-free: detect, find landmarks, FFHQ-align, and paste an edit back.

    finder = FaceFinder()
    faces = finder.find(photo, side=1024)            # every face ≥ MIN_FACE px, left to right
    edited = paste_faces(photo, [edited_crop, ...], faces)

Models: MediaPipe's BlazeFace short range and face mesh (Apache-2.0), shipped as ONNX in models/.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..images import ImageError, check_rgb_uint8
from ..limits import MAX_FACES, MIN_FACE_FRACTION
from .align import align_face
from .detector import FaceDetector, iou
from .landmarks import FaceLandmarker, alignment_points
from .paste import paste_into

MIN_FACE = 40  # px: the default smallest face (box side) edited; smaller ones have too few pixels to edit
SAME_FACE_IOU = 0.5  # two meshes whose extents overlap more than this are one face
FaceChoice = str | int  # "all", "largest" or the index of one face (left to right)


class NoFaceError(ImageError):
    """A photo in which no face (of the size asked for) was found: `min_face` the smallest face searched
    for (px) and `size` the photo's (width, height), None when a face number asked for is not there."""

    def __init__(self, message: str, min_face: float | None = None, size: tuple[int, int] | None = None):
        super().__init__(message)
        self.min_face, self.size = min_face, size


def searched_min_face(width: int, height: int, min_face: float) -> float:
    """The smallest face searched for in a width×height photo: `min_face`, or MIN_FACE_FRACTION of the
    long side when that is larger, so a huge photo is searched on a reduced copy (limits.py)."""
    return max(float(min_face), MIN_FACE_FRACTION * max(width, height))


@dataclass
class Face:
    """One face of a photo. box (x0, y0, x1, y1) and landmarks [468,2] in photo pixels; transform the
    2×3 affine photo pixel → aligned crop pixel; crop the FFHQ-aligned face, uint8 [S,S,3]; region, where
    known: float [P,P] in [0,1] over the crop, where the head itself shows (the face parser's), so the
    paste leaves what covers the face alone (None: the landmark region alone, see faces.paste)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    transform: np.ndarray
    crop: np.ndarray
    region: np.ndarray | None = None

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class FaceFinder:
    """Detector and landmarker, opened once (a few MB; ONNX Runtime on the CPU)."""

    def __init__(self):
        self.detector = FaceDetector()
        self.landmarker = FaceLandmarker()

    def find(self, rgb: np.ndarray, side: int, faces: FaceChoice = "all", min_face: float = MIN_FACE) -> list[Face]:
        """The chosen faces of rgb uint8 [H,W,3], aligned at `side`², ordered left to right.

        `min_face` is raised to MIN_FACE_FRACTION of the photo's long side (`searched_min_face`), and at
        most MAX_FACES faces (the largest) are returned: a photo's cost is bounded (limits.py).
        Raises NoFaceError when there is none of at least `min_face` px, or `faces` names one that is
        not there."""
        return self.search(rgb, side, faces, min_face)[0]

    def search(self, rgb: np.ndarray, side: int, faces: FaceChoice = "all", min_face: float = MIN_FACE
               ) -> tuple[list[Face], int]:
        """`find`, and how many faces were found beyond the MAX_FACES largest (left out, unedited)."""
        check_rgb_uint8(rgb, "find faces: photo")
        height, width = rgb.shape[:2]
        min_face = searched_min_face(width, height, min_face)
        found = []
        # Landmarks for the largest detections only: their count bounds the mesh runs (duplicates and
        # misses among them are why there are twice MAX_FACES).
        detections = sorted((d for d in self.detector.detect(rgb, min_face) if d.size >= min_face),
                            key=lambda d: -d.size)[: 2 * MAX_FACES]
        for detection in detections:
            landmarks = self.landmarker.landmarks(rgb, detection)
            if landmarks is not None:
                found.append((detection, landmarks))
        if not found:
            raise NoFaceError(f"no face of at least {min_face:g} px found in the {width}x{height} photo; "
                              "use a photo with a visible frontal face, a smaller min_face, or aligned input "
                              "(an already aligned face crop)", min_face, (width, height))
        # the MAX_FACES largest: each face is one more pass of every stage
        distinct = sorted(_distinct(found), key=lambda pair: -pair[0].size)
        found = sorted(distinct[:MAX_FACES], key=lambda pair: pair[0].box[0])
        chosen = _choose(found, faces)
        left_out = len(distinct) - len(found) if faces == "all" else 0
        return [Face(box=d.box, score=d.score, landmarks=lm, **_aligned(rgb, lm, side)) for d, lm in chosen], left_out


def too_many_faces(left_out: int) -> str:
    """The warning for a photo with more faces than one edit takes."""
    return (f"{left_out} more face(s) found than the {MAX_FACES} largest that one photo's edit takes (limits.py "
            "bounds each photo's cost); those are left unedited: edit one chosen face, or crop the photo")


def _distinct(found: list) -> list:
    """(detection, landmarks) pairs less those whose mesh is a better-scoring pair's face again: the
    detector can box one face twice (face and whole head) and both meshes then settle on that face."""
    kept: list = []
    for detection, landmarks in sorted(found, key=lambda pair: -pair[0].score):
        box = np.concatenate([landmarks.min(0), landmarks.max(0)])
        if all(iou(box, np.concatenate([other.min(0), other.max(0)])[None])[0] <= SAME_FACE_IOU for _, other in kept):
            kept.append((detection, landmarks))
    return kept


def _aligned(rgb: np.ndarray, landmarks: np.ndarray, side: int) -> dict:
    alignment = align_face(rgb, alignment_points(landmarks), side)
    return {"transform": alignment.transform, "crop": alignment.crop}


def _choose(found: list, faces: FaceChoice) -> list:
    if faces == "all":
        return found
    if faces == "largest":
        return [max(found, key=lambda pair: pair[0].size)]
    if isinstance(faces, (int, np.integer)) and not isinstance(faces, bool):
        if not 0 <= faces < len(found):
            raise NoFaceError(f"face {faces} asked for, but the photo has {len(found)} (numbered 0 to "
                              f"{len(found) - 1}, left to right)")
        return [found[faces]]
    raise ValueError(f"faces must be 'all', 'largest' or a face number; got {faces!r}")


def paste_faces(photo: np.ndarray, edited: list[np.ndarray], faces: list[Face]) -> np.ndarray:
    """A copy of photo with each edited crop uint8 [S,S,3] (the edit of that face's `crop`) pasted back
    into its face, in order: the photo changes only by what each edit changed."""
    if len(edited) != len(faces):
        raise ValueError(f"{len(edited)} edited crops for {len(faces)} faces")
    out = photo.copy()
    for crop, face in zip(edited, faces, strict=True):
        paste_into(out, crop, face.crop, face.transform, face.landmarks, face.region)
    return out

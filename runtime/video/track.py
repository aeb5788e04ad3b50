"""Faces tracked through a clip: each face keeps one track number from the frame it appears in.

Detection (the BlazeFace pyramid) runs on the first frame, every `detect_every` frames (new faces
entering), and whenever a track is lost or none exists; on the other frames each track's 468 landmarks
are refined from the previous frame's (the mesh model placed on the last landmarks, as MediaPipe tracks
a face), which is both cheaper and steadier than detecting again. A detection that overlaps a followed
face is that face; one that overlaps none starts a new track, numbered in order of appearance (left to
right within a frame). A track the mesh no longer sees ends; if the face comes back it is a new track.
"""

from __future__ import annotations

import numpy as np

from ..faces import MIN_FACE, SAME_FACE_IOU, FaceFinder
from ..faces.detector import iou

DETECT_EVERY = 15  # frames between detections that look for faces entering the clip (0.5 s at 30 fps)


def extent(landmarks: np.ndarray) -> np.ndarray:
    """The box (x0, y0, x1, y1) of a face's landmarks."""
    return np.concatenate([landmarks.min(0), landmarks.max(0)])


class FaceTracker:
    """`update(rgb)` per frame, in order → {track number: landmarks [468,2]} of the faces in that frame."""

    def __init__(self, finder: FaceFinder, min_face: float = MIN_FACE, detect_every: int = DETECT_EVERY):
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1; got {detect_every}")
        self.finder, self.min_face, self.detect_every = finder, min_face, detect_every
        self.tracks: dict[int, np.ndarray] = {}
        self.frames = 0
        self.detections = 0  # frames on which the detector ran
        self.started = 0  # tracks started

    def update(self, rgb: np.ndarray) -> dict[int, np.ndarray]:
        followed: dict[int, np.ndarray] = {}
        for number, previous in self.tracks.items():
            landmarks = self.finder.landmarker.follow(rgb, previous)
            if landmarks is not None and np.ptp(landmarks, axis=0).max() >= self.min_face / 2 and not _overlaps(
                    landmarks, followed.values()):  # two tracks that drift onto one face: the older one stays
                followed[number] = landmarks
        lost = len(followed) < len(self.tracks)
        if not followed or lost or self.frames % self.detect_every == 0:
            followed.update(self._new_faces(rgb, followed))
        self.tracks = followed
        self.frames += 1
        return dict(followed)

    def _new_faces(self, rgb: np.ndarray, followed: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        self.detections += 1
        new = []
        for detection in self.finder.detector.detect(rgb, self.min_face):
            centre = (detection.box[:2] + detection.box[2:]) / 2
            if detection.size < self.min_face or any(_inside(centre, lm) for lm in followed.values()):
                continue  # a face already followed (detector boxes and mesh extents differ too much for IoU)
            landmarks = self.finder.landmarker.landmarks(rgb, detection)
            if landmarks is not None and not _overlaps(landmarks, [*followed.values(), *new]):
                new.append(landmarks)
        numbered = {}
        for landmarks in sorted(new, key=lambda lm: lm[:, 0].min()):
            numbered[self.started] = landmarks
            self.started += 1
        return numbered


def _overlaps(landmarks: np.ndarray, others) -> bool:
    """Whether a face's landmarks are one of `others`' faces again (their extents overlap)."""
    boxes = [extent(o) for o in others]
    return bool(boxes) and float(iou(extent(landmarks), np.stack(boxes)).max()) > SAME_FACE_IOU


def _inside(point: np.ndarray, landmarks: np.ndarray) -> bool:
    box = extent(landmarks)
    return bool(np.all(point >= box[:2]) and np.all(point <= box[2:]))

"""What a clip's paste covers and how its Diff-CAM masks move over time (deghost.runtime.video.edit):
an occluder in front of the face keeps its pixels, and the masks are steadied over the centred window.

STAND-INS (tests/helpers/stand_ins.py, named as such): the untrained tiny networks have no notion of a
face's parts or of where an edit acts, so the face parser and the Diff-CAM masks are stand-ins with a
known answer; tracking, alignment, the smoothing, the fusion and the paste are the real ones."""

from __future__ import annotations

import numpy as np
import pytest

from deghost.runtime.video.edit import ClipStats, edit_frames
from tests.helpers.clips import motion_frames, photo
from tests.helpers.stand_ins import StandInPipeline

GREEN = np.array([0, 255, 0], np.uint8)  # the occluder's colour: nowhere in the astronaut's face


class NegativeStandIn(StandInPipeline):
    """The 'edit' is the crop's colour negative (a change everyone can see); the 'face parser' calls the
    occluder's green background and everything else skin; each face's 'Diff-CAM mask' is one level drawn
    at random per call (recorded in order, one face per frame here), or 1 where `random_masks` is off."""

    random_masks = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drawn: list[float] = []
        self.rng = np.random.default_rng(3)

    def draw(self, batch, w):
        return -batch

    def masks(self, batch, w):
        if not self.random_masks:
            return super().masks(batch, w)
        levels = self.rng.uniform(0, 1, len(batch)).astype(np.float32)
        self.drawn += levels.tolist()
        return np.broadcast_to(levels[:, None, None, None], (len(batch), 1, 8, 8)).copy()

    def labels(self, batch):
        rgb = (batch + 1) * 127.5  # [B,3,S,S] in levels
        green = (rgb[:, 1] > 200) & (rgb[:, 0] < 60) & (rgb[:, 2] < 60)
        return np.where(green, 0, 1).astype(np.int64)


@pytest.fixture(scope="module")
def negative(tiny_onnx_dir):
    return NegativeStandIn.load(tiny_onnx_dir)


def _with_microphone(frames: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """A green bar standing in the frame (it does not move with the face), from the mouth down: the frames
    and the bar's pixels."""
    bar = np.zeros(frames[0].shape[:2], bool)
    bar[130:, 214:240] = True  # at 512² the astronaut's mesh spans x 178-273, y 69-176; her mouth is at y ~ 140
    covered = []
    for frame in frames:
        frame = frame.copy()
        frame[bar] = GREEN
        covered.append(frame)
    return covered, bar


def _eroded(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def test_an_occluder_in_front_of_the_face_keeps_its_pixels(negative):
    """A panning face behind a still microphone: with the parsed head region ('head', the default) the bar
    comes back as it was, while the face around it is edited; the landmark region alone paints over it."""
    frames, bar = _with_microphone(motion_frames(photo(scale=1.0), 8, "pan")[0])
    inside_bar = _eroded(bar, 4)
    face = np.zeros_like(bar)
    face[85:125, 185:210] = True  # left eye and cheek: face, no bar

    def change(paste_region: str) -> tuple[list[float], list[float]]:
        out = list(edit_frames(negative, frames, alpha=20.0, suppress="none", window=5, paste_region=paste_region,
                               stats=ClipStats()))
        assert len(out) == len(frames) and all(f.faces for f in out)
        on_bar = [float(np.abs(f.edited[0].astype(int) - f.rgb)[inside_bar & _over_face(f)].mean()) for f in out]
        on_face = [float(np.abs(f.edited[0].astype(int) - f.rgb)[face].mean()) for f in out]
        return on_bar, on_face

    kept_bar, edited_face = change("head")
    painted_bar, _ = change("landmarks")
    assert min(edited_face) > 60  # the negative of a face: ~100 levels
    assert max(kept_bar) < 1.0  # measured 0.0-0.2: where the bar's edge is softened
    assert min(painted_bar) > 60  # without the parser the bar is repainted: the test can fail


def _over_face(frame) -> np.ndarray:
    """Pixels the landmark paste region reaches in this frame (the hull of the mesh, as a crude box)."""
    landmarks = next(iter(frame.faces.values())).landmarks
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    box = np.zeros(frame.rgb.shape[:2], bool)
    box[int(y0):int(y1), int(x0):int(x1)] = True
    return box


def test_diffcam_masks_are_steadied_over_the_centred_window(negative):
    """A still face whose stand-in Diff-CAM mask jumps at random from frame to frame: the edit's strength
    in each frame is the Gaussian mean of the masks of the frames around it (σ = radius / 2 over a window
    of 9, docs/video.md), so the output flickers far less than with the window off."""
    frames = [photo(scale=1.0)] * 14
    face = np.zeros(frames[0].shape[:2], bool)
    face[85:125, 185:265] = True  # eyes, nose and cheeks

    def strengths(window: int) -> tuple[np.ndarray, np.ndarray]:
        negative.random_masks, negative.drawn, negative.rng = True, [], np.random.default_rng(3)
        try:
            out = list(edit_frames(negative, frames, alpha=20.0, suppress="none", window=window,
                                   paste_region="landmarks", stats=ClipStats()))
        finally:
            negative.random_masks = False
        source = frames[0].astype(float)
        full = ((255.0 - source)[face] - source[face]).ravel()  # the change at mask 1: the negative minus the source
        # the strength actually applied to each frame: least squares of its change against the full change
        got = np.array([np.dot((f.edited[0][face] - source[face]).ravel(), full) / np.dot(full, full)
                        for f in out])
        return got, np.array(negative.drawn)

    raw, drawn = strengths(1)
    np.testing.assert_allclose(raw, drawn, atol=0.02)  # window 1: each frame's own mask
    steady, drawn = strengths(9)
    radius, sigma = 4, 2.0
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    for t in range(radius, len(drawn) - radius):  # frames with the whole window inside the clip
        expected = float(np.dot(weights, drawn[t - radius : t + radius + 1]) / weights.sum())
        assert abs(steady[t] - expected) < 0.02, t
    flicker = lambda s: float(np.abs(np.diff(s)).mean())  # noqa: E731
    assert flicker(steady) < flicker(raw) / 3  # measured 6.8×


def test_a_folder_without_the_face_parser_is_refused_before_any_frame_and_landmarks_still_run(tiny_onnx_dir):
    """The real tiny networks: the head region needs the parser stage; without it the clip fails at once,
    naming the way out, and the landmark region alone edits the frame."""
    from deghost.manifest import Manifest, ManifestError
    from deghost.runtime.pipeline import Pipeline

    manifest = Manifest.load(tiny_onnx_dir)
    manifest.artifacts = [a for a in manifest.artifacts if a.stage != "face_parser"]
    frame = photo(scale=0.5)
    with Pipeline(manifest, backend="onnxruntime", device="cpu", cache=False) as pipe:
        with pytest.raises(ManifestError, match="face_parser.*--paste-region landmarks"):
            next(edit_frames(pipe, [frame], suppress="none"))
        edited = next(edit_frames(pipe, [frame], suppress="none", paste_region="landmarks"))
    assert edited.faces and np.abs(edited.edited[0].astype(int) - frame).max() > 0  # untrained: it changes

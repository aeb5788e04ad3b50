"""Tracking and steadiness over time (deghost.runtime.video.track, smooth) on frames made from the
bundled photos with a known motion: no engines needed, only the bundled face models."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deghost.runtime.faces import FaceFinder
from deghost.runtime.faces.align import ffhq_quad
from deghost.runtime.faces.landmarks import alignment_points
from deghost.runtime.video.edit import _TrackChoice
from deghost.runtime.video.smooth import centred, quad_from_parts, quad_parts, smooth_quad, window_weights
from deghost.runtime.video.track import FaceTracker
from tests.helpers.clips import motion_frames, photo

MAX_ERROR_1024 = 2.0  # px at the 1024² crop's scale (the bound)


@pytest.fixture(scope="module")
def finder():
    return FaceFinder()


def _scale_1024(points) -> float:
    return 1024 / ffhq_quad(*points)[1]


@pytest.mark.parametrize("kind", ["pan", "zoom", "rotate"])
def test_landmarks_follow_the_known_motion(finder, kind):
    """512² frames of astronaut.png (its FFHQ quad ~177 px): the followed alignment points stay within
    2 px (1024² scale) of where the known transform takes the first frame's; measured 0.4-1.4 px."""
    frames, matrices = motion_frames(photo(scale=1.0), 8, kind)
    tracker = FaceTracker(finder, detect_every=100)
    points = [np.array(alignment_points(tracker.update(frame)[0])) for frame in frames]
    assert tracker.detections == 1 and tracker.started == 1  # one detection, then followed
    scale = _scale_1024(points[0])
    for t in range(1, len(frames)):
        known = points[0] @ matrices[t][:, :2].T + matrices[t][:, 2]
        assert np.abs(points[t] - known).max() * scale < MAX_ERROR_1024, (kind, t)


def _two_faces(n: int) -> list[np.ndarray]:
    left = photo(scale=0.5)
    right = photo("grace_hopper.jpg", scale=0.5)[:256, 64 : 64 + 192]
    frames, _ = motion_frames(np.concatenate([left, right], axis=1), n, "pan")
    return frames


def test_each_face_keeps_its_track_number(finder):
    tracker = FaceTracker(finder, detect_every=3)  # detections in between must not start new tracks
    for frame in _two_faces(7):
        faces = tracker.update(frame)
        assert sorted(faces) == [0, 1]
        assert faces[0][:, 0].mean() < 256 < faces[1][:, 0].mean()  # 0 the left face, 1 the right one
    assert tracker.started == 2 and tracker.detections == 3


def test_face_choice_picks_tracks():
    tracks = {0: np.array([[0.0, 0], [10, 10]]), 1: np.array([[50.0, 0], [90, 40]])}
    assert list(_TrackChoice(1)(tracks)) == [1]
    assert list(_TrackChoice("largest")(tracks)) == [1]
    assert _TrackChoice(2)(tracks) == {}  # a track that is not (yet) there: no face chosen in this frame
    with pytest.raises(ValueError, match="track number"):
        _TrackChoice(-1)


def test_a_frame_without_faces_has_no_track(finder):
    tracker = FaceTracker(finder)
    assert tracker.update(np.full((120, 160, 3), 128, np.uint8)) == {}
    assert tracker.update(cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8),
                                           (5, 5), 2)) == {}


def test_centred_windows_hold_the_neighbours():
    for n in (0, 1, 3, 10):
        for radius in (0, 1, 4):
            got = list(centred(range(n), radius))
            assert [item for item, _ in got] == list(range(n))
            for t, around in got:
                assert around == [j if 0 <= j < n else None for j in range(t - radius, t + radius + 1)]


def _corner_jitter(quads: np.ndarray, truth: np.ndarray) -> float:
    """Mean frame-to-frame corner motion beyond the true motion, px."""
    return float(np.linalg.norm(np.diff(quads - truth, axis=0), axis=-1).mean())


def test_smoothing_lowers_quad_jitter_and_keeps_a_still_face_still():
    """A face moving at constant speed plus white landmark noise (σ 1 px on each corner): a centred window
    of 9 frames follows the motion and cuts the corner jitter ≥ 5× (white noise through Gaussian σ 2: the
    frame-to-frame differences shrink ~10×, from √2 to ≈ 0.14 of σ); a still quad comes back unchanged."""
    rng = np.random.default_rng(0)
    n, weights = 60, window_weights(9)
    base = quad_from_parts(np.array([[200.0, 150], [60, 5], [-5, 60]]))
    truth = np.stack([base + [1.5 * t, 0.5 * t] for t in range(n)])
    noisy = truth + rng.normal(0, 1.0, truth.shape)
    smoothed = np.stack([smooth_quad(list(around), weights) for _, around in centred(list(noisy), 4)])
    assert _corner_jitter(noisy, truth) / _corner_jitter(smoothed, truth) >= 5
    assert np.abs(smoothed - truth).mean() < np.abs(noisy - truth).mean() / 1.5  # no lag, not even at the ends
    exact = np.stack([smooth_quad(list(around), weights) for _, around in centred(list(truth), 4)])
    assert np.allclose(exact, truth)  # constant motion passes unchanged
    still = [smooth_quad(list(around), weights) for _, around in centred([base] * 12, 4)]
    assert np.allclose(still, base, atol=1e-9)
    assert np.allclose(quad_from_parts(quad_parts(base)), base)


def test_window_must_be_odd():
    with pytest.raises(ValueError, match="odd"):
        window_weights(4)
    assert window_weights(1).tolist() == [1.0]

"""Test clips made from the bundled photos with a known motion per frame, and a synthetic sound track.

`motion_frames(photo, n, kind)` → (frames, matrices): frame t is the photo warped by matrices[t]
(2×3, photo pixel → frame pixel), so where a face point goes in every frame is known exactly.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
SOUND_RATE = 16000


def photo(name: str = "astronaut.png", scale: float = 0.5) -> np.ndarray:
    bgr = cv2.imread(str(IMAGES / name))
    return cv2.cvtColor(cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def motion(kind: str, t: float, centre: tuple[float, float]) -> np.ndarray:
    """2×3 photo → frame at time t ∈ [0,1]: pan (12 px right, 6 down), zoom (1 → 1.15) or rotate (0 → 12°),
    about `centre`; still: the identity."""
    angle, scale, shift = 0.0, 1.0, (0.0, 0.0)
    if kind == "pan":
        shift = (12 * t, 6 * t)
    elif kind == "zoom":
        scale = 1 + 0.15 * t
    elif kind == "rotate":
        angle = 12 * t
    elif kind != "still":
        raise ValueError(kind)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += shift
    return matrix


def motion_frames(rgb: np.ndarray, n: int, kind: str, size: tuple[int, int] | None = None
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    height, width = rgb.shape[:2]
    out_w, out_h = size or (width, height)
    centre = (width / 2, height / 2)
    matrices = [motion(kind, t / max(n - 1, 1), centre) for t in range(n)]
    frames = [cv2.warpAffine(rgb, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
              for m in matrices]
    return frames, matrices


def sound(seconds: float) -> np.ndarray:
    """A chirp with noise (mono float32): no two stretches alike, so a shift or loss shows in correlation."""
    t = np.arange(int(seconds * SOUND_RATE)) / SOUND_RATE
    rng = np.random.default_rng(0)
    return (0.4 * np.sin(2 * np.pi * (200 + 600 * t) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def write_clip(path: Path, frames: list[np.ndarray], rate: int = 25, audio: np.ndarray | None = None,
               rotation: int = 0, b_frames: int = 2, pts: list[int] | None = None, time_base: Fraction | None = None,
               codec: str = "libx264") -> Path:
    """Frames (stored orientation) as H.264 with B-frames; optional AAC sound, display rotation, own pts."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options={"bf": str(b_frames), "crf": "12"}
                                      if codec == "libx264" else {})
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        if time_base is not None:
            stream.time_base = stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        sound_stream = None
        if audio is not None:
            sound_stream = container.add_stream("aac", rate=SOUND_RATE)
            sound_stream.layout = "mono"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound_stream is not None:
            for k in range(0, len(audio), 1024):
                chunk = av.AudioFrame.from_ndarray(audio[None, k : k + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = SOUND_RATE, k
                for packet in sound_stream.encode(chunk):
                    container.mux(packet)
            for packet in sound_stream.encode():
                container.mux(packet)
    return path


def read_sound(path: Path) -> np.ndarray:
    """The first sound stream decoded to mono float32."""
    with av.open(str(path)) as container:
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(container.streams.audio[0])]
    return np.concatenate(chunks).astype(np.float32)

"""Video files in and out through PyAV (FFmpeg inside its wheel; nothing downloaded at run time).

Reading: `probe(path)` gives a clip's `VideoInfo`; `read_frames(path)` yields `VideoFrame`s in display
orientation (a phone clip's rotation metadata applied to the pixels, as a player shows it), each with
its own timestamp (variable frame rates stay as they were), the decoder flushed at the end so frames
held back for B-frame reordering are not lost. A file FFmpeg cannot open or decode raises VideoError.

Writing: `VideoWriter` encodes H.264 (libx264, the encoder of the wheel every common player reads) in
the input's container where that takes H.264 and the sound (.mp4, .mov, .mkv), else in .mkv (.webm,
.avi, a sound .mp4 cannot hold); each frame keeps its source timestamp and the stream its time base and
display rotation, so frame count, rate and duration are the source's. Pixels go in as yuv420p; an odd
width or height (which 4:2:0 cannot hold) as yuv444p, same size. Sound streams are copied packet for
packet, not re-encoded. The file is written beside the output as a temp file and renamed when closed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
VIDEO_CODEC = "libx264"
CRF = 16  # x264 constant quality: 16 keeps an unchanged frame within ~1-2 levels (visually lossless)
PRESET = "fast"  # x264 speed preset: encode time stays a small share of the frame time on a 2-core CPU
H264_CONTAINERS = (".mp4", ".mov", ".mkv")  # outputs keep these suffixes; others become .mkv
TRUNCATED_SLACK_S = 0.25  # decoding may end this much before the stated duration (rounding, a last long frame)


class VideoError(ValueError):
    """A file that is not a readable video (not a video, truncated, no video stream) or cannot be written."""


def _av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - av is a core dependency
        raise VideoError("video needs PyAV: pip install av") from error
    return av


@dataclass(frozen=True)
class VideoInfo:
    """A clip's video stream as read from its container. width × height are the decoded (stored) size;
    `rotation` (degrees counter-clockwise) turns them into the display size `display_size`."""

    path: Path
    width: int
    height: int
    rate: Fraction  # average frames per second
    time_base: Fraction
    frames: int  # as the container states it; 0 when it does not (count by decoding)
    duration_s: float  # of the video stream; 0.0 when unknown
    rotation: int
    audio_streams: int
    audio_codecs: tuple[str, ...]

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown: swapped for a quarter turn."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


@dataclass
class VideoFrame:
    """One decoded frame: `rgb` uint8 [H,W,3] in display orientation; `pts` in the stream's time base."""

    index: int
    rgb: np.ndarray
    pts: int | None
    time_s: float


def _open(path: str | Path):
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as error:
        raise VideoError(f"{path}: not a readable video ({error.strerror or error}); give an .mp4, .mov, .mkv, "
                         ".webm or .avi file that a player opens") from error
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: holds no video stream (an audio or image file?); give a video clip")
    return container


def probe(path: str | Path) -> VideoInfo:
    """The clip's metadata, read from its headers and the first frame (for the rotation)."""
    av = _av()
    with _open(path) as container:
        stream = container.streams.video[0]
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = int(round(frame.rotation or 0)) % 360
                break
        except av.FFmpegError as error:
            raise VideoError(f"{path}: its first frame cannot be decoded ({error}); the file is damaged") from error
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        audio = container.streams.audio
        return VideoInfo(
            path=Path(path), width=stream.codec_context.width, height=stream.codec_context.height,
            rate=Fraction(stream.average_rate or stream.guessed_rate or 25), time_base=Fraction(stream.time_base),
            frames=int(stream.frames or 0), duration_s=duration, rotation=rotation,
            audio_streams=len(audio), audio_codecs=tuple(a.codec_context.name for a in audio),
        )


def to_display(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Stored pixels → as shown (rotation: degrees counter-clockwise, a multiple of 90)."""
    return np.ascontiguousarray(np.rot90(rgb, rotation // 90)) if rotation % 360 else rgb


def from_display(rgb: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, -(rotation // 90))) if rotation % 360 else rgb


def read_frames(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[VideoFrame]:
    """Frames start … stop − 1 (decode order = presentation order after the decoder's reordering), rgb in
    display orientation. A damaged stream raises VideoError naming the frame where decoding stopped."""
    av = _av()
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # must be set before the first decode
        time_base = float(stream.time_base)
        index, last_time = 0, 0.0
        try:
            for frame in container.decode(stream):  # PyAV sends the flushing empty packet at the end
                if stop is not None and index >= stop:
                    break
                if index >= start:
                    rgb = to_display(frame.to_ndarray(format="rgb24"), int(round(frame.rotation or 0)) % 360)
                    yield VideoFrame(index, rgb, frame.pts, (frame.pts or 0) * time_base)
                last_time = (frame.pts or 0) * time_base
                index += 1
        except av.FFmpegError as error:
            raise VideoError(f"{path}: decoding stopped at frame {index} ({error}); the file is truncated or "
                             "damaged: re-export it or cut it before that frame with --frames") from error
        if index == 0:
            raise VideoError(f"{path}: no frame could be decoded; the file is truncated or damaged")
        if stop is None:
            _check_whole(path, container, stream, index, last_time)


def _check_whole(path, container, stream, decoded: int, last_time: float) -> None:
    """A clip whose decoding ended before the frames or the duration its header states is truncated (an mp4
    says how many frames, an mkv how long: FFmpeg stops quietly at a cut)."""
    stated = int(stream.frames or 0)
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    duration = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6
    frame_s = 1 / float(stream.average_rate or stream.guessed_rate or 25)
    short = stated and decoded < stated or duration and last_time - start + frame_s < duration - TRUNCATED_SLACK_S
    if short:
        what = f"{decoded} of the {stated} frames" if stated else f"{last_time - start:.2f} s of the {duration:.2f} s"
        raise VideoError(f"{path}: only {what} its header states could be decoded; the file is truncated: re-export "
                         f"it, or edit the frames that are there with --frames 0:{decoded}")


def output_suffix(info: VideoInfo) -> str:
    """The container the edited clip is written in: the input's where it holds H.264 and the sound."""
    suffix = info.path.suffix.lower()
    if suffix not in H264_CONTAINERS:
        return ".mkv"
    if suffix == ".mp4" and any(codec not in _mp4_audio() for codec in info.audio_codecs):
        return ".mkv"
    return suffix


def _mp4_audio() -> set[str]:
    av = _av()
    with av.open(os.devnull, "w", format="mp4") as container:
        return set(container.supported_codecs)


class VideoWriter:
    """Encode frames like `source`'s video stream into `path` (temp file, renamed on a clean close).

        with VideoWriter(path, info, audio_from=info.path) as writer:
            writer.write(rgb, pts)

    `size` (display width, height) defaults to the source's; `audio_from` copies the sound streams of that
    file (optionally only packets inside [start_s, stop_s), for a range of frames)."""

    def __init__(self, path: str | Path, info: VideoInfo, size: tuple[int, int] | None = None,
                 audio_from: str | Path | None = None, audio_range_s: tuple[float, float] | None = None):
        av = _av()
        self.path, self.info = Path(path), info
        self.temp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        width, height = size or info.display_size
        if info.rotation % 180:
            width, height = height, width  # stored size: the display rotation is kept as metadata
        self.rotation = info.rotation
        self.container = av.open(str(self.temp), "w")
        self.stream = self.container.add_stream(VIDEO_CODEC, rate=info.rate, options={"crf": str(CRF),
                                                                                     "preset": PRESET})
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.stream.time_base = info.time_base
        self.stream.codec_context.time_base = info.time_base
        if self.rotation:
            self.stream.set_display_rotation(self.rotation)
        self.frames = 0
        self._last_pts: int | None = None
        self._step = max(1, round(1 / (info.rate * info.time_base))) if info.rate else 1
        self._audio = _AudioCopy(self.container, audio_from, audio_range_s) if audio_from else None

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        """One frame in display orientation; `pts` in the source's time base (None: the next one at the rate)."""
        av = _av()
        frame = av.VideoFrame.from_ndarray(from_display(rgb, self.rotation), format="rgb24")
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        frame.pts, frame.time_base = pts, self.info.time_base
        self._last_pts = pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush, copy the sound, rename the temp file into place; returns the path."""
        for packet in self.stream.encode():
            self.container.mux(packet)
        if self._audio:
            self._audio.copy()
        self.container.close()
        os.replace(self.temp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the half-written temp file (an error stopped the run): no half-written output remains."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the container may already be broken; the file goes anyway
            pass
        self.temp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class _AudioCopy:
    """The sound streams of a source file, copied packet for packet (no re-encoding) into an output."""

    def __init__(self, container, source: str | Path, range_s: tuple[float, float] | None):
        av = _av()
        self.input = av.open(str(source))
        self.range_s = range_s
        self.streams = {a.index: container.add_stream_from_template(a) for a in self.input.streams.audio}
        self.container = container

    def copy(self) -> None:
        if not self.streams:
            self.input.close()
            return
        audio = [self.input.streams[i] for i in self.streams]
        for packet in self.input.demux(*audio):
            if packet.dts is None or packet.size == 0:  # the demuxer's empty flush packets
                continue
            if self.range_s is not None:
                time_s = float(packet.pts * packet.time_base)
                if not self.range_s[0] <= time_s < self.range_s[1]:
                    continue
                packet.pts -= int(self.range_s[0] / packet.time_base)
                packet.dts -= int(self.range_s[0] / packet.time_base)
            packet.stream = self.streams[packet.stream.index]
            self.container.mux(packet)
        self.input.close()

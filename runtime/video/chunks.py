"""A long clip in chunks (for Ray, deghost.apps.edit.ray_batch), equal to the one-stream edit.

1. `track_clip`: the faces tracked through the whole clip in one pass (tracking follows each face from
   the frame before, so it cannot start mid-clip; it is cheap beside the networks).
2. `chunk_plan`: frames [start, stop) per chunk, read with a margin of 3 × the smoothing radius on each
   side: a frame's Diff-CAM masks and head regions are averaged over ± radius frames, whose latents are
   averaged over ± radius more, whose crops come from quads averaged over ± radius more, so with that
   margin every kept frame sees exactly the windows of the one-stream run.
3. `edit_chunk`: one chunk edited (tracks given) and its kept frames written as a lossless FFV1 segment
   (RGB, bgr0, so joining re-encodes exactly what a one-stream run would), with their pts, temp then rename.
   A segment that exists is done: a killed run resumes from the segments written.
4. `join_segments`: the segments in order through the same VideoWriter (size, rate, pts, rotation,
   sound) as `edit_clip`, then the work folder is removed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..faces import MIN_FACE, FaceChoice, FaceFinder
from .edit import DEFAULT_PASTE_REGION, ClipStats, PasteRegion, _TrackChoice, edit_frames
from .io import VideoInfo, VideoWriter, _av, probe, read_frames
from .smooth import DEFAULT_WINDOW
from .track import DETECT_EVERY, FaceTracker

CHUNK_FRAMES = 250  # frames kept per chunk (10 s at 25 fps): a few minutes of one actor's work at 1024²
SEGMENT_CODEC = "ffv1"  # lossless, in the wheel
SMOOTHING_LEVELS = 3  # windows stacked on one another: quads → latents → masks and head regions


@dataclass(frozen=True)
class Chunk:
    """Frames [start, stop) are kept; [lo, hi) are read (the margins feed the smoothing windows)."""

    number: int
    start: int
    stop: int
    lo: int
    hi: int


def chunk_plan(frames: int, chunk_frames: int = CHUNK_FRAMES, window: int = DEFAULT_WINDOW) -> list[Chunk]:
    if chunk_frames < 1:
        raise ValueError(f"chunks must hold at least 1 frame; got {chunk_frames}")
    margin = SMOOTHING_LEVELS * (window // 2)
    return [Chunk(i, start, min(start + chunk_frames, frames), max(0, start - margin),
                  min(frames, start + chunk_frames + margin))
            for i, start in enumerate(range(0, frames, chunk_frames))]


def track_clip(source: str | Path, faces: FaceChoice = "all", min_face: float = MIN_FACE,
               detect_every: int = DETECT_EVERY, finder: FaceFinder | None = None) -> list[dict[int, np.ndarray]]:
    """The chosen faces' landmarks {track: [468,2]} of every frame, as `edit_frames` tracks them."""
    tracker, choose = FaceTracker(finder or FaceFinder(), min_face, detect_every), _TrackChoice(faces)
    return [choose(tracker.update(frame.rgb)) for frame in read_frames(source)]


def save_tracks(path: Path, tracks: list[dict[int, np.ndarray]]) -> Path:
    temp = path.with_name(f".{path.name}.part.npz")
    np.savez(temp, frames=np.int64(len(tracks)), **{f"{i}_{n}": lm for i, faces in enumerate(tracks)
                                                     for n, lm in faces.items()})
    os.replace(temp, path)
    return path


def load_tracks(path: Path) -> list[dict[int, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        tracks: list[dict[int, np.ndarray]] = [{} for _ in range(int(data["frames"]))]
        for key in data.files:
            if key != "frames":
                frame, track = map(int, key.split("_"))
                tracks[frame][track] = data[key]
    return tracks


def segment_paths(work: Path, chunk: Chunk, edits: int) -> list[Path]:
    return [work / f"chunk{chunk.number:05d}_edit{k}.mkv" for k in range(edits)]


def edit_chunk(pipeline, source: str | Path, tracks: list[dict[int, np.ndarray]], chunk: Chunk, work: Path,
               attribute="smile", alpha=20.0, suppress: str = "network", window: int = DEFAULT_WINDOW,
               batch: int | None = None, class_index: int | None = None,
               paste_region: PasteRegion = DEFAULT_PASTE_REGION) -> ClipStats:
    """Edit one chunk into its segments (one per edit); a chunk whose segments exist is skipped."""
    n_edits = len(pipeline.edits(attribute, alpha, class_index))
    paths = segment_paths(Path(work), chunk, n_edits)
    stats = ClipStats()
    if all(p.exists() for p in paths):
        return stats
    av = _av()
    temps = [p.with_name(f".{p.stem}.part.mkv") for p in paths]
    containers = [av.open(str(t), "w") for t in temps]
    try:
        streams = []
        pts: list[int | None] = []
        for container in containers:
            stream = container.add_stream(SEGMENT_CODEC, rate=25)
            stream.pix_fmt = "bgr0"  # packed RGB: lossless (ffv1 here refuses gbrp)
            streams.append(stream)
        options = {"batch": batch} if batch else {}
        for frame in edit_frames(pipeline, read_frames(source, chunk.lo, chunk.hi), attribute, alpha, suppress,
                                 window=window, stats=stats, class_index=class_index, tracks=tracks,
                                 paste_region=paste_region, **options):
            if not chunk.start <= frame.index < chunk.stop:
                continue
            first = not pts
            pts.append(frame.pts)
            for container, stream, edited in zip(containers, streams, frame.edited, strict=True):
                if first:  # the size of the frames (a new stream's default is 640x480: frames would be rescaled)
                    stream.width, stream.height = edited.shape[1], edited.shape[0]
                for packet in stream.encode(av.VideoFrame.from_ndarray(edited, format="rgb24")):
                    container.mux(packet)
        for container, stream in zip(containers, streams, strict=True):
            for packet in stream.encode():
                container.mux(packet)
            container.close()
        np.save(Path(work) / f"chunk{chunk.number:05d}_pts.npy", np.array([-1 if p is None else p for p in pts]))
        for temp, path in zip(temps, paths, strict=True):
            os.replace(temp, path)
    except BaseException:
        for container, temp in zip(containers, temps, strict=True):
            try:
                container.close()
            except Exception:  # noqa: BLE001 - a broken container: the temp file goes anyway
                pass
            temp.unlink(missing_ok=True)
        raise
    return stats


def join_segments(info: VideoInfo, work: Path, chunks: Sequence[Chunk], destinations: Sequence[Path]) -> list[Path]:
    """The segments of every chunk, in order, encoded into each destination as `edit_clip` writes them."""
    audio = info.path if info.audio_streams else None
    for k, destination in enumerate(destinations):
        with VideoWriter(destination, info, audio_from=audio) as writer:
            for chunk in chunks:
                pts = np.load(Path(work) / f"chunk{chunk.number:05d}_pts.npy")
                frames = read_frames(segment_paths(Path(work), chunk, k + 1)[k])
                for frame, stamp in zip(frames, pts, strict=True):
                    writer.write(frame.rgb, None if stamp < 0 else int(stamp))
    return list(destinations)


def edit_clip_in_chunks(source: str | Path, destination: Path | Sequence[Path], run_chunks: Callable,
                        chunk_frames: int = CHUNK_FRAMES, window: int = DEFAULT_WINDOW, faces: FaceChoice = "all",
                        min_face: float = MIN_FACE, detect_every: int = DETECT_EVERY, keep_work: bool = False
                        ) -> list[Path]:
    """Track, plan, `run_chunks(tracks_file, chunks, work)` (edits every chunk not yet done: locally or on
    Ray), join. The work folder `.<name>.chunks` beside the first destination holds the segments until
    the join; a run killed before it resumes there."""
    destinations = [Path(destination)] if isinstance(destination, (str, Path)) else [Path(d) for d in destination]
    info = probe(source)
    work = destinations[0].with_name(f".{destinations[0].stem}.chunks")
    work.mkdir(parents=True, exist_ok=True)
    tracks_file = work / "tracks.npz"
    if not tracks_file.exists():
        save_tracks(tracks_file, track_clip(source, faces, min_face, detect_every))
    chunks = chunk_plan(len(load_tracks(tracks_file)), chunk_frames, window)
    run_chunks(tracks_file, chunks, work)
    written = join_segments(info, work, chunks, destinations)
    if not keep_work:
        shutil.rmtree(work)
    return written

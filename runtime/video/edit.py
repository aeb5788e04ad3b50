"""The streaming edit of a clip: frames → tracked faces → steady crops → latents → edit → paste-back.

    with Pipeline.load("engines/") as pipe:
        report = edit_clip(pipe, "clip.mp4", "clip_smile+20.mp4", attribute="smile", alpha=20)
        for frame in edit_frames(pipe, frames_rgb, alpha=20): ...   # any iterator of RGB frames

Each step is a generator over the one before, so the clip is never held: the smoothing windows hold
`window` frames each and the batches `batch` faces (a few dozen frames at most, whatever the clip's
length). The steps: track the faces (deghost.runtime.video.track); smooth each track's FFHQ quad over
a centred window and align the crop to it; invert the crops in batches (Pipeline.invert); smooth each
track's latents w over the same window, so an edit that does not change does not flicker; render the
edits and their Diff-CAM masks in batches from those latents (Pipeline.render) and parse each crop
(the face parser: where the head itself shows, not what covers it); smooth each track's masks and head
region over the same window; fuse and suppress in batches with the steadied masks (Pipeline.suppress);
paste each edit back into its frame inside its steadied head region, so a hand or a microphone in
front of the face keeps its pixels. A frame without a chosen face passes through unchanged.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from deghost.manifest import ManifestError

from ..directions import DEFAULT_ALPHA
from ..face_classes import head_region
from ..faces import MIN_FACE, Face, FaceChoice
from ..faces.align import align_quad, ffhq_quad
from ..faces.landmarks import alignment_points
from ..pipeline import PASTE, Pipeline
from ..results import Rendered
from ..timing import add_timings, timed
from .io import VideoFrame, VideoWriter, probe, read_frames
from .smooth import DEFAULT_WINDOW, centred, smooth_quad, weighted_mean, window_weights
from .track import DETECT_EVERY, FaceTracker, extent

DEFAULT_BATCH = 4  # faces per pipeline batch: the stream holds about 2 batches and 2 windows of frames
DECODE, TRACK, ALIGN, ENCODE = "decode", "track", "align", "encode"  # timing keys beside the pipeline's
PARSE = "face_parser"  # timing key: the head regions (the pipeline's face parser stage)
PasteRegion = Literal["head", "landmarks"]
PASTE_REGIONS = ("head", "landmarks")  # head: the parsed head region within the landmark region
DEFAULT_PASTE_REGION: PasteRegion = "head"


@dataclass
class ClipStats:
    """What a stream did: frames, frames with a chosen face, tracks started, detector runs, and the
    milliseconds of each step (DECODE, TRACK, ALIGN, the pipeline's stages, PASTE, ENCODE)."""

    frames: int = 0
    frames_with_faces: int = 0
    tracks: int = 0
    detections: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    def timed(self, key: str):
        """`with stats.timed(DECODE): ...` adds the block's milliseconds to timings_ms[key]."""
        return timed(self.timings_ms, key)


@dataclass
class ClipReport(ClipStats):
    """`edit_clip`'s result: the stats, the files written and the wall time."""

    outputs: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0
    untrained: bool = False

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class EditedFrame:
    """One frame out of `edit_frames`: the input `rgb`, its `edited` copies (one per edit), its faces
    {track: Face}, and the source frame's index and pts."""

    index: int
    pts: int | None
    rgb: np.ndarray
    edited: list[np.ndarray]
    faces: dict[int, Face]


@dataclass
class _State:
    """A frame on its way through the steps."""

    frame: VideoFrame
    landmarks: dict[int, np.ndarray]
    quads: dict[int, np.ndarray] = field(default_factory=dict)
    faces: dict[int, Face] = field(default_factory=dict)
    w: dict[int, np.ndarray] = field(default_factory=dict)
    rendered: dict[int, Rendered] = field(default_factory=dict)  # one face's edits T and Diff-CAM masks
    heads: dict[int, np.ndarray] = field(default_factory=dict)  # where the parser sees the head [P,P]
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # steadied Diff-CAM masks [K,1,m,m]


def edit_frames(pipeline: Pipeline, frames: Iterable[np.ndarray | VideoFrame], attribute: str | Sequence[str] = "smile",
                alpha: float | Sequence[float] = DEFAULT_ALPHA, suppress: str = "network", faces: FaceChoice = "all",
                min_face: float = MIN_FACE, window: int = DEFAULT_WINDOW, detect_every: int = DETECT_EVERY,
                batch: int = DEFAULT_BATCH, stats: ClipStats | None = None, class_index: int | None = None,
                tracks: Sequence[dict[int, np.ndarray]] | None = None,
                paste_region: PasteRegion = DEFAULT_PASTE_REGION) -> Iterator[EditedFrame]:
    """The edited frames of `frames` (RGB uint8 [H,W,3] arrays or VideoFrames), in order, each with one copy
    per edit (every attribute at every alpha, as `Pipeline.edits`). faces: "all", "largest" (the largest
    track when faces first appear) or a track number (tracks are numbered as faces appear, left to right);
    window: frames of the centred smoothing window (odd; 1 = none); `stats` collects counts and timings;
    class_index: the Diff-CAM class (see `Pipeline.edits`); tracks: the chosen faces' landmarks of every
    frame of the clip by frame index, tracked beforehand (`track_clip`: chunks of a clip on Ray);
    paste_region: "head" (the face parser's head region of each frame, steadied over the window, within
    the landmark region: what covers the face keeps its pixels) or "landmarks" (that region alone)."""
    edits = pipeline.edits(attribute, alpha, class_index)
    if not isinstance(suppress, str):
        raise ValueError("a clip is edited with one suppress mode")
    if paste_region not in PASTE_REGIONS:
        raise ValueError(f"paste_region must be one of {', '.join(PASTE_REGIONS)}; got {paste_region!r}")
    pipeline.prepare(suppress)
    parse = paste_region == "head"
    if parse:  # the parser opened now: a folder without it fails before any frame is decoded
        try:
            pipeline.backend("face_parser")
        except ManifestError as error:
            raise ManifestError(f"{error}; or paste without the head region: paste_region='landmarks' "
                                "(--paste-region landmarks)") from error
    weights, radius = window_weights(window), window // 2
    if batch < 1:
        raise ValueError(f"batch must be at least 1; got {batch}")
    stats = stats if stats is not None else ClipStats()
    tracker = FaceTracker(pipeline.face_finder, min_face, detect_every)
    choose = _TrackChoice(faces)
    side = pipeline.preset.image_size

    def tracked() -> Iterator[_State]:
        for frame in _timed_frames(frames, stats):
            with stats.timed(TRACK):
                if tracks is not None:
                    landmarks = tracks[frame.index]
                else:
                    landmarks = choose(tracker.update(frame.rgb))
                    stats.tracks, stats.detections = tracker.started, tracker.detections
            stats.frames += 1
            stats.frames_with_faces += bool(landmarks)
            yield _State(frame, landmarks, {n: ffhq_quad(*alignment_points(lm))[0] for n, lm in landmarks.items()})

    def aligned() -> Iterator[_State]:
        for state, around in centred(tracked(), radius):
            with stats.timed(ALIGN):
                for n, landmarks in state.landmarks.items():
                    quad = smooth_quad([s.quads.get(n) if s else None for s in around], weights)
                    alignment = align_quad(state.frame.rgb, quad, side)
                    state.faces[n] = Face(box=extent(landmarks), score=1.0, landmarks=landmarks,
                                          transform=alignment.transform, crop=alignment.crop)
            yield state

    def inverted() -> Iterator[_State]:
        for group in _batches(aligned(), batch):
            crops = [face.crop for state in group for face in state.faces.values()]
            if crops:
                with stats.timed("encoder"):
                    w = iter(pipeline.invert(crops))
                for state in group:
                    state.w = {n: next(w) for n in state.faces}
            yield from group

    def steadied() -> Iterator[_State]:
        for state, around in centred(inverted(), radius):
            state.w = {n: weighted_mean([s.w.get(n) if s else None for s in around], weights).astype(np.float32)
                       for n in state.w}
            yield state

    def rendered() -> Iterator[_State]:
        for group in _batches(steadied(), batch):
            crops = [face.crop for state in group for face in state.faces.values()]
            if crops:
                latents = np.stack([w for state in group for w in state.w.values()])
                result = pipeline.render(crops, edits, given_w=latents)
                add_timings(stats.timings_ms, result.timings_ms)
                result.timings_ms = {}  # counted once, here; the faces' views below would repeat them
                if parse:
                    with stats.timed(PARSE):
                        heads = iter(head_region(pipeline.face_labels(result.images)))
                faces = iter(range(len(crops)))
                for state in group:
                    for n in state.faces:
                        state.rendered[n] = result.for_images(next(faces), 1)
                        if parse:
                            state.heads[n] = next(heads)
            yield from group

    def calmed() -> Iterator[_State]:
        for state, around in centred(rendered(), radius):
            for n, face in state.faces.items():
                state.masks[n] = weighted_mean([s.rendered[n].mask if s and n in s.rendered else None
                                                for s in around], weights).astype(np.float32)
                if parse:
                    region = weighted_mean([s.heads.get(n) if s else None for s in around], weights)
                    state.faces[n] = replace(face, region=region.astype(np.float32))
            yield state

    for group in _batches(calmed(), batch):
        yield from _finish(pipeline, group, suppress, stats, len(edits))


def _finish(pipeline: Pipeline, group: list[_State], suppress: str, stats: ClipStats, n_edits: int
            ) -> Iterator[EditedFrame]:
    """One batch of frames: their faces' edits fused and suppressed with the steadied masks, pasted back."""
    parts = [state.rendered[n] for state in group for n in state.faces]
    result = None
    if parts:
        masks = np.concatenate([state.masks[n] for state in group for n in state.faces])
        result = pipeline.suppress(Rendered.join(parts), suppress, mask=masks)
        add_timings(stats.timings_ms, result.timings_ms)
    first = 0
    for state in group:
        rgb = state.frame.rgb
        edited = [rgb] * n_edits
        if state.faces:
            with stats.timed(PASTE):
                edited = pipeline.paste(rgb, list(state.faces.values()), result, first)[suppress]
            first += len(state.faces)
        yield EditedFrame(state.frame.index, state.frame.pts, rgb, edited, dict(state.faces))


def _batches(states: Iterator[_State], faces: int) -> Iterator[list[_State]]:
    """Consecutive frames grouped until they hold `faces` faces (or 4× that many frames: faceless stretches)."""
    group: list[_State] = []
    count = 0
    for state in states:
        group.append(state)
        count += len(state.landmarks)
        if count >= faces or len(group) >= 4 * faces:
            yield group
            group, count = [], 0
    if group:
        yield group


def _timed_frames(frames: Iterable[np.ndarray | VideoFrame], stats: ClipStats) -> Iterator[VideoFrame]:
    iterator = iter(frames)
    index = 0
    while True:
        with stats.timed(DECODE):
            item = next(iterator, None)
        if item is None:
            return
        yield item if isinstance(item, VideoFrame) else VideoFrame(index, item, None, 0.0)
        index += 1


class _TrackChoice:
    """`faces` as tracks: "all", a track number, or "largest" (chosen when faces appear; again if it ends)."""

    def __init__(self, faces: FaceChoice):
        if faces not in ("all", "largest") and not (isinstance(faces, (int, np.integer)) and faces >= 0):
            raise ValueError(f"faces must be 'all', 'largest' or a track number; got {faces!r}")
        self.faces, self.picked = faces, None

    def __call__(self, tracks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        if self.faces == "all":
            return tracks
        if self.faces == "largest":
            if self.picked not in tracks:
                self.picked = max(tracks, key=lambda n: np.ptp(tracks[n], axis=0).max(), default=None)
            return {self.picked: tracks[self.picked]} if self.picked is not None else {}
        return {self.faces: tracks[self.faces]} if self.faces in tracks else {}


def edit_clip(pipeline: Pipeline, source: str | Path, destination: str | Path | Sequence[str | Path],
              attribute: str | Sequence[str] = "smile", alpha: float | Sequence[float] = DEFAULT_ALPHA,
              suppress: str = "network", grid: str | Path | Sequence[str | Path] | None = None,
              frames: tuple[int, int | None] | None = None, progress: bool = False, **options) -> ClipReport:
    """Edit the clip `source` into `destination` (one path per edit: every attribute at every alpha), the
    same size, rate, frame count, timestamps, rotation and sound; `grid`: side-by-side previews (source |
    edit), one per edit; `frames` (start, stop): that range only (stop None: to the end). Other options:
    `edit_frames`'. Raises VideoError for a file that is not a readable video; nothing is left half-written."""
    started = time.perf_counter()
    info = probe(source)
    destinations = _paths(destination)
    grids = _paths(grid) if grid is not None else []
    n_edits = len(pipeline.edits(attribute, alpha, options.get("class_index")))
    if len(destinations) != n_edits or grids and len(grids) != n_edits:
        raise ValueError(f"{n_edits} edit(s) need as many destinations (and grid paths); got {len(destinations)}"
                         f" and {len(grids)}")
    start, stop = frames or (0, None)
    if start < 0 or stop is not None and stop <= start:
        raise ValueError(f"frames {start}:{stop} is not a range of frames (start ≥ 0, stop > start)")
    audio_range = (start / info.rate, stop / info.rate if stop else float("inf")) if frames else None
    audio = info.path if info.audio_streams else None
    width, height = info.display_size
    report = ClipReport(untrained=pipeline.untrained)
    total = (stop if stop is not None else info.frames or 0) - start
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(VideoWriter(d, info, audio_from=audio, audio_range_s=audio_range))
                   for d in destinations]
        previews = [stack.enter_context(VideoWriter(g, replace(info, rotation=0), size=(2 * width, height)))
                    for g in grids]
        bar = stack.enter_context(tqdm(total=total if total > 0 else None, unit="frame", disable=not progress,
                                       desc=info.path.name, leave=False))
        first_pts = None
        for frame in edit_frames(pipeline, read_frames(source, start, stop), attribute, alpha, suppress,
                                 stats=report, **options):
            if first_pts is None:
                first_pts = frame.pts if start and frame.pts is not None else 0
            pts = None if frame.pts is None else frame.pts - first_pts
            with report.timed(ENCODE):
                for writer, edited in zip(writers, frame.edited, strict=True):
                    writer.write(edited, pts)
                for preview, edited in zip(previews, frame.edited, strict=False):
                    preview.write(np.concatenate([frame.rgb, edited], axis=1), pts)
            bar.update()
    report.outputs = destinations + grids
    report.elapsed_s = time.perf_counter() - started
    return report


def _paths(value) -> list[Path]:
    return [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]

"""Clips in `deghost edit`: each video input edited as a stream (deghost.runtime.video.edit_clip) and
written beside the photo outputs as `<stem>_<attribute><alpha>_<suppress><suffix>` (with --grid also
`<stem>_<attribute><alpha>_grid<suffix>`, source | edit side by side). The suffix is the input's where
that container holds H.264 and its sound (.mp4, .mov, .mkv), else .mkv. One clip that cannot be read
or edited is reported and the others go on; existing outputs are kept unless `overwrite`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from deghost.runtime.backends import BackendError
from deghost.runtime.directions import DEFAULT_ALPHA
from deghost.runtime.pipeline import Pipeline
from deghost.runtime.video.edit import DEFAULT_PASTE_REGION, ClipReport, edit_clip
from deghost.runtime.video.io import VIDEO_SUFFIXES, VideoError, output_suffix, probe

from .folder import GRID, FaceOptions

log = logging.getLogger("deghost.runtime")


def is_clip(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def parse_frames(text: str) -> tuple[int, int | None]:
    """--frames "A:B" (B may be left out: to the end) → (A, B); frames are counted from 0, B excluded."""
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        first, last = int(start or 0), int(stop) if stop else None
    except ValueError:
        raise ValueError(f"--frames takes START:STOP (frame numbers from 0, STOP excluded, e.g. 0:100 or 250:); "
                         f"got {text!r}") from None
    if first < 0 or last is not None and last <= first:
        raise ValueError(f"--frames {text}: START must be 0 or more and STOP larger than START")
    return first, last


@dataclass
class ClipsReport:
    """What the clips of a run did: per clip its report, the clips kept and those that failed."""

    done: list[tuple[Path, ClipReport]] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = []
        for source, report in self.done:
            faces = ("in chunks on Ray" if report.frames_with_faces < 0 else
                     f"{report.frames_with_faces} with faces, {report.tracks} track(s)" if report.frames_with_faces
                     else "no face in any frame: frames passed through unchanged")
            shares = " · ".join(f"{name} {ms / max(report.frames, 1):.0f}" for name, ms in report.timings_ms.items())
            speed = (f" in {report.elapsed_s:.1f} s ({report.frames_per_second:.2f} frames/s);" if report.elapsed_s
                     else "")
            written = ", ".join(p.name for p in report.outputs)
            lines.append(f"deghost edit: clip {source.name}: {report.frames} frame(s), {faces},{speed} wrote {written}"
                         + (f"\n  per frame, ms: {shares}" if shares else ""))
        lines += [f"deghost edit: clip {p.name} kept (outputs exist; --overwrite replaces them)" for p in self.kept]
        lines += [f"failed: {message}" for _, message in self.failed]
        return lines


def clip_outputs(source: Path, out_dir: Path, edits, suppress: str, grid: bool) -> tuple[list[Path], list[Path] | None]:
    """(the edited clip per edit, the preview clip per edit or None); never the input itself."""
    suffix = output_suffix(probe(source))
    outputs = [out_dir / f"{source.stem}_{e.label}_{suppress}{suffix}" for e in edits]
    grids = [out_dir / f"{source.stem}_{e.label}_{GRID}{suffix}" for e in edits] if grid else None
    if any(p.resolve() == source.resolve() for p in outputs + (grids or [])):
        raise VideoError(f"{source}: an output would overwrite the input; give another --out")
    return outputs, grids


def run_clips_ray(engines: Path, clips: list[Path], out_dir: Path, attribute, alpha, suppress: str, overwrite: bool,
                  class_index: int | None, face_options: FaceOptions, window: int, detect_every: int, batch: int,
                  chunk_frames: int, address: str | None, backend: str = "auto", threads: int | None = None,
                  precision: str | None = None, device: str = "auto", ray_workers: int | None = None,
                  paste_region: str = DEFAULT_PASTE_REGION) -> ClipsReport:
    """Each clip in chunks on Ray (apps/edit/ray_clips.py), joined here; same names, kept/failed rules."""
    from deghost.runtime.ray_cluster import RayJobError, connected
    from deghost.runtime.video.chunks import edit_clip_in_chunks

    from .ray_clips import ray_chunk_runner

    edits = Pipeline.load(engines).edits(attribute, alpha, class_index)
    options = dict(attribute=attribute, alpha=alpha, suppress=suppress, window=window, batch=batch,
                   class_index=class_index, paste_region=paste_region)
    report = ClipsReport()
    with connected(address) as ray:
        for source in clips:
            try:
                outputs, _ = clip_outputs(source, out_dir, edits, suppress, False)
                if not overwrite and all(p.exists() for p in outputs):
                    report.kept.append(source)
                    continue
                runner = ray_chunk_runner(ray, engines, source, options, backend, threads, precision, device,
                                          ray_workers)
                edit_clip_in_chunks(source, outputs, runner, chunk_frames, window, face_options.faces,
                                    face_options.min_face, detect_every)
                done = ClipReport(outputs=outputs, frames=probe(outputs[0]).frames, frames_with_faces=-1)
                report.done.append((source, done))
            except (VideoError, BackendError, RayJobError) as error:
                report.failed.append((source, f"{source}: {error}" if str(source) not in str(error) else str(error)))
    return report


def run_clips(pipe: Pipeline, clips: list[Path], out_dir: Path, attribute, alpha=DEFAULT_ALPHA,
              suppress: str = "network", overwrite: bool = False, grid: bool = False, class_index: int | None = None,
              face_options: FaceOptions | None = None, frames: tuple[int, int | None] | None = None,
              window: int | None = None, detect_every: int | None = None, batch: int | None = None,
              progress: bool = True, paste_region: str | None = None) -> ClipsReport:
    face_options = face_options or FaceOptions()
    edits = pipe.edits(attribute, alpha, class_index)
    options = {name: value for name, value in (("window", window), ("detect_every", detect_every), ("batch", batch),
                                               ("paste_region", paste_region)) if value is not None}
    report = ClipsReport()
    for source in clips:
        try:
            outputs, grids = clip_outputs(source, out_dir, edits, suppress, grid)
            if not overwrite and all(p.exists() for p in outputs + (grids or [])):
                report.kept.append(source)
                continue
            done = edit_clip(pipe, source, outputs, attribute, alpha, suppress, grid=grids, frames=frames,
                             progress=progress, faces=face_options.faces, min_face=face_options.min_face,
                             class_index=class_index, **options)
            report.done.append((source, done))
        except (VideoError, BackendError) as error:
            report.failed.append((source, f"{source}: {error}" if str(source) not in str(error) else str(error)))
        except Exception as error:  # one clip's unexpected failure is that clip's; the run goes on
            report.failed.append((source, f"{source}: editing failed ({type(error).__name__}: {error})"))
    return report

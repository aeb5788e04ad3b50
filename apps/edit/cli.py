"""`deghost edit`: edit the faces of photos with the exported engines, from the command line (torch-free).

Exit codes: 0 every input done (or kept), 1 some inputs failed or had no face (the others are done),
2 usage or configuration error (no engines, unknown attribute, missing stage, bad option).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from deghost.runtime.backends import BackendError
from deghost.runtime.directions import DEFAULT_ALPHA
from deghost.runtime.faces import MIN_FACE
from deghost.runtime.limits import MAX_ALPHA
from deghost.runtime.pipeline import BLEND, GLUE, SUPPRESS_MODES, UNTRAINED_LABEL, FaceOptions, Pipeline
from deghost.runtime.video.chunks import CHUNK_FRAMES
from deghost.runtime.video.edit import DEFAULT_BATCH as CLIP_BATCH
from deghost.runtime.video.edit import DEFAULT_PASTE_REGION, PASTE_REGIONS
from deghost.runtime.video.smooth import DEFAULT_WINDOW
from deghost.runtime.video.track import DETECT_EVERY

from .. import refusals
from ..exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, usage_error
from ..options import add_aligned_option, add_backend_options, add_engines_option
from .clips import ClipsReport, is_clip, parse_frames, run_clips, run_clips_ray
from .folder import INPUT_SUFFIXES, FolderReport, FolderRun, collect_inputs, run_folder

RAY_LOCAL = "local"  # `--ray` without an address: start a local Ray instance

DESCRIPTION = """\
Edit the faces in photos: find every face, align it the FFHQ way (eyes and mouth at fixed places
in a square crop), invert it with pSp, move the latent along an attribute direction, render with
StyleGAN2, blend the edit in with the Diff-CAM mask, suppress the ghosting artifacts of that blend,
and paste the edited face back into the photo (same size; outside the faces it is unchanged).
Runs on TensorRT engines where they load, else on the ONNX graphs (ONNX Runtime on CUDA; on a CPU,
OpenVINO where installed, else ONNX Runtime). Inputs are files or folders (their image files);
--aligned takes already FFHQ-aligned square crops as they are (others are center-cropped and
resized, with a warning). Clips (.mp4 .mov .mkv .webm .avi) are edited frame by frame as a stream:
faces tracked through the clip, crops and latents steadied over time, the edit pasted back, and the
clip written with the same size, frame rate, frame count, timestamps and sound."""

EPILOG = f"""\
suppress modes:
  network   MAResU-Net on (I, F_fused), the paper's method (default)
  poisson   OpenCV seamlessClone of F_fused into I inside the face mask (BiSeNet)
  eogi      the EOGI Deghosting baseline
  none      the fused image F_fused itself, artifacts and all

outputs (in --out, PNG): <stem>_<attribute><alpha>_<suppress>.png, e.g. face_smile+20_network.png,
the whole photo with every chosen face edited (with --aligned: the edited crop); with --grid also
<stem>_<attribute><alpha>_grid.png: per face original | fused | EOGI | ours (aligned crops), then
the photo before and after. Existing outputs are kept unless --overwrite; inputs are never
overwritten. A photo with no face (of at least --min-face px) is reported as failed, nothing written.

clips (in --out): <stem>_<attribute><alpha>_<suppress>.mp4 (the input's container where it holds
H.264 and the sound: .mp4 .mov .mkv; else .mkv), H.264 (yuv420p; yuv444p at odd sizes), the sound
streams copied unchanged; with --grid also <stem>_<attribute><alpha>_grid.mp4, source | edit side by
side. A clip without faces is written unchanged and reported. --face/--largest-face choose tracks.

examples:
  deghost edit photos/ --out edited/                              smile +20 on every face in photos/
  deghost edit clip.mp4 --out edited/ --grid                      a clip, and its side-by-side preview
  deghost edit clip.mp4 --frames 0:250 --smooth 15 --out edited/  the first 250 frames, steadier
  deghost edit group.jpg --largest-face --out out/                only the largest face
  deghost edit ffhq_crops/ --aligned --out out/                   inputs already FFHQ-aligned
  deghost edit a.png b.png --attribute age beard --alpha -10 20 --out out/ --grid
  deghost edit a.png --attribute my_direction.npy --class-index 15 --out out/
  deghost edit photos/ --out edited/ --ray                        the same on a local Ray instance
  deghost edit s3mount/photos/ --out s3mount/edited/ --ray auto   on the Ray cluster this node belongs to
  deghost edit photos/ --out edited/ --precision bf16              CPU: OpenVINO bf16, ~2x faster

backends and precision: auto takes TensorRT engines where they load, then ONNX Runtime on CUDA,
then on a CPU OpenVINO (pip install "deghost[openvino]") or ONNX Runtime; the choice is logged
once as a table. auto never lowers precision: --precision bf16 (CPU, OpenVINO) or fp16 (GPU) asks
for it; bf16 runs only the stages whose recorded bf16 error is within bound, the others in fp32.

exit codes: {EXIT_OK} all done, {EXIT_FAILED} some inputs failed (listed; the rest are written),
  {EXIT_USAGE} usage or configuration error (e.g. no engines: build them with deghost build)
"""


def add_edit_command(subparsers) -> argparse.ArgumentParser:
    """Register `edit` on an argparse subparsers object; the command runs `args.run(args)` → exit code."""
    parser = subparsers.add_parser(
        "edit", help="edit face images (attribute, alpha) and suppress the ghosting artifacts",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    parser.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="output folder (created)")
    parser.add_argument("--attribute", "-a", nargs="+", default=["smile"], metavar="NAME",
                        help="attribute(s) listed in the engines' manifest (smile, age, beard, bushy_eyebrows), "
                        "or the path of a direction .npy (default: smile)")
    parser.add_argument("--alpha", nargs="+", type=float, default=[DEFAULT_ALPHA], metavar="A",
                        help=f"edit strength(s): w + A·n/‖n‖; every attribute runs at every alpha "
                        f"(default: {DEFAULT_ALPHA:g})")
    parser.add_argument("--suppress", choices=SUPPRESS_MODES, default="network",
                        help="how ghosting artifacts are suppressed (default: %(default)s; see below)")
    parser.add_argument("--class-index", type=int, metavar="C",
                        help="Diff-CAM classifier class for the mask (default: the attribute's class; for a .npy "
                        "direction, the class whose logit the edit changes most)")
    faces = parser.add_argument_group("faces (ordinary photos)")
    choice = faces.add_mutually_exclusive_group()
    choice.add_argument("--face", type=int, metavar="N", help="edit only face N, counted from 0 left to right "
                        "(default: every face)")
    choice.add_argument("--largest-face", action="store_true", help="edit only the largest face")
    faces.add_argument("--min-face", type=float, default=MIN_FACE, metavar="PX",
                       help="smallest face edited, box side in pixels (default: %(default)g)")
    add_aligned_option(faces)
    clips = parser.add_argument_group("clips")
    clips.add_argument("--frames", type=str, metavar="A:B",
                       help="edit frames A to B−1 only (counted from 0; 'A:' to the end); the sound is cut to match")
    clips.add_argument("--smooth", type=int, default=DEFAULT_WINDOW, metavar="W",
                       help="frames of the centred window over which each face's crop, latents, Diff-CAM masks and "
                       "paste region are averaged (odd; 1 = none; default: %(default)s): steadier faces, edits that "
                       "do not flicker")
    clips.add_argument("--paste-region", choices=PASTE_REGIONS, default=DEFAULT_PASTE_REGION,
                       help="where an edit is pasted back into a frame: 'head' = where the face parser sees the "
                       "head itself in that frame, so a hand or microphone in front of the face keeps its pixels; "
                       "'landmarks' = the whole landmark region, painting over what covers it (no parser run; "
                       "default: %(default)s)")
    clips.add_argument("--detect-every", type=int, default=DETECT_EVERY, metavar="N",
                       help="look for faces entering the clip every N frames (tracks are followed in between; "
                       "default: %(default)s)")
    clips.add_argument("--clip-batch", type=int, default=CLIP_BATCH, metavar="N",
                       help="faces per inference batch in clips (default: %(default)s)")
    clips.add_argument("--chunk-frames", type=int, default=CHUNK_FRAMES, metavar="N",
                       help="with --ray: frames per chunk a Ray actor edits (plus smoothing margins; default: "
                       "%(default)s); a killed run resumes from the chunks written")
    add_engines_option(parser)
    add_backend_options(parser, threads_scope=" (with --ray: per actor)")
    parser.add_argument("--batch", type=int, default=1, metavar="N", help="images per inference batch (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--grid", action="store_true",
                        help="also save original | fused | EOGI | ours side by side (runs network and eogi)")
    parser.add_argument("--memory-arena", action="store_true",
                        help="ONNX Runtime on CPU: keep activations in per-session arenas instead of freeing them "
                        "after each stage (1024²: 5.8 instead of 3.1 GB peak; no faster on a 2-core CPU)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="threads decoding and writing images while inference runs (default: 2)")
    parser.add_argument("--ray", nargs="?", const=RAY_LOCAL, metavar="ADDRESS",
                        help="run on Ray (pip install 'deghost[ray]'): a pool of actors, one Pipeline each; without "
                        "ADDRESS a local Ray instance, else the cluster at ADDRESS (auto, host:6379, ray://host:10001)")
    parser.add_argument("--ray-workers", type=int, metavar="N",
                        help="with --ray: actors (default: one per GPU, else one per 4 cores; --threads is per actor)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or backend log")
    parser.set_defaults(run=run_edit)
    return parser


def run_edit(args: argparse.Namespace) -> int:
    with _log_through_tqdm(logging.WARNING if args.quiet else logging.INFO):
        return _edit(args)


def _edit(args: argparse.Namespace) -> int:
    if args.batch < 1 or args.workers < 1 or (args.threads is not None and args.threads < 1):
        return _usage_error("--batch, --workers and --threads must be at least 1")
    if args.face is not None and args.face < 0 or args.min_face <= 0:
        return _usage_error("--face must be 0 or more and --min-face positive")
    for alpha in args.alpha:
        if not abs(alpha) <= MAX_ALPHA:  # NaN included
            return _usage_error(refusals.alpha_out_of_range(alpha, "cli"))
    choice = "largest" if args.largest_face else "all" if args.face is None else args.face
    inputs = collect_inputs(args.inputs)
    if not inputs:
        return _usage_error(f"no image or video files in {' '.join(args.inputs)} (looked for "
                            f"{', '.join(INPUT_SUFFIXES)})")
    clips, photos = [p for p in inputs if is_clip(p)], [p for p in inputs if not is_clip(p)]
    try:
        frames = parse_frames(args.frames) if args.frames else None
    except ValueError as error:
        return _usage_error(str(error))
    if clips and args.aligned:
        return _usage_error("clips are edited from ordinary frames (faces tracked and aligned): leave out --aligned, "
                            "or give photos only")
    if clips and args.ray and (args.grid or frames):
        return _usage_error("with --ray a clip is edited whole: leave out --grid and --frames (or --ray)")
    if args.smooth < 1 or args.smooth % 2 == 0 or min(args.detect_every, args.clip_batch, args.chunk_frames) < 1:
        return _usage_error("--smooth must be an odd number of frames (1 = none) and --detect-every, --clip-batch "
                            "and --chunk-frames at least 1")
    face_options = FaceOptions(args.aligned, choice, args.min_face)
    try:
        run = FolderRun(photos, args.out, args.attribute, args.alpha, args.suppress, args.batch, args.overwrite,
                        args.grid, args.class_index, face_options)
        if args.ray:
            return _clips_and_photos_on_ray(args, run, clips)
        with Pipeline.load(args.engines, backend=args.backend, threads=args.threads, precision=args.precision,
                           memory_arena=args.memory_arena, device=args.device) as pipe:
            if pipe.untrained:
                logging.getLogger("deghost.runtime").warning("%s", UNTRAINED_LABEL)
            report = run_folder(pipe, run, args.workers, progress=not args.quiet) if photos else None
            clip_report = run_clips(pipe, clips, args.out, args.attribute, args.alpha, args.suppress, args.overwrite,
                                    args.grid, args.class_index, face_options, frames, args.smooth,
                                    args.detect_every, args.clip_batch, progress=not args.quiet,
                                    paste_region=args.paste_region) if clips else None
            backends = pipe.describe()
    except (ValueError, BackendError) as error:  # ManifestError and DirectionError are ValueErrors too
        return _usage_error(str(error))
    return _print_summary(report, clip_report, backends)


def _print_summary(report: FolderReport | None, clip_report: ClipsReport | None, backends: dict[str, str]) -> int:
    if report is not None:
        print(summary(report, backends))
    if clip_report is not None:
        print("\n".join(clip_report.lines()))
    failed = (report is not None and report.failed) or (clip_report is not None and clip_report.failed)
    return EXIT_FAILED if failed else EXIT_OK


def _clips_and_photos_on_ray(args: argparse.Namespace, run: FolderRun, clips: list[Path]) -> int:
    code = _edit_on_ray(args, run) if run.inputs else EXIT_OK
    if not clips or code == EXIT_USAGE:
        return code
    from deghost.runtime.ray_cluster import RayMissingError

    try:
        report = run_clips_ray(args.engines, clips, args.out, args.attribute, args.alpha, args.suppress,
                               args.overwrite, args.class_index, run.face_options, args.smooth, args.detect_every,
                               args.clip_batch, args.chunk_frames, None if args.ray == RAY_LOCAL else args.ray,
                               args.backend, args.threads, args.precision, args.device, args.ray_workers,
                               args.paste_region)
    except (ValueError, BackendError, RayMissingError) as error:
        return _usage_error(str(error))
    print("\n".join(report.lines()))
    return EXIT_FAILED if report.failed or code == EXIT_FAILED else EXIT_OK


def _edit_on_ray(args: argparse.Namespace, run: FolderRun) -> int:
    """`--ray`: the same run, plan, files, summary and exit codes on a Ray cluster (apps/edit/ray_batch.py)."""
    from deghost.runtime.ray_cluster import RayJobError, RayMissingError

    from .ray_batch import run_folder_ray

    if args.ray_workers is not None and args.ray_workers < 1:
        return _usage_error("--ray-workers must be at least 1")
    try:
        report, backends = run_folder_ray(
            args.engines, run, args.ray_workers, args.threads, args.backend,
            address=None if args.ray == RAY_LOCAL else args.ray, progress=not args.quiet,
            precision=args.precision, device=args.device,
        )
    except (ValueError, BackendError, RayMissingError, RayJobError) as error:
        return _usage_error(str(error))
    if report.untrained:
        logging.getLogger("deghost.runtime").warning("%s", UNTRAINED_LABEL)
    print(summary(report, backends))
    return EXIT_FAILED if report.failed else EXIT_OK


def summary(report: FolderReport, backends: dict[str, str]) -> str:
    """The lines printed after a run: counts, speed, per-stage time per image, failures, the untrained label."""
    kinds = sorted(set(backends.values()))
    lines = [
        f"deghost edit: {report.processed} image(s) in {report.elapsed_s:.1f} s ({report.images_per_second:.2f} "
        f"images/s) on {', '.join(kinds)}; {report.written} file(s) written, {len(report.failed)} failed, "
        f"{len(report.kept)} kept (outputs exist; --overwrite replaces them)"
    ]
    if report.processed:
        stages = [(name, ms) for name, ms in report.timings_ms.items() if name not in (BLEND, GLUE)]
        stages += [(name, report.timings_ms[name]) for name in (BLEND, GLUE) if name in report.timings_ms]
        stages += [(f"{name} (overlapped)", ms) for name, ms in report.io_ms.items()]
        lines.append("per image, ms: " + " · ".join(f"{name} {ms / report.processed:.0f}" for name, ms in stages))
    lines += [f"failed: {message}" for _, message in report.failed]
    if report.untrained:
        lines.append(f"NOTE: {UNTRAINED_LABEL} (the manifest's weights are random, seeded)")
    return "\n".join(lines)


def _usage_error(message: str) -> int:
    return usage_error("edit", message)


class _TqdmHandler(logging.Handler):
    """Log lines printed above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


@contextmanager
def _log_through_tqdm(level: int) -> Iterator[None]:
    """For the command's duration, the runtime's log goes to the terminal above the progress bar."""
    logger = logging.getLogger("deghost.runtime")
    saved = logger.level, logger.propagate
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

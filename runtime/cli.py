"""`deghost edit`: edit face images with the exported engines, from the command line (torch-free).

Exit codes: 0 every input done (or kept), 1 some inputs failed (the others are done),
2 usage or configuration error (no engines, unknown attribute, missing stage, bad option).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from .backends import BACKENDS, BackendError
from .directions import DEFAULT_ALPHA
from .folder import IMAGE_SUFFIXES, FolderReport, collect_inputs, run_folder
from .pipeline import BLEND, GLUE, SUPPRESS_MODES, UNTRAINED_LABEL, Pipeline

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
RAY_LOCAL = "local"  # `--ray` without an address: start a local Ray instance

DESCRIPTION = """\
Edit aligned face images: invert them with pSp, move the latent along an attribute direction,
render with StyleGAN2, blend the edit in with the Diff-CAM mask, and suppress the ghosting
artifacts of that blend. Runs on TensorRT engines where they load, else on the ONNX graphs
(ONNX Runtime, CUDA or CPU). Inputs are files or folders (their image files); faces should be
FFHQ-aligned and square (others are center-cropped and resized, with a warning)."""

EPILOG = f"""\
suppress modes:
  network   MAResU-Net on (I, F_fused), the paper's method (default)
  poisson   OpenCV seamlessClone of F_fused into I inside the face mask (BiSeNet)
  eogi      the EOGI Deghosting baseline
  none      the fused image F_fused itself, artifacts and all

outputs (in --out, PNG): <stem>_<attribute><alpha>_<suppress>.png, e.g. face_smile+20_network.png;
with --grid also <stem>_<attribute><alpha>_grid.png: original | fused | EOGI | ours. Existing
outputs are kept unless --overwrite; inputs are never overwritten.

examples:
  deghost edit photos/ --out edited/                              smile +20 on every image of photos/
  deghost edit a.png b.png --attribute age beard --alpha -10 20 --out out/ --grid
  deghost edit a.png --attribute my_direction.npy --class-index 15 --out out/
  deghost edit photos/ --out edited/ --ray                        the same on a local Ray instance
  deghost edit s3mount/photos/ --out s3mount/edited/ --ray auto   on the Ray cluster this node belongs to

exit codes: {EXIT_OK} all done, {EXIT_SOME_FAILED} some inputs failed (listed; the rest are written),
  {EXIT_USAGE} usage or configuration error (e.g. no engines: build them with python export/build_engines.py)
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
    parser.add_argument("--engines", type=Path, default=Path("engines"), metavar="DIR",
                        help="folder with manifest.json, engines/graphs and directions/ (default: engines/)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: TensorRT where the engines load, else ONNX Runtime (default: auto)")
    parser.add_argument("--batch", type=int, default=1, metavar="N", help="images per inference batch (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--grid", action="store_true",
                        help="also save original | fused | EOGI | ours side by side (runs network and eogi)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="ONNX Runtime threads per operator (default: all cores)")
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
    inputs = collect_inputs(args.inputs)
    if not inputs:
        return _usage_error(f"no image files in {' '.join(args.inputs)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    if args.ray:
        return _edit_on_ray(args, inputs)
    try:
        with Pipeline.load(args.engines, backend=args.backend, threads=args.threads,
                           memory_arena=args.memory_arena) as pipe:
            if pipe.untrained:
                logging.getLogger("deghost.runtime").warning("%s", UNTRAINED_LABEL)
            report = run_folder(pipe, inputs, args.out, args.attribute, args.alpha, args.suppress, args.batch,
                                args.overwrite, args.grid, args.class_index, args.workers, progress=not args.quiet)
            backends = pipe.describe()
    except (ValueError, BackendError) as error:  # ManifestError and DirectionError are ValueErrors too
        return _usage_error(str(error))
    print(summary(report, backends))
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def _edit_on_ray(args: argparse.Namespace, inputs: list[Path]) -> int:
    """`--ray`: the same run, plan, files, summary and exit codes on a Ray cluster (runtime/ray_batch.py)."""
    from .ray_batch import run_folder_ray
    from .ray_cluster import RayJobError, RayMissingError

    if args.ray_workers is not None and args.ray_workers < 1:
        return _usage_error("--ray-workers must be at least 1")
    try:
        report, backends = run_folder_ray(
            args.engines, inputs, args.out, args.attribute, args.alpha, args.suppress, args.batch, args.overwrite,
            args.grid, args.class_index, args.ray_workers, args.threads, args.backend,
            address=None if args.ray == RAY_LOCAL else args.ray, progress=not args.quiet,
        )
    except (ValueError, BackendError, RayMissingError, RayJobError) as error:
        return _usage_error(str(error))
    if report.untrained:
        logging.getLogger("deghost.runtime").warning("%s", UNTRAINED_LABEL)
    print(summary(report, backends))
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


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
    print(f"deghost edit: error: {message}", file=sys.stderr)
    return EXIT_USAGE


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

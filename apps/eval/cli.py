"""`deghost eval`: score a folder of outputs against a folder of references and write the tables.

`add_eval_command(subparsers)` registers the subcommand; torch and the metric networks are
imported only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deghost.training.evaluation.metrics import SSIM_VARIANTS

from ..exits import EXIT_FAILED, EXIT_OK, usage_error

_LISTED_UNPAIRED = 10


DESCRIPTION = """\
Score images with PSNR, SSIM, MAE (on [0,1], per image, then mean ± std), LPIPS (AlexNet v0.1) and FID
(pytorch-fid Inception), and write the paper's tables into --out: metrics.md, table1_metrics.csv,
table2_fid.csv and per_image.csv. Two ways to get the images:

  --outputs DIR --references DIR   pairs of existing images, matched by file name (suffix ignored)
  --celeba-hq DIR                  the paper's run: the first --first faces of DIR (natural order: 2.jpg
                                   before 10.jpg) through the pipeline of --engines, every attribute,
                                   every method, each scored against --reference; FID per attribute
                                   against the original faces

LPIPS and FID need their official weight files (checked by sha256); without them that metric is skipped
with a note naming the file, and the others are still computed.
"""

EPILOG = """\
examples:
  deghost eval --celeba-hq CelebA-HQ/ --first 1000 --attributes smile,age,beard,bushy_eyebrows \\
      --methods network,eogi --fid-inception pt_inception-2015-12-05-6726825d.pth --out results/celeba
  deghost eval --outputs results/celeba/images/smile/network --references results/celeba/images/smile/reference

methods: network = ours (MAResU-Net) · eogi = the EOGI baseline · poisson = seamlessClone itself ·
fused = F_fused, nothing suppressed. The reference "poisson" is the suppressor's training target
seamlessClone(F_fused → I, M_face); "original" is the input face I.
"""


def _comma_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give a comma-separated list, e.g. smile,age")
    return list(dict.fromkeys(items))


def add_eval_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `eval` on the `deghost` subparsers; its handler is `args.run(args) -> exit code`."""
    from deghost.runtime.directions import DEFAULT_ALPHA

    from ..options import add_backend_option, add_engines_option, add_precision_option
    from .methods import DEFAULT_ATTRIBUTES, DEFAULT_FIRST, DEFAULT_METHODS, METHOD_MODES, REFERENCES

    parser = subparsers.add_parser(
        "eval", help="PSNR, SSIM, MAE, LPIPS and FID of the methods on a face folder or of image pairs; "
        "writes the paper's tables", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("images (choose --outputs with --references, or --celeba-hq)")
    choice = source.add_mutually_exclusive_group(required=True)
    choice.add_argument("--outputs", type=Path, metavar="DIR", help="a method's output images")
    choice.add_argument("--celeba-hq", type=Path, metavar="DIR",
                        help="face images to run through the pipeline (CelebA-HQ: 0.jpg … 29999.jpg)")
    source.add_argument("--references", type=Path, metavar="DIR",
                        help="with --outputs: the reference images, same names and sizes as the outputs")

    pairs = parser.add_argument_group("with --outputs")
    pairs.add_argument("--attribute", default="all", help="attribute label of this group in the tables "
                       "(default: %(default)s)")
    pairs.add_argument("--method", help="method label in the tables (default: the outputs folder's name)")

    run = parser.add_argument_group("with --celeba-hq")
    run.add_argument("--first", type=int, default=DEFAULT_FIRST, metavar="N",
                     help="evaluate the first N images (default: %(default)s, the paper's)")
    run.add_argument("--attributes", type=_comma_list, default=list(DEFAULT_ATTRIBUTES), metavar="A,B",
                     help=f"attributes to edit (default: {','.join(DEFAULT_ATTRIBUTES)})")
    run.add_argument("--methods", type=_comma_list, default=list(DEFAULT_METHODS), metavar="M,N",
                     help=f"methods to score, from {','.join(METHOD_MODES)} (default: {','.join(DEFAULT_METHODS)})")
    run.add_argument("--reference", choices=REFERENCES, default="poisson",
                     help="what outputs are compared with (default: %(default)s; see below)")
    run.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="edit strength (default: %(default)g)")
    add_engines_option(run)
    add_backend_option(run)
    add_precision_option(run)  # bf16 on OpenVINO: what it changes in the metrics
    run.add_argument("--batch", type=int, default=1, metavar="N", help="images per pipeline call (default: 1)")
    run.add_argument("--save-images", action="store_true",
                     help="also write every output and reference to --out/images/<attribute>/<method>/")

    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--lpips-alexnet", type=Path, metavar="FILE",
                         help="torchvision alexnet-owt-7be5be79.pth (LPIPS backbone)")
    metrics.add_argument("--lpips-linear", type=Path, metavar="FILE",
                         help="LPIPS v0.1 linear layers alex.pth (PerceptualSimilarity lpips/weights/v0.1/alex.pth)")
    metrics.add_argument("--fid-inception", type=Path, metavar="FILE",
                         help="pytorch-fid pt_inception-2015-12-05-6726825d.pth")
    metrics.add_argument("--ssim-variant", choices=sorted(SSIM_VARIANTS), default="skimage",
                         help="skimage = 7×7 uniform window; gaussian = 11×11 Gaussian σ 1.5 (Wang et al.) "
                         "(default: %(default)s)")
    metrics.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="where LPIPS and Inception run; auto = cuda if available (default: %(default)s)")

    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR",
                        help="folder for the tables (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace tables (and images) already in --out")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_eval)
    return parser


def _unpaired_notes(pairing) -> list[str]:
    """One note per side listing the files that found no partner (the first few by name)."""
    notes = []
    for paths, role, other in ((pairing.only_outputs, "outputs", "reference"),
                               (pairing.only_references, "references", "output")):
        if paths:
            listed = ", ".join(path.name for path in paths[:_LISTED_UNPAIRED])
            more = f", … ({len(paths) - _LISTED_UNPAIRED} more)" if len(paths) > _LISTED_UNPAIRED else ""
            notes.append(f"{role} with no {other} of the same name ({len(paths)}), not evaluated: {listed}{more}")
    return notes


def _usage_error(message: str) -> int:
    return usage_error("eval", message)


def run_eval(args: argparse.Namespace) -> int:
    from deghost.training.evaluation.tables import TABLE_FILES

    if args.outputs is not None and args.references is None:
        return _usage_error("--outputs needs --references (the folder of reference images)")
    if args.celeba_hq is not None and args.references is not None:
        return _usage_error("--references goes with --outputs; with --celeba-hq the pipeline makes the references "
                            "(choose them with --reference poisson|original)")
    if args.batch < 1 or (args.threads is not None and args.threads < 1):
        return _usage_error("--batch and --threads must be at least 1")
    existing = [args.out / name for name in TABLE_FILES if (args.out / name).exists()]
    if args.save_images and (args.out / "images").exists():
        existing.append(args.out / "images")
    if existing and not args.overwrite:
        return _usage_error(f"{existing[0]} already exists; pass --overwrite to replace it or choose another --out")

    import torch

    from deghost.manifest import ManifestError
    from deghost.runtime.backends import BackendError
    from deghost.runtime.images import ImageError
    from deghost.training.checkpoints import CheckpointError
    from deghost.training.evaluation.evaluate import EvaluationError, load_metric_models
    from deghost.training.evaluation.tables import format_markdown, write_tables

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        models = load_metric_models(args.lpips_alexnet, args.lpips_linear, args.fid_inception, args.ssim_variant,
                                    device)
        for note in models.notes:
            if "skipped" in note:
                print(f"deghost eval: {note}", file=sys.stderr)
        groups, notes = (_score_pairs if args.outputs is not None else _run_pipeline)(args, models)
    except (EvaluationError, CheckpointError, ImageError, ManifestError, BackendError) as error:
        print(f"deghost eval: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    notes = models.notes + notes
    written = write_tables(groups, args.out, notes)
    print(format_markdown(groups, notes))
    print("written: " + ", ".join(str(path) for path in written))
    return EXIT_OK


def _score_pairs(args: argparse.Namespace, models) -> tuple[list, list[str]]:
    """--outputs/--references: one group of existing image pairs."""
    from deghost.training.evaluation.evaluate import evaluate_pairs, pair_folders, read_pairs

    pairing = pair_folders(args.outputs, args.references)
    unpaired = _unpaired_notes(pairing)
    for note in unpaired:
        print(f"deghost eval: {note}", file=sys.stderr)
    result = evaluate_pairs(read_pairs(pairing.pairs), models, args.attribute,
                            args.method or args.outputs.resolve().name, total=len(pairing.pairs),
                            progress=not args.no_progress)
    return [result], unpaired


def _run_pipeline(args: argparse.Namespace, models) -> tuple[list, list[str]]:
    """--celeba-hq: the first N faces through the pipeline, one group per (attribute, method)."""
    from deghost.runtime.pipeline import Pipeline

    from .pipeline_eval import check_methods, evaluate_pipeline, first_images

    check_methods(args.methods, args.reference)
    paths = first_images(args.celeba_hq, args.first)
    if len(paths) < args.first:
        print(f"deghost eval: {args.celeba_hq} holds {len(paths)} images, fewer than --first {args.first}; "
              "evaluating all of them", file=sys.stderr)
    with Pipeline.load(args.engines, backend=args.backend, precision=args.precision) as pipeline:
        evaluation = evaluate_pipeline(
            pipeline, paths, args.attributes, args.methods, models, args.reference, args.alpha, args.batch,
            save_dir=args.out / "images" if args.save_images else None, overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    for path, message in evaluation.failed:
        print(f"deghost eval: left out {path}: {message}", file=sys.stderr)
    return evaluation.groups, evaluation.notes

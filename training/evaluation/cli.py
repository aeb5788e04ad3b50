"""`deghost eval`: score a folder of outputs against a folder of references and write the tables.

`add_eval_command(subparsers)` registers the subcommand; torch and the metric networks are
imported only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .metrics import SSIM_VARIANTS

_LISTED_UNPAIRED = 10


def add_eval_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `eval` on the `deghost` subparsers; its handler is `args.run(args) -> exit code`."""
    parser = subparsers.add_parser(
        "eval",
        help="PSNR, SSIM, MAE, LPIPS and FID of outputs against references; writes the paper's tables",
        description="Pair the images of --outputs and --references by file name (suffix ignored), score every "
        "pair (PSNR, SSIM, MAE on [0,1]; LPIPS AlexNet v0.1) and the two sets (FID, pytorch-fid Inception), and "
        "write metrics.md, table1_metrics.csv, table2_fid.csv and per_image.csv into --out. LPIPS and FID need "
        "their official weight files (checked by sha256); without them the metric is skipped with a note.",
    )
    parser.add_argument("--outputs", type=Path, required=True, metavar="DIR", help="the method's output images")
    parser.add_argument("--references", type=Path, required=True, metavar="DIR",
                        help="the reference images, same names and sizes as the outputs")
    parser.add_argument("--lpips-alexnet", type=Path, metavar="FILE",
                        help="torchvision alexnet-owt-7be5be79.pth (LPIPS backbone)")
    parser.add_argument("--lpips-linear", type=Path, metavar="FILE",
                        help="LPIPS v0.1 linear layers alex.pth (PerceptualSimilarity lpips/weights/v0.1/alex.pth)")
    parser.add_argument("--fid-inception", type=Path, metavar="FILE",
                        help="pytorch-fid pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("--ssim-variant", choices=sorted(SSIM_VARIANTS), default="skimage",
                        help="skimage = 7×7 uniform window; gaussian = 11×11 Gaussian σ 1.5 (Wang et al.) "
                        "(default: %(default)s)")
    parser.add_argument("--attribute", default="all", help="attribute label of this group in the tables "
                        "(default: %(default)s)")
    parser.add_argument("--method", help="method label in the tables (default: the outputs folder's name)")
    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR",
                        help="folder for the tables; existing tables there are replaced (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where LPIPS and Inception run; auto = cuda if available (default: %(default)s)")
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


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from deghost.runtime.images import ImageError

    from ..checkpoints import CheckpointError
    from .evaluate import EvaluationError, evaluate_pairs, load_metric_models, pair_folders, read_pairs
    from .tables import format_markdown, write_tables

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    method = args.method or args.outputs.resolve().name
    try:
        pairing = pair_folders(args.outputs, args.references)
        unpaired = _unpaired_notes(pairing)
        models = load_metric_models(args.lpips_alexnet, args.lpips_linear, args.fid_inception, args.ssim_variant,
                                    device)
        for note in unpaired + [note for note in models.notes if "skipped" in note]:
            print(f"deghost eval: {note}", file=sys.stderr)
        result = evaluate_pairs(read_pairs(pairing.pairs), models, args.attribute, method,
                                total=len(pairing.pairs), progress=not args.no_progress)
    except (EvaluationError, CheckpointError, ImageError) as error:
        print(f"deghost eval: error: {error}", file=sys.stderr)
        return 1
    notes = models.notes + unpaired
    written = write_tables([result], args.out, notes)
    print(format_markdown([result], notes))
    print("written: " + ", ".join(str(path) for path in written))
    return 0

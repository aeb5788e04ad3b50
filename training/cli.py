"""`deghost train synthesize | suppressor | psp | chain | diffcam | stylegan2 | direction`. Importing this module
loads no torch.

    deghost train synthesize --sources faces/ --out pairs/ --source synthetic --size 256
    deghost train suppressor --data pairs/ --out runs/s1 --vgg vgg16-397923af.pth
    torchrun --nproc-per-node 4 -m deghost.apps.cli train suppressor --data pairs/ --out runs/s1 --batch-size 1
    deghost train psp --data faces/ --stylegan2 stylegan2-ffhq-config-f.pt --out runs/psp --arcface model_ir_se50.pth
    deghost train chain --images faces/ --out chain/ --preset tiny --steps 2
    deghost train stylegan2 --data faces/ --out runs/g --size 256
    deghost train diffcam --data faces/ --psp psp_ffhq_encode.pt --directions d/*.npy --out runs/cam
    deghost train direction --attribute age --keep eyeglasses --samples 10000 --checkpoints ckpt/ --out d/
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from deghost.attributes import KNOWN_ATTRIBUTES
from deghost.presets import DEFAULT_PRESET, PRESETS
from deghost.runtime.directions import DEFAULT_ALPHA, PAPER_ATTRIBUTES

from .config import DiffCamConfig, StyleGAN2Config, SuppressorConfig, help_of
from .psp_config import PSPConfig


def add_train_command(subparsers: argparse._SubParsersAction, add_backend_options: Callable[..., None]
                      ) -> argparse.ArgumentParser:
    """Register `train` and its seven subcommands on a `deghost` subparsers object; `add_backend_options`
    declares `--backend`, `--device`, `--precision`, `--threads` as `deghost edit` does (deghost.apps.options)."""
    train = subparsers.add_parser(
        "train", help="make training pairs; train the suppressor, pSp, StyleGAN2, the Diff-CAM classifier or an "
        "editing direction; run the whole chain",
        description="Training: `synthesize` writes (I, F_fused, F_train) pairs once, `suppressor` trains MAResU-Net "
        "on them, `psp` the pSp encoder, `stylegan2` the generator, `diffcam` the editing-region classifier, "
        "`direction` learns an editing direction for a classifier attribute (InterFaceGAN), and `chain` runs the "
        "whole chain from face images to engines.",
    )
    commands = train.add_subparsers(dest="train_command", required=True, metavar="WHAT")

    synthesize = commands.add_parser(
        "synthesize", help="write training pairs (image, fused, target, face mask) from a folder of images",
        description="Each source image gets one random attribute, goes to F_fused (through the exported pipeline, "
        "or synthetic ghosting without any model), and its target seamlessClone(F_fused → I, M_face). A rerun "
        "skips the pairs already made; unreadable images are skipped and listed in skipped.json.",
    )
    synthesize.add_argument("--sources", required=True, metavar="DIR", help="folder of source images (recursive)")
    synthesize.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write or continue")
    synthesize.add_argument("--source", choices=("synthetic", "pipeline"), default="synthetic",
                            help="synthetic: warped/recoloured copy and random heat map, no model (CPU tests); "
                            "pipeline: the exported pipeline with suppress=none (default: %(default)s)")
    synthesize.add_argument("--engines", default="engines", metavar="DIR",
                            help="engine folder for --source pipeline (default: %(default)s)")
    synthesize.add_argument("--size", type=int, metavar="SIDE",
                            help="image side (default: 1024 synthetic; the engines' side for the pipeline)")
    synthesize.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="edit strength (default: %(default)s)")
    synthesize.add_argument("--attributes", nargs="+", default=list(PAPER_ATTRIBUTES), metavar="NAME",
                            help="attributes drawn from (default: the paper's four)")
    synthesize.add_argument("--seed", type=int, default=0, help="seed of the draws (default: %(default)s)")
    synthesize.add_argument("--batch-size", type=int, default=1, help="images per pipeline call")
    synthesize.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                            help="make the pairs on Ray (pip install 'deghost[ray]'): a pool of actors; without "
                            "ADDRESS a local Ray instance, else the cluster at ADDRESS (auto, host:6379)")
    synthesize.add_argument("--ray-workers", type=int, default=1, metavar="N",
                            help="with --ray: actors, one ghosting source each (default: %(default)s; a GPU "
                            "cluster: one per GPU)")
    add_backend_options(synthesize.add_argument_group("--source pipeline: how the engines run (as deghost edit)"),
                        threads_scope=" (with --ray: per actor)")
    synthesize.set_defaults(run=_synthesize)

    suppressor = commands.add_parser(
        "suppressor", help="train MAResU-Net on cat(I, F_fused) → F_train",
        description="L = 0.1·MSE + 1·VGG-16 perceptual + 0.1·adversarial (StyleGAN2 discriminator); Adam, cosine "
        "lr; defaults are the paper's. Several processes: torchrun --nproc-per-node N -m deghost.apps.cli train "
        "suppressor … (DDP; rank 0 writes checkpoints, log.csv and samples/).",
    )
    add_config_options(suppressor, SuppressorConfig)
    suppressor.set_defaults(run=_suppressor)

    psp = commands.add_parser(
        "psp", help="train the pSp encoder into a frozen StyleGAN2 generator",
        description="pSp's ffhq_encode recipe: GradualStyleEncoder (IR-SE-50 trunk from model_ir_se50.pth), codes + "
        "latent_avg into the frozen generator, L = 1.0·L2 + 0.8·LPIPS + 0.1·identity (ArcFace) [+ w-norm]; Ranger "
        "lr 1e-4, batch 8, 500k steps. Writes OUT/psp_ffhq_encode.pt in the official layout at every checkpoint "
        "(what `deghost build --checkpoints` and `deghost train diffcam --psp` read). Several processes: torchrun "
        "--nproc-per-node N -m deghost.apps.cli train psp … (DDP; BatchNorm over the global batch, so N processes × "
        "--batch-size b train as one process with N·b).",
    )
    add_config_options(psp, PSPConfig)
    psp.set_defaults(run=_psp)

    chain = commands.add_parser(
        "chain", help="the whole chain from face images to engines that edit a photo (toy scale by default)",
        description="stylegan2 → samples → psp → directions → diffcam → synthesize → suppressor → export "
        "--checkpoints → edit, each step as the `deghost` command it prints; a rerun skips finished steps. "
        "Without --paper-losses the recipes run without ArcFace, LPIPS and VGG files (each labelled in its "
        "checkpoint); --steps 2 checks the plumbing and trains nothing useful.",
        epilog="example: deghost train chain --images faces/ --out chain/ --preset tiny --steps 2",
    )
    chain.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of aligned face images")
    chain.add_argument("--out", required=True, type=Path, metavar="DIR", help="chain folder (every step's output)")
    chain.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="network sizes (default: %(default)s)")
    chain.add_argument("--stylegan2", type=Path, metavar="FILE",
                       help="a rosinality StyleGAN2 checkpoint made another way, instead of training one")
    chain.add_argument("--directions", type=Path, metavar="DIR",
                       help="<attribute>.npy editing directions (default: seeded random ones, labelled untrained)")
    chain.add_argument("--steps", type=int, default=2, help="iterations of every recipe (default: %(default)s)")
    chain.add_argument("--batch-size", type=int, default=2, help="batch of every recipe (default: %(default)s)")
    chain.add_argument("--samples", type=int, default=8, help="generator samples pSp and Diff-CAM train on")
    chain.add_argument("--paper-losses", action="store_true",
                       help="use the weight files below (required then) instead of running without them")
    for flag in ("--arcface", "--lpips-alexnet", "--lpips-linear", "--vgg"):
        chain.add_argument(flag, type=Path, metavar="FILE", help="weight file (with --paper-losses)")
    chain.set_defaults(run=_chain)

    diffcam = commands.add_parser(
        "diffcam", help="train the Diff-CAM classifier (which direction was applied)",
        description="EOGI's recipe: pSp and the generator frozen, one random direction per image at α, N-way "
        "cross-entropy on shared(T) − shared(I'); Adam (0.9, 0.99), cosine warm restarts. Writes "
        "diff_cam_weight.pt (the classifier alone) into --out at the end. Several processes: torchrun "
        "--nproc-per-node N -m deghost.apps.cli train diffcam … (DDP; BatchNorm over the global batch and directions "
        "drawn per global batch, so N processes × --batch-size b train as one process with N·b).",
    )
    diffcam.add_argument("--psp", required=True, metavar="FILE", help="psp_ffhq_encode.pt (encoder + generator)")
    diffcam.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                         help="network sizes (default: %(default)s)")
    diffcam.add_argument("--directions", nargs="+", required=True, metavar="NPY",
                         help="direction files (18, 512); direction i is class i unless --classes says otherwise")
    diffcam.add_argument("--classes", nargs="+", type=int, metavar="INDEX",
                         help="classifier class of each direction, e.g. 15 16 12 6 to keep EOGI's numbering")
    diffcam.add_argument("--init", metavar="FILE", help="start from these classifier weights (e.g. diff_cam_weight.pt)")
    diffcam.add_argument("--n-classes", type=int, help="classes of --init's classifier (default: the preset's, 17)")
    add_config_options(diffcam, DiffCamConfig)
    diffcam.set_defaults(run=_diffcam)

    stylegan2 = commands.add_parser(
        "stylegan2", help="train a StyleGAN2 generator (config F) on a folder of images",
        description="rosinality/stylegan2-pytorch's train.py recipe, config F, with its values as defaults: "
        "non-saturating logistic loss; lazy R1, gamma 10 every 16 D steps; path-length regularisation, weight 2 "
        "every 4 G steps on half the batch, mean decay 0.01; style mixing 0.9; EMA generator with a half-life of "
        "10k images; Adam lr 0.002 with betas (0, 0.99), both corrected for lazy regularisation (lr*c, "
        "betas**c, c = every/(every+1)); batch 16; 800k iterations (rosinality's default; the paper's FFHQ "
        "run saw 25M images at batch 32 on 8 GPUs). --augment adds ADA (target 0.6; x-flip, 90-degree "
        "rotations, integer translation and colour ops). Checkpoints use rosinality's layout (g, d, g_ema, "
        "g_optim, d_optim, args, ada_aug_p) plus latent_avg, so pSp, `deghost train psp` and load_stylegan2 "
        "read them. Several processes: torchrun --nproc-per-node N -m deghost.apps.cli train stylegan2 ...",
    )
    add_config_options(stylegan2, StyleGAN2Config)
    stylegan2.set_defaults(run=_stylegan2)
    add_direction_command(commands, add_backend_options)
    return train


def add_direction_command(commands: argparse._SubParsersAction, add_backend_options: Callable[..., None]) -> None:
    known = ", ".join(f"{a.name} ({a.celeba_name}, class {a.class_index})" for a in KNOWN_ATTRIBUTES.values())
    direction = commands.add_parser(
        "direction", help="learn an editing direction for a classifier attribute (InterFaceGAN), or measure how "
        "entangled directions are",
        description=textwrap.fill(
        "InterFaceGAN's recipe: N latents drawn through the mapping network (truncated), rendered, scored by the "
        "Diff-CAM classifier at its input size (every class: logits of shared(x) − shared(x̄), x̄ the "
        "mean latent's face); the most and least confident --ratio of them train a linear SVM in latent space, 70 "
        "% of each side, the rest give its held-out accuracy; its unit normal is the direction. --keep projects "
        "the normals of other attributes out (a conditional direction). Writes OUT/NAME.npy ((18, 512), ‖·‖_F = 1, "
        "the official files' form) and OUT/NAME.json (attribute, class, samples, accuracy, kept attributes, seeds, "
        "truncation, untrained flag, entanglement), and prints the entanglement table. The rendered samples stay "
        "in --samples-dir: a killed run resumes, and another attribute learned from the same settings reuses "
        f"them. Known attributes: {known}.", 100),
        epilog="examples:\n"
        "  deghost train direction --attribute eyeglasses --samples 10000 --checkpoints ckpt/ --out directions/\n"
        "  deghost train direction --attribute age --keep eyeglasses,beard --name age_plain --checkpoints ckpt/\n"
        "  deghost train direction --measure ckpt/smile.npy ckpt/age.npy --checkpoints ckpt/ --entanglement-samples "
        "100\n"
        "  deghost build --checkpoints ckpt/ --directions directions/     then: deghost edit --attribute eyeglasses",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = direction.add_argument_group("what to learn")
    what.add_argument("--attribute", metavar="NAME",
                      help="the attribute: deghost's or CelebA's name (age or Old), or a class number")
    what.add_argument("--class-index", type=int, metavar="N", help="its classifier class, for an attribute not "
                      "listed above")
    what.add_argument("--keep", type=lambda text: [t for t in text.split(",") if t], default=[], metavar="A,B",
                      help="attributes the direction must not change (names or class numbers, comma-separated)")
    what.add_argument("--measure", nargs="+", type=Path, metavar="NPY",
                      help="learn nothing: measure how these direction files change every class's score")
    what.add_argument("--name", help="file stem of the direction (default: the attribute's name)")
    what.add_argument("--out", type=Path, default=Path("directions"), metavar="DIR",
                      help="where NAME.npy and NAME.json go (default: %(default)s)")
    what.add_argument("--overwrite", action="store_true", help="replace an existing NAME.npy")
    weights = direction.add_argument_group("weights (--checkpoints or --random-init)")
    weights.add_argument("--checkpoints", type=Path, metavar="DIR",
                         help="folder with psp_ffhq_encode.pt (its generator and mean latent) and diff_cam_weight.pt: "
                         "the official files, or the ones `deghost train psp`, `diffcam` or `chain` wrote")
    weights.add_argument("--stylegan2", type=Path, metavar="FILE",
                         help="a rosinality StyleGAN2 checkpoint (e.g. from `deghost train stylegan2`) instead of "
                         "pSp's generator")
    weights.add_argument("--diffcam", type=Path, metavar="FILE", help="classifier weights instead of DIR's")
    weights.add_argument("--random-init", type=int, metavar="SEED",
                         help="seeded random weights, as `deghost build --random-init SEED`: UNTRAINED, for timing "
                         "and plumbing; the outputs say so")
    weights.add_argument("--preset", choices=sorted(PRESETS),
                         help=f"network sizes (default: the engines' with --engines, else {DEFAULT_PRESET})")
    sampling = direction.add_argument_group("sampling")
    sampling.add_argument("--samples", type=int, default=10_000, metavar="N",
                          help="latents rendered and scored (default: %(default)s; one generator render and one "
                          "classifier pass each: see the README for the cost)")
    sampling.add_argument("--space", choices=("w", "wplus"), default="w",
                          help="w: one code on every layer (InterFaceGAN's choice for StyleGAN); wplus: two codes "
                          "mixed at a random layer, the boundary fitted on all layers (default: %(default)s)")
    sampling.add_argument("--truncation", type=float, default=0.7, metavar="PSI",
                          help="w̄ + ψ·(w − w̄) (default: %(default)s, InterFaceGAN's StyleGAN setting)")
    sampling.add_argument("--seed", type=int, default=0, help="seed of the latents and of the split "
                          "(default: %(default)s)")
    sampling.add_argument("--ratio", type=float, default=0.02,
                          help="share of the samples kept as positives, and as negatives (default: %(default)s, "
                          "InterFaceGAN's)")
    sampling.add_argument("--batch-size", type=int, default=4, help="faces rendered at once (default: %(default)s)")
    sampling.add_argument("--samples-dir", type=Path, metavar="DIR",
                          help="where rendered scores are kept for resuming (default: OUT/samples)")
    sampling.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                          help="edit strength of the entanglement measurement (default: %(default)s)")
    sampling.add_argument("--entanglement-samples", type=int, default=16, metavar="M",
                          help="samples the entanglement is averaged over (default: %(default)s)")
    sampling.add_argument("--quiet", action="store_true", help="no progress bar")
    engines = direction.add_argument_group("rendering through the exported graphs (instead of PyTorch)")
    engines.add_argument("--engines", type=Path, metavar="DIR",
                         help="engines built from the same weights: their generator and diffcam stages render and "
                         "score (OpenVINO --precision bf16 runs the generator about 2x faster than f32 on a CPU)")
    add_backend_options(engines)
    direction.set_defaults(run=_direction)


def add_config_options(parser: argparse.ArgumentParser, config_class) -> None:
    """One --option per config field, with its default and help (see training/config.py)."""
    for name, (default, meta) in help_of(config_class).items():
        flag = "--" + name.replace("_", "-")
        # None defaults are explained in the help text itself ("default: whole images").
        text = meta["help"] + ("" if meta.get("required") or default is None else " (default: %(default)s)")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs=len(default), type=type(default[0]), default=default, help=text)
        else:
            extra = {k: meta[k] for k in ("nargs", "const") if k in meta}
            parser.add_argument(flag, type=meta.get("type", type(default)), default=default,
                                required=meta.get("required", False), help=text, **extra)


def config_from_args(args: argparse.Namespace, config_class):
    values = {name: getattr(args, name) for name in help_of(config_class)}
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _errors():
    """The errors that mean a wrong input or a stopped run, not a bug: reported without a traceback."""
    from deghost.files import DiskFullError
    from deghost.runtime.backends import BackendError
    from deghost.runtime.images import ImageError
    from deghost.training.checkpoints import CheckpointError
    from deghost.training.loop import TrainingDiverged

    return (ValueError, FileNotFoundError, FileExistsError, ImageError, CheckpointError, TrainingDiverged,
            DiskFullError, BackendError)


def _fail(error: Exception) -> int:
    print(f"deghost train: error: {error}", file=sys.stderr)
    return 1


def _run_recipe(train, *inputs, written: str = "last checkpoint") -> int:
    """Every training recipe's ending: an input error in one line (exit 1), else the file it wrote, printed by
    the main process only (under torchrun every process runs this)."""
    from deghost.training.distributed import is_main_process

    try:
        result = train(*inputs)
    except _errors() as error:
        return _fail(error)
    if is_main_process():
        print(f"{written}: {result}")
    return 0


def _synthesize(args: argparse.Namespace) -> int:
    from deghost.training.data import PipelineGhosting, synthesize_pairs
    from deghost.training.synthetic import SyntheticGhosting

    if args.ray:
        return _synthesize_on_ray(args)
    try:
        if args.source == "pipeline":
            from deghost.runtime.pipeline import Pipeline

            ghosting = PipelineGhosting(Pipeline.load(args.engines, backend=args.backend, threads=args.threads,
                                                      precision=args.precision, device=args.device))
            size = args.size or ghosting.size
        else:
            ghosting, size = SyntheticGhosting(), args.size or 1024
        report = synthesize_pairs(args.sources, args.out, ghosting, size, args.alpha, args.seed, args.attributes,
                                  args.batch_size)
    except _errors() as error:
        return _fail(error)
    print(_synthesis_summary(report, args.out))
    return 0


def _synthesis_summary(report, out: str) -> str:
    return (f"{report.made} pairs made, {report.already_done} already there, {len(report.skipped)} sources skipped"
            + (f" (see {out}/skipped.json)" if report.skipped else ""))


def _synthesize_on_ray(args: argparse.Namespace) -> int:
    from deghost.runtime.ray_cluster import RayMissingError
    from deghost.training.ray_synthesis import synthesize_pairs_ray

    if args.ray_workers < 1:
        return _fail(ValueError("--ray-workers must be at least 1"))
    try:
        report = synthesize_pairs_ray(args.sources, args.out, args.source, args.engines, args.backend, args.size,
                                      args.alpha, args.seed, args.attributes, args.batch_size,
                                      None if args.ray == "local" else args.ray, args.ray_workers, args.threads,
                                      precision=args.precision, device=args.device)
    except (*_errors(), RayMissingError) as error:
        return _fail(error)
    print(_synthesis_summary(report, args.out))
    return 0


def _suppressor(args: argparse.Namespace) -> int:
    from deghost.training.suppressor import train_suppressor

    return _run_recipe(train_suppressor, config_from_args(args, SuppressorConfig))


def _chain(args: argparse.Namespace) -> int:
    from deghost.training.chain import ChainError, ChainOptions, run_chain

    if args.paper_losses and not all((args.arcface, args.lpips_alexnet, args.lpips_linear, args.vgg)):
        return _fail(ValueError("--paper-losses needs --arcface, --lpips-alexnet, --lpips-linear and --vgg"))
    options = ChainOptions(**{k: getattr(args, k) for k in (
        "images", "out", "preset", "stylegan2", "directions", "steps", "batch_size", "samples", "paper_losses",
        "arcface", "lpips_alexnet", "lpips_linear", "vgg")})
    try:
        edited = run_chain(options)
    except (ChainError, *_errors()) as error:
        return _fail(error)
    print(f"edited images: {edited}")
    return 0


def _psp(args: argparse.Namespace) -> int:
    from deghost.training.train_psp import train_psp

    return _run_recipe(train_psp, config_from_args(args, PSPConfig), written="pSp checkpoint")


def _diffcam(args: argparse.Namespace) -> int:
    import torch

    from deghost.presets import get_preset
    from deghost.runtime.directions import load_direction
    from deghost.training import checkpoints
    from deghost.training.train_diffcam import PSPInversion, train_diffcam

    def train():
        preset = get_preset(args.preset)
        psp = checkpoints.load_psp(args.psp, args.preset)
        directions = torch.stack([
            torch.from_numpy(load_direction(path, preset.n_latent, preset.style_dim)) for path in args.directions
        ])
        classifier = checkpoints.load_diffcam(args.init, args.n_classes or preset.n_classes) if args.init else None
        return train_diffcam(config_from_args(args, DiffCamConfig), PSPInversion(psp.encoder, psp.latent_avg),
                             psp.generator, directions, args.classes, classifier)

    return _run_recipe(train)


def _stylegan2(args: argparse.Namespace) -> int:
    from deghost.training.train_stylegan2 import train_stylegan2

    return _run_recipe(train_stylegan2, config_from_args(args, StyleGAN2Config))


def _direction(args: argparse.Namespace) -> int:
    from deghost.training.direction.command import run_direction_command

    try:
        return run_direction_command(args)
    except _errors() as error:
        return _fail(error)

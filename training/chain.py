"""`deghost train chain`: the whole chain from a folder of face images to engines that edit a photo.

    1 stylegan2   deghost train stylegan2 on --images          (or --stylegan2 FILE made another way)
    2 samples     N images rendered by its g_ema (the faces pSp and Diff-CAM learn from)
    3 psp         deghost train psp on those samples            → psp_ffhq_encode.pt
    4 directions  --directions DIR, or seeded random unit directions (labelled untrained)
    5 diffcam     deghost train diffcam                          → diff_cam_weight.pt
    6 pairs       deghost train synthesize (synthetic ghosting: the pipeline source needs a face parser
                  file, 79999_iter.pth, which no recipe here trains)
    7 suppressor  deghost train suppressor                       → maresunet checkpoint
    8 engines     deghost export --checkpoints (encoder, generator, diffcam, suppressor stages)
    9 edit        deghost edit on one image of --images

Every step runs as its own `deghost` command (printed before it runs), so the chain is exactly what a
user would type; a step whose result is already in --out is skipped, so a rerun continues. `--steps`
sets every recipe's iterations: the default (2) checks the plumbing at toy scale, it trains nothing
useful; a real run uses each recipe's defaults (see README, Training).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deghost.attributes import ATTRIBUTES
from deghost.presets import get_preset
from deghost.stages import CHECKPOINT_FILES

SAMPLES_SEED = 1234


@dataclass
class ChainOptions:
    images: Path
    out: Path
    preset: str = "tiny"
    stylegan2: Path | None = None  # skip step 1 with a checkpoint made another way
    directions: Path | None = None  # <attribute>.npy files; default seeded random (untrained)
    steps: int = 2  # iterations of every recipe
    batch_size: int = 2
    samples: int = 8
    paper_losses: bool = False  # require ArcFace / LPIPS / VGG files (else the recipes run without them, labelled)
    arcface: Path | None = None
    lpips_alexnet: Path | None = None
    lpips_linear: Path | None = None
    vgg: Path | None = None


class ChainError(RuntimeError):
    """A step of the chain failed; the message names the step and its command."""


def run(command: list[str], step: str, log=print) -> None:
    full = [sys.executable, "-m", "deghost.apps.cli", *command]
    log(f"[chain] {step}: deghost {shlex.join(command)}")
    result = subprocess.run(full, check=False)
    if result.returncode != 0:
        raise ChainError(f"step {step} failed (exit {result.returncode}): deghost {shlex.join(command)}")


def newest(folder: Path) -> Path | None:
    """The newest checkpoint-<step>.pt a `deghost train` run wrote into `folder`, if any."""
    from .resume import list_checkpoints  # torch: imported when a step has run

    found = list_checkpoints(folder)
    return found[-1] if found else None


def train_stylegan2(options: ChainOptions, log=print) -> Path:
    if options.stylegan2 is not None:
        log(f"[chain] stylegan2: using {options.stylegan2} (made outside the chain)")
        return options.stylegan2
    run_dir = options.out / "stylegan2"
    done = newest(run_dir / "checkpoints")
    if done is None:
        size = get_preset(options.preset).image_size
        run(["train", "stylegan2", "--data", str(options.images), "--out", str(run_dir), "--size", str(size),
             "--iterations", str(options.steps), "--batch-size", str(options.batch_size), "--workers", "0",
             "--latent-avg-samples", "10000", "--checkpoint-every", str(options.steps)], "stylegan2", log)
        done = newest(run_dir / "checkpoints")
    if done is None:
        raise ChainError(f"deghost train stylegan2 wrote no checkpoint into {run_dir}/checkpoints")
    return done


def write_samples(stylegan2: Path, folder: Path, count: int, preset: str, log=print) -> Path:
    """`count` images of the checkpoint's g_ema (z seeded, no truncation) as PNGs in `folder`."""
    import torch

    from deghost.runtime.images import from_model_output, write_image

    from .checkpoints import load_stylegan2

    if folder.is_dir() and len(list(folder.glob("*.png"))) >= count:
        return folder
    log(f"[chain] samples: {count} images from {stylegan2} into {folder}")
    generator = load_stylegan2(stylegan2, get_preset(preset).image_size).generator
    z = torch.randn(count, generator.style_dim, generator=torch.Generator().manual_seed(SAMPLES_SEED))
    with torch.no_grad():
        for index in range(count):
            image = generator(generator.to_wplus(generator.mapping(z[index : index + 1])))
            write_image(folder / f"{index:05d}.png", from_model_output(image.clamp(-1, 1).numpy())[0], overwrite=True)
    return folder


def write_random_directions(folder: Path) -> Path:
    """One seeded random (18,512) direction of unit Frobenius norm per attribute: UNTRAINED, for the plumbing."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(ATTRIBUTES):
        direction = np.random.default_rng([SAMPLES_SEED, index]).standard_normal((18, 512))
        np.save(folder / f"{name}.npy", direction / np.linalg.norm(direction))
    (folder / "UNTRAINED.txt").write_text("seeded random directions written by `deghost train chain`\n")
    return folder


def loss_flags(options: ChainOptions) -> tuple[list[str], list[str]]:
    """(pSp's, the suppressor's) weight-file flags, or the explicit switches that run without them."""
    if options.paper_losses:
        psp = ["--arcface", str(options.arcface), "--lpips-alexnet", str(options.lpips_alexnet),
               "--lpips-linear", str(options.lpips_linear)]
        return psp, ["--vgg", str(options.vgg)]
    return ["--no-id-loss", "--no-lpips"], ["--random-vgg"]


def run_chain(options: ChainOptions, log=print) -> Path:
    """Run every step; returns the folder of edited images."""
    out, common = options.out, ["--workers", "0", "--checkpoint-every", str(options.steps)]
    psp_flags, vgg_flags = loss_flags(options)
    stylegan2 = train_stylegan2(options, log)
    samples = write_samples(stylegan2, out / "samples", options.samples, options.preset, log)

    checkpoints = out / "checkpoints"  # what `deghost export --checkpoints` reads
    checkpoints.mkdir(parents=True, exist_ok=True)
    psp = checkpoints / CHECKPOINT_FILES["encoder"]
    if not psp.is_file():
        run(["train", "psp", "--data", str(samples), "--stylegan2", str(stylegan2), "--out", str(out / "psp"),
             "--preset", options.preset, "--iterations", str(options.steps), "--batch-size", str(options.batch_size),
             *psp_flags, *common], "psp", log)
        shutil.copyfile(out / "psp" / psp.name, psp)  # train psp writes the official name

    directions = options.directions or write_random_directions(out / "directions")
    for name in ATTRIBUTES:
        shutil.copyfile(directions / f"{name}.npy", checkpoints / f"{name}.npy")

    diffcam = checkpoints / CHECKPOINT_FILES["diffcam"]
    if not diffcam.is_file():
        run(["train", "diffcam", "--data", str(samples), "--psp", str(psp), "--preset", options.preset,
             "--directions", *[str(checkpoints / f"{n}.npy") for n in ATTRIBUTES],
             # EOGI's 17-class numbering (deghost.attributes), which the build and the runtime expect
             "--classes", *[str(a.class_index) for a in ATTRIBUTES.values()],
             "--out", str(out / "diffcam"), "--iterations", str(options.steps),
             "--batch-size", str(options.batch_size), *common], "diffcam", log)
        shutil.copyfile(out / "diffcam" / diffcam.name, diffcam)  # train diffcam writes the official name

    pairs = out / "pairs"
    size = get_preset(options.preset).image_size
    if not (pairs / "manifest.jsonl").is_file():
        run(["train", "synthesize", "--sources", str(options.images), "--out", str(pairs), "--source", "synthetic",
             "--size", str(size)], "pairs", log)

    suppressor = checkpoints / CHECKPOINT_FILES["suppressor"]
    if not suppressor.is_file():
        run(["train", "suppressor", "--data", str(pairs), "--out", str(out / "suppressor"),
             "--iterations", str(options.steps), "--batch-size", str(options.batch_size),
             "--disc-size", "64", *vgg_flags, *common], "suppressor", log)
        shutil.copyfile(newest(out / "suppressor" / "checkpoints"), suppressor)

    engines = out / "engines"
    if not (engines / "manifest.json").is_file():
        run(["export", "--checkpoints", str(checkpoints), "--preset", options.preset, "--precision", "fp32",
             "--stages", "encoder", "generator", "diffcam", "suppressor", "--out", str(engines)], "engines", log)

    edited = out / "edited"
    first = sorted(p for p in options.images.rglob("*.png"))[:1] or sorted(options.images.rglob("*.jpg"))[:1]
    run(["edit", str(first[0]), "--engines", str(engines), "--out", str(edited), "--attribute", "smile",
         "--suppress", "network", "--overwrite", "--quiet"], "edit", log)
    return edited

"""Seconds per training step of each recipe at the paper's resolution on this machine, and what the
official schedule would take at that rate.

    python -m benchmarks.training_speed [--recipes stylegan2 psp diffcam suppressor] [--batch 1] [--steps 3]

Each recipe's real trainer (or, for pSp, its real model, losses and optimiser: the trainer wants the
official ArcFace/LPIPS files) runs `--steps` steps on crops of the bundled photos in a temporary folder,
untrained random weights (time does not depend on them). The first step is warm-up and, for StyleGAN2,
the lazily regularised kind (R1 and path length together, every 16th / 4th step); the rest are timed.
Writes benchmarks/results/training_speed.json (machine, per-recipe seconds, extrapolation).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import torch

from benchmarks.machine import describe
from deghost.files import atomic_write_bytes
from deghost.runtime.images import read_image, write_image

REPO = Path(__file__).resolve().parent.parent
PHOTOS = [REPO / "tests" / "data" / "images" / name for name in ("astronaut.png", "grace_hopper.jpg")]
RESULTS = REPO / "benchmarks" / "results" / "training_speed.json"
PAPER_SIDE = 1024


def official_schedule(name: str) -> tuple[int, int]:
    """(steps, batch) of a recipe's official schedule: its config's defaults, which are those values."""
    from deghost.training.config import DiffCamConfig, StyleGAN2Config, SuppressorConfig
    from deghost.training.psp_config import PSPConfig

    config = {"stylegan2": StyleGAN2Config, "psp": PSPConfig, "diffcam": DiffCamConfig, "suppressor": SuppressorConfig}
    defaults = {f.name: f.default for f in fields(config[name])}
    return defaults["iterations"], defaults["batch_size"]


def average_latent(generator) -> torch.Tensor:
    """The generator's mean W repeated over its styles, as pSp starts from it ([n_latent, 512])."""
    return generator.mean_latent(1000)[0].repeat(generator.n_latent, 1)


def photo_folder(folder: Path, count: int) -> Path:
    """`count` square crops of the bundled photos (different offsets, so no two are equal)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rgb = read_image(PHOTOS[i % len(PHOTOS)]).rgb
        side = min(rgb.shape[:2]) - 8 * (i // len(PHOTOS)) - 8
        offset = 4 * (i // len(PHOTOS))
        write_image(folder / f"{i}.png", rgb[offset : offset + side, offset : offset + side])
    return folder


def logged_step_seconds(log: Path) -> list[float]:
    """Per-step seconds from a run's log.csv (its `seconds` column is cumulative, logged every step)."""
    with log.open() as file:
        cumulative = [float(row["seconds"]) for row in csv.DictReader(file)]
    return [b - a for a, b in zip([0.0, *cumulative], cumulative, strict=False)]


def stylegan2(root: Path, side: int, batch: int, steps: int) -> list[float]:
    from deghost.training.config import StyleGAN2Config
    from deghost.training.train_stylegan2 import train_stylegan2

    config = StyleGAN2Config(data=str(photo_folder(root / "faces", max(4, batch))), out=str(root / "run"), size=side,
                             batch_size=batch, iterations=steps, workers=0, log_every=1, checkpoint_every=10**6,
                             sample_every=10**6, latent_avg_samples=1000)
    train_stylegan2(config)
    return logged_step_seconds(root / "run" / "log.csv")


def diffcam(root: Path, side: int, batch: int, steps: int) -> list[float]:
    from deghost.training.config import DiffCamConfig
    from deghost.training.models.psp import PSPEncoder
    from deghost.training.models.stylegan2 import Generator
    from deghost.training.train_diffcam import PSPInversion, train_diffcam

    torch.manual_seed(0)
    generator = Generator(side)
    encoder = PSPInversion(PSPEncoder(n_styles=generator.n_latent), average_latent(generator))
    directions = torch.nn.functional.normalize(torch.randn(4, generator.n_latent, 512).flatten(1), dim=1)
    config = DiffCamConfig(data=str(photo_folder(root / "faces", max(4, batch))), out=str(root / "run"),
                           batch_size=batch, iterations=steps, workers=0, log_every=1, checkpoint_every=10**6)
    train_diffcam(config, encoder, generator, directions.view(4, generator.n_latent, 512))
    return logged_step_seconds(root / "run" / "log.csv")


def suppressor(root: Path, side: int, batch: int, steps: int) -> list[float]:
    from deghost.training.config import SuppressorConfig
    from deghost.training.data import synthesize_pairs
    from deghost.training.suppressor import train_suppressor
    from deghost.training.synthetic import SyntheticGhosting

    synthesize_pairs(photo_folder(root / "faces", max(4, batch)), root / "pairs", SyntheticGhosting(), size=side,
                     progress=False)
    config = SuppressorConfig(data=str(root / "pairs"), out=str(root / "run"), batch_size=batch, iterations=steps,
                              random_vgg=True, workers=0, log_every=1, checkpoint_every=10**6, sample_every=10**6)
    train_suppressor(config)
    return logged_step_seconds(root / "run" / "log.csv")


def psp(root: Path, side: int, batch: int, steps: int) -> list[float]:
    """pSp's model, full loss and Ranger, stepped by hand (train_psp needs the official weight files)."""
    from deghost.training.evaluation.lpips import LPIPS
    from deghost.training.models.arcface import ArcFace
    from deghost.training.models.psp import PSPEncoder
    from deghost.training.models.stylegan2 import Generator
    from deghost.training.psp_config import PSPConfig
    from deghost.training.psp_losses import IdentityLoss
    from deghost.training.ranger import Ranger
    from deghost.training.train_psp import PSPModel, psp_losses

    del root
    torch.manual_seed(0)
    generator = Generator(side)
    model = PSPModel(PSPEncoder(n_styles=generator.n_latent), generator, average_latent(generator)).train()
    identity, lpips = IdentityLoss(ArcFace()), LPIPS().requires_grad_(False)
    optimizer = Ranger(model.encoder.parameters(), lr=1e-4)
    config = PSPConfig(data="unused", stylegan2="unused")
    images = torch.rand(batch, 3, 256, 256) * 2 - 1
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        output, w = model(images)
        terms = psp_losses(output, images, w, model.latent_avg, identity, lpips, config)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    return seconds


RECIPES = {"stylegan2": stylegan2, "psp": psp, "diffcam": diffcam, "suppressor": suppressor}


def summary(name: str, side: int, batch: int, seconds: list[float]) -> dict:
    timed = seconds[1:] or seconds
    per_step = statistics.median(timed)
    steps, official_batch = official_schedule(name)
    # Linear in the batch: a CPU has no idle width a bigger batch would fill.
    schedule_days = steps * per_step * official_batch / batch / 86_400
    return {"batch": batch, "side": side, "step seconds": [round(s, 2) for s in seconds],
            "median step s (after the first)": round(per_step, 2), "official schedule": f"{steps:,} × {official_batch}",
            "official schedule days at this rate": round(schedule_days, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--side", type=int, default=PAPER_SIDE, help="image side (default: the paper's 1024)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file, updated (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="steps per recipe, the first one untimed (default: 3)")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = describe(torch)
    for name in args.recipes:
        with tempfile.TemporaryDirectory() as folder:
            seconds = RECIPES[name](Path(folder), args.side, args.batch, args.steps)
        key = f"{name} {args.side}² batch {args.batch}"
        results.setdefault("recipes", {})[key] = summary(name, args.side, args.batch, seconds)
        print(key, json.dumps(results["recipes"][key]), flush=True)
    results["peak resident GB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 1)
    atomic_write_bytes(args.out, (json.dumps(results, indent=2) + "\n").encode())
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

"""Suppressor training (`deghost train suppressor`): MAResU-Net on cat(I, F_fused) → F_train.

    L = 0.1·MSE + 1·L_percept + 0.1·L_adv,  Adam (0.9, 0.999), lr 1e-4 cosine → 1e-7, 200k steps, batch 4

Each step updates the suppressor, then the StyleGAN2 discriminator (targets are real, outputs
fake). Runs as one process or under `torchrun --nproc-per-node N` (DDP, rank 0 writes). The parts
every training loop here shares — the batch stream, the run log, the loss guard, checkpoint state —
are the functions below `train_suppressor`.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from deghost.runtime.grid import make_grid
from deghost.runtime.images import from_model_output, write_image

from . import distributed
from .checkpointing import (
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .checkpoints import load_vgg16_features
from .config import SuppressorConfig, config_dict, resume_conflicts
from .data import PairDataset
from .losses import PerceptualLoss, discriminator_loss, generator_adversarial_loss, r1_penalty
from .models.maresunet import AttentionBlock, DecoderBlock, MAResUNet
from .models.resnet import BasicBlock, make_layer
from .models.stylegan2 import Discriminator
from .models.vgg import VGG16Features

TERMS = ("total", "mse", "perceptual", "adversarial", "discriminator", "r1")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the message names the step and the last good checkpoint."""


def train_suppressor(config: SuppressorConfig) -> Path:
    """Train as `config` says; returns the last checkpoint written."""
    check_config(config)
    context = distributed.setup()
    try:
        return _train(config, context)
    finally:
        distributed.teardown(context)


def _train(config: SuppressorConfig, context: distributed.Context) -> Path:
    run = Path(config.out)
    dataset = PairDataset(config.data, config.crop, config.flip, config.seed)
    side = config.crop or dataset[0]["image"].shape[-1]
    model, discriminator, perceptual = build_networks(config, side, context)
    optimizer = torch.optim.Adam(model.parameters(), config.lr, betas=tuple(config.betas))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.iterations, config.lr_min)
    d_optimizer = d_scheduler = None
    if discriminator is not None:
        d_optimizer = torch.optim.Adam(discriminator.parameters(), config.lr, betas=tuple(config.betas))
        d_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(d_optimizer, config.iterations, config.lr_min)
    parts = {"model": model, "discriminator": discriminator, "optimizer": optimizer, "scheduler": scheduler,
             "d_optimizer": d_optimizer, "d_scheduler": d_scheduler}
    start, last = resume_or_seed(config, parts, context)
    ddp_model = distributed.wrap(model, context)
    ddp_discriminator = distributed.wrap(discriminator, context) if discriminator is not None else None
    autocast = mixed_precision(config.amp, context.device)
    end = min(config.iterations, config.stop_at or config.iterations)
    log = RunLog(run / "log.csv", ("step", "lr", *TERMS), start, config.iterations, context.is_main)
    batches = batch_stream(dataset, config.batch_size, context, start, config.seed, config.workers)
    for step in range(start, end):
        batch = {name: value.to(context.device, non_blocking=True) for name, value in next(batches).items()}
        with autocast:
            output = ddp_model(torch.cat([batch["image"], batch["fused"]], 1))
        terms = suppressor_step(output, batch["target"], perceptual, discriminator, optimizer, config, autocast)
        scheduler.step()
        if discriminator is not None:
            terms |= discriminator_step(output.detach(), batch["target"], ddp_discriminator, d_optimizer,
                                        config, step, autocast)
            d_scheduler.step()
        values = check_finite(terms, step + 1, last, context)
        log.update(step + 1, {"lr": scheduler.get_last_lr()[0], **values}, (step + 1) % config.log_every == 0)
        if context.is_main and (step + 1) % config.sample_every == 0:
            write_samples(run / "samples" / f"step-{step + 1:08d}.png", batch, output)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
            last = write_checkpoint(run / "checkpoints", step + 1, parts, config, context)
    log.close()
    return last


def suppressor_step(output: Tensor, target: Tensor, perceptual: PerceptualLoss, discriminator: nn.Module | None,
                    optimizer: torch.optim.Optimizer, config: SuppressorConfig, autocast) -> dict[str, Tensor]:
    """One update of the suppressor from its `output` [B,3,H,W] (graph attached) and `target`."""
    with autocast:
        mse = F.mse_loss(output.float(), target)
        percept = perceptual(output, target).float()
        adversarial = torch.zeros((), device=output.device)
        if discriminator is not None:
            discriminator.requires_grad_(False)  # its gradient here would be thrown away
            adversarial = generator_adversarial_loss(discriminator(resize_for(discriminator, output)).float())
    total = config.mse_weight * mse + config.perceptual_weight * percept + config.adversarial_weight * adversarial
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return {"total": total.detach(), "mse": mse.detach(), "perceptual": percept.detach(),
            "adversarial": adversarial.detach()}


def discriminator_step(fake: Tensor, real: Tensor, discriminator: nn.Module, optimizer: torch.optim.Optimizer,
                       config: SuppressorConfig, step: int, autocast) -> dict[str, Tensor]:
    """One update of the discriminator: targets `real`, suppressor outputs `fake` (both [B,3,H,W])."""
    module = distributed.unwrap(discriminator)
    module.requires_grad_(True)
    with_r1 = config.r1_gamma > 0 and step % config.r1_every == 0
    real = resize_for(module, real).detach().requires_grad_(with_r1)
    fake = resize_for(module, fake.float())  # autocast outputs are bfloat16; the float32 R1 pass needs float32
    # R1 differentiates through the discriminator twice: kept in float32.
    with contextlib.nullcontext() if with_r1 else autocast:
        real_logits = discriminator(real).float()
        fake_logits = discriminator(fake).float()
        loss = discriminator_loss(real_logits, fake_logits)
        r1 = r1_penalty(real_logits, real) if with_r1 else torch.zeros((), device=real.device)
    optimizer.zero_grad(set_to_none=True)
    # Lazy regularisation: applied every r1_every steps, so weighted r1_every times as much.
    (loss + config.r1_gamma / 2 * config.r1_every * r1).backward()
    optimizer.step()
    return {"discriminator": loss.detach(), "r1": r1.detach()}


def resize_for(discriminator: nn.Module, images: Tensor) -> Tensor:
    """images [B,3,H,W] → [B,3,S,S] at the discriminator's side S (area-downsampled when smaller)."""
    side = distributed.unwrap(discriminator).size
    return images if images.shape[-1] == side else F.interpolate(images, size=(side, side), mode="area")


# ---------------------------------------------------------------------------------------------------
# Networks


class ReducedMAResUNet(MAResUNet):
    """MAResU-Net with base width `width` instead of 64: the same blocks, forward and key names, for
    CPU tests and the learning check. `width=64` would be the paper's network (use MAResUNet)."""

    def __init__(self, width: int):
        nn.Module.__init__(self)
        self.in_channels = 6
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.firstconv = nn.Conv2d(6, width, 7, 2, 3, bias=True)
        self.firstbn = nn.BatchNorm2d(width)
        self.firstrelu = nn.ReLU(inplace=True)
        self.firstmaxpool = nn.MaxPool2d(3, 2, 1)
        channels = width
        for index, (stage_width, blocks) in enumerate(zip(widths, (3, 4, 6, 3), strict=True)):  # ResNet-34
            stride = 1 if index == 0 else 2
            setattr(self, f"encoder{index + 1}", make_layer(BasicBlock, channels, stage_width, blocks, stride))
            channels = stage_width
        for index in range(4, 0, -1):
            setattr(self, f"attention{index}", AttentionBlock(widths[index - 1]))
        for index in range(4, 0, -1):
            setattr(self, f"decoder{index}", DecoderBlock(widths[index - 1], widths[max(index - 2, 0)]))
        self.finaldeconv1 = nn.ConvTranspose2d(width, 32, 4, 2, 1)
        self.finalconv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.finalconv3 = nn.Conv2d(32, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)


def build_suppressor(width: int = 64) -> MAResUNet:
    return MAResUNet(in_channels=6, out_channels=3) if width == 64 else ReducedMAResUNet(width)


def build_networks(config: SuppressorConfig, side: int, context: distributed.Context):
    """(suppressor, discriminator or None, perceptual loss) on the device, in training mode.

    The initial weights come from `config.seed` alone (the same in every process); the global RNG
    is left alone, so dropout draws do not depend on how the networks were built.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_suppressor(config.width)
        discriminator = Discriminator(config.disc_size or side) if config.adversarial_weight > 0 else None
    if config.vgg:
        vgg = load_vgg16_features(config.vgg)
    else:
        if context.is_main:
            warnings.warn(
                "the perceptual loss uses RANDOM VGG-16 weights (fine for tests, not for a real run); pass "
                "--vgg PATH to torchvision's vgg16-397923af.pth", stacklevel=2)
        vgg = random_vgg(config.seed)
    model.train()
    if config.frozen_norm:
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.Dropout2d)):
                module.eval()
    if discriminator is not None:
        discriminator = discriminator.train().to(context.device)
    return model.to(context.device), discriminator, PerceptualLoss(vgg).to(context.device)


def random_vgg(seed: int) -> VGG16Features:
    """VGG-16 features with He (fan-in) initialisation: random features that keep the input's scale
    through all 13 layers. PyTorch's default initialisation shrinks them ~10⁴-fold by pool5, which
    leaves the perceptual term near 0 next to the MSE."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vgg = VGG16Features()
        for module in vgg.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
    return vgg


def check_config(config: SuppressorConfig) -> None:
    """Refuse settings that would fail later, with the fix."""
    problems = []
    if not config.data:
        problems.append("--data is required: the dataset folder written by `deghost train synthesize`")
    if config.crop is not None and config.crop % 32:
        problems.append(f"--crop {config.crop} must be a multiple of 32 (MAResU-Net's five stride-2 stages)")
    if config.width < 16:
        problems.append(f"--width {config.width} must be at least 16: attention keys have width/8 channels, and "
                        "with one the linear attention's normaliser can reach 0 (NaN)")
    if config.adversarial_weight > 0 and config.batch_size > 4 and config.batch_size % 4:
        problems.append(f"--batch-size {config.batch_size}: the discriminator's minibatch-stddev groups 4 images; "
                        "use 1–4 or a multiple of 4")
    if config.disc_size is not None and (config.disc_size < 8 or config.disc_size & (config.disc_size - 1)):
        problems.append(f"--disc-size {config.disc_size} must be a power of two ≥ 8")
    if problems:
        raise ValueError("invalid training configuration:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------------
# Shared by the training loops


def batch_stream(dataset: Dataset, batch_size: int, context: distributed.Context, start_step: int, seed: int,
                 workers: int) -> Iterator:
    """Batches for steps start_step, start_step + 1, … of this process, forever.

    The order is DistributedSampler's shuffle of (seed, epoch); the item keys passed to the dataset
    are epoch·len + index, so augmentation depends on the sample and epoch only. Resuming at a step
    skips straight to its batch without loading the earlier ones.
    """
    sampler = DistributedSampler(dataset, context.world_size, context.rank, shuffle=True, seed=seed)
    per_epoch = len(sampler) // batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(dataset)} items cannot fill one batch of {batch_size} per process on "
                         f"{context.world_size} process(es); lower --batch-size or add data")
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        keys = [epoch * len(dataset) + index for index in sampler][offset * batch_size : per_epoch * batch_size]
        # An own generator: DataLoader draws worker seeds from it, which would shift the global RNG
        # (dropout) differently in a resumed run, whose first epoch starts a DataLoader mid-way.
        yield from DataLoader(dataset, batch_size, sampler=keys, num_workers=workers,
                              pin_memory=context.device.type == "cuda",
                              generator=torch.Generator().manual_seed(seed + epoch))
        epoch, offset = epoch + 1, 0


def mixed_precision(enabled: bool, device: torch.device):
    """bfloat16 autocast on CUDA GPUs that support it; a no-op context elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_finite(terms: dict[str, Tensor], step: int, last_checkpoint: Path | None,
                 context: distributed.Context) -> dict[str, float]:
    """Loss terms averaged over processes, as floats; raise TrainingDiverged on NaN or Inf.

    Every process sees the same averages, so all of them stop together instead of hanging.
    """
    names = list(terms)
    values = distributed.mean_over_processes(torch.stack([terms[n].float() for n in names]), context).tolist()
    bad = [f"{n} = {v}" for n, v in zip(names, values, strict=True) if not math.isfinite(v)]
    if bad:
        where = (f"the last good checkpoint is {last_checkpoint}: resume from it with --resume {last_checkpoint} "
                 "(a lower --lr helps if it diverges again)") if last_checkpoint else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss {', '.join(bad)} at step {step}; training stopped, {where}")
    return dict(zip(names, values, strict=True))


def checkpoint_state(step: int, parts: dict[str, object], config, context: distributed.Context) -> dict:
    """Everything --resume needs: state_dicts of `parts` (skipping None), step, config, every process's RNG."""
    state = {name: part.state_dict() for name, part in parts.items() if part is not None}
    rng = distributed.gather_objects(rng_state(), context)
    return {**state, "step": step, "config": config_dict(config), "rng": rng}


def write_checkpoint(folder: Path, step: int, parts: dict, config, context: distributed.Context) -> Path:
    """All processes gather their RNG states; rank 0 writes. Returns the checkpoint's path."""
    state = checkpoint_state(step, parts, config, context)
    if context.is_main:
        save_checkpoint(folder, step, state, config.keep_checkpoints)
    return folder / f"checkpoint-{step:08d}.pt"


def resume_or_seed(config, parts: dict[str, object], context: distributed.Context) -> tuple[int, Path | None]:
    """Load `config.resume` into `parts` and this process's RNG: (its step, its path). Without
    --resume, seed this process's generators (seed + rank: dropout differs between processes): (0, None)."""
    if not config.resume:
        seed_everything(config.seed + context.rank)
        return 0, None
    path = resolve_resume(config.resume, Path(config.out) / "checkpoints")
    state = load_checkpoint(path)
    conflicts = resume_conflicts(state["config"], config)
    if conflicts:
        raise ValueError(f"{path} was trained with other settings; resume with the same ones or start a new run "
                         "in another --out:\n  " + "\n  ".join(conflicts))
    for name, part in parts.items():
        if part is not None:
            part.load_state_dict(state[name])
    if len(state["rng"]) == context.world_size:
        set_rng_state(state["rng"][context.rank])
    else:
        warnings.warn(f"{path} was written by {len(state['rng'])} processes, not {context.world_size}: random "
                      "generators are re-seeded, so the run will not repeat the original exactly", stacklevel=2)
        seed_everything(config.seed + context.rank + state["step"])
    return state["step"], path


class RunLog:
    """Rank 0's progress bar (loss terms, it/s) and CSV log; a resumed run keeps the rows up to its step."""

    def __init__(self, path: Path, columns: tuple[str, ...], start: int, total: int, enabled: bool):
        self.enabled, self.columns, self.started = enabled, columns, time.perf_counter()
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if start > 0 and path.is_file():
            with path.open(newline="") as file:
                kept = [row for row in csv.DictReader(file) if int(row["step"]) <= start]
        self.file = path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, [*columns, "seconds"], extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(kept)
        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, values: dict[str, float], write: bool) -> None:
        if not self.enabled:
            return
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k != "lr"}, refresh=False)
        if write:
            self.writer.writerow({"step": step, **values, "seconds": round(time.perf_counter() - self.started, 2)})
            self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.file.close()


def write_samples(path: Path, batch: dict[str, Tensor], output: Tensor, rows: int = 4) -> None:
    """A grid with one row per sample: input | fused | target | output."""
    columns = {"input": batch["image"], "fused": batch["fused"], "target": batch["target"], "output": output}
    pictures = {name: from_model_output(value[:rows].detach().float().cpu().numpy()) for name, value in columns.items()}
    grid = np.vstack([make_grid([(name, pictures[name][r]) for name in columns]) for r in range(len(output[:rows]))])
    write_image(path, grid, overwrite=True)

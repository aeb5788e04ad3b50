"""Suppressor training (`deghost train suppressor`): MAResU-Net on cat(I, F_fused) → F_train.

    L = 0.1·MSE + 1·L_percept + 0.1·L_adv,  Adam (0.9, 0.999), lr 1e-4 cosine → 1e-7, 200k steps, batch 4

Each step updates the suppressor, then the StyleGAN2 discriminator (targets are real, outputs
fake). Runs as one process or under `torchrun --nproc-per-node N` (DDP, rank 0 writes), where N
processes with batch b train as one with batch N·b: BatchNorm uses the global batch's statistics
and dropout masks are drawn per sample of the global batch from a (seed, step) stream. The loop
itself is the shared kit of training/loop.py and training/resume.py.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .checkpoints import (
    PRETRAINED_SOURCES,
    load_resnet34_stem_encoder,
    load_stylegan2_discriminator,
    load_vgg16_features,
)
from .config import SuppressorConfig
from .data import PairDataset
from .loop import RunLog, batch_stream, check_finite, mixed_precision, step_stream, write_sample_grid
from .losses import PerceptualLoss, discriminator_loss, generator_adversarial_loss, r1_penalty
from .models.maresunet import PAPER_WIDTH, MAResUNet
from .models.stylegan2 import Discriminator
from .models.vgg import VGG16Features
from .resume import resume_or_seed, write_checkpoint

RANDOM_VGG_LABEL = ("--random-vgg: the perceptual loss uses RANDOM VGG-16 weights, not the paper's ImageNet VGG-16; "
                    "fine for tests, not for a real run")

TERMS = ("total", "mse", "perceptual", "adversarial", "discriminator", "r1")


def train_suppressor(config: SuppressorConfig) -> Path:
    """Train as `config` says; returns the last checkpoint written."""
    check_config(config)
    return distributed.run(_train, config)


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
    with RunLog(run / "log.csv", ("step", "lr", *TERMS), start, config.iterations, context.is_main) as log:
        batches = batch_stream(dataset, config.batch_size, context, start, config.seed, config.workers)
        for step in range(start, end):
            batch = {name: value.to(context.device, non_blocking=True) for name, value in next(batches).items()}
            distributed.set_dropout_stream(model, step_stream(config.seed, step))
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
                last = write_checkpoint(run / "checkpoints", step + 1, parts, config, context,
                                        {"perceptual_network": perceptual_label(config)})
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


def build_suppressor(width: int = PAPER_WIDTH) -> MAResUNet:
    """MAResU-Net on cat(I, F_fused) → RGB at base `width` (64: the paper's network)."""
    return MAResUNet(in_channels=6, out_channels=3, width=width)


def build_networks(config: SuppressorConfig, side: int, context: distributed.Context):
    """(suppressor, discriminator or None, perceptual loss) on the device, in training mode.

    The initial weights come from `config.seed` alone (the same in every process); the global RNG
    is left alone, so dropout draws do not depend on how the networks were built.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_suppressor(config.width)
        discriminator = Discriminator(config.disc_size or side) if config.adversarial_weight > 0 else None
    if config.encoder_init:
        model.load_state_dict(load_resnet34_stem_encoder(config.encoder_init), strict=False)
    if discriminator is not None and config.discriminator_init:
        discriminator = load_stylegan2_discriminator(config.discriminator_init, discriminator.size)
    if config.random_vgg:
        if context.is_main:
            warnings.warn(RANDOM_VGG_LABEL, stacklevel=2)
        vgg = random_vgg(config.seed)
    else:
        vgg = load_vgg16_features(config.vgg)
    distributed.draw_dropout_per_sample(model.train(), context)
    if config.frozen_norm:
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, distributed.GlobalBatchDropout)):
                module.eval()
    if discriminator is not None:
        discriminator = discriminator.train().to(context.device)
    return model.to(context.device), discriminator, PerceptualLoss(vgg).to(context.device)


def perceptual_label(config: SuppressorConfig) -> str:
    """What the perceptual loss ran on, stored in every checkpoint."""
    return "RANDOM VGG-16 (--random-vgg; not the paper's loss)" if config.random_vgg else f"VGG-16 {config.vgg}"


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
    if not config.vgg and not config.random_vgg:
        problems.append(f"--vgg is required: the perceptual loss needs {PRETRAINED_SOURCES['vgg16']} "
                        "(--random-vgg runs with random weights instead, for tests only)")
    if config.vgg and config.random_vgg:
        problems.append("--vgg and --random-vgg exclude each other; drop one")
    if config.encoder_init and config.width != PAPER_WIDTH:
        problems.append(f"--encoder-init needs --width {PAPER_WIDTH} (ImageNet ResNet-34's width), not {config.width}")
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


def write_samples(path: Path, batch: dict[str, Tensor], output: Tensor, rows: int = 4) -> None:
    """A grid with one row per sample: input | fused | target | output."""
    write_sample_grid(path, {"input": batch["image"], "fused": batch["fused"], "target": batch["target"],
                             "output": output}, rows)

"""StyleGAN2 training (`deghost train stylegan2`): rosinality/stylegan2-pytorch's train.py, config F.

Per step (i = step, from 0): D on non-saturating logistic loss (fakes from G, no gradient to G);
every `d_reg_every` steps lazy R1 (γ/2·R1·d_reg_every); G on softplus(−D(G(z))); every
`g_reg_every` steps path-length regularisation (weight·g_reg_every, batch / shrink); then
g_ema ← lerp(g, g_ema, accum). Style mixing with probability 0.9 at a uniform crossover; fresh noise
every forward (randomize_noise). Adam with lr·c and betas ** c, c = every / (every + 1).
Optional ADA (training/ada.py) on everything D sees.

Differences from rosinality, each for DDP = one process with the doubled batch and exact resume:
- All random draws of a step (latents, mixing, noises, augmentation, path-length noise) come from
  generators seeded by (seed, step, purpose), drawn for the global batch; process r takes rows
  r, r + N, … (the same interleaving as the data, so minibatch-stddev groups coincide).
- The running mean path length is updated from the mean over all processes and enters the penalty
  detached (as NVIDIA's TensorFlow original, where it is a variable; rosinality keeps a per-process
  mean with a 0.01-weighted gradient through it).
- EMA accum = 0.5 ** (global batch / half-life) instead of rosinality's fixed 0.5 ** (32 / 10k).

Checkpoints have rosinality's entries (`g`, `d`, `g_ema`, `g_optim`, `d_optim`, `args`,
`ada_aug_p`) plus `latent_avg` [512] (mean of g_ema's mapping) and the resume state.
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from . import distributed
from .ada import AdaptiveProbability, augment
from .config import StyleGAN2Config
from .data import CheckedImageFolder, report_skipped
from .loop import RunLog, batch_stream, check_finite, step_stream, write_sample_grid
from .losses import discriminator_loss, generator_adversarial_loss, r1_penalty
from .models.stylegan2 import Discriminator, Generator
from .resume import resume_or_seed, write_checkpoint

TERMS = ("d", "g", "r1", "path", "mean_path_length", "real_score", "fake_score", "ada_p")
# Purposes of the per-step random streams (their index seeds the stream).
PURPOSES = ("d_latents", "d_augment_fake", "d_augment_real", "r1_augment", "g_latents", "g_augment", "path")


class TrainingGenerator(nn.Module):
    """The generator's training forward (what DDP wraps): z [K,b,512] (K = 1, or 2 for style mixing),
    crossover, noises → (image [b,3,S,S], W+ [b,n_latent,512])."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, z: Tensor, crossover: int, noises: list[Tensor]) -> tuple[Tensor, Tensor]:
        g = self.generator
        w = g.mapping(z.flatten(0, 1)).view(*z.shape)
        n = g.n_latent
        if len(w) == 1:
            wplus = w[0][:, None].repeat(1, n, 1)
        else:
            wplus = torch.cat([w[0][:, None].repeat(1, crossover, 1), w[1][:, None].repeat(1, n - crossover, 1)], 1)
        return g.synthesis(wplus, noises), wplus


class RegularisationState:
    """The running values besides the networks and optimizers: mean path length and ADA's p."""

    def __init__(self, ada: AdaptiveProbability):
        self.mean_path_length = 0.0
        self.ada = ada

    def state_dict(self) -> dict:
        return {"mean_path_length": self.mean_path_length, "ada": self.ada.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.mean_path_length = state["mean_path_length"]
        self.ada.load_state_dict(state["ada"])


def step_generator(seed: int, step: int, purpose: str) -> torch.Generator:
    """The random stream of one purpose at one step: the same in every process and in a resumed run."""
    return step_stream(seed, step, PURPOSES.index(purpose))


def draw_latents(generator: Generator, global_batch: int, mixing: float, stream: torch.Generator,
                 context: distributed.Context) -> tuple[Tensor, int, list[Tensor]]:
    """This process's rows of z [K,b,512], the crossover and the noises, drawn for the global batch."""
    mix = float(torch.rand((), generator=stream)) < mixing
    z = torch.randn(2 if mix else 1, global_batch, generator.style_dim, generator=stream)
    crossover = int(torch.randint(1, generator.n_latent, (), generator=stream)) if mix else generator.n_latent
    noises = [torch.randn(global_batch, *buffer.shape[1:], generator=stream) for buffer in generator.noise_buffers()]
    device = context.device
    noises = [distributed.own_rows(noise, context).to(device) for noise in noises]
    return distributed.own_rows(z, context, dim=1).to(device), crossover, noises


def adam(parameters, config: StyleGAN2Config, every: int) -> torch.optim.Adam:
    """Adam with the lazy-regularisation correction: lr·c and betas ** c, c = every / (every + 1)."""
    c = every / (every + 1)
    return torch.optim.Adam(parameters, lr=config.lr * c, betas=(0**c, 0.99**c))


@torch.no_grad()
def accumulate(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameters only (buffers are fixed), as rosinality's."""
    model_parameters = dict(model.named_parameters())
    for name, parameter in ema.named_parameters():
        parameter.lerp_(model_parameters[name], 1 - decay)


@torch.no_grad()
def latent_average(generator: Generator, samples: int, seed: int, chunk: int = 10_000) -> Tensor:
    """[style_dim] mean of the mapping over `samples` z drawn from `seed` (checkpoints' latent_avg)."""
    stream = torch.Generator().manual_seed(seed)
    total = torch.zeros(generator.style_dim, dtype=torch.float64)
    for start in range(0, samples, chunk):
        z = torch.randn(min(chunk, samples - start), generator.style_dim, generator=stream)
        total += generator.mapping(z.to(generator.input.input.device)).double().sum(0).cpu()
    return (total / samples).float()


def rosinality_args(config: StyleGAN2Config, world_size: int) -> argparse.Namespace:
    """The `args` entry rosinality's train.py writes (its option names), for programs that read it."""
    return argparse.Namespace(
        path=config.data, iter=config.iterations, batch=config.batch_size, n_sample=4, size=config.size,
        r1=config.r1, path_regularize=config.path_regularize, path_batch_shrink=config.path_batch_shrink,
        d_reg_every=config.d_reg_every, g_reg_every=config.g_reg_every, mixing=config.mixing, ckpt=None,
        lr=config.lr, channel_multiplier=config.channel_multiplier, wandb=False, local_rank=0,
        augment=config.augment, augment_p=config.augment_p, ada_target=config.ada_target,
        ada_length=config.ada_length, ada_every=config.ada_every, latent=512, n_mlp=8, start_iter=0,
        distributed=world_size > 1)


def check_config(config: StyleGAN2Config) -> None:
    problems = []
    if not config.data:
        problems.append("--data is required: a folder of training images")
    if config.size < 8 or config.size > 1024 or config.size & (config.size - 1):
        problems.append(f"--size {config.size} must be a power of two in [8, 1024]")
    if config.batch_size > 4 and config.batch_size % 4:
        problems.append(f"--batch-size {config.batch_size}: the discriminator's minibatch-stddev groups 4 images; "
                        "use 1–4 or a multiple of 4")
    if not 0 <= config.mixing <= 1 or not 0 <= config.augment_p <= 1:
        problems.append("--mixing and --augment-p are probabilities in [0, 1]")
    if problems:
        raise ValueError("invalid training configuration:\n  " + "\n  ".join(problems))


def train_stylegan2(config: StyleGAN2Config) -> Path:
    """Train as `config` says; returns the last checkpoint written."""
    check_config(config)
    return distributed.run(_train, config)


def _train(config: StyleGAN2Config, context: distributed.Context) -> Path:
    run, device = Path(config.out), context.device
    dataset = CheckedImageFolder(config.data, config.size, config.flip, config.seed, progress=context.is_main)
    if context.is_main:
        report_skipped(dataset, run)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        g = Generator(config.size, channel_multiplier=config.channel_multiplier,
                      max_channels=config.max_channels).train().to(device)
        d = Discriminator(config.size, channel_multiplier=config.channel_multiplier,
                          max_channels=config.max_channels).train().to(device)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    g_optim, d_optim = adam(g.parameters(), config, config.g_reg_every), adam(d.parameters(), config,
                                                                               config.d_reg_every)
    ada = AdaptiveProbability(config.ada_target, config.ada_length, config.ada_every, config.augment_p)
    state = RegularisationState(ada)
    parts = {"g": g, "d": d, "g_ema": g_ema, "g_optim": g_optim, "d_optim": d_optim, "training_state": state}
    start, last = resume_or_seed(config, parts, context)
    ddp_g, ddp_d = distributed.wrap(TrainingGenerator(g), context), distributed.wrap(d, context)
    plain_g = TrainingGenerator(g)
    global_batch = config.batch_size * context.world_size
    path_batch = max(1, config.batch_size // config.path_batch_shrink) * context.world_size
    accum = 0.5 ** (global_batch / config.ema_half_life)
    end = min(config.iterations, config.stop_at or config.iterations)
    with RunLog(run / "log.csv", ("step", *TERMS), start, config.iterations, context.is_main, "stylegan2") as log:
        batches = batch_stream(dataset, config.batch_size, context, start, config.seed, config.workers)

        def aug(images: Tensor, step: int, purpose: str) -> Tensor:
            p = ada.p if config.augment else 0.0
            return augment(images, p, step_generator(config.seed, step, purpose), context)

        for step in range(start, end):
            real = next(batches).to(device)
            # Discriminator: fakes without a graph to G.
            g.requires_grad_(False)
            d.requires_grad_(True)
            with torch.no_grad():
                fake, _ = plain_g(*draw_latents(g, global_batch, config.mixing,
                                                step_generator(config.seed, step, "d_latents"), context))
            fake_logits = ddp_d(aug(fake, step, "d_augment_fake"))
            real_logits = ddp_d(aug(real, step, "d_augment_real"))
            d_loss = discriminator_loss(real_logits, fake_logits)
            d_optim.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optim.step()
            if config.augment and config.augment_p == 0:
                ada.tune(real_logits, context)
            r1 = torch.zeros((), device=device)
            if step % config.d_reg_every == 0:
                real = real.detach().requires_grad_(True)
                logits = ddp_d(aug(real, step, "r1_augment"))
                r1 = r1_penalty(logits, real)
                d_optim.zero_grad(set_to_none=True)
                (config.r1 / 2 * r1 * config.d_reg_every + 0 * logits[0]).sum().backward()
                d_optim.step()
            # Generator: gradients through the discriminator (frozen, unwrapped: no DDP sync for it).
            g.requires_grad_(True)
            d.requires_grad_(False)
            fake, _ = ddp_g(*draw_latents(g, global_batch, config.mixing,
                                          step_generator(config.seed, step, "g_latents"), context))
            g_loss = generator_adversarial_loss(d(aug(fake, step, "g_augment")))
            g_optim.zero_grad(set_to_none=True)
            g_loss.backward()
            g_optim.step()
            path = torch.zeros((), device=device)
            if step % config.g_reg_every == 0:
                stream = step_generator(config.seed, step, "path")
                fake, wplus = ddp_g(*draw_latents(g, path_batch, config.mixing, stream, context))
                noise = distributed.own_rows(torch.randn(path_batch, *fake.shape[1:], generator=stream), context)
                noise = noise.to(device) / math.sqrt(fake.shape[2] * fake.shape[3])
                (gradient,) = torch.autograd.grad((fake * noise).sum(), wplus, create_graph=True)
                lengths = gradient.square().sum(2).mean(1).sqrt()
                batch_mean = distributed.mean_over_processes(lengths.detach().mean(), context).item()
                state.mean_path_length += config.path_decay * (batch_mean - state.mean_path_length)
                path = (lengths - state.mean_path_length).square().mean()
                g_optim.zero_grad(set_to_none=True)
                (config.path_regularize * config.g_reg_every * path + 0 * fake[0, 0, 0, 0]).backward()
                g_optim.step()
            accumulate(g_ema, g, accum)
            terms = {"d": d_loss.detach(), "g": g_loss.detach(), "r1": r1.detach(), "path": path.detach(),
                     "mean_path_length": torch.tensor(state.mean_path_length),
                     "real_score": real_logits.detach().mean(), "fake_score": fake_logits.detach().mean(),
                     "ada_p": torch.tensor(ada.p if config.augment else 0.0)}
            values = check_finite(terms, step + 1, last, context)
            log.update(step + 1, values, (step + 1) % config.log_every == 0)
            if context.is_main and (step + 1) % config.sample_every == 0:
                write_samples(run / "samples" / f"step-{step + 1:08d}.png", g_ema, config.seed)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
                extra = {"args": rosinality_args(config, context.world_size),
                         "ada_aug_p": ada.p if config.augment else 0.0,
                         "latent_avg": latent_average(g_ema, config.latent_avg_samples, config.seed)}
                last = write_checkpoint(run / "checkpoints", step + 1, parts, config, context, extra)
    return last


@torch.no_grad()
def write_samples(path: Path, g_ema: Generator, seed: int, count: int = 4) -> None:
    """g_ema on `count` fixed latents (seeded), fixed noise buffers: the same faces at every step."""
    z = torch.randn(count, g_ema.style_dim, generator=torch.Generator().manual_seed(seed))
    images = g_ema(g_ema.to_wplus(g_ema.mapping(z.to(g_ema.input.input.device))))
    write_sample_grid(path, {"g_ema": images}, rows=count)

"""pSp encoder training (`deghost train psp`), the recipe of eladrich/pixel2style2pixel for `ffhq_encode`.

    w = E(x) + latent_avg,  ŷ = area-pool₂₅₆(G(w))  (G frozen, fixed noise)
    L = 1.0·L2(ŷ, x) + 0.8·LPIPS(ŷ, x) + 0.1·(1 − cos ArcFace(ŷ, x)) [+ λ·‖w − latent_avg‖]
    Ranger lr 1e-4 (pSp's default optimizer; --optimizer adam for torch's Adam), batch 8, 500k steps

x are the training images resized to 256² (center crop, area) and flipped with probability 0.5, as
pSp's EncodeTransforms. The encoder's IR-SE trunk starts from the ArcFace file (`model_ir_se50.pth`,
as pSp does); its style blocks from a seeded initialisation. Differences from the official code,
on purpose: the decoder uses its fixed noise buffers (the noise the exported pipeline renders with)
instead of fresh noise per step, and images are area-resized instead of PIL-bilinear.

Under torchrun, N processes with batch b train as one with batch N·b: the encoder's BatchNorm uses
the global batch's statistics (distributed.wrap); flips depend on the sample alone.

Writes, besides the resumable training checkpoints, `<out>/psp_ffhq_encode.pt` in the official
layout (`state_dict` with `encoder.*` and `decoder.*`, `latent_avg` [n_styles,512], `opts`) at every
checkpoint, so `load_psp` and `deghost build --checkpoints` take it unchanged.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deghost.presets import get_preset
from deghost.stages import CHECKPOINT_FILES

from . import checkpoints, distributed
from .data import CheckedImageFolder, report_skipped
from .loop import RunLog, batch_stream, check_finite, write_sample_grid
from .models.psp import INPUT_SIZE, OFFICIAL_WIDTH, PSPEncoder, add_latent_avg, psp_encoder
from .psp_config import ARCFACE_FILE, ARCFACE_URL, PSPConfig
from .psp_losses import IdentityLoss, w_norm_loss
from .ranger import Ranger
from .resume import atomic_save, resume_or_seed, write_checkpoint

PSP_FILE = CHECKPOINT_FILES["encoder"]  # the name `deghost build --checkpoints DIR` looks for
TERMS = ("total", "l2", "lpips", "id", "w_norm")
LATENT_AVG_SAMPLES = 100_000  # pSp: decoder.mean_latent(int(1e5)) when the checkpoint has no latent_avg


def check_config(config: PSPConfig) -> None:
    """Refuse settings that would fail later, with the fix; name the missing weight files."""
    from .evaluation import weights

    problems = []
    if not config.data:
        problems.append("--data is required: a folder of aligned face images")
    if not config.stylegan2:
        problems.append("--stylegan2 is required: the generator to invert into (e.g. stylegan2-ffhq-config-f.pt "
                        "or `deghost train stylegan2`'s checkpoint)")
    if config.id_loss and config.id_weight > 0 and not config.arcface:
        problems.append(f"--arcface is required for the identity loss: pSp's {ARCFACE_FILE} from "
                        f"{ARCFACE_URL} (or --no-id-loss to train without it, not the paper's recipe)")
    if config.lpips and config.lpips_weight > 0:
        for flag, value, spec in (("--lpips-alexnet", config.lpips_alexnet, weights.LPIPS_ALEXNET),
                                  ("--lpips-linear", config.lpips_linear, weights.LPIPS_LINEAR)):
            if not value:
                problems.append(f"{flag} is required for LPIPS: {spec.filename} from {spec.url} (or --no-lpips to "
                                "train without it, not the paper's recipe)")
    if config.optimizer not in ("ranger", "adam"):
        problems.append(f"--optimizer {config.optimizer!r}: choose ranger (pSp's) or adam")
    get_preset(config.preset)
    if problems:
        raise ValueError("invalid training configuration:\n  " + "\n  ".join(problems))


class PSPModel(nn.Module):
    """Encoder (trained) + decoder (frozen, eval) + latent_avg: image [B,3,256,256] → (ŷ at 256², w)."""

    def __init__(self, encoder: PSPEncoder, decoder: nn.Module, latent_avg: Tensor):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder.eval().requires_grad_(False)
        self.register_buffer("latent_avg", latent_avg)

    def train(self, mode: bool = True) -> PSPModel:
        self.encoder.train(mode)
        return self  # the decoder stays frozen

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        w = add_latent_avg(self.encoder(image), self.latent_avg)
        rendered = self.decoder(w)
        if rendered.shape[-1] != INPUT_SIZE:  # pSp's face_pool: AdaptiveAvgPool2d(256) = area for 2^k sides
            rendered = F.interpolate(rendered, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
        return rendered, w


def compute_latent_avg(generator, n_styles: int, samples: int = LATENT_AVG_SAMPLES, seed: int = 0) -> Tensor:
    """pSp's latent_avg when the StyleGAN2 file has none: mean of the mapping over `samples` z, [n_styles,512]."""
    rng = torch.Generator().manual_seed(seed)
    total, chunk = torch.zeros(generator.style_dim), 10_000
    with torch.no_grad():
        for start in range(0, samples, chunk):
            z = torch.randn(min(chunk, samples - start), generator.style_dim, generator=rng)
            total += generator.mapping(z).sum(0)
    return (total / samples).repeat(n_styles, 1)


def build_model(config: PSPConfig, arcface: nn.Module | None) -> PSPModel:
    preset = get_preset(config.preset)
    loaded = checkpoints.load_stylegan2(config.stylegan2, preset.image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = psp_encoder(preset)
    if arcface is not None and preset.encoder_width != OFFICIAL_WIDTH:
        warnings.warn(f"preset {preset.name}: the encoder's trunk ({preset.encoder_width} channels at its first "
                      f"stage) is narrower than ArcFace's IR-SE-50 ({OFFICIAL_WIDTH}): it starts from random weights, "
                      "ArcFace serves the identity loss only", stacklevel=2)
    elif arcface is not None:  # pSp: encoder.load_state_dict(ir_se50, strict=False) fills the trunk
        trunk = {k: v for k, v in arcface.state_dict().items() if k.startswith(("input_layer.", "body."))}
        missing = set(trunk) - set(encoder.state_dict())
        assert not missing, f"ArcFace keys absent from the encoder: {sorted(missing)[:4]}"
        encoder.load_state_dict(trunk, strict=False)
    stored = loaded.latent_avg
    if stored is not None:
        latent_avg = stored.float().reshape(-1, preset.style_dim)[-1:].repeat(preset.n_latent, 1)
    else:
        latent_avg = compute_latent_avg(loaded.generator, preset.n_latent)
    return PSPModel(encoder, loaded.generator, latent_avg)


def load_losses(config: PSPConfig, context) -> tuple[nn.Module | None, IdentityLoss | None, nn.Module | None]:
    """(arcface, identity loss, lpips); None where switched off, with a warning naming what is missing."""
    from .evaluation import weights

    arcface = identity = lpips = None
    if config.arcface:
        arcface = checkpoints.load_arcface(config.arcface)
    if not config.id_loss or config.id_weight == 0:
        if context.is_main:
            warnings.warn("training WITHOUT the identity loss (--no-id-loss): not pSp's recipe", stacklevel=2)
    else:
        identity = IdentityLoss(arcface).to(context.device)
    if not config.lpips or config.lpips_weight == 0:
        if context.is_main:
            warnings.warn("training WITHOUT LPIPS (--no-lpips): not pSp's recipe", stacklevel=2)
    else:
        files = weights.WEIGHT_FILES  # looked up now: tests substitute their stand-ins' digests
        lpips = weights.load_lpips(config.lpips_alexnet, config.lpips_linear, files["lpips_alexnet"],
                                   files["lpips_linear"]).requires_grad_(False).to(context.device)
    if arcface is None and context.is_main:
        warnings.warn("no ArcFace file: the encoder's IR-SE trunk starts from random weights, not pSp's "
                      "model_ir_se50.pth", stacklevel=2)
    return arcface, identity, lpips


def psp_opts(config: PSPConfig) -> dict:
    """The checkpoint's `opts`, with the names pSp's own code reads when it loads the file."""
    preset = get_preset(config.preset)
    return {
        "encoder_type": "GradualStyleEncoder", "input_nc": 3, "label_nc": 0, "output_size": preset.image_size,
        "n_styles": preset.n_latent, "start_from_latent_avg": True, "learn_in_w": False, "dataset_type": "ffhq_encode",
        "batch_size": config.batch_size, "learning_rate": config.lr, "optim_name": config.optimizer,
        "max_steps": config.iterations, "l2_lambda": config.l2_weight,
        "lpips_lambda": 0.0 if not config.lpips else config.lpips_weight,
        "id_lambda": 0.0 if not config.id_loss else config.id_weight, "w_norm_lambda": config.w_norm_weight,
        "train_decoder": False, "stylegan_weights": config.stylegan2, "exp_dir": config.out,
        "deghost_recipe_changes": [text for flag, text in ((not config.id_loss, "no identity loss"),
                                                           (not config.lpips, "no LPIPS")) if flag],
    }


def psp_state(model: PSPModel, config: PSPConfig) -> dict:
    """The official `psp_ffhq_encode.pt` layout."""
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state |= {f"decoder.{k}": v for k, v in model.decoder.state_dict().items()}
    return {"state_dict": state, "latent_avg": model.latent_avg.clone(), "opts": psp_opts(config)}


def train_psp(config: PSPConfig) -> Path:
    """Train as `config` says; returns the psp_ffhq_encode.pt written into `config.out`."""
    check_config(config)
    return distributed.run(_train, config)


def _train(config: PSPConfig, context) -> Path:
    run = Path(config.out)
    dataset = CheckedImageFolder(config.data, INPUT_SIZE, config.flip, config.seed, progress=context.is_main)
    if context.is_main:
        report_skipped(dataset, run)
    arcface, identity, lpips = load_losses(config, context)
    model = build_model(config, arcface).to(context.device).train()
    parameters = model.encoder.parameters()
    optimizer = (Ranger(parameters, lr=config.lr) if config.optimizer == "ranger"
                 else torch.optim.Adam(parameters, lr=config.lr))
    parts = {"model": model.encoder, "optimizer": optimizer}
    start, last = resume_or_seed(config, parts, context)
    ddp_model = distributed.wrap(model, context)
    end = min(config.iterations, config.stop_at or config.iterations)
    with RunLog(run / "log.csv", ("step", "lr", *TERMS), start, config.iterations, context.is_main, "pSp") as log:
        batches = batch_stream(dataset, config.batch_size, context, start, config.seed, config.workers)
        for step in range(start, end):
            images = next(batches).to(context.device, non_blocking=True)
            output, w = ddp_model(images)
            terms = psp_losses(output, images, w, model.latent_avg, identity, lpips, config)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            values = check_finite({k: v.detach() for k, v in terms.items()}, step + 1, last, context)
            log.update(step + 1, {"lr": config.lr, **values}, (step + 1) % config.log_every == 0)
            if context.is_main and (step + 1) % config.sample_every == 0:
                write_sample_grid(run / "samples" / f"step-{step + 1:08d}.png", {"target": images, "output": output})
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
                last = write_checkpoint(run / "checkpoints", step + 1, parts, config, context)
                if context.is_main:
                    atomic_save(psp_state(model, config), run / PSP_FILE)
    return run / PSP_FILE


def psp_losses(output: Tensor, target: Tensor, w: Tensor, latent_avg: Tensor, identity: IdentityLoss | None,
               lpips: nn.Module | None, config: PSPConfig) -> dict[str, Tensor]:
    """The weighted terms of pSp's calc_loss; terms switched off are 0. output, target: [B,3,256,256]."""
    zero = output.new_zeros(())
    l2 = F.mse_loss(output, target)
    lpips_term = lpips(output, target).mean() if lpips is not None else zero
    id_term = identity(output, target) if identity is not None else zero
    w_norm = w_norm_loss(w, latent_avg) if config.w_norm_weight > 0 else zero
    total = (config.l2_weight * l2 + config.lpips_weight * lpips_term + config.id_weight * id_term
             + config.w_norm_weight * w_norm)
    return {"total": total, "l2": l2, "lpips": lpips_term, "id": id_term, "w_norm": w_norm}

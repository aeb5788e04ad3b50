"""Training configurations as plain values; the defaults are the paper's recipe (docs/design.md §1).

Each field carries its help text, so the command line (`deghost train …`) is generated from these
dataclasses and the checkpoints store them as plain dicts.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields

from deghost.runtime.directions import DEFAULT_ALPHA


def _option(default, help: str, **metadata):
    return field(default=default, metadata={"help": help, **metadata})


# kw_only: the inherited fields come after each command's own in __init__, so a positional
# SuppressorConfig("pairs") still means data="pairs".
@dataclass(kw_only=True)
class RunControl:
    """How a run is carried out, not what it computes: shared by every `deghost train` command, and free to
    change when a run is resumed."""

    workers: int = _option(2, "data-loading worker processes per training process")
    checkpoint_every: int = _option(5000, "write a checkpoint every this many steps (and at the end)")
    keep_checkpoints: int = _option(2, "keep this many most recent checkpoints")
    log_every: int = _option(50, "append the loss terms to log.csv every this many steps")
    resume: str | None = _option(
        None, "continue from this checkpoint (the flag alone: the newest in --out/checkpoints)", type=str, nargs="?",
        const="latest")
    stop_at: int | None = _option(
        None, "end this invocation at this step, with a checkpoint (for time-limited jobs); --resume "
        "continues to --iterations (default: run to the end)", type=int)


@dataclass
class SuppressorConfig(RunControl):
    """`deghost train suppressor`: MAResU-Net on cat(I, F_fused) → F_train."""

    data: str = _option("", "dataset folder written by `deghost train synthesize` (manifest.jsonl)", required=True)
    out: str = _option("runs/suppressor", "run folder: checkpoints/, log.csv, samples/")
    iterations: int = _option(200_000, "optimizer steps of the whole run")
    batch_size: int = _option(4, "images per step and process; the global batch is this × the process count")
    lr: float = _option(1e-4, "Adam learning rate at step 0 (suppressor and discriminator)")
    lr_min: float = _option(1e-7, "learning rate reached at the last step (cosine decay)")
    betas: tuple[float, float] = _option((0.9, 0.999), "Adam β1 β2")
    mse_weight: float = _option(0.1, "weight of the pixel MSE")
    perceptual_weight: float = _option(1.0, "weight of the VGG-16 perceptual loss")
    adversarial_weight: float = _option(0.1, "weight of the non-saturating adversarial loss (0 = no discriminator)")
    r1_gamma: float = _option(0.0, "R1 penalty weight on the discriminator's real images (0 = off, as the paper)")
    r1_every: int = _option(16, "apply R1 every this many steps (lazy regularisation, scaled up to match)")
    disc_size: int | None = _option(
        None, "discriminator input side; smaller than the images = area-downsampled (cheap, for CPU runs); "
        "default: the training image side", type=int)
    width: int = _option(64, "MAResU-Net base width; 64 is the paper's network (26,285,115 parameters)")
    crop: int | None = _option(None, "random square crop side, a multiple of 32 (default: whole images)", type=int)
    flip: bool = _option(False, "random horizontal flips")
    frozen_norm: bool = _option(
        False, "BatchNorm on running statistics and Dropout off while training (each sample's gradient then "
        "depends on that sample alone)")
    amp: bool = _option(True, "bfloat16 autocast on CUDA GPUs that support it (ignored on the CPU)")
    vgg: str | None = _option(None, "torchvision's ImageNet vgg16-397923af.pth for the perceptual loss (required "
                              "by the paper's recipe; see --random-vgg)", type=str)
    random_vgg: bool = _option(False, "use a randomly initialised VGG-16 instead of --vgg (tests and CPU checks "
                               "only: not the paper's loss; logged and stored in the checkpoints)")
    discriminator_init: str | None = _option(
        None, "start the discriminator from this rosinality StyleGAN2 checkpoint's `d` (stylegan2-ffhq-config-f.pt; "
        "its size must equal --disc-size or the image side) (default: random)", type=str)
    encoder_init: str | None = _option(
        None, "start MAResU-Net's ResNet-34 encoder from torchvision's ImageNet resnet34-b627a593.pth (width 64; the "
        "6-channel stem gets the RGB filters for both images, ×0.5) (default: random)", type=str)
    seed: int = _option(0, "seed of the initial weights, the data order, augmentation and dropout")
    sample_every: int = _option(1000, "write a sample grid (input | fused | target | output) every this many steps")


@dataclass
class DiffCamConfig(RunControl):
    """`deghost train diffcam`: the EOGI recipe — which direction was applied, from shared(T) − shared(I')."""

    data: str = _option("", "folder of aligned face images (inverted by the frozen pSp encoder)", required=True)
    out: str = _option("runs/diffcam", "run folder: checkpoints/, log.csv")
    iterations: int = _option(100_000, "optimizer steps of the whole run")
    batch_size: int = _option(8, "images per step and process, each edited with one random direction; the global "
                              "batch is this × the process count")
    alpha: float = _option(DEFAULT_ALPHA, "edit strength α: w + α·n̂ (n̂ = direction / ‖direction‖_F)")
    lr: float = _option(1e-4, "Adam learning rate at the start of each cosine cycle")
    betas: tuple[float, float] = _option((0.9, 0.99), "Adam β1 β2")
    restart_every: int = _option(10_000, "steps of the first cosine cycle (warm restarts)")
    restart_mult: int = _option(1, "each cosine cycle is this many times longer than the previous")
    encoder_size: int = _option(256, "pSp input side (images are area-downsampled to it)")
    mask_size: int = _option(256, "Diff-CAM input side (generator outputs are area-downsampled to it)")
    seed: int = _option(0, "seed of the data order, the directions drawn and a new classifier's weights")


@dataclass
class StyleGAN2Config(RunControl):
    """`deghost train stylegan2`: rosinality/stylegan2-pytorch's train.py, config F (official values below)."""

    data: str = _option("", "folder of training images (recursive); unreadable files are skipped and listed in "
                        "skipped.json, others center-cropped to a square and resized to --size", required=True)
    out: str = _option("runs/stylegan2", "run folder: checkpoints/, log.csv, samples/, skipped.json")
    size: int = _option(1024, "image side, a power of two in [8, 1024] (FFHQ: 1024)")
    iterations: int = _option(800_000, "optimizer steps of the whole run (rosinality's --iter)")
    batch_size: int = _option(16, "images per step and process (rosinality's --batch); global batch = this × processes")
    lr: float = _option(0.002, "Adam learning rate (scaled by every/(every+1) for the lazily regularised nets)")
    r1: float = _option(10.0, "R1 weight γ on real images")
    d_reg_every: int = _option(16, "R1 every this many D steps (lazy regularisation, weighted ×this)")
    path_regularize: float = _option(2.0, "path-length regularisation weight")
    path_batch_shrink: int = _option(2, "the path-length batch is the batch divided by this")
    path_decay: float = _option(0.01, "decay of the running mean path length")
    g_reg_every: int = _option(4, "path-length regularisation every this many G steps")
    mixing: float = _option(0.9, "style-mixing probability")
    ema_half_life: int = _option(10_000, "half-life of the EMA generator g_ema, in images "
                                 "(accum = 0.5 ** (global batch / this); rosinality fixes 32 for the batch)")
    channel_multiplier: int = _option(2, "channel multiplier (config F: 2)")
    max_channels: int = _option(512, "cap on feature channels (config F: 512; smaller only for toy CPU runs, whose "
                                "checkpoints then load with the same cap)")
    flip: bool = _option(True, "random horizontal flips of the real images (rosinality's dataset)")
    augment: bool = _option(False, "adaptive discriminator augmentation (ADA) for small data sets")
    augment_p: float = _option(0.0, "fixed augmentation probability (0 = adapt it towards --ada-target)")
    ada_target: float = _option(0.6, "ADA target of r_t = E[sign(D(real))]")
    ada_length: int = _option(500_000, "images over which p can move from 0 to 1")
    ada_every: int = _option(8, "adjust p every this many D steps (as rosinality's train.py)")
    latent_avg_samples: int = _option(100_000, "mapped z averaged into each checkpoint's latent_avg (pSp's 1e5)")
    seed: int = _option(0, "seed of the initial weights, data order, latents, noises and augmentation")
    sample_every: int = _option(1000, "write a grid of g_ema samples every this many steps")


_RUN_CONTROL = frozenset(f.name for f in fields(RunControl))

# Fields that may change between a run and its resumption without changing the result.
RESUMABLE_CHANGES = _RUN_CONTROL | {"out", "data", "sample_every"}


def config_dict(config) -> dict:
    """The config as plain values (tuples as lists), as stored in checkpoints."""
    values = {f.name: getattr(config, f.name) for f in _ordered_fields(config)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def resume_conflicts(saved: dict, config) -> list[str]:
    """Fields where `config` differs from a checkpoint's saved config in a way that changes the run."""
    current = config_dict(config)
    return [
        f"{name}: checkpoint has {saved.get(name)!r}, now {current[name]!r}"
        for name in current
        if name not in RESUMABLE_CHANGES and saved.get(name) != current[name]
    ]


def help_of(config_class) -> dict[str, tuple[object, dict]]:
    """{field name: (default, metadata)} for generating command-line options."""
    return {f.name: (f.default, dict(f.metadata)) for f in _ordered_fields(config_class)}


def _ordered_fields(config) -> list[Field]:
    """The command's own fields, then the run control: `fields()` puts inherited fields first, but the
    options (--data first) and the saved configs keep this order."""
    return sorted(fields(config), key=lambda f: f.name in _RUN_CONTROL)

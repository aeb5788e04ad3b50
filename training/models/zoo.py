"""One factory for every network of the pipeline, sized by a preset.

`build(name, preset, seed)` gives a randomly initialised network (seeded, labelled untrained by
its caller); the official weights come from `deghost.training.checkpoints`. `PAPER_PARAMETERS`
are the counts of the paper's configuration (docs/design.md §2), checked by the tests and the self-check.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deghost.presets import Preset, get_preset

from .bisenet import BiSeNet
from .diffcam import DiffCam
from .eogi_deghosting import Deghosting
from .maresunet import MAResUNet
from .psp import psp_encoder
from .stylegan2 import Discriminator, Generator
from .vgg import VGG16Features

BUILDERS: dict[str, Callable[[Preset], nn.Module]] = {
    "encoder": psp_encoder,
    "generator": lambda p: Generator(p.image_size, p.style_dim),
    "discriminator": lambda p: Discriminator(p.image_size),
    "diffcam": lambda p: DiffCam(n_classes=p.n_classes),
    "suppressor": lambda p: MAResUNet(in_channels=6, out_channels=3),
    "deghosting": lambda p: Deghosting(in_size=p.deghosting_size, out_size=p.image_size),
    "face_parser": lambda p: BiSeNet(n_classes=19),
    "vgg16": lambda p: VGG16Features(),
}

# Learnable parameters of the paper's networks (ffhq1024), docs/design.md §2.
PAPER_PARAMETERS = {
    "encoder": 267_136_704,
    "generator": 30_370_060,
    "discriminator": 29_012_513,
    "diffcam": 42_534_993,
    "suppressor": 26_285_115,
    "deghosting": 174_196_615,
    "face_parser": 13_300_416,
    "vgg16": 14_714_688,
}


def build(name: str, preset: str | Preset = "ffhq1024", seed: int | None = None) -> nn.Module:
    """A network of the pipeline in eval mode; `seed` makes its random initialisation reproducible."""
    if name not in BUILDERS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(BUILDERS)}")
    spec = get_preset(preset) if isinstance(preset, str) else preset
    if seed is None:
        return BUILDERS[name](spec).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BUILDERS[name](spec).eval()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def example_inputs(name: str, preset: str | Preset = "ffhq1024", batch: int = 1, seed: int = 0) -> tuple:
    """Random inputs with the shapes and ranges each network takes (for checks, export and timing)."""
    spec = get_preset(preset) if isinstance(preset, str) else preset
    generator = torch.Generator().manual_seed(seed)

    def image(side: int, channels: int = 3) -> torch.Tensor:
        return torch.rand(batch, channels, side, side, generator=generator) * 2 - 1

    inputs = {
        "encoder": lambda: (image(spec.encoder_size),),
        "generator": lambda: (torch.randn(batch, spec.n_latent, spec.style_dim, generator=generator),),
        "discriminator": lambda: (image(spec.image_size),),
        "diffcam": lambda: (image(spec.mask_size), image(spec.mask_size)),
        "suppressor": lambda: (image(spec.image_size, channels=6),),
        "deghosting": lambda: (image(spec.deghosting_size),),
        "face_parser": lambda: (image(spec.parser_size),),
        "vgg16": lambda: (image(224),),
    }
    if name not in inputs:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(inputs)}")
    return inputs[name]()

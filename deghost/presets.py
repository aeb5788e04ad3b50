"""Model-size presets, torch-free: the paper's 1024 configuration and a tiny one for tests and CI.

Every stage reads its sizes from a preset, so `tiny` exercises exactly the same code as `ffhq1024`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    image_size: int  # generator output side = pipeline working resolution (FFHQ-aligned faces)
    n_latent: int  # W+ layers of the generator: 2·log2(image_size) − 2
    encoder_size: int  # pSp input side (the image is area-downsampled to it)
    mask_size: int  # Diff-CAM input and mask side
    parser_size: int  # BiSeNet input side
    deghosting_size: int  # EOGI Deghosting input side (its output is image_size)
    n_classes: int = 17  # Diff-CAM classifier classes (public EOGI weights: 17 CelebA attributes)
    style_dim: int = 512
    # pSp encoder trunk's first-stage channels: 64 is psp_ffhq_encode.pt's IR-SE-50 (267M parameters);
    # the tiny preset's 16 keeps every layer at 1/16 of the weights, so its training files stay small.
    encoder_width: int = 64


PRESETS = {
    "ffhq1024": Preset("ffhq1024", image_size=1024, n_latent=18, encoder_size=256, mask_size=256,
                       parser_size=512, deghosting_size=128),
    "tiny": Preset("tiny", image_size=256, n_latent=14, encoder_size=256, mask_size=256,
                   parser_size=256, deghosting_size=32, encoder_width=16),
}
DEFAULT_PRESET = "ffhq1024"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None

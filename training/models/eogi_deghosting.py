"""EOGI's Deghosting network: the GLEAN-style baseline ghosting suppressor.

Data flow (in_size = 128, out_size = 1024 for the public weights):

    image [B,3,128,128] ─► RRDBNet ─► strided convs 128→4 ─► Linear ─► W+ latent [B,18,512]
                             │ features at 128, 64, …, 4
                             ▼
    frozen StyleGAN2: at each resolution r ≤ 128, out = fusion_out(cat(out, encoder feature r)),
                      then the two styled convs of the next block; the features above 128 are kept
                             ▼
    PixelShuffle decoder from the 128 feature, concatenating the generator features 256, 512, 1024
                             ▼
                      image [B,3,1024,1024] (raw, no tanh or clamp)

Key names are EOGI's (`FCN.*` for the trainable part); the generator uses this package's rosinality
names, and `deghosting_from_official` remaps the mmgen names inside the official `deghosting.pt`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rrdbnet import LEAKY_SLOPE, RRDBNet
from .stylegan2 import Generator, feature_channels
from .stylegan2_keys import mmgen_to_rosinality

STYLE_DIM = 512
# Encoder and generator features of the same resolution are concatenated, so the branches use the
# generator's channel table (config F, channel_multiplier 2).
CHANNELS = feature_channels(channel_multiplier=2)
GENERATOR_PREFIX = "generator."


def _log2(size: int) -> int:
    return int(math.log2(size))


class PixelShufflePack(nn.Module):
    """3×3 conv to out·s² channels, then pixel shuffle. x: [B,in,H,W] → [B,out,s·H,s·W].

    Args:
        in_channels: input channels.
        out_channels: channels after the shuffle.
        scale_factor: s, the upsampling factor.
        kernel_size: odd size of the convolution ("same" padding).
    """

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int = 2, kernel_size: int = 3):
        super().__init__()
        self.scale_factor = scale_factor
        self.upsample_conv = nn.Conv2d(
            in_channels, out_channels * scale_factor**2, kernel_size, padding=(kernel_size - 1) // 2
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.upsample_conv(x), self.scale_factor)


def _down_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Stride-2 conv + 3×3 conv, LeakyReLU after each: [B,in,H,W] → [B,out,H/2,W/2]."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, 2, 1),
        nn.LeakyReLU(LEAKY_SLOPE),
        nn.Conv2d(out_channels, out_channels, 3, 1, 1),
        nn.LeakyReLU(LEAKY_SLOPE),
    )


def _latent_head(channels: int, n_latent: int) -> nn.Sequential:
    """3×3 conv + LeakyReLU, flatten, Linear: [B,C,4,4] → [B, n_latent·512] (a W+ code)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1),
        nn.LeakyReLU(LEAKY_SLOPE),
        nn.Flatten(),
        nn.Linear(16 * channels, n_latent * STYLE_DIM),
    )


class DeghostingBranches(nn.Module):
    """The trainable part of Deghosting (EOGI's `FCN`): encoder, fusion convolutions, decoder.

    `encoder` = [RRDBNet at in_size, one down block per resolution in_size → 8, the latent head at 4];
    `fusion_out[i]` fuses generator and encoder features at resolution 4·2^i; `decoder` upsamples
    from in_size to out_size. `fusion_skip` convolutions exist in the official model for the RGB skip
    path, whose result never reaches the output: they are kept (unused) so checkpoints load strictly.

    Args:
        in_size: side of the input image, a power of two.
        out_size: side of the output image (= the generator's resolution), a power of two ≥ in_size.
        img_channels: channels of input and output images.
        rrdb_channels: width of the RRDB trunk.
        num_rrdbs: number of RRDBs in the trunk.
    """

    def __init__(
        self, in_size: int, out_size: int, img_channels: int = 3, rrdb_channels: int = 64, num_rrdbs: int = 23
    ):
        super().__init__()
        self.n_latent = 2 * _log2(out_size) - 2
        in_resolutions = [2**i for i in range(2, _log2(in_size) + 1)]  # 4, 8, …, in_size

        self.encoder = nn.ModuleList(
            [RRDBNet(img_channels, rrdb_channels, CHANNELS[in_size], num_rrdbs)]
            + [_down_block(CHANNELS[r], CHANNELS[r // 2]) for r in reversed(in_resolutions[1:])]
            + [_latent_head(CHANNELS[4], self.n_latent)]
        )
        self.fusion_out = nn.ModuleList(
            nn.Conv2d(2 * CHANNELS[r], CHANNELS[r], 3, 1, 1) for r in in_resolutions
        )
        self.fusion_skip = nn.ModuleList(
            nn.Conv2d(CHANNELS[r] + img_channels, img_channels, 3, 1, 1) for r in in_resolutions
        )
        up_resolutions = [2**i for i in range(_log2(in_size), _log2(out_size))]  # in_size, …, out_size/2
        self.decoder = nn.ModuleList(
            # Every block after the first also takes the generator feature of its resolution.
            [
                PixelShufflePack((1 if r == in_size else 2) * CHANNELS[r], CHANNELS[2 * r])
                for r in up_resolutions
            ]
            + [
                nn.Sequential(
                    nn.Conv2d((1 if out_size == in_size else 2) * CHANNELS[out_size], 64, 3, 1, 1),
                    nn.LeakyReLU(LEAKY_SLOPE),
                    nn.Conv2d(64, img_channels, 3, 1, 1),
                )
            ]
        )

    def encode(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        """image: [B,3,in,in] → (latent [B,n_latent,512], features [B,C_r,r,r] for r = 4, 8, …, in)."""
        features = []
        x = image
        for block in self.encoder[:-1]:
            x = block(x)
            features.append(x)
        latent = self.encoder[-1](x).reshape(-1, self.n_latent, STYLE_DIM)
        return latent, features[::-1]

    def decode(self, feature: Tensor, generator_features: list[Tensor]) -> Tensor:
        """feature: [B,C_in,in,in] (RRDB output); generator_features at 2·in, …, out → [B,3,out,out]."""
        if len(generator_features) != len(self.decoder) - 1:
            raise ValueError(
                f"decoder needs {len(self.decoder) - 1} generator features, got {len(generator_features)}"
            )
        x = self.decoder[0](feature)
        for block, generator_feature in zip(self.decoder[1:], generator_features, strict=True):
            x = block(torch.cat([x, generator_feature], 1))
        return x


class Deghosting(nn.Module):
    """EOGI's ghosting suppressor: GLEAN encoder/decoder around a frozen StyleGAN2 generator.

    image: [B,3,in_size,in_size] float32 in [-1,1] (the fused image, area-downsampled)
    → [B,3,out_size,out_size] float32, raw (roughly [-1,1]; not clamped).

    Noise comes from the generator's fixed buffers, so the forward is deterministic.

    Args:
        in_size: side of the input, a power of two in [8, out_size]; 128 for the public weights.
        out_size: side of the output and resolution of the generator, a power of two ≤ 1024.
    """

    def __init__(self, in_size: int = 128, out_size: int = 1024):
        super().__init__()
        for name, size in (("in_size", in_size), ("out_size", out_size)):
            if size not in CHANNELS or size < 8:
                raise ValueError(f"{name} must be a power of two in [8, 1024], got {size}")
        if in_size > out_size:
            raise ValueError(f"in_size ({in_size}) must not exceed out_size ({out_size})")
        self.in_size = in_size
        self.out_size = out_size
        self.FCN = DeghostingBranches(in_size, out_size)
        self.generator = Generator(out_size, style_dim=STYLE_DIM)
        self.generator.requires_grad_(False)
        # Generator stages k = 0, 1, … start at 4·2^k; those starting at ≤ in_size get fused.
        self.n_fused = len(self.FCN.fusion_out)

    def forward(self, image: Tensor) -> Tensor:
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, self.in_size, self.in_size):
            raise ValueError(
                f"Deghosting expects image [B,3,{self.in_size},{self.in_size}], got {tuple(image.shape)}; "
                f"area-downsample the fused image to {self.in_size}x{self.in_size} first"
            )
        latent, encoder_features = self.FCN.encode(image)
        generator = self.generator

        # The official forward also runs the RGB skip path (to_rgb, fusion_skip), but its result is
        # discarded: only the features feed the decoder, so the skip path is left out here.
        out = generator.conv1(generator.input(latent), latent[:, 0], generator.noise_buffers()[0])
        generator_features = []
        for k, stage in enumerate(generator.stages()):  # stage k upsamples 4·2^k → 8·2^k
            if k < self.n_fused:
                out = self.FCN.fusion_out[k](torch.cat([out, encoder_features[k]], 1))
            out = stage.up_conv(out, latent[:, stage.latent_index], stage.noise_up)
            out = stage.conv(out, latent[:, stage.latent_index + 1], stage.noise)
            if k >= self.n_fused - 1:  # now above in_size: a decoder input
                generator_features.append(out)
        return self.FCN.decode(encoder_features[-1], generator_features)


def deghosting_from_official(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """EOGI `deghosting.pt` state_dict → this `Deghosting`'s key names (pure: the input is untouched).

    `FCN.*` keys are kept as they are. The frozen generator's keys (`generator.*`, mmgen names such
    as `generator.constant_input.input` or `generator.injected_noise_<i>`) are remapped to rosinality
    names by `mmgen_to_rosinality`; its mapping network (`style_mapping.*` → `style.*`) is unused by the
    forward but loads, so `model.load_state_dict(deghosting_from_official(sd), strict=True)` holds.
    """
    if not any(key.startswith(GENERATOR_PREFIX) for key in state_dict):
        raise KeyError(f"no '{GENERATOR_PREFIX}*' keys: this is not an EOGI Deghosting state_dict")
    return mmgen_to_rosinality(state_dict, prefix=GENERATOR_PREFIX)

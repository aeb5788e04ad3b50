"""Stage graphs: each network wrapped with the small math around it, so the runtime does none.

One `nn.Module` per stage of `deghost.stages.stage_table`, with the same input and output order.
They are what gets exported to ONNX, and chained in PyTorch they are the reference pipeline the
runtime is checked against. Every operation here is exportable: fixed pools, nearest upsampling
by a constant factor, argmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deghost.presets import Preset
from deghost.runtime.blend import mix
from deghost.training.models.bisenet import BiSeNet, parse_labels
from deghost.training.models.diffcam import DiffCam
from deghost.training.models.eogi_deghosting import Deghosting
from deghost.training.models.maresunet import MAResUNet
from deghost.training.models.psp import PSPEncoder, add_latent_avg
from deghost.training.models.stylegan2 import Generator


def area_downsample(image: Tensor, side: int) -> Tensor:
    """[B,C,H,H] → [B,C,side,side] by averaging H/side × H/side blocks (H a multiple of side)."""
    factor = image.shape[-1] // side
    if factor * side != image.shape[-1]:
        raise ValueError(f"image side {image.shape[-1]} is not a multiple of {side}")
    return image if factor == 1 else F.avg_pool2d(image, factor)


def fuse(image: Tensor, edit: Tensor, mask: Tensor) -> Tensor:
    """F_fused = T·M + I·(1−M), with the mask [B,1,m,m] upsampled (nearest) to the image side."""
    factor = image.shape[-1] // mask.shape[-1]
    if factor > 1:
        mask = F.interpolate(mask, scale_factor=float(factor), mode="nearest")
    return mix(image, edit, mask)


class EncoderGraph(nn.Module):
    """image [B,3,S,S] in [-1,1] → w [B,n_latent,512] = pSp(area-downsample(image)) + latent_avg."""

    def __init__(self, encoder: PSPEncoder, latent_avg: Tensor, preset: Preset):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("latent_avg", latent_avg.detach().float().clone())
        self.encoder_size = preset.encoder_size

    def forward(self, image: Tensor) -> Tensor:
        return add_latent_avg(self.encoder(area_downsample(image, self.encoder_size)), self.latent_avg)


class GeneratorGraph(nn.Module):
    """w [B,n_latent,512] → (image [B,3,S,S], image256 [B,3,m,m] = image area-pooled to the mask size)."""

    def __init__(self, generator: Generator, preset: Preset):
        super().__init__()
        self.generator = generator
        self.mask_size = preset.mask_size

    def forward(self, w: Tensor) -> tuple[Tensor, Tensor]:
        image = self.generator.synthesis(w)
        return image, area_downsample(image, self.mask_size)


class DiffCamGraph(nn.Module):
    """(recon256, edit256 [B,3,m,m], class_index [B] int64) → (mask [B,1,m,m] in [0,1], logits [B,17])."""

    def __init__(self, diffcam: DiffCam):
        super().__init__()
        self.diffcam = diffcam

    def forward(self, recon256: Tensor, edit256: Tensor, class_index: Tensor) -> tuple[Tensor, Tensor]:
        logits, mask = self.diffcam.cam(recon256, edit256, class_index)
        return mask, logits


class _FuseThenSuppress(nn.Module):
    """(image, edit [B,3,S,S], mask [B,1,m,m]) → (fused, output = self.suppress(image, fused))."""

    def forward(self, image: Tensor, edit: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        fused = fuse(image, edit, mask)
        return fused, self.suppress(image, fused)


class SuppressorGraph(_FuseThenSuppress):
    """Fusion, then output = MAResU-Net(concat(image, fused))."""

    def __init__(self, suppressor: MAResUNet):
        super().__init__()
        self.suppressor = suppressor

    def suppress(self, image: Tensor, fused: Tensor) -> Tensor:
        return self.suppressor(torch.cat([image, fused], 1))


class DeghostingGraph(_FuseThenSuppress):
    """Fusion, then output = EOGI(area-downsample(fused)), the baseline."""

    def __init__(self, deghosting: Deghosting):
        super().__init__()
        self.deghosting = deghosting

    def suppress(self, image: Tensor, fused: Tensor) -> Tensor:
        return self.deghosting(area_downsample(fused, self.deghosting.in_size))


class FaceParserGraph(nn.Module):
    """image [B,3,P,P] RGB in [-1,1] → labels [B,P,P] int64 (BiSeNet classes, argmax inside)."""

    def __init__(self, parser: BiSeNet):
        super().__init__()
        self.parser = parser

    def forward(self, image: Tensor) -> Tensor:
        return parse_labels(self.parser, image)

"""pSp encoder: GradualStyleEncoder on an IR-SE-50 trunk (eladrich/pixel2style2pixel).

Key names equal the `encoder.*` entries of `psp_ffhq_encode.pt` without the prefix. The IR-SE trunk
gives three feature maps (strides 4, 8, 16 of the 256² input); a small FPN merges them, and one
`GradualStyleBlock` per W+ layer reduces its pyramid level to a 512-d code:

    coarse styles 0-2 ← c3 (16²), middle 3-6 ← p2 (32²), fine 7.. ← p1 (64²)

Exportable formulation: the SE module's adaptive average pool is a mean over (H, W); the FPN
upsampling takes its size from the lateral tensor's shape.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deghost.presets import Preset

from .stylegan2 import EqualLinear

# IR-SE units per stage (channels width·(1, 2, 4, 8); each stage starts with a stride-2 unit).
STAGE_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
STAGE_WIDTHS = (1, 2, 4, 8)
OFFICIAL_WIDTH = 64  # pSp's and ArcFace's IR-SE-50: stages of 64, 128, 256, 512 channels
INPUT_SIZE = 256  # the style blocks' fixed stride-2 convs bring 16/32/64² maps to 1² only from 256²
STYLE_DIM = 512
# Official split of the W+ layers over the pyramid (GradualStyleEncoder.coarse_ind / middle_ind).
COARSE_END = 3
MIDDLE_END = 7
LEVEL_SIZES = (16, 32, 64)  # side of c3, p2, p1 for a 256² input


class SEModule(nn.Module):
    """Squeeze-and-excitation: x · sigmoid(fc2(relu(fc1(mean_hw(x))))).

    channels: feature channels; reduction: bottleneck ratio of the two 1×1 convolutions (16 in pSp).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # mean over (H, W) == AdaptiveAvgPool2d(1), without a traced output size
        squeeze = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(squeeze))))


class BottleneckIR(nn.Module):
    """IR(-SE) residual unit: BN → conv3×3 → PReLU → conv3×3 (stride) → BN [→ SE], plus a shortcut.

    in_channels, depth: input and output channels; stride: 1 or 2 (on the second conv);
    use_se: append the SE module (mode "ir_se").
    """

    def __init__(self, in_channels: int, depth: int, stride: int, use_se: bool):
        super().__init__()
        if in_channels == depth:
            # the official MaxPool2d(1, stride): strided subsampling, no parameters
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if use_se:
            layers.append(SEModule(depth))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def ir_body(num_layers: int, mode: str, width: int = OFFICIAL_WIDTH) -> nn.Sequential:
    """The IR / IR-SE trunk pSp's encoder and ArcFace share: STAGE_UNITS[num_layers] bottlenecks per
    stage, the first of each stage with stride 2 (official `get_blocks`); stage channels width·(1, 2, 4, 8)."""
    units: list[nn.Module] = []
    channels_in = width
    for depth, count in zip((width * k for k in STAGE_WIDTHS), STAGE_UNITS[num_layers], strict=True):
        for index in range(count):
            units.append(BottleneckIR(channels_in, depth, 2 if index == 0 else 1, mode == "ir_se"))
            channels_in = depth
    return nn.Sequential(*units)


class GradualStyleBlock(nn.Module):
    """One W+ code from one pyramid level: log2(spatial) stride-2 convs (each + LeakyReLU 0.01) → 1².

    in_channels, out_channels: conv channels (512 in pSp); spatial: side of the input map (power of 2);
    code_dim: the code's size (default out_channels, as pSp; a narrower encoder still gives 512-d codes).
    x: [B,in_channels,spatial,spatial] → [B,code_dim].
    """

    def __init__(self, in_channels: int, out_channels: int, spatial: int, code_dim: int | None = None):
        super().__init__()
        n_convs = int(math.log2(spatial))
        assert 2**n_convs == spatial, f"spatial must be a power of 2, got {spatial}"
        layers: list[nn.Module] = []
        for index in range(n_convs):
            channels_in = in_channels if index == 0 else out_channels
            layers += [nn.Conv2d(channels_in, out_channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, code_dim or out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.convs(x).flatten(1))


def upsample_add(top: Tensor, lateral: Tensor) -> Tensor:
    """FPN merge: `top` resized bilinearly (align_corners=True, as pSp) to `lateral`'s size, + `lateral`."""
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


def style_level(index: int) -> int:
    """Pyramid level feeding W+ layer `index`: 0 = c3 (coarse), 1 = p2 (middle), 2 = p1 (fine)."""
    return 0 if index < COARSE_END else 1 if index < MIDDLE_END else 2


class PSPEncoder(nn.Module):
    """pSp GradualStyleEncoder.

    num_layers: IR trunk depth, 50 (pSp's checkpoints), 100 or 152;
    mode: "ir_se" (with squeeze-excitation, pSp's checkpoints) or "ir";
    n_styles: W+ layers of the target generator, 2·log2(size) − 2 (18 for 1024², 14 for 256²);
    input_nc: input channels;
    width: the trunk's first-stage channels (64 in pSp's checkpoints; the stages have width·(1, 2, 4, 8), the
    FPN and style blocks width·8; the codes stay 512-d). A narrower encoder keeps every layer and key name.
    """

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", n_styles: int = 18, input_nc: int = 3,
                 width: int = OFFICIAL_WIDTH):
        super().__init__()
        assert num_layers in STAGE_UNITS, f"num_layers must be one of {sorted(STAGE_UNITS)}, got {num_layers}"
        assert mode in ("ir", "ir_se"), f"mode must be 'ir' or 'ir_se', got {mode!r}"
        assert n_styles > MIDDLE_END, f"n_styles must exceed {MIDDLE_END} (coarse + middle), got {n_styles}"
        self.input_nc = input_nc
        self.n_styles = n_styles
        self.input_layer = nn.Sequential(
            nn.Conv2d(input_nc, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.PReLU(width)
        )
        self.body = ir_body(num_layers, mode, width)
        # FPN taps at the ends of stages 2, 3, 4 (units 6, 20, 23 for IR-50, as the official indices)
        self.taps = tuple(end - 1 for end in itertools.accumulate(STAGE_UNITS[num_layers]))[1:]
        top = width * STAGE_WIDTHS[-1]  # FPN and style-block channels (512 in pSp)
        self.styles = nn.ModuleList(
            GradualStyleBlock(top, top, LEVEL_SIZES[style_level(i)], STYLE_DIM) for i in range(n_styles)
        )
        self.latlayer1 = nn.Conv2d(width * STAGE_WIDTHS[2], top, 1)
        self.latlayer2 = nn.Conv2d(width * STAGE_WIDTHS[1], top, 1)

    def forward(self, image: Tensor) -> Tensor:
        """image: [B,input_nc,256,256] float32 in [-1,1] → raw codes [B,n_styles,512]; w = codes + latent_avg.

        Only 256² works: each style block has a fixed number of stride-2 convs that must end at 1²
        (the official `view(-1, 512)` silently mixes samples otherwise).
        """
        assert image.ndim == 4 and tuple(image.shape[1:]) == (self.input_nc, INPUT_SIZE, INPUT_SIZE), (
            f"pSp encoder input must be [B,{self.input_nc},{INPUT_SIZE},{INPUT_SIZE}] "
            f"(area-downsample the image first), got {list(image.shape)}"
        )
        x = self.input_layer(image)
        taps = []
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in self.taps:
                taps.append(x)
        c1, c2, c3 = taps
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
        levels = (c3, p2, p1)
        return torch.stack([style(levels[style_level(i)]) for i, style in enumerate(self.styles)], dim=1)


def add_latent_avg(codes: Tensor, latent_avg: Tensor) -> Tensor:
    """W+ latents from raw encoder codes: w = codes + latent_avg (pSp's `start_from_latent_avg`).

    codes: [B,n_styles,512]; latent_avg: [n_styles,512] (the checkpoint's `latent_avg`) → [B,n_styles,512].
    """
    assert codes.ndim == 3 and tuple(latent_avg.shape) == tuple(codes.shape[1:]), (
        f"latent_avg {list(latent_avg.shape)} must match the codes' layers {list(codes.shape[1:])}"
    )
    return codes + latent_avg


def psp_encoder(preset: Preset) -> PSPEncoder:
    """The preset's pSp encoder: IR-SE-50 with one style block per W+ layer, at the preset's width
    (the paper's: psp_ffhq_encode.pt's layout; tiny: the same layers, narrower, so its files stay small)."""
    return PSPEncoder(num_layers=50, mode="ir_se", n_styles=preset.n_latent, width=preset.encoder_width)

"""StyleGAN2 generator and discriminator (config F) with rosinality/stylegan2-pytorch's key names.

`Generator(1024)` loads `stylegan2-ffhq-config-f.pt['g_ema']` and pSp's `decoder.*` strictly;
`Discriminator(1024)` loads its `['d']`; EOGI's mmgen-named generator goes through
`stylegan2_keys.mmgen_to_rosinality` first. The special operations are the exportable ones of
`stylegan2_ops` (shared-weight modulated convolution, FIR filters as depthwise convolutions), and
the synthesis injects the fixed `noises.noise_<i>` buffers, so it is deterministic.

Synthesis data flow (size S, n_latent = 2·log2(S) − 2 W+ codes, each [B,512]):

    input [B,512,4,4] → conv1 (w0, noise 0) → to_rgb1 (w1) = skip at 4²
    stage k = 0 … log2(S) − 3, resolution r = 8·2^k, latent index i = 2k + 1:
        up_conv (w_i, noise i) ×2 → conv (w_i+1, noise i+1) → to_rgb (w_i+2) + upsampled skip
    image = skip [B,3,S,S], raw (no tanh or clamp)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .stylegan2_ops import (
    assert_shape,
    conv_down_blur_pad,
    conv_up_blur_pad,
    depthwise_fir_weight,
    fused_leaky_relu,
    make_fir_kernel,
    minibatch_stddev,
    modulated_conv2d,
    upfirdn2d,
    upsample_pad,
)

BLUR_KERNEL = (1, 3, 3, 1)


MAX_CHANNELS = 512  # the official networks' widest layers


def feature_channels(channel_multiplier: int = 2, max_channels: int = MAX_CHANNELS) -> dict[int, int]:
    """Feature channels per resolution (config F has channel_multiplier 2), capped at `max_channels`
    (512 officially; smaller only for toy-scale training on a CPU, same key names)."""
    channels = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }
    return {side: min(count, max_channels) for side, count in channels.items()}


def _log2_size(size: int, channel_multiplier: int) -> int:
    if size not in feature_channels(channel_multiplier) or size < 8:
        raise ValueError(f"size must be a power of two in [8, 1024], got {size}")
    return int(math.log2(size))


# ---------------------------------------------------------------------------------------------------
# Building blocks (equalized learning rate: weights stored N(0,1)/lr_mul, scaled at run time)


class PixelNorm(nn.Module):
    """x / RMS(x) over the feature axis. z: [B,D] → [B,D]."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate, optionally followed by the fused leaky ReLU.

    Args:
        in_dim, out_dim: feature sizes.
        bias_init: initial bias (1 for the style modulations, so styles start at 1).
        lr_mul: learning-rate multiplier; the weight is stored divided by it (0.01 in the mapping MLP).
        activate: apply `fused_leaky_relu` with the bias instead of adding the bias.
    """

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate (square kernel).

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as nn.Conv2d.
        bias: learn a bias (False where a FusedLeakyReLU holds it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class FusedLeakyReLU(nn.Module):
    """Per-channel bias + leaky ReLU(0.2) × √2. x: [B,C,...]."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class Blur(nn.Module):
    """Fixed FIR filter with asymmetric pads, per channel (`kernel` buffer [K,K]). x: [B,C,H,W].

    Args:
        kernel: 1-D taps of the separable filter.
        pad: (before, after) pads on both axes.
        channels: C, fixed so that the depthwise weight has a constant shape when exported.
        upsample_factor: f > 1 scales the kernel by f² (it follows a stride-f transposed conv).
    """

    def __init__(
        self, kernel: Sequence[float], pad: tuple[int, int], channels: int, upsample_factor: int = 1
    ):
        super().__init__()
        self.register_buffer("kernel", make_fir_kernel(kernel, gain=upsample_factor**2))
        self.pad = pad
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, depthwise_fir_weight(self.kernel, self.channels), pad=self.pad)


class Upsample(nn.Module):
    """FIR upsampling by `factor`. x: [B,C,H,W] → [B,C,f·H,f·W] (the ToRGB skip path, C = 3)."""

    def __init__(self, kernel: Sequence[float], channels: int = 3, factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", make_fir_kernel(kernel, gain=factor**2))
        self.channels = channels
        self.factor = factor
        self.pad = upsample_pad(len(kernel), factor)

    def forward(self, x: Tensor) -> Tensor:
        weight = depthwise_fir_weight(self.kernel, self.channels)
        return upfirdn2d(x, weight, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (weight [1,O,I,k,k] as rosinality stores it).

    Args:
        in_channels, out_channels, kernel_size: of the convolution (odd kernel size).
        style_dim: size of w.
        demodulate: normalise each output channel (False for ToRGB).
        upsample: ×2 with a transposed conv and FIR blur.
        blur_kernel: FIR taps of the blur.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            pad = conv_up_blur_pad(len(blur_kernel), kernel_size)
            self.blur = Blur(blur_kernel, pad, out_channels, upsample_factor=2)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """x: [B,I,H,W]; w: [B,style_dim] → [B,O,H,W] (×2 with upsample)."""
        return modulated_conv2d(
            x,
            self.weight[0] * self.scale,
            self.modulation(w),
            demodulate=self.demodulate,
            up=self.upsample,
            blur=self.blur if self.upsample else None,
        )


class NoiseInjection(nn.Module):
    """x + weight · noise, with a learnt scalar weight. noise: [1 or B,1,H,W], fixed by the caller."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learnt 4×4 input, repeated over the batch: latent [B,...] → [B,C,4,4]."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, latent: Tensor) -> Tensor:
        # repeat, not expand: a view of a parameter made under no_grad breaks autograd hooks
        # such as FlopCounterMode's module tracker.
        return self.input.repeat(latent.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated 3×3 conv → noise → fused leaky ReLU.

    Args:
        in_channels, out_channels, kernel_size, style_dim: of the modulated convolution.
        upsample: double the resolution.
        blur_kernel: FIR taps used when upsampling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        """x: [B,I,H,W]; w: [B,style_dim]; noise: [1,1,H',W'] at the output size → [B,O,H',W']."""
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """Modulated 1×1 conv to RGB (no demodulation) + bias, plus the upsampled running image.

    Args:
        in_channels, style_dim: input features and size of w.
        upsample: whether a previous (half-resolution) skip image is added; False for the 4×4 one.
        blur_kernel: FIR taps of the skip upsampling.
    """

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True, blur_kernel=BLUR_KERNEL):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
        """x: [B,C,H,W]; w: [B,style_dim]; skip: [B,3,H/2,W/2] or None → image [B,3,H,W]."""
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ---------------------------------------------------------------------------------------------------
# Generator


class SynthesisStage(NamedTuple):
    """One resolution step of the synthesis network, with its noises and W+ indices.

    up_conv uses wplus[:, latent_index], conv wplus[:, latent_index + 1], to_rgb wplus[:, latent_index + 2].
    """

    up_conv: StyledConv
    conv: StyledConv
    to_rgb: ToRGB
    noise_up: Tensor
    noise: Tensor
    latent_index: int


class Generator(nn.Module):
    """StyleGAN2 generator: mapping z → w, synthesis W+ → image.

    Args:
        size: output side S, a power of two in [8, 1024].
        style_dim: size of z and w (512).
        n_mlp: layers of the mapping MLP (8).
        channel_multiplier: 2 for config F.
        blur_kernel: FIR taps of all resampling filters.
        lr_mlp: learning-rate multiplier of the mapping MLP (0.01).
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
        lr_mlp: float = 0.01,
        max_channels: int = MAX_CHANNELS,
    ):
        super().__init__()
        self.log_size = _log2_size(size, channel_multiplier)
        self.size = size
        self.style_dim = style_dim
        self.n_latent = 2 * self.log_size - 2  # one W+ code per modulated conv and ToRGB, shared in pairs
        self.num_layers = 2 * (self.log_size - 2) + 1  # StyledConvs, one noise buffer each
        channels = feature_channels(channel_multiplier, max_channels)

        mlp = [EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)]
        self.style = nn.Sequential(PixelNorm(), *mlp)
        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(channels[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            side = 2 ** ((layer + 5) // 2)  # 4, 8, 8, 16, 16, …: conv1, then two per resolution
            self.noises.register_buffer(f"noise_{layer}", torch.randn(1, 1, side, side))
        in_channels = channels[4]
        for log_res in range(3, self.log_size + 1):
            out_channels = channels[2**log_res]
            self.convs.append(StyledConv(in_channels, out_channels, 3, style_dim, True, blur_kernel))
            self.convs.append(StyledConv(out_channels, out_channels, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channels, style_dim, blur_kernel=blur_kernel))
            in_channels = out_channels

    # -- latents ------------------------------------------------------------------------------------

    def _check_code(self, code: Tensor, name: str) -> None:
        assert_shape(code, ("B", self.style_dim), name)

    def mapping(self, z: Tensor) -> Tensor:
        """z: [B,style_dim] ~ N(0,1) → w: [B,style_dim] (PixelNorm + MLP)."""
        self._check_code(z, "z")
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n_samples: int = 4096, generator: torch.Generator | None = None) -> Tensor:
        """w_avg: [1,style_dim], the mean of `mapping` over n_samples random z."""
        device = self.input.input.device
        z = torch.randn(n_samples, self.style_dim, generator=generator, device=device)
        return self.mapping(z).mean(0, keepdim=True)

    @staticmethod
    def truncate(w: Tensor, psi: float, w_avg: Tensor) -> Tensor:
        """Truncation trick w_avg + psi·(w − w_avg); w: [B,D] or [B,L,D]; w_avg broadcastable ([1,D]).

        `lerp` is exact at both ends: psi = 1 returns w and psi = 0 returns w_avg bit for bit.
        """
        return torch.lerp(w_avg.expand_as(w), w, psi)

    def to_wplus(self, w: Tensor) -> Tensor:
        """w: [B,style_dim] → W+ [B,n_latent,style_dim] (the same code for every layer)."""
        self._check_code(w, "w")
        return w[:, None].expand(-1, self.n_latent, -1)

    def style_mix(self, w1: Tensor, w2: Tensor, crossover: int) -> Tensor:
        """W+ [B,n_latent,D] taking layers < crossover from w1 and the others from w2 (w: [B,D])."""
        assert 0 <= crossover <= self.n_latent, f"crossover must be in [0, {self.n_latent}], got {crossover}"
        return torch.cat([self.to_wplus(w1)[:, :crossover], self.to_wplus(w2)[:, crossover:]], 1)

    # -- synthesis ----------------------------------------------------------------------------------

    def noise_buffers(self) -> list[Tensor]:
        """The fixed noises [1,1,r,r] in layer order: conv1's, then two per resolution r = 8 … size."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def stages(self, noises: Sequence[Tensor] | None = None) -> list[SynthesisStage]:
        """The resolution steps 8 … size in order, with their modules, noises (default: the fixed
        buffers) and W+ indices."""
        noises = self.noise_buffers() if noises is None else noises
        return [
            SynthesisStage(
                self.convs[2 * k],
                self.convs[2 * k + 1],
                to_rgb,
                noises[2 * k + 1],
                noises[2 * k + 2],
                2 * k + 1,
            )
            for k, to_rgb in enumerate(self.to_rgbs)
        ]

    def synthesis(self, wplus: Tensor, noises: Sequence[Tensor] | None = None) -> Tensor:
        """wplus: [B,n_latent,style_dim] float32 → image [B,3,size,size], raw (about [-1,1], unclamped).

        noises: one [1 or B,1,r,r] per layer as `noise_buffers` (training draws fresh ones, as
        rosinality's randomize_noise); default: the fixed buffers, deterministic."""
        noises = self.noise_buffers() if noises is None else noises
        assert_shape(wplus, ("B", self.n_latent, self.style_dim), "wplus")
        # Channels-last activations: the CPU convolutions, the depthwise FIR ones above all, run faster
        # (G1024 on 2 cores: ~2.4 s instead of ~3.7 s). Values do not depend on the memory format.
        x = self.input(wplus).contiguous(memory_format=torch.channels_last)
        x = self.conv1(x, wplus[:, 0], noises[0])
        skip = self.to_rgb1(x, wplus[:, 1])
        for stage in self.stages(noises):
            i = stage.latent_index
            x = stage.up_conv(x, wplus[:, i], stage.noise_up)
            x = stage.conv(x, wplus[:, i + 1], stage.noise)
            skip = stage.to_rgb(x, wplus[:, i + 2], skip)
        return skip.contiguous()

    def forward(self, wplus: Tensor) -> Tensor:
        """Same as `synthesis`: wplus [B,n_latent,style_dim] → image [B,3,size,size]."""
        return self.synthesis(wplus)


# ---------------------------------------------------------------------------------------------------
# Discriminator


class ConvLayer(nn.Sequential):
    """[FIR blur →] EqualConv2d [→ FusedLeakyReLU]; with downsample the conv has stride 2, no padding.

    Args:
        in_channels, out_channels, kernel_size: of the convolution.
        downsample: halve the resolution.
        blur_kernel: FIR taps of the anti-alias blur.
        bias: learn a bias (in the activation when there is one).
        activate: end with the fused leaky ReLU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
        bias: bool = True,
        activate: bool = True,
    ):
        layers: list[nn.Module] = []
        if downsample:
            layers.append(Blur(blur_kernel, conv_down_blur_pad(len(blur_kernel), kernel_size), in_channels))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        # With an activation the bias lives in FusedLeakyReLU (rosinality's key layout).
        conv_bias = bias and not activate
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride, padding, conv_bias))
        if activate:
            layers.append(FusedLeakyReLU(out_channels))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual block halving the resolution: (conv3×3 → conv3×3↓ + conv1×1↓) / √2."""

    def __init__(self, in_channels: int, out_channels: int, blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(
            in_channels, out_channels, 1, downsample=True, blur_kernel=blur_kernel, bias=False, activate=False
        )

    def forward(self, x: Tensor) -> Tensor:
        # Dividing by √2 keeps the variance of the sum of two unit-variance branches.
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: image [B,3,S,S] → realness logit [B,1].

    Minibatch-stddev uses groups of min(4, B) interleaved samples (B must be a multiple), so the
    logit of a sample depends on the others in its group, as in the official training.

    Args:
        size: input side S, a power of two in [8, 1024].
        channel_multiplier: 2 for config F.
        blur_kernel: FIR taps of the downsampling filters.
    """

    def __init__(self, size: int, channel_multiplier: int = 2, blur_kernel: Sequence[float] = BLUR_KERNEL,
                 max_channels: int = MAX_CHANNELS):
        super().__init__()
        log_size = _log2_size(size, channel_multiplier)
        channels = feature_channels(channel_multiplier, max_channels)
        self.size = size
        self.stddev_group = 4
        self.stddev_feat = 1
        convs: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        in_channels = channels[size]
        for log_res in range(log_size, 2, -1):
            out_channels = channels[2 ** (log_res - 1)]
            convs.append(ResBlock(in_channels, out_channels, blur_kernel))
            in_channels = out_channels
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(in_channels + self.stddev_feat, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activate=True), EqualLinear(channels[4], 1)
        )

    def forward(self, image: Tensor) -> Tensor:
        """image: [B,3,size,size] float32 in [-1,1] → logits [B,1]."""
        assert_shape(image, ("B", 3, self.size, self.size), "discriminator image")
        # Channels-last activations: faster CPU convolutions (see Generator.synthesis).
        x = self.convs(image.contiguous(memory_format=torch.channels_last))
        x = minibatch_stddev(x, self.stddev_group, self.stddev_feat)
        x = self.final_conv(x)
        return self.final_linear(x.flatten(1))

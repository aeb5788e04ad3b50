"""StyleGAN2's special operations in plain, ONNX-exportable PyTorch (no CUDA extensions).

- FIR resampling (`upfirdn2d`) as fixed depthwise convolutions: a transposed convolution with
  stride `up` for upsampling, a strided convolution for downsampling, `F.pad` and slices for the
  asymmetric pads. Equal to rosinality's `upfirdn2d_native` (tested).
- `modulated_conv2d` in the "scale the activations, one shared convolution, scale by the
  demodulation coefficients" form: no per-sample weights and no `groups=batch`, so one graph serves
  every batch size and TensorRT sees ordinary convolutions. Equal to the grouped form (tested).
- `fused_leaky_relu` and `minibatch_stddev` in plain torch.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEMODULATION_EPS = 1e-8
SQRT2 = math.sqrt(2)


@contextlib.contextmanager
def _quiet_tracer() -> Iterator[None]:
    """Under tracing (ONNX export) sizes are traced values, and making one a Python number warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def static_size(tensor: Tensor, dim: int) -> int:
    """A size that is a constant of the layer (of a weight), as a Python int, quietly under tracing."""
    with _quiet_tracer():
        return int(tensor.shape[dim])


def assert_shape(tensor: Tensor, shape: Sequence[int | str], name: str) -> None:
    """Raise AssertionError unless `tensor` has `shape`; a str entry ("B", "H") matches any size.

    Quiet under tracing; the check still runs on the example input.
    """
    with _quiet_tracer():
        ok = tensor.ndim == len(shape) and all(
            isinstance(want, str) or int(got) == int(want)
            for got, want in zip(tensor.shape, shape, strict=True)
        )
    if not ok:
        expected = ",".join(str(want) if isinstance(want, str) else str(int(want)) for want in shape)
        raise AssertionError(f"{name} must be [{expected}], got {tuple(tensor.shape)}")


def make_fir_kernel(k: Sequence[float] = (1, 3, 3, 1), gain: float = 1.0) -> Tensor:
    """Separable FIR kernel: outer(k, k) normalised to sum 1, times `gain` → [K,K] float32.

    Upsampling by a factor f uses gain f² so that the zeros inserted between samples keep the mean.
    """
    k = torch.as_tensor(k, dtype=torch.float32)
    assert k.ndim == 1 and k.numel() > 0, f"FIR taps must be a non-empty 1-D sequence, got {tuple(k.shape)}"
    kernel = k[None, :] * k[:, None]
    return kernel / kernel.sum() * gain


def depthwise_fir_weight(kernel: Tensor, channels: int) -> Tensor:
    """FIR kernel [K,K] → depthwise convolution weight [C,1,K,K] (a view).

    `channels` is a Python int, not read from the input's shape, so that a traced (ONNX) graph sees
    a constant weight shape, which the exporter requires of convolution weights.
    """
    assert kernel.ndim == 2, f"kernel must be [K,K], got {tuple(kernel.shape)}"
    return kernel.expand(channels, 1, -1, -1)


def _pad_or_crop(x: Tensor, before: int, after: int) -> Tensor:
    """Pad (positive amounts) or crop (negative amounts) both spatial axes of x [B,C,H,W]."""
    if before > 0 or after > 0:  # no Pad node for crops alone
        x = F.pad(x, [max(before, 0), max(after, 0), max(before, 0), max(after, 0)])
    # Crops as constant slices (no shape arithmetic in the graph).
    rows = cols = slice(max(-before, 0), -max(-after, 0) or None)
    return x[:, :, rows, cols]


def upfirdn2d(x: Tensor, weight: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample (zero insertion) → pad → FIR filter → downsample, per channel, as rosinality's upfirdn2d.

    x: [B,C,H,W]; weight: [C,1,K,K] from `depthwise_fir_weight`, applied as a true convolution
    (flipped); pad: (before, after) on both axes, negative values crop.
    Returns [B,C,(H·up + p0 + p1 − K) // down + 1, (W·up + p0 + p1 − K) // down + 1].
    """
    assert_shape(weight, ("C", 1, weight.shape[-1], weight.shape[-1]), "depthwise FIR weight")
    assert_shape(x, ("B", weight.shape[0], "H", "W"), "upfirdn2d input x")
    assert up >= 1 and down >= 1, f"up and down must be >= 1, got up={up}, down={down}"
    channels, size = static_size(weight, 0), static_size(weight, -1)
    pad0, pad1 = pad
    if up == 1:
        # A true convolution is a cross-correlation with the flipped kernel. Equal pads go to the
        # convolution itself: a separate Pad is a full pass over the tensor (ONNX Runtime: ~10 % of the
        # 1024² generator) that the runtimes do not fold into the convolution.
        kernel = weight.flip((2, 3))
        if pad0 == pad1 >= 0:
            return F.conv2d(x, kernel, stride=down, padding=pad0, groups=channels)
        return F.conv2d(_pad_or_crop(x, pad0, pad1), kernel, stride=down, groups=channels)
    # conv_transpose2d(stride=up) scatters each input sample through the kernel: it is the full
    # convolution of the zero-inserted signal, (H−1)·up + K long. upfirdn2d's output starts K−1−p0
    # samples into it and ends up+p1−K samples after its end (negative: before), whatever H is.
    full = F.conv_transpose2d(x, weight, stride=up, groups=channels)
    x = _pad_or_crop(full, pad0 - size + 1, pad1 + up - size)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample_pad(kernel_size: int, factor: int = 2) -> tuple[int, int]:
    """Pads of `upfirdn2d(up=factor)` that keep the output exactly factor × the input (ToRGB skips)."""
    p = kernel_size - factor
    return (p + 1) // 2 + factor - 1, p // 2


def conv_up_blur_pad(fir_size: int, conv_size: int, factor: int = 2) -> tuple[int, int]:
    """Pads of the FIR filter after a stride-`factor` transposed conv, so the output is factor × H."""
    p = (fir_size - factor) - (conv_size - 1)
    return (p + 1) // 2 + factor - 1, p // 2 + 1


def conv_down_blur_pad(fir_size: int, conv_size: int, factor: int = 2) -> tuple[int, int]:
    """Pads of the FIR filter before a stride-`factor` unpadded conv, so the output is H / factor."""
    p = (fir_size - factor) + (conv_size - 1)
    return (p + 1) // 2, p // 2


def fused_leaky_relu(x: Tensor, bias: Tensor, negative_slope: float = 0.2, scale: float = SQRT2) -> Tensor:
    """leaky_relu(x + bias) · scale, bias per channel (axis 1). x: [B,C,...]; bias: [C].

    The √2 gain keeps the activations' second moment through the leaky ReLU (StyleGAN2).
    """
    assert_shape(bias, (x.shape[1],), "fused_leaky_relu bias (x's channel axis)")
    bias = bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x + bias, negative_slope) * scale


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    up: bool = False,
    down: bool = False,
    blur: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """StyleGAN2 modulated convolution, exportable form.

    Per-sample weights w'[b,o,i] = w[o,i]·s[b,i] (and their demodulation) are never built: scaling
    the input channels by s, convolving with the shared w and scaling the output channels by
    d[b,o] = rsqrt(Σ_{i,kh,kw} w[o,i]²·s[b,i]² + 1e-8) gives the same result, because the
    convolution is linear per input channel and d does not depend on the position.

    x: [B,I,H,W]; weight: [O,I,k,k], already scaled (equalized learning rate); styles: [B,I].
    up: stride-2 transposed conv then `blur` → [B,O,2H,2W]; down: `blur` then stride-2 conv →
    [B,O,H/2,W/2]; otherwise a "same" conv → [B,O,H,W]. `blur` is the FIR filter with its pads,
    required when up or down.
    """
    assert_shape(x, ("B", "I", "H", "W"), "modulated_conv2d input x")
    assert_shape(weight, ("O", x.shape[1], "k", "k"), "modulated_conv2d weight")
    assert_shape(styles, (x.shape[0], x.shape[1]), "modulated_conv2d styles")
    assert not (up and down), "modulated_conv2d: choose at most one of up and down"
    assert blur is not None or not (up or down), "modulated_conv2d: up/down need the FIR `blur`"
    x = x * styles[:, :, None, None]
    if up:
        # conv_transpose2d weights are [in, out, k, k].
        x = blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
    elif down:
        x = F.conv2d(blur(x), weight, stride=2)
    else:
        x = F.conv2d(x, weight, padding=static_size(weight, -1) // 2)
    if demodulate:
        # Σ_{i,kh,kw} w²·s² = s² @ (Σ_{kh,kw} w²)ᵀ: [B,I] @ [I,O]. Keep this sum in FP32 under FP16.
        coefficients = (styles.square() @ weight.square().sum((2, 3)).t() + DEMODULATION_EPS).rsqrt()
        x = x * coefficients[:, :, None, None]
    return x


def minibatch_stddev(x: Tensor, group_size: int = 4, num_features: int = 1) -> Tensor:
    """Append the minibatch standard deviation as `num_features` channels (rosinality's grouping).

    x: [N,C,H,W] → [N,C+F,H,W]. Groups of G = min(group_size, N) samples are interleaved: sample n
    belongs to group n mod (N/G), so N must be a multiple of G. Each group's std over its members,
    averaged over C/F channels and positions, is broadcast to its members.
    """
    batch, channels, height, width = x.shape
    group = min(batch, group_size)
    assert batch % group == 0, f"minibatch-stddev: batch {batch} must be a multiple of the group size {group}"
    assert channels % num_features == 0, f"channels {channels} not a multiple of num_features {num_features}"
    y = x.reshape(group, -1, num_features, channels // num_features, height, width)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # [N/G, F, C/F, H, W]
    y = y.mean((2, 3, 4)).reshape(-1, num_features, 1, 1)  # [N/G, F, 1, 1]
    y = y.repeat(group, 1, height, width)  # sample n ← group n mod (N/G)
    return torch.cat([x, y], 1)

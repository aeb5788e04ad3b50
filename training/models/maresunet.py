"""MAResU-Net: the ghosting suppressor, with lironui/MAResU-Net's state_dict key names.

A ResNet-34 U-Net (LinkNet decoder) whose skip connections pass through multi-stage attention:
linear-complexity position attention (PAM) plus channel attention (CAM). Here it maps
cat(I, F_fused) (6 channels) to the de-ghosted image (3 channels, linear output).

Two bugs of the original are not reproduced (outputs on square inputs are identical):
- PAM/CAM unpacked `width, height = x.shape[2:]` and reshaped with `view(b, c, height, width)`,
  which crashes on non-square inputs; here the layout is always [B,C,H,W].
- PAM's `permute(-3, -1, -2)` (rejected by ONNX Runtime) is a plain transpose of axes 1 and 2.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .resnet import BasicBlock, make_layer

PAPER_WIDTH = 64  # ResNet-34's base width: the paper's network, 26,285,115 parameters
RESNET34_BLOCKS = (3, 4, 6, 3)

# Five stride-2 stages (stem conv, max-pool, encoder2..4) must divide the input exactly, or the
# decoder's upsampled maps no longer line up with the skip connections.
SIZE_MULTIPLE = 32


def l2_normalize_channels(x: Tensor) -> Tensor:
    """x: [B,C,N] → each position's C-vector scaled to unit L2 norm (explicit ops: exports as-is)."""
    return x / x.square().sum(1, keepdim=True).sqrt()


class PositionAttention(nn.Module):
    """PAM: linear attention over all H·W positions, O(N) instead of O(N²).

    softmax(q·k) is replaced by its first-order Taylor form 1 + q̂·k̂ (q̂, k̂ unit vectors), so
    out_n = Σ_m (1 + q̂_n·k̂_m) v_m / Σ_m (1 + q̂_n·k̂_m) and both sums factor through K·Vᵀ.

    Args:
        channels: C of the input; queries and keys have C // scale channels.
        scale: channel reduction of queries and keys.
        eps: added to Σ_m k̂_m in the denominator, as the original does.
    """

    def __init__(self, channels: int, scale: int = 8, eps: float = 1e-6):
        super().__init__()
        # γ = 0 at init: the block starts as the identity and learns how much attention to add.
        self.gamma = nn.Parameter(torch.zeros(1))
        self.eps = eps
        self.query_conv = nn.Conv2d(channels, channels // scale, 1)
        self.key_conv = nn.Conv2d(channels, channels // scale, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B,C,H,W] → [B,C,H,W]."""
        b, c, h, w = x.shape
        query = l2_normalize_channels(self.query_conv(x).flatten(2))  # [B,c,N]
        key = l2_normalize_channels(self.key_conv(x).flatten(2))  # [B,c,N]
        value = self.value_conv(x).flatten(2)  # [B,C,N]
        denominator = h * w + (query * (key.sum(2, keepdim=True) + self.eps)).sum(1)  # [B,N]
        key_value = key.bmm(value.transpose(1, 2))  # [B,c,C]
        numerator = value.sum(2, keepdim=True) + key_value.transpose(1, 2).bmm(query)  # [B,C,N]
        attended = (numerator / denominator.unsqueeze(1)).view(b, c, h, w)
        return x + self.gamma * attended


class ChannelAttention(nn.Module):
    """CAM (DANet): each channel becomes a mix of all channels, weighted by their Gram matrix."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        """x: [B,C,H,W] → [B,C,H,W]."""
        flat = x.flatten(2)  # [B,C,N]
        energy = flat.bmm(flat.transpose(1, 2))  # [B,C,C]
        # DANet's choice: softmax of (row max − energy) favours the LEAST similar channels. The
        # energy is unscaled, so the weights are close to one-hot.
        attention = (energy.amax(-1, keepdim=True) - energy).softmax(-1)
        return x + self.gamma * attention.bmm(flat).view_as(x)


def conv_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Conv (with bias, 'same' padding) + ReLU; a Sequential so the keys read `<name>.0.weight`."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.ReLU(inplace=True))


def dropout_conv_relu(channels: int) -> nn.Sequential:
    """Dropout2d(0.1) (identity at eval) → 1×1 conv + ReLU; keys `<name>.1.0.*` as in the original."""
    return nn.Sequential(nn.Dropout2d(0.1), conv_relu(channels, channels, 1))


class AttentionBlock(nn.Module):
    """PAM_CAM_Layer: 3×3 conv, then PAM and CAM branches summed, then a 1×1 conv.

    Args:
        channels: C of input and output.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv_relu(channels, channels, 3)
        self.PAM = PositionAttention(channels)
        self.CAM = ChannelAttention()
        self.conv2P = dropout_conv_relu(channels)
        self.conv2C = dropout_conv_relu(channels)
        self.conv3 = dropout_conv_relu(channels)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B,C,H,W] → [B,C,H,W]."""
        x = self.conv1(x)
        return self.conv3(self.conv2P(self.PAM(x)) + self.conv2C(self.CAM(x)))


class DecoderBlock(nn.Module):
    """LinkNet decoder: 1×1 (C → C/4) → 3×3 transposed conv, stride 2 → 1×1 (C/4 → out), BN+ReLU each.

    Args:
        in_channels: C of the input.
        out_channels: channels of the output, at twice the input's resolution.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = in_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.norm1 = nn.BatchNorm2d(mid)
        self.deconv2 = nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1)
        self.norm3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B,C,H,W] → [B,out_channels,2H,2W]."""
        x = self.relu(self.norm1(self.conv1(x)))
        x = self.relu(self.norm2(self.deconv2(x)))
        return self.relu(self.norm3(self.conv3(x)))


class MAResUNet(nn.Module):
    """The suppressor: cat(I, F_fused) → de-ghosted image.

    Args:
        in_channels: input channels; 6 = image I and fused edit F_fused, concatenated.
        out_channels: output channels; 3 = RGB.
        width: base width of the ResNet-34 encoder (stages width, 2·, 4·, 8·width); 64 is the paper's
            network, smaller widths keep the same blocks and key names (CPU tests, the learning check).
    """

    def __init__(self, in_channels: int = 6, out_channels: int = 3, width: int = PAPER_WIDTH):
        super().__init__()
        self.in_channels = in_channels
        self.width = width
        widths = [width, 2 * width, 4 * width, 8 * width]
        # torchvision's ResNet-34 trunk under the official names (firstconv … encoder4); the stem conv
        # has a bias, as the official model's replacement of torchvision's (its input is not RGB).
        self.firstconv = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=True)
        self.firstbn = nn.BatchNorm2d(widths[0])
        self.firstrelu = nn.ReLU(inplace=True)
        self.firstmaxpool = nn.MaxPool2d(3, 2, 1)
        channels = widths[0]
        for index, (stage_width, blocks) in enumerate(zip(widths, RESNET34_BLOCKS, strict=True)):
            setattr(self, f"encoder{index + 1}", make_layer(BasicBlock, channels, stage_width, blocks,
                                                             stride=1 if index == 0 else 2))
            channels = stage_width

        self.attention4 = AttentionBlock(widths[3])
        self.attention3 = AttentionBlock(widths[2])
        self.attention2 = AttentionBlock(widths[1])
        self.attention1 = AttentionBlock(widths[0])

        self.decoder4 = DecoderBlock(widths[3], widths[2])
        self.decoder3 = DecoderBlock(widths[2], widths[1])
        self.decoder2 = DecoderBlock(widths[1], widths[0])
        self.decoder1 = DecoderBlock(widths[0], widths[0])

        self.finaldeconv1 = nn.ConvTranspose2d(widths[0], 32, 4, 2, 1)
        self.finalconv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.finalconv3 = nn.Conv2d(32, out_channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B,in_channels,H,W] float32 in [-1,1], H and W multiples of 32 → [B,out_channels,H,W] linear."""
        assert x.ndim == 4 and x.shape[1] == self.in_channels, (
            f"MAResU-Net expects [B,{self.in_channels},H,W], got {list(x.shape)}"
        )
        height, width = x.shape[2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(
                f"MAResU-Net needs H and W divisible by {SIZE_MULTIPLE}, got {height}x{width}; "
                f"pad or resize the input to e.g. {_round_up(height)}x{_round_up(width)}"
            )
        e1 = self.encoder1(self.firstmaxpool(self.firstrelu(self.firstbn(self.firstconv(x)))))
        e2 = self.encoder2(e1)
        e3 = self.encoder3(e2)
        e4 = self.attention4(self.encoder4(e3))

        d4 = self.decoder4(e4) + self.attention3(e3)
        d3 = self.decoder3(d4) + self.attention2(e2)
        d2 = self.decoder2(d3) + self.attention1(e1)
        d1 = self.decoder1(d2)

        out = self.relu(self.finaldeconv1(d1))
        out = self.relu(self.finalconv2(out))
        return self.finalconv3(out)


def _round_up(side: int) -> int:
    return -(-side // SIZE_MULTIPLE) * SIZE_MULTIPLE

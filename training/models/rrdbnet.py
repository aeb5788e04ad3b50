"""RRDBNet (ESRGAN's Residual-in-Residual Dense Block trunk) with mmedit's state_dict key names.

This is the variant EOGI's Deghosting uses as the first stage of its GLEAN encoder: it keeps the
input resolution and ends in a channel-expanding `conv_up` + LeakyReLU instead of ESRGAN's
upsampling head. Keys: `conv_first`, `body.<i>.rdb<1..3>.conv<1..5>`, `conv_body`, `conv_up`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ESRGAN scales every residual branch by 0.2 so that 23 x 3 stacked blocks stay near identity.
RESIDUAL_SCALE = 0.2
LEAKY_SLOPE = 0.2


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3×3 convolutions with a scaled residual. x: [B,C,H,W] → [B,C,H,W].

    Args:
        mid_channels: C, the channels of the block's input and output.
        growth_channels: channels each of the first four convolutions adds to the dense stack.
    """

    def __init__(self, mid_channels: int = 64, growth_channels: int = 32):
        super().__init__()
        for i in range(5):
            out_channels = mid_channels if i == 4 else growth_channels
            self.add_module(
                f"conv{i + 1}", nn.Conv2d(mid_channels + i * growth_channels, out_channels, 3, 1, 1)
            )

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), LEAKY_SLOPE))
        return self.conv5(torch.cat(features, 1)) * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Three ResidualDenseBlocks inside one more scaled residual. x: [B,C,H,W] → [B,C,H,W].

    Args:
        mid_channels: C, the channels of the block's input and output.
        growth_channels: growth of each dense block.
    """

    def __init__(self, mid_channels: int, growth_channels: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(mid_channels, growth_channels)
        self.rdb2 = ResidualDenseBlock(mid_channels, growth_channels)
        self.rdb3 = ResidualDenseBlock(mid_channels, growth_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """RRDB trunk at constant resolution. x: [B,in_channels,H,W] → [B,out_channels,H,W] (after LeakyReLU).

    Args:
        in_channels: channels of the input image.
        mid_channels: width of the trunk.
        out_channels: channels produced by the final `conv_up`.
        num_blocks: number of RRDBs in `body`.
        growth_channels: growth of each dense block.
    """

    def __init__(
        self,
        in_channels: int = 3,
        mid_channels: int = 64,
        out_channels: int = 256,
        num_blocks: int = 23,
        growth_channels: int = 32,
    ):
        super().__init__()
        self.conv_first = nn.Conv2d(in_channels, mid_channels, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(mid_channels, growth_channels) for _ in range(num_blocks)))
        self.conv_body = nn.Conv2d(mid_channels, mid_channels, 3, 1, 1)
        self.conv_up = nn.Conv2d(mid_channels, out_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        return F.leaky_relu(self.conv_up(feat), LEAKY_SLOPE)

"""LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018, richzhang/PerceptualSimilarity).

distance(x, y) = Σ_l mean_{h,w} ( w_l · (f̂_l(x) − f̂_l(y))² ), where f̂_l are the five AlexNet ReLU
activations of the scaled inputs, each normalised to unit length over channels (eps 1e-10), and
w_l ≥ 0 are the learned 1×1 "lin" weights of v0.1 (`alex.pth`).

Keys: `net.features.*` (torchvision `alexnet-owt-7be5be79.pth`) and `lin{0..4}.model.1.weight`
(`alex.pth`); the scaling constants are fixed, not part of the state_dict.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .alexnet import TAP_CHANNELS, AlexNetFeatures

# v0.1 input scaling: (x − shift) / scale maps [-1,1] inputs to ImageNet statistics.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_NORMALIZE_EPS = 1e-10


class LinearHead(nn.Module):
    """A 1×1 conv C → 1 without bias: the per-channel weights of one layer's squared difference."""

    def __init__(self, channels: int):
        super().__init__()
        # Index 0 held a Dropout in the official model (training only); the slot keeps the key `model.1.weight`.
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def normalize_channels(features: Tensor, eps: float = _NORMALIZE_EPS) -> Tensor:
    """[B,C,H,W] → each (h, w) vector divided by its L2 norm over C (+ eps, so zeros stay zeros)."""
    return features / (torch.sqrt(torch.sum(features**2, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """x, y: [B,3,H,W] float32 in [-1,1], H, W ≥ 31 → distance [B] (0 for identical images)."""

    def __init__(self):
        super().__init__()
        self.net = AlexNetFeatures()
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (LinearHead(c) for c in TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS compares images of the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
        heads = (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)
        # One backbone pass over both images: [2B,3,H,W] → taps, each split back into x and y halves.
        taps = self.net((torch.cat([x, y]) - self.shift) / self.scale)
        distance = x.new_zeros(x.shape[0])
        for head, features in zip(heads, taps, strict=True):
            fx, fy = normalize_channels(features).chunk(2)
            distance = distance + head((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return distance

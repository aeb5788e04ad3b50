"""AlexNet convolutional features with torchvision's `features.<i>.*` keys (the LPIPS backbone).

torchvision's `features`: conv 0 (3→64, 11×11 s4 p2), ReLU 1, max-pool 2, conv 3 (64→192, 5×5 p2),
ReLU 4, max-pool 5, conv 6 (192→384, 3×3 p1), ReLU 7, conv 8 (384→256), ReLU 9, conv 10 (256→256),
ReLU 11, max-pool 12. LPIPS taps the five ReLUs (its slices end at 1, 4, 7, 9 and 11), so the
final max-pool and the classifier are not built here.
"""

from __future__ import annotations

from torch import Tensor, nn

# Index in `features` of the ReLU after each conv: LPIPS's relu1 … relu5.
TAP_INDEX = (1, 4, 7, 9, 11)
TAP_CHANNELS = (64, 192, 384, 256, 256)
# Smallest side whose relu2 still feeds the 3×3 max-pool before conv3 (conv1: 31 → 7, pool: 7 → 3).
MIN_SIDE = 31


def _features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    )


class AlexNetFeatures(nn.Module):
    """x: [B,3,H,W], H, W ≥ 31, ImageNet-scaled → [relu1 … relu5], channels 64, 192, 384, 256, 256."""

    def __init__(self):
        super().__init__()
        self.features = _features()

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[2:]) < MIN_SIDE:
            raise ValueError(f"AlexNetFeatures takes [B,3,H,W] with H, W ≥ {MIN_SIDE}; got {tuple(x.shape)}")
        taps = []
        for index, layer in enumerate(self.features):
            # Taps are taken after the in-place ReLUs, so the next conv never overwrites them.
            x = layer(x)
            if index in TAP_INDEX:
                taps.append(x)
        return taps

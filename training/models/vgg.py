"""VGG-16 convolutional features with torchvision's `features.<i>.*` keys (perceptual loss).

torchvision numbering: conv layers at 0,2,5,7,10,12,14,17,19,21,24,26,28 (each followed by ReLU),
max-pools at 4,9,16,23,30. conv2_2 = after ReLU 8, conv3_2 = after ReLU 13 ... see `LAYER_INDEX`.
"""

from __future__ import annotations

from torch import Tensor, nn

# Channels per conv, "M" = 2×2 max-pool: configuration "D" of the VGG paper.
VGG16_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

# Output index in `features` (after the ReLU of the named conv, or after the pool).
LAYER_INDEX = {
    "conv1_2": 3, "conv2_2": 8, "conv3_2": 13, "conv3_3": 15, "conv4_3": 22, "conv5_3": 29, "pool5": 30,
}


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


class VGG16Features(nn.Module):
    """x: [B,3,H,W] ImageNet-normalised → {layer name: activation} for the requested layers."""

    def __init__(self, layers: tuple[str, ...] = ("conv2_2", "conv3_2", "conv4_3", "pool5")):
        super().__init__()
        unknown = set(layers) - set(LAYER_INDEX)
        if unknown:
            raise ValueError(f"unknown VGG-16 layers {sorted(unknown)}; choose from {sorted(LAYER_INDEX)}")
        self.layers = tuple(layers)
        self.features = _features()[: max(LAYER_INDEX[name] for name in layers) + 1]
        self._name_at = {LAYER_INDEX[name]: name for name in layers}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        taps = {}
        for index, layer in enumerate(self.features):
            # In-place ReLUs would overwrite a tapped conv output; taps are taken after them.
            x = layer(x)
            if index in self._name_at:
                taps[self._name_at[index]] = x
        return taps

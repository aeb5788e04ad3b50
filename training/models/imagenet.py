"""ImageNet normalisation, the input convention of the torchvision-era networks (VGG-16, BiSeNet's ResNet)."""

from __future__ import annotations

from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(image: Tensor, value_range: tuple[float, float]) -> Tensor:
    """RGB [B,3,H,W] with values in `value_range` (e.g. (-1, 1) for deghost's images, (0, 1)) →
    (x01 − mean) / std per channel, where x01 is the image mapped linearly onto [0, 1].

    The range is explicit because the callers hold images in different ranges, and a wrong guess
    shifts every feature without any error."""
    low, high = value_range
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((image - low) / (high - low) - mean) / std

"""EOGI's Diff-CAM: the editing-region mask, with HaoruiSong622/Editing-Out-of-Domain's key names.

A ResNet-101 split inside layer3: `shared` (conv1 … layer2 + layer3 blocks 0–9) embeds the
reconstruction I' and the edit T, `classifier` (layer3 blocks 10–22, layer4) and `fc` classify
the attribute from the feature difference. The mask is the Grad-CAM of the chosen attribute on
layer4, computed here in closed form so the whole graph runs without autograd (ONNX/TensorRT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import resnet101

# layer3 block where the official model cuts ResNet-101 into `shared` and `classifier`.
LAYER3_SPLIT = 10


class DiffCam(nn.Module):
    """Attribute classifier on shared(T) − shared(I'), and its class activation map.

    Args:
        n_classes: attributes the fc layer scores (17 for the public EOGI weights).
    """

    def __init__(self, n_classes: int = 17):
        super().__init__()
        self.n_classes = n_classes
        resnet = resnet101(3)
        layer3 = list(resnet.layer3)
        self.shared = nn.Sequential(
            resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2,
            *layer3[:LAYER3_SPLIT],
        )
        self.classifier = nn.Sequential(*layer3[LAYER3_SPLIT:], resnet.layer4)
        self.fc = nn.Linear(resnet.out_channels, n_classes)

    def features(self, recon: Tensor, edit: Tensor) -> Tensor:
        """recon I', edit T: [B,3,H,W] float32 in [-1,1] → layer4 features A [B,2048,H/32,W/32]."""
        assert recon.ndim == 4 and recon.shape[1] == 3, f"recon must be [B,3,H,W], got {list(recon.shape)}"
        assert edit.shape == recon.shape, (
            f"edit and recon must have the same shape, got {list(edit.shape)} and {list(recon.shape)}"
        )
        # The order matters: the official weights were trained on shared(T) − shared(I').
        return self.classifier(self.shared(edit) - self.shared(recon))

    def logits(self, features: Tensor) -> Tensor:
        """features A: [B,2048,h,w] → logits [B,n_classes] (global average pool + fc)."""
        return self.fc(features.mean((2, 3)))

    def raw_cam(self, features: Tensor, class_index: int | Tensor) -> Tensor:
        """features A: [B,2048,h,w], class c → Grad-CAM map before ReLU, [B,h,w].

        CAM == Grad-CAM here: GAP + linear make ∂y_c/∂A_k = fc.weight[c,k] / (h·w) at every
        position, so the Grad-CAM weights are that constant and need no backward pass.
        `class_index` is an int, or a LongTensor [B] giving each sample its own class.
        """
        batch, _, height, width = features.shape
        if isinstance(class_index, int):
            assert 0 <= class_index < self.n_classes, (
                f"class_index must be in [0, {self.n_classes}), got {class_index}"
            )
            class_index = torch.full((batch,), class_index, dtype=torch.long, device=features.device)
        assert class_index.shape == (batch,), (
            f"class_index must be an int or a LongTensor [{batch}], got shape {list(class_index.shape)}"
        )
        weights = self.fc.weight.index_select(0, class_index) / (height * width)  # [B,2048]
        return (weights[:, :, None, None] * features).sum(1)

    def forward(self, recon: Tensor, edit: Tensor) -> Tensor:
        """recon I', edit T: [B,3,256,256] float32 in [-1,1] → logits [B,n_classes]."""
        return self.logits(self.features(recon, edit))

    def cam(self, recon: Tensor, edit: Tensor, class_index: int | Tensor) -> tuple[Tensor, Tensor]:
        """recon I', edit T: [B,3,256,256] float32 in [-1,1]; class c (int or LongTensor [B])
        → (logits [B,n_classes], mask [B,1,256,256] in [0,1], the input's size)."""
        features = self.features(recon, edit)
        mask = cam_to_mask(self.raw_cam(features, class_index), recon.shape[2:])
        return self.logits(features), mask


def cam_to_mask(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """raw map [B,h,w] → ReLU, bilinear to `size` (H, W), min-max per image → mask [B,1,H,W] in [0,1].

    The official code divides by the max without a guard (NaN for an all-zero map); here a map
    with nothing above its minimum becomes all zeros.
    """
    cam = F.interpolate(raw.relu().unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
    shifted = cam - cam.amin((2, 3), keepdim=True)
    peak = shifted.amax((2, 3), keepdim=True)
    return shifted / torch.where(peak > 0, peak, torch.ones_like(peak))

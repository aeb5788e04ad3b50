"""BiSeNet face parser (zllrunning/face-parsing.PyTorch), 19 CelebAMask-HQ classes.

Key names equal the official `79999_iter.pth`. The context path is a torchvision-layout ResNet-18
(`cp.resnet.*`); its stride-8 features stand in for the spatial path, which the official model drops.
Three heads: the main one on the fused stride-8 features (`conv_out`) and two auxiliary ones
(`conv_out16` on the stride-8 context features, `conv_out32` on the stride-16 ones).

Exportable formulation: global average pools are means over (H, W), the nearest upsampling of a
1×1 map is a broadcast, and every resize takes its size from a tensor's shape. Any input size works
(non-square included); the official bilinear `align_corners=True` and nearest modes are kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .imagenet import imagenet_normalize
from .resnet import resnet18


class ConvBNReLU(nn.Module):
    """conv (no bias) → BatchNorm → ReLU. kernel_size, stride, padding: those of the convolution."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class AttentionRefinementModule(nn.Module):
    """ConvBNReLU, then a channel gate sigmoid(BN(conv1×1(mean_hw))) multiplied in."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)
        self.conv_atten = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))


class ContextPath(nn.Module):
    """ResNet-18 with attention refinement on its stride-16/32 outputs and a global-context term.

    x: [B,3,H,W] → (feat8 [B,128,H/8,W/8] ResNet layer2, context8 [B,128,H/8,W/8],
    context16 [B,128,H/16,W/16]); sizes rounded up by the strided convolutions.
    """

    def __init__(self):
        super().__init__()
        self.resnet = resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel_size=1, padding=0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        resnet = self.resnet
        feat8 = resnet.layer2(resnet.layer1(resnet.stem(x)))
        feat16 = resnet.layer3(feat8)
        feat32 = resnet.layer4(feat16)
        # the official nearest upsampling of the 1×1 global context is this broadcast
        global_context = self.conv_avg(feat32.mean((2, 3), keepdim=True))
        sum32 = self.arm32(feat32) + global_context
        context16 = self.conv_head32(F.interpolate(sum32, size=feat16.shape[-2:], mode="nearest"))
        sum16 = self.arm16(feat16) + context16
        context8 = self.conv_head16(F.interpolate(sum16, size=feat8.shape[-2:], mode="nearest"))
        return feat8, context8, context16


class FeatureFusionModule(nn.Module):
    """Concatenate two maps, ConvBNReLU 1×1, then add a squeeze-excitation-gated copy (ratio 4)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, kernel_size=1, padding=0)
        self.conv1 = nn.Conv2d(out_channels, out_channels // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels // 4, out_channels, 1, bias=False)

    def forward(self, spatial: Tensor, context: Tensor) -> Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * gate + feat


class BiSeNetOutput(nn.Module):
    """Segmentation head: ConvBNReLU 3×3 (in → mid channels) → conv1×1 to n_classes logits (no bias)."""

    def __init__(self, in_channels: int, mid_channels: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels)
        self.conv_out = nn.Conv2d(mid_channels, n_classes, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.conv(x))


def upsample_to(logits: Tensor, image: Tensor) -> Tensor:
    """Resize logits to the image's H×W, bilinear with align_corners=True as the official."""
    return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=True)


class BiSeNet(nn.Module):
    """BiSeNet face parser. n_classes: output classes (19 for the official CelebAMask-HQ weights)."""

    def __init__(self, n_classes: int = 19):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def head_logits(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: [B,3,H,W] ImageNet-normalised → logits before upsampling:
        (main [B,n,H/8,W/8], aux16 [B,n,H/8,W/8], aux32 [B,n,H/16,W/16]), the official names' heads.
        """
        assert x.ndim == 4 and x.shape[1] == 3, f"BiSeNet input must be [B,3,H,W], got {list(x.shape)}"
        feat8, context8, context16 = self.cp(x)
        main = self.conv_out(self.ffm(feat8, context8))
        return main, self.conv_out16(context8), self.conv_out32(context16)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: [B,3,H,W] ImageNet-normalised RGB → (out, out16, out32) logits [B,n,H,W], as the official."""
        main, aux16, aux32 = self.head_logits(x)
        return upsample_to(main, x), upsample_to(aux16, x), upsample_to(aux32, x)


def parse_labels(model: BiSeNet, image: Tensor) -> Tensor:
    """Face-parsing labels: image [B,3,H,W] RGB in [-1,1] → [B,H,W] int64 class indices (0..n−1).

    The image is mapped to [0,1] and ImageNet-normalised, as the official test script feeds it; the
    argmax is over the main head's upsampled logits. Gradients follow the caller's grad mode.
    """
    assert image.ndim == 4 and image.shape[1] == 3, f"image must be [B,3,H,W], got {list(image.shape)}"
    return model(imagenet_normalize(image, (-1.0, 1.0)))[0].argmax(1)

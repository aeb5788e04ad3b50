"""ResNet backbones with torchvision's state_dict key names (there is no torchvision here).

`resnet18/34/101(in_channels=3)` build the classifier-free trunk: conv1, bn1, relu, maxpool,
layer1..layer4. Keys match torchvision's `resnet*.pth` (minus `fc.*`, which callers add if they
need it), so official files that embed a torchvision ResNet load without remapping.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity (or 1×1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (stride here, as torchvision v1.5) → 1×1 expand ×4; ResNet-50/101."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_layer(block: type, in_channels: int, channels: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """One ResNet stage; the first block projects the shortcut when the shape changes."""
    downsample = None
    out_channels = channels * block.expansion
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
        )
    layers = [block(in_channels, channels, stride, downsample)]
    layers += [block(out_channels, channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """torchvision ResNet trunk (no avgpool/fc). x: [B,C,H,W] → layer4 features [B,512·e,H/32,W/32]."""

    def __init__(self, block: type, layers: list[int], in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [64, 128, 256, 512]
        channels_in = 64
        for index, (width, blocks) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if index == 0 else 2
            setattr(self, f"layer{index + 1}", make_layer(block, channels_in, width, blocks, stride))
            channels_in = width * block.expansion
        self.out_channels = channels_in

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet18(in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], in_channels)


def resnet34(in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], in_channels)


def resnet101(in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], in_channels)

"""The paper's ImageNet networks (Table 1), for the general family: a 7x7/64 stride-2 conv and a 3x3
stride-2 max-pool, four stages of basic (ResNet-18/34) or bottleneck (50/101/152) blocks on 64, 128, 256
and 512 filters, global average pooling and a 1000-way linear layer. Parameter names, order and the
stride on the bottleneck's 3x3 conv follow torchvision, so its state_dicts load unchanged and the outputs
are equal (tests/test_models.py); option B is torchvision's, A and C are Table 3's alternatives.

    model = resnet50()                     # 25,557,032 parameters, as torchvision.models.resnet50
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from resnet.models import PadShortcut, Shortcut, check_shortcut, conv3x3, init_weights, projection

__all__ = ["ARCHS", "BasicBlock", "Bottleneck", "ImageNetResNet", "build", "resnet18", "resnet34", "resnet50",
           "resnet101", "resnet152"]


def _downsample(option: str, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """torchvision's ``downsample``: None for the identity, else option A's padding or a projection."""
    reshapes = stride != 1 or in_planes != out_planes
    if option == "C" or (option == "B" and reshapes):
        return projection(in_planes, out_planes, stride)
    return PadShortcut(in_planes, out_planes, stride) if reshapes else None


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and an identity (or ``downsample``) shortcut, under torchvision's names."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_planes, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 with 4x expansion (Figure 5 right); the stride on the 3x3 conv, as torchvision."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, downsample: nn.Module | None) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ImageNetResNet(nn.Module):
    """Table 1's networks: ``layers`` blocks of type ``block`` in each of the four stages."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], *,
                 shortcut: Shortcut = "B", num_classes: int = 1000) -> None:
        super().__init__()
        check_shortcut(shortcut)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        for i, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            stage = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                out_planes = planes * block.expansion
                stage.append(block(in_planes, planes, stride,
                                   downsample=_downsample(shortcut, in_planes, out_planes, stride)))
                in_planes = out_planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)  # as torchvision

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 3, 224, 224) -> (N, 64, 56, 56)
        x = self.layer2(self.layer1(x))                        # -> (N, 128e, 28, 28), e: block expansion
        x = self.layer4(self.layer3(x))                        # -> (N, 512e, 7, 7)
        return self.fc(torch.flatten(self.avgpool(x), 1))      # (N, 1000)


def resnet18(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-18 (Table 1): basic blocks 2, 2, 2, 2. Option B by default, as torchvision."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), shortcut=shortcut, num_classes=num_classes)


def resnet34(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-34 (Table 1): basic blocks 3, 4, 6, 3. Table 3 compares options A, B, C on it."""
    return ImageNetResNet(BasicBlock, (3, 4, 6, 3), shortcut=shortcut, num_classes=num_classes)


def resnet50(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-50 (Table 1): bottleneck blocks 3, 4, 6, 3."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), shortcut=shortcut, num_classes=num_classes)


def resnet101(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-101 (Table 1): bottleneck blocks 3, 4, 23, 3."""
    return ImageNetResNet(Bottleneck, (3, 4, 23, 3), shortcut=shortcut, num_classes=num_classes)


def resnet152(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-152 (Table 1): bottleneck blocks 3, 8, 36, 3."""
    return ImageNetResNet(Bottleneck, (3, 8, 36, 3), shortcut=shortcut, num_classes=num_classes)


ARCHS: dict[str, Callable[..., ImageNetResNet]] = {
    f.__name__: f for f in (resnet18, resnet34, resnet50, resnet101, resnet152)}


def build(arch: str, **kwargs: object) -> ImageNetResNet:
    if arch not in ARCHS:
        raise ValueError(f"unknown ImageNet arch {arch!r}; valid names: {', '.join(ARCHS)}")
    return ARCHS[arch](**kwargs)

"""Residual and plain networks of He et al. 2016, "Deep Residual Learning for Image Recognition".

One :class:`ResNet` class builds every network of the paper; thin named factories pick the block
type, the number of blocks per stage and the widths, in the manner of torchvision's ``resnet.py``.

CIFAR-10 family (paper section 4.2): ``6n + 2`` weighted layers. A 3x3 conv with 16 filters, then
three stages of ``n`` basic blocks (two 3x3 convs each) on 32x32, 16x16 and 8x8 maps with 16, 32
and 64 filters, downsampling by a stride-2 first conv in stages 2 and 3, global average pooling
and a 10-way linear layer. Plain networks are the same stacks without shortcuts.

ImageNet family (paper Table 1): 7x7/64 stride-2 stem and a 3x3 stride-2 max-pool, four stages of
basic (18, 34) or bottleneck (50, 101, 152) blocks, global average pooling, a 1000-way linear
layer. Parameter names and order follow torchvision, so its state_dicts load unchanged.

Shortcut options (paper section 3.3, Table 3):

- ``"A"``: identity; where the shape changes, stride-2 subsampling plus zero channels
  (:class:`PadShortcut`). Parameter-free, so ResNet-N and plain-N have the same parameters.
- ``"B"``: 1x1 conv + BN projection where the shape changes, identity elsewhere.
- ``"C"``: 1x1 conv + BN projection on every shortcut.

Trainable parameters, measured with :func:`count_parameters` (10 classes for CIFAR, 1000 for
ImageNet), against the paper's Table 6 (CIFAR) and torchvision (ImageNet):

==========  ==========  ==========  ===========  =================================
network     option A    option B    option C     paper / reference
==========  ==========  ==========  ===========  =================================
resnet20       269,722     272,474      283,962  0.27M (Table 6)
resnet32       464,154     466,906      489,594  0.46M (Table 6)
resnet44       658,586     661,338      695,226  0.66M (Table 6)
resnet56       853,018     855,770      900,858  0.85M (Table 6)
resnet110    1,727,962   1,730,714    1,826,202  1.7M (Table 6)
resnet1202  19,421,274  19,424,026   20,538,714  19.4M (Table 6)
plainN      = resnetN option A (no shortcuts; the option has no effect on plain nets)
resnet18    11,515,688  11,689,512   12,043,816  torchvision (option B): 11,689,512
resnet34    21,623,848  21,797,672   22,716,840  torchvision (option B): 21,797,672
resnet50    22,780,456  25,557,032   40,128,552  torchvision (option B): 25,557,032
resnet101   41,772,584  44,549,160   76,981,288  torchvision (option B): 44,549,160
resnet152   57,416,232  60,192,808  107,335,720  torchvision (option B): 60,192,808
==========  ==========  ==========  ===========  =================================

Table 6 uses option A (section 4.2); B adds 2,752 parameters to every CIFAR net (the projections at
the two stage changes), within Table 6's rounding.

The models take normalised float input of shape ``[N, 3, H, W]``; normalisation belongs to the
data pipeline.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Literal, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # torchinfo is optional; it is imported lazily by summary().
    from torchinfo import ModelStatistics

__all__ = [
    "ARCHS",
    "CIFAR_ARCHS",
    "BasicBlock",
    "Bottleneck",
    "PadShortcut",
    "ResNet",
    "SHORTCUTS",
    "arch_depth",
    "build_model",
    "cifar_resnet",
    "count_parameters",
    "is_residual",
    "plain20",
    "plain32",
    "plain44",
    "plain56",
    "plain110",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "resnet1202",
    "response_layers",
    "summary",
]

Shortcut = Literal["A", "B", "C"]
Stem = Literal["cifar", "imagenet"]
SHORTCUTS: tuple[str, ...] = ("A", "B", "C")


def _check_shortcut(shortcut: str) -> None:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of 'A', 'B', 'C' (paper section 3.3); got {shortcut!r}")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN follows every conv)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option-A shortcut (paper section 3.3): subsample by ``stride``, zero-pad the new channels.

    The ``out_planes - in_planes`` zero channels go half before and half after the existing ones,
    as in akamaster/pytorch_resnet_cifar10's ``LambdaLayer``
    (``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``), so networks trained
    there behave identically here. Parameter-free.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"option A can only add channels; got {in_planes} -> {out_planes}")
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        before = extra // 2
        return F.pad(x, (0, 0, 0, 0, before, extra - before))

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers (paper Figure 5 left): ``relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x))``.

    The second BN comes before the addition and the ReLU after it (section 3.4). ``shortcut`` is
    the module ``s``: ``nn.Identity()``, a :class:`PadShortcut` or a projection; ``None`` makes a
    plain block (no addition). It is registered under ``shortcut_name`` so that state_dict keys
    match the code whose weights we load ("shortcut" in akamaster's CIFAR nets, "downsample" in
    torchvision's ImageNet nets).
    """

    expansion: int = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: nn.Module | None = None,
        shortcut_name: str = "shortcut",
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        # ReLU and the addition are out of place so that a hook holding a BN output (Figure 7)
        # never sees it overwritten.
        self.relu = nn.ReLU()
        self.shortcut_name = shortcut_name
        self.add_module(shortcut_name, shortcut)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = self._modules[self.shortcut_name]
        if shortcut is not None:
            out = out + shortcut(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck with 4x expansion (paper Figure 5 right, Table 1).

    As in torchvision, the stride sits on the 3x3 conv. ``shortcut`` and ``shortcut_name`` as in
    :class:`BasicBlock`.
    """

    expansion: int = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: nn.Module | None = None,
        shortcut_name: str = "downsample",
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.shortcut_name = shortcut_name
        self.add_module(shortcut_name, shortcut)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self._modules[self.shortcut_name]
        if shortcut is not None:
            out = out + shortcut(x)
        return self.relu(out)


Block = Union[type[BasicBlock], type[Bottleneck]]


class ResNet(nn.Module):
    """A residual (or plain) network: stem, stages of blocks, global average pool, linear layer.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(3, 3, 3)`` for ResNet-20, ``(3, 4, 6, 3)`` for ResNet-34.
        widths: filters per stage (before expansion), e.g. ``(16, 32, 64)`` or ``(64, 128, 256, 512)``.
            The first stage keeps the stem's resolution; every later one starts with a stride-2 block.
        stem: ``"cifar"``: 3x3 conv with ``widths[0]`` filters, BN, ReLU (section 4.2);
            ``"imagenet"``: 7x7 stride-2 conv with ``widths[0]`` filters, BN, ReLU, 3x3 stride-2
            max-pool (Table 1).
        residual: ``False`` builds the plain network: the same stacks without shortcuts.
        shortcut: option ``"A"``, ``"B"`` or ``"C"`` (section 3.3); ignored when ``residual`` is False.
        num_classes: outputs of the final linear layer.

    Parameter names: the stem kind also picks the names, because each family must load the weights
    of its reference code. CIFAR nets use akamaster/pytorch_resnet_cifar10's names (classifier
    ``linear``, projections ``layerX.Y.shortcut.{0,1}``); ImageNet nets use torchvision's
    (``fc``, ``layerX.Y.downsample.{0,1}``). Everything else (``conv1``, ``bn1``, ``layerX.Y.convZ``,
    ``layerX.Y.bnZ``) is common, and modules are registered in the reference order, so the
    state_dicts agree key by key and position by position.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        *,
        widths: Sequence[int],
        stem: Stem,
        residual: bool = True,
        shortcut: Shortcut = "A",
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        _check_shortcut(shortcut)
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet'; got {stem!r}")
        if len(layers) != len(widths):
            raise ValueError(f"one width per stage: got layers={tuple(layers)}, widths={tuple(widths)}")
        self.residual = residual
        self.shortcut_option = shortcut
        self.stem = stem
        self._shortcut_name = "shortcut" if stem == "cifar" else "downsample"
        self._classifier_name = "linear" if stem == "cifar" else "fc"

        self.in_planes = widths[0]
        if stem == "cifar":
            self.conv1 = conv3x3(3, widths[0])
        else:
            self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        if stem == "imagenet":
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (blocks, planes) in enumerate(zip(layers, widths)):
            stage = self._make_layer(block, planes, blocks, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", stage)
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.add_module(self._classifier_name, nn.Linear(self.in_planes, num_classes))

        # He et al. 2015 init for convs (section 3.4), as torchvision; BN starts as the identity
        # map. The linear layer keeps PyTorch's default init (as torchvision; akamaster used Kaiming).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_shortcut(self, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
        if not self.residual:
            return None
        reshapes = stride != 1 or in_planes != out_planes
        if self.shortcut_option == "C" or (self.shortcut_option == "B" and reshapes):
            return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
        if reshapes:  # option A
            return PadShortcut(in_planes, out_planes, stride)
        return nn.Identity()

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            out_planes = planes * block.expansion
            stage.append(
                block(
                    self.in_planes,
                    planes,
                    s,
                    shortcut=self._make_shortcut(self.in_planes, out_planes, s),
                    shortcut_name=self._shortcut_name,
                )
            )
            self.in_planes = out_planes
        return nn.Sequential(*stage)

    @property
    def classifier(self) -> nn.Linear:
        """The final linear layer (``linear`` for CIFAR nets, ``fc`` for ImageNet nets)."""
        return self._modules[self._classifier_name]  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.stem == "imagenet":
            x = self.maxpool(x)
        for i in range(self.num_stages):
            x = self._modules[f"layer{i + 1}"](x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)

    def layer_responses(self, x: Tensor) -> list[Tensor]:
        """Responses of every 3x3 conv layer for input ``x`` (paper Figure 7).

        Each is the conv's BN output, before the ReLU and the addition, in layer order (see
        :func:`response_layers`): 6n+1 tensors for a CIFAR 6n+2 net. Runs one forward pass in the
        model's current mode; wrap in ``torch.no_grad()`` and call ``eval()`` as needed.
        """
        return _collect_responses(self, x)


def response_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """The BN modules that follow 3x3 convs, with their names, in layer order (paper Figure 7).

    A BN ``bnK`` counts when it is a direct sibling of a 3x3 ``convK``: the CIFAR stem, both convs
    of a basic block, the middle conv of a bottleneck (the ImageNet 7x7 stem is not a 3x3 layer).
    Works on torchvision ResNets as well.
    """
    found = []
    for name, module in model.named_modules():
        for k in (1, 2, 3):
            conv = module._modules.get(f"conv{k}")
            bn = module._modules.get(f"bn{k}")
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.kernel_size == (3, 3):
                found.append((f"{name}.bn{k}" if name else f"bn{k}", bn))
    return found


def _collect_responses(model: nn.Module, x: Tensor) -> list[Tensor]:
    layers = response_layers(model)
    responses: list[Tensor | None] = [None] * len(layers)
    handles = []

    def make_hook(i: int) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            responses[i] = output.clone()  # clone: guards against in-place ops downstream

        return hook

    try:
        for i, (_, bn) in enumerate(layers):
            handles.append(bn.register_forward_hook(make_hook(i)))
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [r for r in responses if r is not None]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def summary(
    model: nn.Module,
    *,
    input_size: Sequence[int] = (1, 3, 32, 32),
    depth: int = 3,
    verbose: int = 0,
) -> ModelStatistics:
    """Layer-by-layer summary (layer, output shape, parameter count) by torchinfo.

    Returns torchinfo's ``ModelStatistics``; ``print()`` it, or pass ``verbose=1`` to print.
    """
    try:
        import torchinfo
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("summary() needs torchinfo: pip install torchinfo (see requirements.txt)") from e
    return torchinfo.summary(
        model,
        input_size=tuple(input_size),
        depth=depth,
        verbose=verbose,
        col_names=("output_size", "num_params"),
        row_settings=("var_names",),
    )


# ---------------------------------------------------------------------------------------------
# CIFAR-10 family (paper section 4.2, Table 6)

CIFAR_WIDTHS: tuple[int, int, int] = (16, 32, 64)


def cifar_resnet(
    depth: int, *, residual: bool = True, shortcut: Shortcut = "A", num_classes: int = 10
) -> ResNet:
    """A CIFAR-10 ResNet (or plain net with ``residual=False``) of ``depth = 6n + 2`` layers.

    Section 4.2: n basic blocks per stage on 16/32/64 filters. For plain nets the ``shortcut``
    option has no effect (it is still validated).
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110, 1202, ...); got {depth}")
    n = (depth - 2) // 6
    return ResNet(
        BasicBlock,
        (n, n, n),
        widths=CIFAR_WIDTHS,
        stem="cifar",
        residual=residual,
        shortcut=shortcut,
        num_classes=num_classes,
    )


def resnet20(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """ResNet-20 (n=3), Table 6: 0.27M parameters, 8.75% error."""
    return cifar_resnet(20, shortcut=shortcut, num_classes=num_classes)


def resnet32(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """ResNet-32 (n=5), Table 6: 0.46M parameters, 7.51% error."""
    return cifar_resnet(32, shortcut=shortcut, num_classes=num_classes)


def resnet44(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """ResNet-44 (n=7), Table 6: 0.66M parameters, 7.17% error."""
    return cifar_resnet(44, shortcut=shortcut, num_classes=num_classes)


def resnet56(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """ResNet-56 (n=9), Table 6: 0.85M parameters, 6.97% error."""
    return cifar_resnet(56, shortcut=shortcut, num_classes=num_classes)


def resnet110(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """ResNet-110 (n=18), Table 6: 1.7M parameters, 6.43% error (best of 5)."""
    return cifar_resnet(110, shortcut=shortcut, num_classes=num_classes)


def resnet1202(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """ResNet-1202 (n=200), Table 6: 19.4M parameters, 7.93% error."""
    return cifar_resnet(1202, shortcut=shortcut, num_classes=num_classes)


def plain20(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """Plain-20 (Figure 6 left). ``shortcut`` has no effect on plain nets."""
    return cifar_resnet(20, residual=False, shortcut=shortcut, num_classes=num_classes)


def plain32(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """Plain-32 (Figure 6 left). ``shortcut`` has no effect on plain nets."""
    return cifar_resnet(32, residual=False, shortcut=shortcut, num_classes=num_classes)


def plain44(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """Plain-44 (Figure 6 left). ``shortcut`` has no effect on plain nets."""
    return cifar_resnet(44, residual=False, shortcut=shortcut, num_classes=num_classes)


def plain56(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """Plain-56 (Figure 6 left). ``shortcut`` has no effect on plain nets."""
    return cifar_resnet(56, residual=False, shortcut=shortcut, num_classes=num_classes)


def plain110(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
    """Plain-110 (section 4.2: above 60% error, not plotted). ``shortcut`` has no effect."""
    return cifar_resnet(110, residual=False, shortcut=shortcut, num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# ImageNet family (paper Table 1), weight-compatible with torchvision.models.resnetXX

IMAGENET_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)


def _imagenet_resnet(block: Block, layers: Sequence[int], shortcut: Shortcut, num_classes: int) -> ResNet:
    return ResNet(
        block, layers, widths=IMAGENET_WIDTHS, stem="imagenet", shortcut=shortcut, num_classes=num_classes
    )


def resnet18(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ResNet:
    """ResNet-18 (Table 1): basic blocks 2, 2, 2, 2. Option B by default, as torchvision."""
    return _imagenet_resnet(BasicBlock, (2, 2, 2, 2), shortcut, num_classes)


def resnet34(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ResNet:
    """ResNet-34 (Table 1): basic blocks 3, 4, 6, 3. Table 3 compares options A, B, C on it."""
    return _imagenet_resnet(BasicBlock, (3, 4, 6, 3), shortcut, num_classes)


def resnet50(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ResNet:
    """ResNet-50 (Table 1): bottleneck blocks 3, 4, 6, 3."""
    return _imagenet_resnet(Bottleneck, (3, 4, 6, 3), shortcut, num_classes)


def resnet101(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ResNet:
    """ResNet-101 (Table 1): bottleneck blocks 3, 4, 23, 3."""
    return _imagenet_resnet(Bottleneck, (3, 4, 23, 3), shortcut, num_classes)


def resnet152(*, shortcut: Shortcut = "B", num_classes: int = 1000) -> ResNet:
    """ResNet-152 (Table 1): bottleneck blocks 3, 8, 36, 3."""
    return _imagenet_resnet(Bottleneck, (3, 8, 36, 3), shortcut, num_classes)


# ---------------------------------------------------------------------------------------------
# Registry

ARCHS: dict[str, Callable[..., ResNet]] = {
    f.__name__: f
    for f in (
        resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202,
        plain20, plain32, plain44, plain56, plain110,
        resnet18, resnet34, resnet50, resnet101, resnet152,
    )
}  # fmt: skip
CIFAR_ARCHS: tuple[str, ...] = tuple(name for name in ARCHS if name not in {
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"})

_ARCH_NAME = re.compile(r"(resnet|plain)(\d+)")


def arch_depth(arch: str) -> int:
    """Weighted layers of a network named ``resnetN`` or ``plainN``: ``arch_depth("plain56") == 56``.

    The one place that reads a depth out of a name (configs, tables and figures all call it)."""
    match = _ARCH_NAME.fullmatch(arch)
    if match is None:
        raise ValueError(f"not a network name of the form resnetN or plainN: {arch!r}")
    return int(match[2])


def is_residual(arch: str) -> bool:
    """True for ``resnetN``, False for the plain nets ``plainN``."""
    arch_depth(arch)  # validates the name
    return arch.startswith("resnet")


def build_model(arch: str, *, shortcut: Shortcut | None = None, num_classes: int | None = None) -> ResNet:
    """Build a network by name.

    ``arch`` is a key of :data:`ARCHS`, or ``"resnetN"`` / ``"plainN"`` for any other CIFAR depth
    ``N = 6n + 2`` (e.g. ``"plain1202"``, ``"resnet8"``). Registered names win, so ``"resnet50"``
    is the ImageNet ResNet-50 (use ``cifar_resnet(50)`` for the CIFAR one). ``shortcut`` and
    ``num_classes`` default to the family's defaults: "A" and 10 for CIFAR, "B" and 1000 for
    ImageNet.
    """
    kwargs: dict[str, object] = {}
    if shortcut is not None:
        kwargs["shortcut"] = shortcut
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if arch in ARCHS:
        return ARCHS[arch](**kwargs)
    match = _ARCH_NAME.fullmatch(arch)
    if match is not None and (int(match[2]) - 2) % 6 == 0 and int(match[2]) >= 8:
        return cifar_resnet(int(match[2]), residual=match[1] == "resnet", **kwargs)  # type: ignore[arg-type]
    raise ValueError(
        f"unknown arch {arch!r}; valid names: {', '.join(ARCHS)}, or resnetN / plainN with N = 6n+2"
    )

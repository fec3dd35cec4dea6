"""The paper's CIFAR-10 networks (section 4.2): ResNets and their plain twins of 6n+2 layers.

A 3x3 conv with 16 filters, three stages of n basic blocks on 32x32, 16x16 and 8x8 maps with 16, 32 and 64
filters (the first block of stages 2 and 3 halves the map with a stride-2 conv), global average pooling and
a 10-way linear layer. Shortcuts (section 3.3): "A" identity, zero-padded where the shape changes; "B"
projections where it changes; "C" projections everywhere. Plain nets have none. Parameter names follow
akamaster/pytorch_resnet_cifar10, so its checkpoints load unchanged. The ImageNet family is in
resnet.imagenet.

    model = resnet56()                        # 853,018 parameters (Table 6: 0.85M)
    build_model("plain20"), build_model("resnet110", shortcut="B")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # torchinfo is optional; it is imported lazily by summary().
    from torchinfo import ModelStatistics

__all__ = ["ARCHS", "CIFAR_ARCHS", "SHORTCUTS", "BasicBlock", "PadShortcut", "ResNet", "arch_depth",
           "build_model", "cifar_resnet", "count_parameters", "is_residual", "layer_responses", "plain20",
           "plain32", "plain44", "plain56", "plain110", "resnet20", "resnet32", "resnet44", "resnet56",
           "resnet110", "resnet1202", "response_layers", "summary"]

Shortcut = Literal["A", "B", "C"]
SHORTCUTS: tuple[str, ...] = ("A", "B", "C")

#: Trainable parameters (count_parameters), against Table 6's 0.27M, 0.46M, 0.66M, 0.85M, 1.7M and 19.4M.
#: Plain nets have option A's counts (A is parameter-free); B adds 2,752 (the two stage changes).
PARAMETERS = {  # depth: (option A, option B, option C)
    20: (269_722, 272_474, 283_962), 32: (464_154, 466_906, 489_594), 44: (658_586, 661_338, 695_226),
    56: (853_018, 855_770, 900_858), 110: (1_727_962, 1_730_714, 1_826_202),
    1202: (19_421_274, 19_424_026, 20_538_714)}


def check_shortcut(shortcut: str) -> None:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of 'A', 'B', 'C' (paper section 3.3); got {shortcut!r}")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN follows every conv)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Options B and C: a 1x1 conv (stride ``stride``) and BN."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_planes))


def init_weights(model: nn.Module) -> None:
    """He et al. 2015 init of every conv (section 3.4; fan-out, as torchvision), BN as the identity map; the
    linear layer keeps PyTorch's default init (as torchvision; akamaster uses Kaiming there too)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def make_shortcut(option: str, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """The shortcut of a block that maps ``in_planes`` to ``out_planes`` channels with ``stride``."""
    reshapes = stride != 1 or in_planes != out_planes
    if option == "C" or (option == "B" and reshapes):
        return projection(in_planes, out_planes, stride)
    return PadShortcut(in_planes, out_planes, stride) if reshapes else nn.Identity()


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
    """Two 3x3 conv-BN layers (Figure 5 left): ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The second BN comes before the addition and the ReLU after it (section 3.4). ``shortcut`` is
    ``nn.Identity()``, a :class:`PadShortcut` or a projection; ``None`` makes a plain block (no addition).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        # ReLU and the addition are out of place, so that a hook holding a BN output (Figure 7) never sees
        # it overwritten
        self.relu = nn.ReLU()
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class ResNet(nn.Module):
    """A CIFAR-10 network of ``6n + 2`` layers: ``n`` blocks per stage (``blocks``), residual with shortcut
    option ``shortcut``, or plain (``residual=False``)."""

    def __init__(self, blocks: int, *, residual: bool = True, shortcut: Shortcut = "A",
                 num_classes: int = 10, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        check_shortcut(shortcut)
        self.residual, self.shortcut_option = residual, shortcut
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        for i, planes in enumerate(widths):
            stage = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                shortcut_module = make_shortcut(shortcut, in_planes, planes, stride) if residual else None
                stage.append(BasicBlock(in_planes, planes, stride, shortcut=shortcut_module))
                in_planes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 3, 32, 32) -> (N, 16, 32, 32)
        x = self.layer1(x)                       # (N, 16, 32, 32)
        x = self.layer2(x)                       # -> (N, 32, 16, 16)
        x = self.layer3(x)                       # -> (N, 64, 8, 8)
        x = torch.flatten(self.avgpool(x), 1)    # global average pool: (N, 64)
        return self.linear(x)                    # (N, 10)

    def layer_responses(self, x: Tensor) -> list[Tensor]:
        """Figure 7: every 3x3 layer's response to ``x`` (see :func:`layer_responses`)."""
        return layer_responses(self, x)


def layer_responses(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Responses of every 3x3 conv layer for input ``x`` (paper Figure 7): each conv's BN output, before
    the ReLU and the addition, in layer order (:func:`response_layers`): 6n+1 tensors for a CIFAR 6n+2 net.
    One forward pass in the model's current mode; wrap in ``torch.no_grad()`` and call ``eval()`` as
    needed."""
    layers = response_layers(model)
    responses: list[Tensor | None] = [None] * len(layers)

    def keep(i: int) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            responses[i] = output.clone()  # clone: guards against in-place ops downstream
        return hook

    handles = [bn.register_forward_hook(keep(i)) for i, (_, bn) in enumerate(layers)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [r for r in responses if r is not None]


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
# The networks by name (Table 6, Figure 6)

def cifar_resnet(depth: int, *, residual: bool = True, shortcut: Shortcut = "A",
                 num_classes: int = 10) -> ResNet:
    """A CIFAR-10 ResNet (or plain net with ``residual=False``) of ``depth = 6n + 2`` layers. For plain nets
    the ``shortcut`` option has no effect (it is still validated)."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110, 1202, ...); got {depth}")
    return ResNet((depth - 2) // 6, residual=residual, shortcut=shortcut, num_classes=num_classes)


_ARCH_NAME = re.compile(r"(resnet|plain)(\d+)")


def arch_depth(arch: str) -> int:
    """Weighted layers of a network named ``resnetN`` or ``plainN``: ``arch_depth("plain56") == 56``.

    The one place that reads a depth out of a name (configs, tables and figures all call it)."""
    match = _ARCH_NAME.fullmatch(arch)
    if match is None:
        raise ValueError(f"not a network name of the form resnetN or plainN: {arch!r}")
    return int(match[2])


#: The named networks: Table 6's ResNets and Figure 6's plain nets, each with what the paper says of it.
NAMED = {
    "resnet20": "ResNet-20 (n=3), Table 6: 0.27M parameters, 8.75% error.",
    "resnet32": "ResNet-32 (n=5), Table 6: 0.46M parameters, 7.51% error.",
    "resnet44": "ResNet-44 (n=7), Table 6: 0.66M parameters, 7.17% error.",
    "resnet56": "ResNet-56 (n=9), Table 6: 0.85M parameters, 6.97% error.",
    "resnet110": "ResNet-110 (n=18), Table 6: 1.7M parameters, 6.43% error (best of 5).",
    "resnet1202": "ResNet-1202 (n=200), Table 6: 19.4M parameters, 7.93% error.",
    "plain20": "Plain-20 (Figure 6 left).",
    "plain32": "Plain-32 (Figure 6 left).",
    "plain44": "Plain-44 (Figure 6 left).",
    "plain56": "Plain-56 (Figure 6 left).",
    "plain110": "Plain-110 (section 4.2: above 60% error, not plotted).",
}


def _named(name: str, doc: str) -> Callable[..., ResNet]:
    """The builder of the network ``name`` (``resnetN`` or ``plainN``)."""
    depth, residual = arch_depth(name), name.startswith("resnet")

    def build(*, shortcut: Shortcut = "A", num_classes: int = 10) -> ResNet:
        return cifar_resnet(depth, residual=residual, shortcut=shortcut, num_classes=num_classes)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc + ("" if residual else " ``shortcut`` has no effect on plain nets (it is validated).")
    return build


ARCHS: dict[str, Callable[..., ResNet]] = {name: _named(name, doc) for name, doc in NAMED.items()}
resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202 = (
    ARCHS[f"resnet{d}"] for d in (20, 32, 44, 56, 110, 1202))
plain20, plain32, plain44, plain56, plain110 = (ARCHS[f"plain{d}"] for d in (20, 32, 44, 56, 110))
CIFAR_ARCHS: tuple[str, ...] = tuple(ARCHS)


def is_residual(arch: str) -> bool:
    """True for ``resnetN``, False for the plain nets ``plainN``."""
    arch_depth(arch)  # validates the name
    return arch.startswith("resnet")


def build_model(arch: str, *, shortcut: Shortcut | None = None, num_classes: int | None = None) -> ResNet:
    """A network by name: a key of :data:`ARCHS`, or ``"resnetN"`` / ``"plainN"`` for any other depth
    ``N = 6n + 2`` (e.g. ``"plain1202"``, ``"resnet8"``). ``shortcut`` defaults to "A", ``num_classes`` to
    10."""
    kwargs = {k: v for k, v in (("shortcut", shortcut), ("num_classes", num_classes)) if v is not None}
    match = _ARCH_NAME.fullmatch(arch)
    if arch in ARCHS:
        return ARCHS[arch](**kwargs)
    if match is not None and (int(match[2]) - 2) % 6 == 0 and int(match[2]) >= 8:
        return cifar_resnet(int(match[2]), residual=match[1] == "resnet", **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown arch {arch!r}; valid names: {', '.join(ARCHS)}, or resnetN / plainN with "
                     f"N = 6n+2 (the ImageNet networks are in resnet.imagenet)")

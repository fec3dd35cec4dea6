"""Tests of resnet.imagenet: parameter counts and outputs equal to torchvision's given the same weights,
the bottleneck's stride on its 3x3 conv, and the 3x3 layers Figure 7 would take."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet import imagenet
from resnet.imagenet import ARCHS, Bottleneck
from resnet.models import count_parameters, response_layers

# torchvision.models.resnetXX (PAPER.md).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


def test_imagenet_parameter_counts_match_torchvision_and_table3s_options() -> None:
    with torch.device("meta"):
        for arch, params in TORCHVISION_PARAMS.items():
            assert count_parameters(ARCHS[arch]()) == params
        a, c = (count_parameters(imagenet.resnet34(shortcut=s)) for s in "AC")
    assert (a, c) == (21_623_848, 22_716_840)  # option A: no projections; C: a projection everywhere


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_imagenet_matches_torchvision(arch: str) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)(weights=None)
    # Random BN statistics and affine parameters, so eval-mode BN is not close to the identity.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    ours = imagenet.build(arch)
    tv_sd = tv.state_dict()
    # Same keys in the same order, so loading by key or by position both work.
    assert list(ours.state_dict()) == list(tv_sd)
    ours.load_state_dict(tv_sd, strict=True)
    assert count_parameters(ours) == count_parameters(tv) == TORCHVISION_PARAMS[arch]
    ours.eval(), tv.eval()
    x = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=1e-5)
    assert [n for n, _ in response_layers(ours)] == [n for n, _ in response_layers(tv)]


def test_bottleneck_and_its_3x3_layers() -> None:
    assert imagenet.BasicBlock.expansion == 1 and Bottleneck.expansion == 4
    projection = nn.Sequential(nn.Conv2d(64, 256, 1, 2, bias=False), nn.BatchNorm2d(256))
    blk = Bottleneck(64, 64, 2, downsample=projection)
    assert blk.conv2.stride == (2, 2) and blk.conv1.stride == (1, 1)  # stride on the 3x3, as torchvision
    assert blk(torch.randn(2, 64, 8, 8)).shape == (2, 256, 4, 4)
    with torch.device("meta"):  # Figure 7's layers: only the 3x3 conv's BN; the 7x7 stem is not one
        names = [n for n, _ in response_layers(imagenet.resnet50())]
    assert len(names) == 16 and names[0] == "layer1.0.bn2"
    with pytest.raises(ValueError, match="resnet18"):
        imagenet.build("resnet20")

"""Tests of resnet.models: parameter counts (Table 6), shortcut semantics,
gradients, a seeded regression, layer responses, summaries and the akamaster state_dict layout.

CPU only, no network, no files outside the repo.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet import imagenet
from resnet.models import (
    ARCHS,
    BasicBlock,
    PadShortcut,
    ResNet,
    build_model,
    cifar_resnet,
    count_parameters,
    plain20,
    plain56,
    resnet20,
    resnet56,
    resnet110,
    response_layers,
    summary,
)

CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)

# Measured with count_parameters; option A is parameter-free, B adds two projections (2,752).
PARAMS_A = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
PARAMS_B = {20: 272_474, 32: 466_906, 44: 661_338, 56: 855_770, 110: 1_730_714, 1202: 19_424_026}
PARAMS_C = {20: 283_962, 32: 489_594, 44: 695_226, 56: 900_858, 110: 1_826_202, 1202: 20_538_714}
# Paper Table 6, in millions.
PAPER_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}


def _count_on_meta(fn, *args, **kwargs) -> int:
    # Building on the meta device skips allocation and initialisation: counts come for free.
    with torch.device("meta"):
        return count_parameters(fn(*args, **kwargs))


def _paper_rounding(n: int, paper_m: float) -> bool:
    # Table 6 gives two significant figures (three for 19.4M).
    digits = 1 if paper_m >= 1 else 2
    return round(n / 1e6, digits) == paper_m


# --------------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_cifar_parameter_counts_match_table6(depth: int) -> None:
    a = _count_on_meta(cifar_resnet, depth, shortcut="A")
    b = _count_on_meta(cifar_resnet, depth, shortcut="B")
    c = _count_on_meta(cifar_resnet, depth, shortcut="C")
    assert (a, b, c) == (PARAMS_A[depth], PARAMS_B[depth], PARAMS_C[depth])
    assert a < b < c
    assert _paper_rounding(a, PAPER_PARAMS_M[depth])
    # Plain nets: the same stacks without shortcuts, so the same parameters as option A (section 4.2),
    # whatever shortcut option is passed (one option for 1202, to keep the test fast).
    for option in ("A", "B", "C") if depth < 1202 else ("C",):
        assert _count_on_meta(cifar_resnet, depth, residual=False, shortcut=option) == a


def test_named_factories_match_counts() -> None:
    for depth in (20, 32, 44, 56, 110):
        assert _count_on_meta(ARCHS[f"resnet{depth}"]) == PARAMS_A[depth]
        assert _count_on_meta(ARCHS[f"plain{depth}"]) == PARAMS_A[depth]
    assert _count_on_meta(ARCHS["resnet1202"]) == PARAMS_A[1202]


# --------------------------------------------------------------------------------- shortcut options


def _zero_last_bn(block: nn.Module) -> None:
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()


def test_option_a_downsampling_block_is_padded_identity() -> None:
    torch.manual_seed(0)
    model = resnet20()
    block = model.layer2[0]  # 16 -> 32 channels, stride 2
    assert isinstance(block.shortcut, PadShortcut)
    _zero_last_bn(block)
    x = torch.randn(2, 16, 32, 32)
    out = block(x)
    assert out.shape == (2, 32, 16, 16)
    q = 32 // 4  # planes // 4 zero channels before and after, as akamaster's LambdaLayer
    assert torch.equal(out[:, :q], torch.zeros_like(out[:, :q]))
    assert torch.equal(out[:, -q:], torch.zeros_like(out[:, -q:]))
    assert torch.equal(out[:, q:-q], F.relu(x[:, :, ::2, ::2]))
    # The same as akamaster's lambda, literally.
    expected = F.relu(F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, q, q), "constant", 0))
    assert torch.equal(out, expected)


def test_option_a_identity_block_is_identity() -> None:
    torch.manual_seed(0)
    block = resnet20().layer3[1]
    assert isinstance(block.shortcut, nn.Identity)
    _zero_last_bn(block)
    x = torch.randn(2, 64, 8, 8)
    assert torch.equal(block(x), F.relu(x))


def _shortcut_kinds(model: ResNet) -> list[str]:
    stages = (model.layer1, model.layer2, model.layer3)
    return [type(block.shortcut).__name__ for stage in stages for block in stage]


def test_shortcut_modules_per_option() -> None:
    a, b, c = (resnet20(shortcut=option) for option in ("A", "B", "C"))
    p = plain20(shortcut="C")
    kinds = _shortcut_kinds
    identity2 = ["Identity"] * 2
    assert kinds(a) == ["Identity"] * 3 + ["PadShortcut"] + identity2 + ["PadShortcut"] + identity2
    assert kinds(b) == ["Identity"] * 3 + ["Sequential"] + identity2 + ["Sequential"] + identity2
    assert kinds(c) == ["Sequential"] * 9
    assert kinds(p) == ["NoneType"] * 9
    proj = b.layer2[0].shortcut
    assert isinstance(proj[0], nn.Conv2d) and proj[0].kernel_size == (1, 1) and proj[0].stride == (2, 2)
    assert proj[0].bias is None and isinstance(proj[1], nn.BatchNorm2d)
    assert {"layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.running_var"} <= set(b.state_dict())


def test_plain_net_loads_resnet_weights_and_differs() -> None:
    # Same keys (option A has no parameters), different function: the only difference is the shortcut.
    torch.manual_seed(0)
    res, plain = resnet20(), plain20()
    plain.load_state_dict(res.state_dict(), strict=True)
    res.eval(), plain.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(res(x), plain(x))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match=r"6n\+2.*20, 32, 44, 56, 110, 1202.*got 21"):
        cifar_resnet(21)
    with pytest.raises(ValueError, match="6n"):
        cifar_resnet(2)
    with pytest.raises(ValueError, match="shortcut"):
        resnet20(shortcut="D")
    with pytest.raises(ValueError, match="shortcut"):
        plain20(shortcut="D")
    with pytest.raises(ValueError, match="resnet20.*plain110.*resnet.imagenet"):
        build_model("resnet21")
    with pytest.raises(TypeError):
        resnet20("B")  # keyword-only


def test_registry_and_build_model() -> None:
    expected = [f"resnet{d}" for d in CIFAR_DEPTHS] + [f"plain{d}" for d in (20, 32, 44, 56, 110)]
    assert sorted(ARCHS) == sorted(expected)
    m = build_model("resnet20", shortcut="B")
    assert m.shortcut_option == "B" and m.residual and count_parameters(m) == PARAMS_B[20]
    p = build_model("plain8", num_classes=100)  # any 6n+2 depth, plain or residual
    assert not p.residual and p.linear.out_features == 100 and len(p.layer1) == 1
    assert build_model("resnet20").linear.out_features == 10


# --------------------------------------------------------------------------- torchvision equivalence


# ------------------------------------------------------------------------------ gradients and NaNs


@pytest.mark.parametrize(
    "name,build,size",
    [
        ("resnet20-A", lambda: resnet20(shortcut="A"), 32),
        ("resnet20-B", lambda: resnet20(shortcut="B"), 32),
        ("resnet20-C", lambda: resnet20(shortcut="C"), 32),
        ("plain20", lambda: plain20(), 32),
        ("resnet18", lambda: imagenet.resnet18(num_classes=10), 64),
    ],
)
def test_every_parameter_gets_a_finite_gradient(name: str, build, size: int) -> None:
    torch.manual_seed(0)
    model = build()
    model.train()
    x = torch.randn(4, 3, size, size)
    y = torch.tensor([0, 1, 2, 3])
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    F.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


def test_init() -> None:
    model = resnet20(shortcut="C")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    # Kaiming normal, fan_out: std = sqrt(2 / (out_channels * 3 * 3)).
    w = model.layer3[1].conv2.weight
    assert abs(w.std().item() - (2 / (64 * 9)) ** 0.5) < 0.1 * (2 / (64 * 9)) ** 0.5


@pytest.mark.margins
def test_seeded_output_regression(margin) -> None:
    # Breaks legitimately if the parameter creation order, the init scheme, the architecture
    # (e.g. the padding of option A) or torch's CPU RNG / kernels change; recompute the values then.
    torch.manual_seed(0)
    model = resnet20().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    expected = torch.tensor(REGRESSION_LOGITS)
    # float32 on another CPU's kernels moves the logits in their last digits: the written-down values have
    # five decimals (5e-6 of rounding), and the tolerance is 1e-4
    margin("largest difference from the written-down logits", (out[:, :4] - expected).abs().max().item(),
           "<", 1e-4)


# The first four logits, computed once with torch 2.14.1 on CPU.
REGRESSION_LOGITS = [[0.89493, -1.65512, -0.48075, -0.23468], [0.94666, -1.70982, -0.37006, -0.24073]]


# --------------------------------------------------------------------------------- layer responses


@pytest.mark.parametrize("build,depth", [(resnet20, 20), (plain20, 20), (resnet56, 56), (plain56, 56)])
def test_layer_responses(build, depth: int) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        responses = model.layer_responses(x)
        logits = model(x)
    assert len(responses) == depth - 1 == len(response_layers(model))  # 6n+1: stem + 2 per block
    assert responses[0].shape == (2, 16, 32, 32)
    assert responses[-1].shape == (2, 64, 8, 8)
    # After BN, before ReLU and addition: responses take negative values.
    assert all((r < 0).any() for r in responses)
    with torch.no_grad():
        torch.testing.assert_close(responses[0], model.bn1(model.conv1(x)))
        block = model.layer3[-1]
        h = model.layer3[:-1](model.layer2(model.layer1(F.relu(responses[0]))))
        h = block.relu(block.bn1(block.conv1(h)))
        torch.testing.assert_close(responses[-1], block.bn2(block.conv2(h)))
    # Hooks are removed afterwards.
    assert all(not bn._forward_hooks for _, bn in response_layers(model))
    assert torch.equal(model(x), logits)


def test_response_layer_names() -> None:
    names = [n for n, _ in response_layers(resnet20())]
    assert names[:3] == ["bn1", "layer1.0.bn1", "layer1.0.bn2"]
    assert names[-1] == "layer3.2.bn2" and len(names) == 19
    assert len(response_layers(resnet110())) == 109


# --------------------------------------------------------------------------------- summary, layout


def test_summary_matches_count_parameters() -> None:
    pytest.importorskip("torchinfo")
    model = resnet20()
    stats = summary(model)
    assert stats.total_params == count_parameters(model) == PARAMS_A[20]
    assert stats.trainable_params == PARAMS_A[20]
    text = str(stats)
    assert "PadShortcut" in text and "[1, 64, 8, 8]" in text


def _akamaster_keys(n: int) -> list[str]:
    """state_dict keys of akamaster/pytorch_resnet_cifar10's resnet(6n+2), option A, 'module.' stripped."""

    def bn(p: str) -> list[str]:
        return [f"{p}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]

    keys = ["conv1.weight", *bn("bn1")]
    for stage in (1, 2, 3):
        for i in range(n):
            p = f"layer{stage}.{i}"
            keys += [f"{p}.conv1.weight", *bn(f"{p}.bn1"), f"{p}.conv2.weight", *bn(f"{p}.bn2")]
    return keys + ["linear.weight", "linear.bias"]


@pytest.mark.parametrize("build,n", [(resnet20, 3), (resnet56, 9)])
def test_akamaster_state_dict_layout(build, n: int) -> None:
    model = build()
    assert list(model.state_dict()) == _akamaster_keys(n)
    # A checkpoint saved from nn.DataParallel in that layout, of another network (other initial weights),
    # loads strictly after stripping 'module.', and the model then holds that network's weights
    torch.manual_seed(1)
    other = build()
    ckpt = {"state_dict": {f"module.{k}": v.clone() for k, v in other.state_dict().items()}}
    assert not torch.equal(model.conv1.weight, other.conv1.weight)
    model.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}, strict=True)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in model.state_dict().items())


def test_block_classes() -> None:
    blk = resnet20(shortcut="B").layer2[0]
    assert isinstance(blk, BasicBlock) and isinstance(blk.shortcut, nn.Sequential)
    assert blk(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
    assert isinstance(resnet20(), ResNet)

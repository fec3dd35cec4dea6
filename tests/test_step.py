"""The training step's precision on CUDA, checked on the CPU: a step told its device is CUDA runs its CPU
network as it would run there, so hooks can read the process-wide TF32 flags while each part of the step
runs. The float32 control (precision "fp32") must keep TF32 off through the forward pass, the backward
pass (whose convolutions pick their kernels when they run, after autocast's block has ended) and the
update; and leave the flags as they were."""

from __future__ import annotations

import pytest
import torch

from resnet import models
from resnet.group import GroupSGD, GroupStep, grouped, tie
from resnet.step import TrainStep

pytestmark = pytest.mark.usefixtures("one_thread")
FAKE_CUDA = torch.device("cuda")  # only compared by type: nothing is sent to it


@pytest.fixture
def tf32_allowed():
    """Both TF32 flags on (cuDNN's default; cuBLAS's is off, turned on here so that it shows too), put back
    afterwards."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def watched(net: torch.nn.Module, optimizer) -> dict[str, tuple[bool, bool]]:
    """What the TF32 flags were while the first convolution ran forward, while its weight's gradient was
    made, and while the optimizer stepped."""
    seen: dict[str, tuple[bool, bool]] = {}

    def record(part: str) -> None:  # a hook that returns nothing changes nothing
        seen.setdefault(part, flags())

    net.conv1.register_forward_hook(lambda *_: record("forward"))
    net.conv1.weight.register_hook(lambda grad: record("weight gradient"))
    step = optimizer.step

    def recorded_step():
        record("update")
        step()

    optimizer.step = recorded_step
    return seen


@pytest.mark.usefixtures("tf32_allowed")
def test_the_float32_controls_backward_runs_without_tf32():
    torch.manual_seed(0)
    net = models.build_model("resnet20")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    seen = watched(net, opt)
    step = TrainStep(net, opt, torch.zeros(2, 3, dtype=torch.float64), device=FAKE_CUDA, precision="fp32")
    step(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    assert seen == {part: (False, False) for part in ("forward", "weight gradient", "update")}
    assert flags() == (True, True)  # restored after the step


@pytest.mark.usefixtures("tf32_allowed")
def test_a_float32_groups_backward_runs_without_tf32():
    torch.manual_seed(0)
    nets = [models.build_model("plain20"), models.build_model("resnet20")]
    group = grouped(nets)
    tie(group, nets)
    sgd = GroupSGD(group, momentum=0.9, weight_decay=1e-4)
    seen = watched(group, sgd)
    step = GroupStep(group, sgd, torch.zeros(2, 2, 3, dtype=torch.float64), device=FAKE_CUDA,
                     precision="fp32")
    step(torch.randn(4, 6, 32, 32), torch.randint(0, 10, (4, 2)))
    assert seen == {part: (False, False) for part in ("forward", "weight gradient", "update")}
    assert flags() == (True, True)

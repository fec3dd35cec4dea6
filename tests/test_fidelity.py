"""The engine against the independent reference (benchmarks/reference.py), step by step: the same network
given the same weights, the same update given the same batch, and the same input for the normalisation
the reference calls "pixel". So a difference between the two at the short schedule
(benchmarks/results/fidelity.md) comes from a choice named there (the input normalisation), not from a
bug in either."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnet import models
from resnet.config import paper_config
from resnet.distributed import Dist
from resnet.loader import normalization_stats, normalize
from resnet.state import RunState
from resnet.step import TrainStep

REFERENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "reference.py"


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("depth", [20, 56])
def test_the_reference_network_is_ours_given_the_same_weights(reference, depth):
    torch.manual_seed(0)
    ours = models.cifar_resnet(depth)
    theirs = reference.CifarResNet(depth)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # the same names: akamaster's
    x = torch.randn(4, 3, 32, 32)
    for mode in (True, False):
        ours.train(mode), theirs.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_the_engines_step_is_plain_sgd_with_momentum_and_weight_decay(reference, cifar_data):
    """Three of the engine's steps (TrainStep, the optimizer RunState builds) and three steps of
    torch.optim.SGD on the reference's network end at the same weights. In float64: in float32 a deep
    layer's gradient is already a few per cent from the exact one, whatever the memory layout."""
    torch.manual_seed(0)
    cfg = paper_config("resnet20", batch_size=16)
    state = RunState.new(cfg, torch.device("cpu"), 10)
    state.model.double()  # in place: the optimizer keeps its parameters
    step = TrainStep(state.model, state.optimizer, state.stats, device=torch.device("cpu"), precision="bf16")
    theirs = reference.CifarResNet(20).double()
    theirs.load_state_dict(state.model.state_dict())
    sgd = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    mean, std = normalization_stats(cifar_data.train_images)
    for i in range(3):
        x = normalize(cifar_data.train_images[16 * i:16 * (i + 1)], mean, std).double()
        y = cifar_data.train_labels[16 * i:16 * (i + 1)]
        step(x, y)
        sgd.zero_grad()
        F.cross_entropy(theirs(x), y).backward()
        sgd.step()
    ours = state.model.state_dict()
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(ours[name], value, rtol=1e-9, atol=1e-10, msg=name)
    assert state.stats[0, 2] == 48 and Dist().world_size == 1


def test_the_references_pixel_normalisation_is_the_engines_input(reference, cifar_data):
    """The reference's --norm pixel (its ToTensor, then the per-pixel mean image on [0, 1]) gives the
    engine's normalised input exactly; --norm channel is the common reproductions' choice."""
    hwc = cifar_data.train_images.permute(0, 2, 3, 1).numpy()
    mean, std = normalization_stats(cifar_data.train_images)  # the engine's default: the paper's per-pixel
    theirs = reference.normalization(hwc, "pixel")
    to_tensor = reference.T.ToTensor()
    for i in (0, 7):
        want = normalize(cifar_data.train_images[i:i + 1], mean, std)[0]
        got = theirs(to_tensor(Image.fromarray(hwc[i])))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    channel = reference.normalization(hwc, "channel")
    assert np.allclose(channel.mean, hwc.reshape(-1, 3).mean(0) / 255, atol=1e-6)

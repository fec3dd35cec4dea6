"""resnet.loader: the augmentation against brute force, the normalisation, the batches of an epoch (a
pure function of seed and epoch, resumable mid-epoch, sliced for data-parallel ranks), and the
augmentation figure drawn through the same code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifar_fixture import CLASSES
from resnet.cifar10 import load_cifar10
from resnet.loader import (GroupedBatches, TrainLoader, crop_flip, normalization_stats, normalize,
                           random_crop_flip)

# -- augmentation ----------------------------------------------------------------------------------

def _candidates(img: torch.Tensor, p: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    c, h, w = img.shape
    padded = torch.zeros((c, h + 2 * p, w + 2 * p), dtype=img.dtype)
    padded[:, p:p + h, p:p + w] = img
    out = []
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            win = padded[:, dy:dy + h, dx:dx + w]
            out += [(dy, dx, False, win), (dy, dx, True, win.flip(-1))]
    return out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("padding", [4, 2, 0])
def test_every_output_is_a_window_of_the_padded_input(dtype, padding):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (24, 3, 32, 32), generator=g).to(dtype)
    out = random_crop_flip(images, padding=padding, generator=torch.Generator().manual_seed(5))
    assert out.dtype == dtype and out.shape == images.shape
    found = set()
    for img, o in zip(images, out):
        matches = [(dy, dx, f) for dy, dx, f, win in _candidates(img, padding) if torch.equal(win, o)]
        assert matches, "an output is no window of its padded input"
        found.add(matches[0])
    # offsets and flips differ across the batch (only the flip can, without padding)
    assert len(found) == 2 if padding == 0 else len(found) > 10


def test_crop_offsets_and_flips_are_uniform():
    # 5000 copies of one 8x8 image with distinct pixel values (more than one gather chunk): each output
    # identifies its (dy, dx, flip).
    img = torch.arange(1, 65, dtype=torch.float32).view(1, 8, 8)
    out = random_crop_flip(img.expand(5000, 1, 8, 8), padding=4, generator=torch.Generator().manual_seed(1))
    cands = _candidates(img, 4)
    stack = torch.stack([win for *_, win in cands]).view(len(cands), -1)  # [162, 64]
    which = (out.view(5000, 1, -1) == stack.view(1, len(cands), -1)).all(-1)  # [5000, 162]
    assert (which.sum(1) == 1).all()
    counts = which.sum(0)
    assert (counts > 8).all() and (counts < 70).all()  # expectation ~30.9 each


def test_random_crop_flip_is_reproducible_with_a_seeded_generator():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    a = random_crop_flip(images, generator=torch.Generator().manual_seed(7))
    b = random_crop_flip(images, generator=torch.Generator().manual_seed(7))
    c = random_crop_flip(images, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_flip_with_explicit_offsets():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    centre = torch.tensor([4, 4, 4])
    same = crop_flip(images, centre, centre, torch.tensor([False, True, False]))
    assert torch.equal(same[0], images[0]) and torch.equal(same[1], images[1].flip(-1))
    no_flip = torch.zeros(3, dtype=torch.bool)
    shifted = crop_flip(images, torch.tensor([0, 8, 4]), torch.tensor([0, 8, 6]), no_flip)
    assert torch.equal(shifted[0, :, 4:, 4:], images[0, :, :28, :28]) and (shifted[0, :, :4] == 0).all()
    assert torch.equal(shifted[1, :, :28, :28], images[1, :, 4:, 4:]) and (shifted[1, :, 28:] == 0).all()
    assert torch.equal(shifted[2, :, :, :30], images[2, :, :, 2:]) and (shifted[2, :, :, 30:] == 0).all()


# -- normalisation ---------------------------------------------------------------------------------

def test_normalization_stats_pixel_and_channel():
    images = torch.randint(0, 256, (5000, 3, 32, 32), dtype=torch.uint8)  # more than one chunk
    mean, std = normalization_stats(images)
    assert mean.dtype == std.dtype == torch.float32 and mean.shape == (3, 32, 32) and std.shape == (1, 1, 1)
    direct = images.double().div(255).mean(0)
    assert torch.allclose(mean.double(), direct, atol=1e-6) and (std == 1).all()
    cmean, cstd = normalization_stats(images, mode="channel")
    assert cmean.shape == cstd.shape == (3, 1, 1)
    x = images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(cmean.double().flatten(), x.mean(1), atol=1e-6)
    assert torch.allclose(cstd.double().flatten(), x.std(1, unbiased=False), atol=1e-6)
    with pytest.raises(ValueError):
        normalization_stats(images, mode="imagenet")


def test_normalize():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.rand(3, 1, 1), torch.rand(3, 1, 1) + 0.5
    x = normalize(images, mean, std)
    assert x.dtype == torch.float32 and x.device == images.device
    assert torch.allclose(x, (images.float() / 255 - mean) / std, atol=1e-5)
    pmean, pstd = normalization_stats(images)
    assert normalize(images, pmean, pstd).mean(0).abs().max() < 1e-5  # per-pixel means removed


# -- loader ----------------------------------------------------------------------------------------

N = 1000


@pytest.fixture(scope="module")
def arrays():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g)
    ids = torch.arange(N)  # labels that name their image: what each batch visited
    return images, ids, *normalization_stats(images)


def _loader(arrays, **kw):
    images, ids, mean, std = arrays
    return TrainLoader(images, ids, mean=mean, std=std, **{"batch_size": 64, "seed": 3, **kw})


def _epoch(loader, e, **kw):
    return list(loader.epoch(e, **kw))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2)
                                    for (x1, y1), (x2, y2) in zip(a, b))


def test_loader_epoch_is_a_pure_function_of_seed_and_epoch(arrays):
    loader = _loader(arrays)
    assert len(loader) == loader.batches_per_epoch == N // 64
    e0 = _epoch(loader, 0)
    assert len(e0) == N // 64
    x, y = e0[0]
    assert x.dtype == torch.float32 and x.shape == (64, 3, 32, 32) and y.dtype == torch.int64
    assert _same(e0, _epoch(_loader(arrays), 0))  # a fresh loader, same batches
    assert not torch.equal(e0[0][1], _epoch(loader, 1)[0][1])  # reshuffled every epoch
    assert not torch.equal(e0[0][1], _epoch(_loader(arrays, seed=4), 0)[0][1])


def test_loader_start_resumes_mid_epoch(arrays):
    loader = _loader(arrays)
    e2 = _epoch(loader, 2)
    assert _same(_epoch(loader, 2, start=5), e2[5:])
    assert _epoch(loader, 2, start=len(loader)) == []
    with pytest.raises(ValueError):
        _epoch(loader, 2, start=len(loader) + 1)


@pytest.mark.parametrize("start", [0, 7, 2 * (N // 64) - 1])
def test_grouped_batches_are_each_loaders_own(arrays, start):
    """One gather for K loaders (seeds 3, 4, 9) gives, at every epoch and resume offset, each loader's own
    batch bit for bit in its channels, and its labels in its column."""
    loaders = [_loader(arrays, seed=s) for s in (3, 4, 9)]
    epochs = len(loaders[0])
    own = [[b for e in range(3) for b in ld.epoch(e)][start:] for ld in loaders]
    together = GroupedBatches(loaders, start=start)
    for i in range(3 * epochs - start):
        x, y = next(together)
        assert x.shape == (64, 9, 32, 32) and y.shape == (64, 3)
        for k in range(3):
            assert torch.equal(x[:, 3 * k:3 * k + 3], own[k][i][0]) and torch.equal(y[:, k], own[k][i][1])
    with pytest.raises(ValueError, match="same images"):
        GroupedBatches([loaders[0], _loader(arrays, batch_size=32)])


def test_loader_rank_slices_make_up_the_global_batch(arrays):
    loader = _loader(arrays)
    full = _epoch(loader, 1)
    r0, r1 = _epoch(loader, 1, rank=0, world_size=2), _epoch(loader, 1, rank=1, world_size=2)
    assert len(r0) == len(r1) == len(full)
    for (x, y), (x0, y0), (x1, y1) in zip(full, r0, r1):
        assert len(y0) == len(y1) == 32
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    with pytest.raises(ValueError):
        _epoch(loader, 0, world_size=3)  # 64 is not divisible by 3


@pytest.mark.parametrize("drop_last", [True, False])
def test_loader_visits_each_image_at_most_once(arrays, drop_last):
    loader = _loader(arrays, drop_last=drop_last)
    for e in range(2):
        ids = torch.cat([y for _, y in loader.epoch(e)])
        assert len(ids) == len(set(ids.tolist())) == (N // 64 * 64 if drop_last else N)
    assert len(loader) == (N // 64 if drop_last else -(-N // 64))


def test_loader_without_augmentation_gives_the_images(arrays):
    images, _, mean, std = arrays
    for x, y in _loader(arrays, augment=False).epoch(0):
        assert torch.allclose(x, normalize(images[y], mean, std))


def test_loader_augments_through_random_crop_flip(arrays):
    # The documented contract: epoch e's batches are normalize(random_crop_flip(images[perm])) in
    # slices, perm and crops drawn from one generator seeded with seed * 1_000_003 + e.
    images, ids, mean, std = arrays
    g = torch.Generator().manual_seed(3 * 1_000_003 + 4)
    perm = torch.randperm(N, generator=g)
    expected = normalize(random_crop_flip(images[perm], generator=g), mean, std)
    for b, (x, y) in enumerate(_loader(arrays).epoch(4)):
        assert torch.equal(y, perm[b * 64:(b + 1) * 64])
        assert torch.allclose(x, expected[b * 64:(b + 1) * 64])


def test_evaluation_batches_in_order(arrays):
    from resnet.inference import input_batches
    images, ids, mean, std = arrays
    batches = list(input_batches(images, batch_size=300, mean=mean, std=std, device=torch.device("cpu")))
    assert [len(x) for x in batches] == [300, 300, 300, 100]
    assert torch.allclose(torch.cat(batches), normalize(images, mean, std))


def test_fixture_is_learnable(cifar_data):
    # The class means of the synthetic images differ strongly: a nearest-class-mean classifier on
    # the training set already does well on the test set, so small networks learn quickly.
    x = cifar_data.train_images.float().mean((2, 3))
    centres = torch.stack([x[cifar_data.train_labels == c].mean(0) for c in range(10)])
    xt = cifar_data.test_images.float().mean((2, 3))
    pred = torch.cdist(xt, centres).argmin(1)
    assert (pred == cifar_data.test_labels).float().mean() > 0.9
    assert len(cifar_data.train_labels) == 1000 and len(cifar_data.test_labels) == 200
    assert torch.bincount(cifar_data.train_labels, minlength=10).tolist() == [100] * 10


# -- the augmentation figure and the benchmark's error path ------------------------------------------

def test_plot_augmentation_draws_through_the_loader_code(tiny_cifar_root, tmp_path):
    from matplotlib.figure import Figure

    from resnet.plots import augmentation_figure, plot_augmentation, save_figure

    d = load_cifar10(tiny_cifar_root)
    fig = plot_augmentation(d.train_images[:2], ["first", "second"], num_random=1)
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 2 * 5
    shown = [np.asarray(ax.images[0].get_array()) for ax in axes]
    assert np.array_equal(shown[0], d.train_images[0].permute(1, 2, 0).numpy())  # original
    assert np.array_equal(shown[1], d.train_images[0].flip(-1).permute(1, 2, 0).numpy())  # flipped
    assert axes[0].get_ylabel() == "first" and axes[5].get_ylabel() == "second"
    path = save_figure(fig, tmp_path / "figs" / "aug.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["aug.png"]  # no temporary file left
    fig = augmentation_figure(d, tmp_path / "figs" / "aug2.png", num_classes=3)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == list(CLASSES[:3])
    assert f"CIFAR-10 (modified copy {d.fingerprint})" in fig.get_suptitle()


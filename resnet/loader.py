"""The training batches on the device: the paper's augmentation (section 4.2: pad 4, random 32x32 crop,
random horizontal flip), the normalisation, and TrainLoader.

The whole training set is held once as a uint8 tensor on the device that trains (the GPU when there is
one). An epoch is a handful of tensor operations there: one seeded permutation, one draw of crop offsets
and flip bits for every image, and per batch one gather that crops and mirrors it, then normalisation. No
per-sample Python and no PIL: many times faster than torchvision's per-sample pipeline
(benchmarks/data_throughput.py). An epoch is a pure function of (seed, epoch), which lets a run resume
mid-epoch exactly and data-parallel ranks agree on the global batch.

    mean, std = normalization_stats(train_images)              # training images only
    loader = TrainLoader(train_images, train_labels, mean=mean, std=std, seed=0)
    for x, y in loader.epoch(epoch, start=batch_to_resume_from):
        ...
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from resnet.cifar10 import CIFAR10, train_val_split
from resnet.config import ConfigError, RunConfig
from resnet.distributed import Dist

__all__ = ["TrainLoader", "GroupedBatches", "DeviceData", "crop_flip", "normalization_stats", "normalize",
           "random_crop_flip"]


# --------------------------------------------------------------------------------------------------
# Augmentation (paper section 4.2: pad 4 pixels on each side, random 32x32 crop, random horizontal flip)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"expected a batch of images [B, C, H, W], got "
                         f"{getattr(images, 'shape', type(images).__name__)}")


def _draw_crop_flip(n: int, padding: int, generator: torch.Generator | None,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offsets dy, dx in [0, 2*padding] and flip bits for n images, drawn in this fixed order."""
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"the generator lives on {generator.device} but the images on {device}; "
                         f"create it with torch.Generator(device=images.device)")
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
    return dy, dx, flip


_CROP_CHUNK = 4096  # images per gather: bounds the int64 index (32 KiB per 32x32 image) and the padded copy


def crop_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, *,
              padding: int = 4) -> torch.Tensor:
    """The deterministic core of `random_crop_flip`: image b becomes the HxW window at row dy[b],
    column dx[b] of its zero-padded copy, mirrored left-right where flip[b] is true.

    One gather per 4096 images: the source index of every output pixel is built from arange grids
    plus the per-image offsets, the flip reverses the column index. Any dtype, any device.
    """
    _check_images(images)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    b = images.shape[0]
    if not dy.shape == dx.shape == flip.shape == (b,):
        raise ValueError(f"expected dy, dx and flip of shape [{b}], got {tuple(dy.shape)}, "
                         f"{tuple(dx.shape)}, {tuple(flip.shape)}")
    out = torch.empty_like(images, memory_format=torch.contiguous_format)
    dev = images.device
    dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)
    for lo in range(0, b, _CROP_CHUNK):
        hi = min(lo + _CROP_CHUNK, b)
        _crop_flip_into(out[lo:hi], images[lo:hi], dy[lo:hi], dx[lo:hi], flip[lo:hi], padding)
    return out


def _crop_flip_into(out: torch.Tensor, images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                    flip: torch.Tensor, padding: int) -> None:
    b, c, h, w = images.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    padded = images.new_zeros((b, c, hp, wp))
    padded[:, :, padding:padding + h, padding:padding + w] = images
    dev = images.device
    rows = dy.view(b, 1, 1) + torch.arange(h, device=dev).view(1, h, 1)                # [b, h, 1]
    cols = torch.arange(w, device=dev).view(1, 1, w).expand(b, 1, w)
    cols = torch.where(flip.view(b, 1, 1), (w - 1) - cols, cols) + dx.view(b, 1, 1)    # [b, 1, w]
    index = (rows * wp + cols).view(b, 1, h * w).expand(b, c, h * w)                    # [b, c, h*w]
    torch.gather(padded.view(b, c, hp * wp), 2, index, out=out.view(b, c, h * w))


def random_crop_flip(images: torch.Tensor, *, padding: int = 4,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """For each image of the batch [B, C, H, W] independently: a random HxW window of the image
    zero-padded by `padding` on every side, mirrored left-right with probability 1/2.

    Batched (no per-image loop, no PIL), any dtype, on the images' device; `generator` must live on
    that device too. The same generator state gives the same output.
    """
    _check_images(images)
    dy, dx, flip = _draw_crop_flip(images.shape[0], padding, generator, images.device)
    return crop_flip(images, dy, dx, flip, padding=padding)


# --------------------------------------------------------------------------------------------------
# Normalisation


def normalization_stats(train_images: torch.Tensor, *,
                        mode: str = "pixel") -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), float32, of the TRAINING images (uint8 [N, C, H, W]) scaled to [0, 1].

    mode="pixel": the paper's per-pixel mean subtraction (section 4.2): mean [C, H, W] over the
    images, std ones [1, 1, 1] (no division). mode="channel": per-channel mean and std, [C, 1, 1].
    Both broadcast against [B, C, H, W]. Pass the training images only: statistics of the test set
    must never be used. Summed in float64 over chunks, so no float copy of the whole set is made.
    """
    if mode not in ("pixel", "channel"):
        raise ValueError(f"mode must be 'pixel' or 'channel', got {mode!r}")
    _check_images(train_images)
    if train_images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {train_images.dtype}")
    n, c, h, w = train_images.shape
    if n == 0:
        raise ValueError("no images")
    s1 = torch.zeros((c, h, w), dtype=torch.float64, device=train_images.device)
    s2 = torch.zeros_like(s1)
    for chunk in train_images.split(2048):
        x = chunk.to(torch.float64)
        s1 += x.sum(0)
        if mode == "channel":
            s2 += x.square().sum(0)
    if mode == "pixel":
        mean = s1 / (255.0 * n)
        return mean.float(), torch.ones((1, 1, 1), dtype=torch.float32, device=mean.device)
    count = n * h * w
    mean = s1.sum((1, 2)) / count
    var = s2.sum((1, 2)) / count - mean.square()
    mean, std = mean / 255.0, var.clamp_min(0).sqrt() / 255.0
    return mean.float().view(c, 1, 1), std.float().view(c, 1, 1)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 (images/255 - mean)/std, on the images' device (one fused pass)."""
    dev = images.device
    scale = 1.0 / (255.0 * std.to(device=dev, dtype=torch.float32))
    shift = -mean.to(device=dev, dtype=torch.float32) / std.to(device=dev, dtype=torch.float32)
    return torch.addcmul(shift, images, scale)


# --------------------------------------------------------------------------------------------------
# Iteration


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class TrainLoader:
    """The training batches: shuffled every epoch, augmented (crop + flip), normalised.

    The data stays where `images` lives (the GPU when there is one), and so does everything computed
    from it. `epoch(e)` is a pure function of (seed, e) on a given device type: a generator seeded
    with seed * 1_000_003 + e draws the permutation, then crop offsets and flip bits for the whole
    epoch, in that order; each batch is then images[perm[batch]] cropped and flipped in one gather
    and normalised. The batches equal those of normalize(random_crop_flip(images[perm], generator=g)),
    but only the batches asked for are computed, so `start=k` (resuming a run mid-epoch) is cheap.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 128, seed: int = 0,
                 augment: bool = True, mean: torch.Tensor, std: torch.Tensor, drop_last: bool = True,
                 padding: int = 4) -> None:
        _check_images(images)
        if images.dtype != torch.uint8:
            raise ValueError(f"expected uint8 images, got {images.dtype}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"expected {images.shape[0]} labels, got shape {tuple(labels.shape)}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.images = images
        self.labels = labels.to(device=images.device, dtype=torch.int64)
        self.device = images.device
        self.mean = mean.to(device=images.device, dtype=torch.float32)
        self.std = std.to(device=images.device, dtype=torch.float32)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last
        self.padding = padding
        n = images.shape[0]
        self.batches_per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def epoch(self, epoch: int, *, start: int = 0, rank: int = 0,
              world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches `start`, `start`+1, ... of epoch `epoch` as (x float32 [b, C, H, W], y int64 [b]).

        For data-parallel training each rank gets its contiguous slice of every global batch (the
        global batch stays `batch_size`, which world_size must divide); the slices of ranks 0..
        world_size-1, concatenated, are the world_size=1 batch.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if self.batch_size % world_size:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by world_size {world_size}")
        if not 0 <= start <= self.batches_per_epoch:
            raise ValueError(f"start must lie in 0..{self.batches_per_epoch}, got {start}")
        return self._epoch(epoch, start, rank, world_size)

    def draws(self, epoch: int) -> tuple[torch.Tensor, ...]:
        """Epoch ``epoch``'s order of the images and, when augmenting, every image's crop offsets and flip:
        (perm, dy, dx, flip), drawn in that order from a generator seeded by (seed, epoch)."""
        n = self.images.shape[0]
        g = torch.Generator(device=self.device).manual_seed(_epoch_seed(self.seed, epoch))
        perm = torch.randperm(n, generator=g, device=self.device)
        return (perm, *_draw_crop_flip(n, self.padding, g, self.device)) if self.augment else (perm,)

    def _epoch(self, epoch: int, start: int, rank: int, world_size: int):
        n = self.images.shape[0]
        perm, *augment = self.draws(epoch)
        if self.augment:
            dy, dx, flip = augment
        for b in range(start, self.batches_per_epoch):
            lo = b * self.batch_size
            size = min(self.batch_size, n - lo)
            # tensor_split's boundaries: equal slices for full batches, near-equal for a last short one
            i, j = lo + size * rank // world_size, lo + size * (rank + 1) // world_size
            idx = perm[i:j]
            x = self.images[idx]
            if self.augment:
                x = crop_flip(x, dy[i:j], dx[i:j], flip[i:j], padding=self.padding)
            yield normalize(x, self.mean, self.std), self.labels[idx]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same tensor, or equal ones (a quick run's subset is taken again for each run)."""
    return a is b or (a.shape == b.shape and torch.equal(a, b))


class GroupedBatches:
    """The training batches of K loaders over one set of images (runs that differ in their seed or their
    network, trained as one group by resnet.group), made together: each iteration one gather crops and
    flips all K batches and one pass normalises them, so the host's work does not grow with K. Yields
    (x [B, K*C, H, W], loader k's batch in channels kC..(k+1)C-1; y [B, K]), from iteration ``start`` on
    across epochs: bit-equal to each loader's own batches."""

    def __init__(self, loaders: Sequence[TrainLoader], *, start: int = 0) -> None:
        first = loaders[0]
        alike = all(same(ld.images, first.images) and same(ld.labels, first.labels)
                    and (ld.batch_size, ld.augment, ld.padding) == (first.batch_size, first.augment,
                                                                     first.padding)
                    and same(ld.mean, first.mean) and same(ld.std, first.std) for ld in loaders)
        if not alike:
            raise ValueError("grouped batches need loaders over the same images, batch size, augmentation "
                             "and normalisation")
        self.loaders, self.iteration = list(loaders), start
        self.epoch: int | None = None
        self.plan: list[torch.Tensor] = []

    def __iter__(self) -> GroupedBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        first, k = self.loaders[0], len(self.loaders)
        epoch, batch = divmod(self.iteration, len(first))
        if epoch != self.epoch:  # each loader's draws for the epoch, stacked: [K, n] each
            self.plan = [torch.stack(d) for d in zip(*(ld.draws(epoch) for ld in self.loaders))]
            self.epoch = epoch
        lo = batch * first.batch_size
        perm, *augment = (d[:, lo:lo + first.batch_size].reshape(-1) for d in self.plan)
        x = first.images[perm]
        if first.augment:
            x = crop_flip(x, *augment, padding=first.padding)
        x = normalize(x, first.mean, first.std)  # [K*B, C, H, W]
        _, c, h, w = x.shape
        self.iteration += 1
        return (x.view(k, -1, c, h, w).transpose(0, 1).reshape(-1, k * c, h, w),
                first.labels[perm].view(k, -1).t())


# --------------------------------------------------------------------------------------------------
# What one run trains and evaluates on

@dataclass
class DeviceData:
    """What one run trains and evaluates on, on its device: the training batches, the normalisation (from
    the training images only), the test and validation sets, and the data set's name."""

    loader: TrainLoader
    mean: torch.Tensor
    std: torch.Tensor
    test: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor] | None
    total_iterations: int
    classes: tuple[str, ...]
    name: str
    fingerprint: str

    @classmethod
    def prepare(cls, config: RunConfig, data: CIFAR10, device: torch.device, dist: Dist) -> DeviceData:
        images, labels, test_images, test_labels = data.on(device)
        val = None
        if config.val_size:
            if config.val_size >= len(labels):
                raise ConfigError(f"val_size {config.val_size} leaves no training images "
                                  f"(have {len(labels)})")
            split = train_val_split(len(labels), val_size=config.val_size, seed=0)
            train_idx, val_idx = (i.to(device) for i in split)
            val = (images[val_idx], labels[val_idx])
            images, labels = images[train_idx], labels[train_idx]
        if config.train_subset:
            if config.train_subset > len(labels):
                raise ConfigError(f"train_subset {config.train_subset} exceeds the {len(labels)} "
                                  "training images")
            # a fixed, seed-independent subset: every network of a quick sweep sees the same images
            keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(12345))
            keep = keep[: config.train_subset].sort().values.to(device)
            images, labels = images[keep], labels[keep]
        if len(labels) < config.batch_size:
            raise ConfigError(f"only {len(labels)} training images; a batch needs {config.batch_size}")
        if config.batch_size % dist.world_size:
            raise ConfigError(f"batch_size {config.batch_size} is not divisible by {dist.world_size} "
                              "processes")
        n_test = config.test_subset or len(test_labels)
        # the normalisation comes from the training images only, never the test set
        mean, std = normalization_stats(images, mode=config.normalization)
        loader = TrainLoader(images, labels, batch_size=config.batch_size, seed=config.seed, mean=mean,
                             std=std)
        total = config.iterations if config.max_epochs is None else min(config.iterations,
                                                                         config.max_epochs * len(loader))
        return cls(loader, mean, std, (test_images[:n_test], test_labels[:n_test]), val, total, data.classes,
                   data.name, data.fingerprint)

    def batches(self, start: int, dist: Dist) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches from iteration ``start`` on, across epochs: a pure function of
        (seed, iteration), this process's slice of each when data-parallel."""
        epoch, offset = divmod(start, len(self.loader))
        while True:
            yield from self.loader.epoch(epoch, start=offset, rank=dist.rank, world_size=dist.world_size)
            epoch, offset = epoch + 1, 0

"""Augmented training batches per second: resnet.loader.TrainLoader against torchvision's per-sample
pipeline, measured side by side in the same run on the same uint8 images.

    python benchmarks/data_throughput.py [--data-dir DIR] [--epochs 1] [--device cpu]

Ours: the whole training set held as one uint8 tensor, per epoch one permutation and one draw of
crop offsets and flips, per batch one gather (crop + flip) and one fused normalisation.
Reference: what the common reproductions run, a Dataset that, like torchvision.datasets.CIFAR10,
turns each image into a PIL image and applies RandomCrop(32, padding=4), RandomHorizontalFlip,
ToTensor and Normalize, batched by a shuffling DataLoader with worker processes. (torchvision's own
CIFAR10 class would reject re-encoded copies at its md5 check; its __getitem__ is reproduced here.)
Both produce normalised float32 batches of 128 for one epoch of all training images (drop_last);
timing covers the whole epoch, the reference's worker start-up included. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from reference import PerSampleCIFAR10, augmenting_transform  # noqa: E402  (the reference, beside this file)
from resnet import cifar10  # noqa: E402
from resnet.loader import TrainLoader, normalization_stats  # noqa: E402
from resnet.train import cpu_name  # noqa: E402


def reference_loader(data: cifar10.CIFAR10, *, batch_size: int, workers: int, mean, std):
    transform = augmenting_transform(mean.flatten().tolist(), std.flatten().tolist())
    ds = PerSampleCIFAR10(data.train_images.permute(0, 2, 3, 1).numpy(), data.train_labels.numpy(), transform)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       drop_last=True, generator=torch.Generator().manual_seed(0))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epochs(make_iter, epochs: int, device: torch.device) -> tuple[float, int]:
    """Seconds and batches for `epochs` full passes; every batch is consumed on `device`."""
    batches = 0
    _sync(device)
    t0 = time.perf_counter()
    for e in range(epochs):
        for x, _ in make_iter(e):
            x = x.to(device, non_blocking=True)
            batches += 1
    _sync(device)
    return time.perf_counter() - t0, batches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py "
                    "(default: $CIFAR10_ROOT, else ./data)")
    ap.add_argument("--download", action="store_true",
                    help="fetch the official archive if the data is missing")
    ap.add_argument("--epochs", type=int, default=1, help="epochs timed for each pipeline (default 1)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the reference (default 2)")
    ap.add_argument("--device", default="cpu", help="where our loader keeps the data (default cpu)")
    args = ap.parse_args(argv)

    root = cifar10.resolve_data_dir(args.data_dir)
    try:
        t0 = time.perf_counter()
        data = cifar10.load_cifar10(root, download=args.download)
        load_s = time.perf_counter() - t0
    except cifar10.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    print(f"data: {len(data.train_labels)} training images from {data.root}, fingerprint {data.fingerprint}, "
          f"loaded in {load_s:.2f} s")
    # per-channel statistics for both pipelines: torchvision's Normalize takes no per-pixel mean
    mean, std = normalization_stats(data.train_images, mode="channel")

    images = data.train_images.to(device)
    labels = data.train_labels.to(device)
    ours = TrainLoader(images, labels, batch_size=args.batch_size, seed=0, mean=mean, std=std)
    next(iter(ours))  # warm-up: first-call allocations
    ours_s, ours_n = time_epochs(lambda e: ours.epoch(e), args.epochs, device)

    ref = reference_loader(data, batch_size=args.batch_size, workers=args.workers, mean=mean, std=std)
    ref_s, ref_n = time_epochs(lambda e: iter(ref), args.epochs, device)

    ours_bps, ref_bps = ours_n / ours_s, ref_n / ref_s
    ratio = ours_bps / ref_bps
    rows = [(f"ours (TrainLoader, {device})", ours_bps, ours_n, ours_s),
            (f"torchvision per-sample, {args.workers} workers", ref_bps, ref_n, ref_s)]
    for name, bps, n, s in rows:
        print(f"{name:<36} {bps:9.1f} batches/s  ({n} batches in {s:.2f} s)")
    print(f"ratio: {ratio:.1f}x")
    record = {
        "benchmark": "data_throughput", "batch_size": args.batch_size, "epochs": args.epochs,
        "ours_device": str(device), "ours_batches_per_s": round(ours_bps, 1),
        "reference": f"torchvision per-sample PIL pipeline, DataLoader with {args.workers} workers",
        "reference_batches_per_s": round(ref_bps, 1), "ratio": round(ratio, 2),
        "load_s": round(load_s, 3), "fingerprint": data.fingerprint, "images": len(data.train_labels),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "command": shlex.join(["python", "benchmarks/data_throughput.py", *sys.argv[1:]]),
    }
    print(json.dumps(record))
    # the record beside the other benchmarks' (atomically: a crash never leaves half a file)
    from resnet.records import write_json
    write_json(Path(__file__).resolve().parent / "results" / f"data_throughput_{device.type}.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())

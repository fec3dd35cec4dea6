"""Training images per second: the project's training iteration (resnet.train.Run.advance) against a
reference pipeline, measured side by side in the same run, on the same images, model and optimizer.

    python benchmarks/train_throughput.py [--data-dir DIR] [--device cpu|cuda] [--archs resnet20 resnet56]

Ours: the public call every run's loop makes, `Run.advance(n)`: the learning rate of the iteration, the
next batch of the TrainLoader (the whole uint8 set on the device, one gather per batch for crop + flip,
one fused normalisation) and the TrainStep (channels_last, bf16 autocast and fused SGD on CUDA, the
CUDA-graph step there by default, float32 on the CPU, the loss/error accumulated on the device). The run
is built on the data in a temporary folder; the timed iterations fall before its first evaluation, so
evaluation, checkpoints and the end-of-run records stay out of the measurement, and the two pipelines can
alternate within one process.

Reference: what the common reproductions (e.g. akamaster/pytorch_resnet_cifar10) run. A Dataset that,
like torchvision.datasets.CIFAR10, turns each image into a PIL image and applies RandomCrop(32,
padding=4), RandomHorizontalFlip, ToTensor and Normalize (per channel), a shuffling DataLoader (batch
128, 2 worker processes, drop_last; pinned memory on CUDA), the same architecture built from the same
seed, SGD (lr 0.1, momentum 0.9, weight decay 1e-4) and cross-entropy, in plain float32 and the default
contiguous NCHW layout. Its step is the bare minimum (no per-step .item(), no accuracy), so it does
slightly less bookkeeping than ours.

Both pipelines persist across the whole benchmark (the reference's DataLoader iterator and workers
included, so worker start-up is not timed; the default schedule never crosses an epoch boundary). Each
round runs, for each pipeline, `--warmup` untimed iterations and then `--iterations` timed ones; the
order alternates (ours, reference | reference, ours | ...) for `--rounds` rounds, and the reported
images/s are the medians over the rounds, so that a shared, noisy machine affects both sides alike. The
ratio is ours / reference (the per-round ratios are in the record too). The table is followed by one
line of JSON; the same record is written, atomically, to benchmarks/results/train_throughput_<device>.json
(device: cpu or cuda).

Both pipelines run in this one process with the same torch thread count. On a CPU shared with other
jobs, a team of one thread per core stalls at every parallel region whose threads are not all scheduled
(small ops then take 10-50x longer), which measures the scheduler more than the pipelines: `--threads 1`
avoids that; the default is torch's own (one thread per core), what either pipeline gets out of the box.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from reference import PerSampleCIFAR10, augmenting_transform  # noqa: E402  (the reference, beside this file)
from resnet import cifar10, cli, models  # noqa: E402
from resnet.config import Execution, paper_config, resolve_device  # noqa: E402
from resnet.loader import normalization_stats  # noqa: E402
from resnet.records import git_commit, write_json  # noqa: E402
from resnet.train import Run, cpu_name  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
BATCH_SIZE = 128


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Ours:
    """The project's training iteration: resnet.train.Run.advance, what every run's loop calls."""

    name = "ours"

    def __init__(self, arch: str, data: cifar10.CIFAR10, device: str, seed: int, out: Path) -> None:
        # the schedule is never reached: the lr stays 0.1 and no evaluation falls in the timed iterations
        cfg = paper_config(arch, batch_size=BATCH_SIZE, seed=seed)
        self.training = Run(cfg, data=data, out=out, execution=Execution(device=device))
        self.device = self.training.device

    def run(self, n: int) -> None:
        self.training.advance(n)

    def close(self) -> None:
        self.training.end("unfinished", message="a benchmark's timed iterations")


class Reference:
    """torchvision's per-sample pipeline feeding a fresh float32, NCHW copy of the same network."""

    name = "reference"

    def __init__(self, arch: str, data: cifar10.CIFAR10, device: torch.device, seed: int,
                 workers: int) -> None:
        mean, std = normalization_stats(data.train_images, mode="channel")
        transform = augmenting_transform(mean.flatten().tolist(), std.flatten().tolist())
        ds = PerSampleCIFAR10(data.train_images.permute(0, 2, 3, 1).numpy(), data.train_labels.numpy(),
                              transform)
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers, drop_last=True,
            pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))
        self.device = device
        torch.manual_seed(seed)  # the same initial weights as the run's model
        self.model = models.build_model(arch, shortcut="A", num_classes=len(data.classes)).to(device).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        self._it = None  # the DataLoader iterator: workers start at the first batch asked for, not before

    def _next(self):
        if self._it is not None:
            try:
                return next(self._it)
            except StopIteration:  # an epoch ended: a new one, with new workers, as in a training script
                pass
        self._it = iter(self.loader)
        return next(self._it)

    def close(self) -> None:
        """Stop the workers now (an iterator left to the interpreter's exit can hang it)."""
        shutdown = getattr(self._it, "_shutdown_workers", None)  # absent with --workers 0
        if shutdown is not None:
            shutdown()
        self._it = None

    def run(self, n: int) -> None:
        for _ in range(n):
            x, y = self._next()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def timed(pipeline, *, warmup: int, iterations: int) -> float:
    """Images per second over `iterations` training iterations, after `warmup` untimed ones."""
    pipeline.run(warmup)
    _sync(pipeline.device)
    t0 = time.perf_counter()
    pipeline.run(iterations)
    _sync(pipeline.device)
    return iterations * BATCH_SIZE / (time.perf_counter() - t0)


def _command(argv: list[str] | None) -> str:
    script = Path(sys.argv[0]) if argv is None else Path(__file__)
    try:
        script = script.resolve().relative_to(REPO)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *(sys.argv[1:] if argv is None else argv)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_data_args(ap)
    ap.add_argument("--archs", nargs="+", default=["resnet20", "resnet56"], choices=models.CIFAR_ARCHS,
                    metavar="ARCH", help="networks to time (default: resnet20 resnet56)")
    ap.add_argument("--iterations", type=cli.positive_int, default=4,
                    help="timed training iterations of batch 128 per round and pipeline (default 4)")
    ap.add_argument("--warmup", type=cli.positive_int, default=1,
                    help="untimed iterations before each timed stretch (default 1)")
    ap.add_argument("--rounds", type=cli.positive_int, default=6,
                    help="alternating rounds per network (ours first, then the reference first, ...); "
                         "medians are reported (default 6)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the reference (default 2)")
    ap.add_argument("--threads", type=cli.positive_int, default=None,
                    help="torch threads of this process, for both pipelines (default: torch's default, "
                         "one per core); 1 avoids stalled thread teams on a machine shared with other jobs")
    ap.add_argument("--seed", type=int, default=0, help="initial weights and data order of both pipelines")
    ap.add_argument("--output", type=Path, default=None,
                    help="where the JSON record goes "
                         "(default: benchmarks/results/train_throughput_<device>.json)")
    args = ap.parse_args(argv)
    if args.workers < 0:
        ap.error(f"--workers must be >= 0, got {args.workers}")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)  # ConfigError (exit 2) when cuda is asked for but absent
    t0 = time.perf_counter()
    data = cifar10.load_cifar10(cifar10.resolve_data_dir(args.data_dir),
                              download=args.download)  # DataError: exit 2
    load_s = time.perf_counter() - t0
    n_batches = len(data.train_labels) // BATCH_SIZE
    if args.rounds * (args.warmup + args.iterations) > n_batches:
        print(f"note: {args.rounds} x ({args.warmup} + {args.iterations}) iterations cross an epoch boundary "
              f"({n_batches} batches): the reference's worker restart is then timed", file=sys.stderr)
    print(f"data: {len(data.train_labels)} training images from {data.root}, fingerprint {data.fingerprint}, "
          f"loaded in {load_s:.2f} s")
    dev_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"cpu ({cpu_name()}, {os.cpu_count()} cores, "
                     f"{torch.get_num_threads()} torch threads)")
    print(f"device: {dev_name}; {args.rounds} rounds of {args.warmup} untimed + {args.iterations} timed "
          f"iterations, batch {BATCH_SIZE}, per pipeline and network")

    results = {}
    for arch in args.archs:
        with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
            ours = Ours(arch, data, str(device), args.seed, Path(tmp) / "run")
            ref = Reference(arch, data, device, args.seed, args.workers)
            speeds = {"ours": [], "reference": []}
            try:
                for r in range(args.rounds):
                    # ours, ref, ref, ours, ...: a drift in the machine's load favours neither side
                    for p in (ours, ref) if r % 2 == 0 else (ref, ours):
                        speeds[p.name].append(timed(p, warmup=args.warmup, iterations=args.iterations))
                    print(f"  {arch} round {r + 1}/{args.rounds}: ours {speeds['ours'][-1]:7.1f}, "
                          f"reference {speeds['reference'][-1]:7.1f} images/s", file=sys.stderr, flush=True)
            finally:
                ref.close()
                ours.close()
            del ours, ref, p
        o, f = statistics.median(speeds["ours"]), statistics.median(speeds["reference"])
        results[arch] = {"ours_images_per_s": round(o, 1), "reference_images_per_s": round(f, 1),
                         "ratio": round(o / f, 3),
                         "ratio_per_round": [round(a / b, 3)
                                             for a, b in zip(speeds["ours"], speeds["reference"])],
                         "rounds": {k: [round(v, 1) for v in vs] for k, vs in speeds.items()}}

    precision = ("bf16 autocast, channels_last, fused SGD" if device.type == "cuda"
                 else "float32, channels_last")
    ours_desc = f"resnet.train.Run.advance: TrainLoader + TrainStep ({precision})"
    ref_desc = f"torchvision per-sample PIL pipeline, DataLoader {args.workers} workers, float32 NCHW"
    print()
    print(f"{'network':<10} {'ours images/s':>14} {'reference images/s':>19} {'ratio':>7}")
    for arch, r in results.items():
        print(f"{arch:<10} {r['ours_images_per_s']:14.1f} {r['reference_images_per_s']:19.1f} "
              f"{r['ratio']:6.2f}x")
    print(f"ours: {ours_desc}\nreference: {ref_desc}\n(medians of {args.rounds} alternating rounds of "
          f"{args.iterations} iterations; ratio = ours / reference)")
    record = {
        "benchmark": "train_throughput", "device": dev_name, "device_type": device.type,
        "torch": torch.__version__, "batch_size": BATCH_SIZE, "iterations": args.iterations,
        "warmup": args.warmup, "rounds": args.rounds, "statistic": "median over rounds",
        "ours": ours_desc, "reference": ref_desc, "archs": results,
        "fingerprint": data.fingerprint, "images": len(data.train_labels),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "git_commit": git_commit(),
        "command": _command(argv), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(json.dumps(record))
    out = args.output or RESULTS / f"train_throughput_{device.type}.json"
    write_json(out, record)
    print(f"written: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

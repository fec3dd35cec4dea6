#!/usr/bin/env python3
"""Train one network with the paper's recipe (or the tutorial's) and write its run records.

    python experiments/train.py --arch resnet20                       # the paper's 64k-iteration schedule
    python experiments/train.py --arch resnet110                      # ... with its warm-up (section 4.2)
    python experiments/train.py --arch plain56 --iterations 2000      # lr steps at 1/2 and 3/4 of the run
    python experiments/train.py --arch resnet20 --recipe tutorial     # Adam, 45k/5k split, early stopping
    python experiments/train.py --arch resnet20 --time-limit 540      # stop cleanly before 9 minutes ...
    python experiments/train.py --arch resnet20 --resume              # ... and continue (or after a kill -9)
    torchrun --nproc_per_node 2 experiments/train.py --arch resnet56  # data parallel, global batch 128

Records go to results/runs/<arch>-<shortcut>-<recipe>-s<seed>/ (config.json, log.csv, summary.json), or
results/short/runs/... with --short and results/quick/runs/... with --quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a copied tree, nothing installed

from resnet import cli, models  # noqa: E402
from resnet.config import RECIPES, RunConfig, on_schedule, schedule_of  # noqa: E402
from resnet.distributed import Dist  # noqa: E402
from resnet.records import Summary, default_run_dir  # noqa: E402
from resnet.cifar10 import load_data  # noqa: E402
from resnet.train import train  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, metavar="ARCH", help=f"one of: {', '.join(models.ARCHS)}")
    p.add_argument("--shortcut", default="A", choices=models.SHORTCUTS,
                   help="A: identity + zero-padding, B: projection where the shape changes, "
                        "C: all projections")
    p.add_argument("--recipe", default="paper", choices=tuple(RECIPES))
    p.add_argument("--iterations", type=int, default=None,
                   help="total iterations (paper: 64000); for the paper recipe the lr steps move "
                        "to 1/2 and 3/4")
    p.add_argument("--milestones", type=int, nargs="*", default=None,
                   help="iterations where the lr drops 10x")
    p.add_argument("--eval-every", type=int, default=None, help="iterations between evaluations (paper: 500)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (paper: 0.1; tutorial: 0.001)")
    p.add_argument("--batch-size", type=cli.positive_int, default=None,
                   help="images per iteration (paper: 128; under torchrun, over all processes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default=None, choices=("bf16", "fp32"),
                   help="bf16: bf16 autocast on CUDA (default); fp32: float32 everywhere (the control run)")
    p.add_argument("--val-size", type=int, default=None,
                   help="hold out this many training images (45k/5k: 5000)")
    p.add_argument("--train-subset", type=int, default=None, help="train on this many images (quick checks)")
    p.add_argument("--test-subset", type=int, default=None, help="test on the first N test images")
    cli.add_schedule_args(p)
    cli.add_data_args(p)
    cli.add_engine_args(p)
    p.add_argument("--out", default=None,
                   help="run folder (default: results/runs/<arch>-<shortcut>-<recipe>-s<seed>)")
    p.add_argument("--checkpoint-every", type=cli.positive_int, default=None,
                   help="iterations between checkpoints (default: at every evaluation)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=cli.positive_int, default=None,
                   help="CPU threads for torch (on a busy shared CPU, 1 is often fastest)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> RunConfig:
    """The recipe's config for the flags. A run whose length, evaluations or data the flags change is on a
    schedule of its own ("custom": recorded under results/custom/, never drawn beside the paper's)."""
    recipe = RECIPES[args.recipe]
    overrides = {k: v for k, v in {
        "shortcut": args.shortcut, "lr": args.lr, "seed": args.seed, "precision": args.precision}.items()
        if v is not None}
    own = {k: v for k, v in {"eval_every": args.eval_every, "batch_size": args.batch_size,
                             "val_size": args.val_size, "train_subset": args.train_subset,
                             "test_subset": args.test_subset}.items()
           if v is not None}
    if args.iterations is not None:
        own.update(recipe.shortened(args.iterations))
    if args.milestones is not None:
        own["milestones"] = tuple(args.milestones)
    custom = {"schedule": "custom"} if own else {}
    return on_schedule(recipe(args.arch, **overrides, **own, **custom), cli.schedule(args))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    execution = cli.execution(args)  # validated here: a bad --device or --time-limit fails before any work
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg, dist = build_config(args), Dist.from_env()
    out = args.out or default_run_dir(cfg, root=cli.results_dir(schedule_of(cfg)) / "runs")
    data = load_data(args.data_dir, download=args.download)
    if dist.is_writer:
        print(f"run folder: {out}")
        print("config: " + ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items()))
        print(f"data: {data.name} (fingerprint {data.fingerprint}) from {data.root}")
    summary = train(cfg, data=data, out=out, execution=execution, resume=args.resume, dist=dist)
    dist.close()
    if dist.is_writer:
        print(last_line(summary), file=sys.stderr)
    return 0


def last_line(summary: Summary) -> str:
    """What the run came to, how fast, and for an unfinished run the command that continues it."""
    done, planned = summary.iterations_done, summary.iterations_planned
    speed = f", {summary.ms_per_iteration:.2f} ms per iteration" if summary.ms_per_iteration else ""
    if summary.status == "finished":
        return (f"finished: test error {summary.final_test_error:.2%} after {done} iterations "
                f"({summary.selection}), {summary.wall_time_s} s{speed}; 1 of 1 runs finished")
    command = cli.this_command() + ("" if "--resume" in sys.argv else " --resume")
    return (f"unfinished at iteration {done} of {planned} ({summary.message}){speed}; 0 of 1 runs "
            f"finished; to continue: {command}")


if __name__ == "__main__":
    cli.main_guard(main)

#!/usr/bin/env python3
"""Train one network with the paper's recipe (or the tutorial's) and write its run records.

    python experiments/train.py --arch resnet20                       # the paper's 64k-iteration schedule
    python experiments/train.py --arch resnet110                      # ... with its warm-up (section 4.2)
    python experiments/train.py --arch plain56 --iterations 2000      # lr steps stay at 1/2 and 3/4 of the run
    python experiments/train.py --arch resnet20 --recipe tutorial     # Adam, 45k/5k split, early stopping
    python experiments/train.py --arch resnet20 --resume              # continue a killed run
    torchrun --nproc_per_node 2 experiments/train.py --arch resnet56  # data parallel, global batch 128

Records go to results/runs/<arch>-<shortcut>-<recipe>-s<seed>/ (config.json, log.csv, summary.json).
"""

from __future__ import annotations

import argparse

import torch

from resnet import cli, models
from resnet import train as engine


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, metavar="ARCH",
                   help=f"one of: {', '.join(models.ARCHS)}")
    p.add_argument("--shortcut", default="A", choices=("A", "B", "C"),
                   help="A: identity + zero-padding, B: projection where the shape changes, C: all projections")
    p.add_argument("--recipe", default="paper", choices=tuple(engine.RECIPES))
    p.add_argument("--iterations", type=int, default=None,
                   help="total iterations (paper: 64000); for the paper recipe the lr steps move to 1/2 and 3/4")
    p.add_argument("--milestones", type=int, nargs="*", default=None, help="iterations where the lr drops 10x")
    p.add_argument("--eval-every", type=int, default=None, help="iterations between evaluations (paper: 500)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (paper: 0.1; tutorial: 0.001)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=None, help="hold out this many training images (45k/5k: 5000)")
    p.add_argument("--train-subset", type=int, default=None, help="train on this many images (quick checks)")
    p.add_argument("--test-subset", type=int, default=None, help="test on the first N test images")
    p.add_argument("--quick", action="store_true", help="the experiments' quick schedule (see resnet.train.QUICK)")
    cli.add_data_args(p)
    p.add_argument("--out", default=None, help="run folder (default: results/runs/<arch>-<shortcut>-<recipe>-s<seed>)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="iterations between checkpoints (default: at every evaluation)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (worth it on a GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (on a busy shared CPU, 1 is often fastest)")
    return p.parse_args()


def build_config(args: argparse.Namespace) -> engine.RunConfig:
    if args.arch not in models.ARCHS:
        raise engine.ConfigError(f"unknown --arch {args.arch!r}; choose one of {', '.join(models.ARCHS)}")
    overrides = {k: v for k, v in {
        "shortcut": args.shortcut, "iterations": args.iterations, "eval_every": args.eval_every, "lr": args.lr,
        "seed": args.seed, "val_size": args.val_size, "train_subset": args.train_subset,
        "test_subset": args.test_subset}.items() if v is not None}
    if args.iterations is not None and args.iterations <= 0:
        raise engine.ConfigError(f"--iterations must be positive; got {args.iterations}")
    if args.milestones is not None:
        overrides["milestones"] = tuple(args.milestones)
    elif args.recipe == "paper" and args.iterations is not None:
        overrides["milestones"] = (args.iterations // 2, args.iterations * 3 // 4)
    cfg = engine.RECIPES[args.recipe](args.arch, **overrides)
    return engine.quick(cfg) if args.quick else cfg


def main() -> int:
    args = parse_args()
    if args.threads is not None:
        if args.threads <= 0:
            raise engine.ConfigError(f"--threads must be positive; got {args.threads}")
        torch.set_num_threads(args.threads)
    cfg = build_config(args)
    trainer = engine.Trainer(cfg, data_dir=args.data_dir, out=args.out, device=args.device,
                             checkpoint_every=args.checkpoint_every, resume=args.resume, compile=args.compile,
                             progress=not args.no_progress, download=args.download)
    if trainer.is_writer:
        print(f"run folder: {trainer.out}")
        print("config: " + ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items()))
        print(f"data: {trainer.data.root} (fingerprint {trainer.data.fingerprint}); device: {trainer.device}")
    summary = trainer.run()
    if trainer.world_size > 1:
        torch.distributed.destroy_process_group()
    if trainer.is_writer:
        print(f"{summary['status']}: test error {summary['final_test_error']:.2%} after "
              f"{summary['iterations_done']} iterations ({summary['selection']}), {summary['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

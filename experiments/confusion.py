#!/usr/bin/env python3
"""Confusion matrices of trained networks on the CIFAR-10 test set, with per-class accuracy.

By default three networks: the paper recipe's ResNet-20 and ResNet-56 (the degradation experiment's runs)
and the tutorial recipe's ResNet-20 (Adam, 45k/5k split, early stopping on the validation error; its
reported model is the final one, as the tutorial's code reports it). Runs that have not finished are
trained first (--no-train: forward passes only, the networks whose runs have finished). A finished run's
weights are its model.pt or, where the repository holds only its records, its published file
(results/weights/). Rows are the true classes.

    python experiments/confusion.py --quick
    python experiments/confusion.py --networks resnet56:paper
    python experiments/confusion.py --no-train        # the published full-schedule networks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a copied tree, nothing installed

from resnet import analysis, cli, models, results  # noqa: E402
from resnet.config import RECIPES, ConfigError, RunConfig  # noqa: E402
from resnet.records import read_json, write_json  # noqa: E402
from resnet.cifar10 import load_data  # noqa: E402


def network(text: str) -> RunConfig:
    """'resnet56:paper' -> the paper recipe's ResNet-56 config."""
    arch, _, recipe = text.partition(":")
    if arch not in models.ARCHS or recipe not in RECIPES:
        raise argparse.ArgumentTypeError(f"expected ARCH:RECIPE with a recipe of {', '.join(RECIPES)}, "
                                         f"got {text!r}")
    return RECIPES[recipe](arch)


def main(argv: list[str] | None = None) -> int:
    parser = cli.experiment_parser(__doc__)
    parser.add_argument("--networks", nargs="+", type=network, metavar="ARCH:RECIPE",
                        default=[network("resnet20:paper"), network("resnet56:paper"),
                                 network("resnet20:tutorial")])
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: the matrices of the networks whose runs have finished, a note "
                             "for the others")
    args = parser.parse_args(argv)
    if args.seeds != 1:
        raise ConfigError("confusion matrices are drawn for seed 0; leave --seeds out")
    jobs = cli.sweep_jobs(args.networks, args)
    data = load_data(args.data_dir, download=args.download)  # checked before any run starts
    if not args.no_train:
        cli.run_jobs(jobs, args, data=data)
    roots = []
    for job, model, norm, weights in analysis.trained_networks(jobs, purpose="no confusion matrix"):
        root = cli.job_root(job)  # beside the run's records: a tutorial matrix is never a short-schedule one
        path = root / "confusion" / f"{job.out.name}.json"
        roots.append(root)
        if analysis.keeps(read_json(path) if path.is_file() else None, job.folder, weights):
            print(f"{job.out.name}: its matrix, made from the run's model.pt, is kept ({path.name})")
            continue
        record = analysis.confusion_record(model, norm, data, folder=job.folder, weights=weights)
        write_json(path, record)
        print(f"{job.out.name}: test error {record['test_error']:.2%} (the run's summary: "
              f"{record['final_test_error']:.2%}); per-class accuracy:")
        for name, acc in record["per_class_accuracy"].items():
            print(f"  {name:>10s}  {acc:.1%}")
    for root in dict.fromkeys(roots):
        results.build(root, only=("confusion",))
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

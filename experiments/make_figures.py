#!/usr/bin/env python3
"""Regenerate every figure and table from the run records in results/, in seconds: no GPU, no training.

    python experiments/make_figures.py      # figures/ from results/, figures/short/ and figures/quick/ too

Full-schedule records (results/runs/...) draw figures/; short-schedule runs (results/short/...) draw
figures/short/ and quick runs (results/quick/...) figures/quick/, and every title and table says which
schedule, data, seeds and code its numbers come from. A figure whose runs are missing is skipped with a
one-line note. figures/augmentation.png is drawn from the data itself, when
CIFAR-10 is here (--data-dir, $CIFAR10_ROOT or data/), and skipped otherwise. The functions behind every
figure and table are in resnet.results.

Drawing the repository's own records (no --results), it then writes figures/weights.md from
results/weights/MANIFEST.json and brings the generated tables of README.md and docs/*.md up to date with
the files they name (experiments/docs_tables.py), so that no table a page shows is typed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a copied tree, nothing installed

from experiments import docs_tables  # noqa: E402
from resnet import cli, results  # noqa: E402
from resnet import cifar10  # noqa: E402
from resnet.records import REPO_ROOT, RESULTS_DIR  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, action="append", default=None,
                        help="a results folder to draw (default: results/, results/short/ and "
                             "results/quick/)")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 for the augmentation figure (optional)")
    args = parser.parse_args(argv)
    for root in args.results or [RESULTS_DIR, RESULTS_DIR / "short", RESULTS_DIR / "quick"]:
        print(f"== {results.display_path(root)} -> {results.display_path(results.figures_dir_for(root))}")
        results.build(root)
    if args.results is None:
        try:
            data = cifar10.load_cifar10(cifar10.resolve_data_dir(args.data_dir))
        except cifar10.DataError:
            data = None
        results.build_augmentation(data)
        weights = docs_tables.weights_table(RESULTS_DIR / "weights" / "MANIFEST.json",
                                            results.FIGURES_DIR / "weights.md")
        print(f"weights: {results.display_path(weights)}" if weights else
              "weights: skipped, no results/weights/MANIFEST.json")
        for line in docs_tables.refresh(REPO_ROOT):
            print(line)
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

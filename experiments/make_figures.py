#!/usr/bin/env python3
"""Regenerate every figure and table from the run records in results/, in seconds: no GPU, no training.

    python experiments/make_figures.py      # figures/ from results/, figures/short/ and figures/quick/ too

Full-schedule records (results/runs/...) draw figures/; short-schedule runs (results/short/...) draw
figures/short/ and quick runs (results/quick/...) figures/quick/, and every title and table says which
schedule, data, seeds and code its numbers come from. A figure whose runs are missing is skipped with a
one-line note. Every record is read whole and checked first (resnet.records.RunFolder.read): when one is
damaged (a file cut short, a summary that disagrees with its log, ...) nothing is drawn and no file
changes, and the message names each damaged folder and why; --skip-damaged draws from the whole records
only, and says which were left out. figures/augmentation.png is drawn from the data itself, when
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
from resnet.records import REPO_ROOT, RESULTS_DIR, DamagedRecords, display_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, action="append", default=None,
                        help="a results folder to draw (default: results/, results/short/ and "
                             "results/quick/)")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 for the augmentation figure (optional)")
    parser.add_argument("--skip-damaged", action="store_true",
                        help="draw from the whole records only, leaving out (and naming) the damaged ones; "
                             "without it a damaged record stops everything before any file is written")
    args = parser.parse_args(argv)
    roots = args.results or [RESULTS_DIR, RESULTS_DIR / "short", RESULTS_DIR / "quick"]
    damaged = {}
    for root in roots:  # every record of every root is checked before anything is drawn
        try:
            results.load_runs(root)
        except DamagedRecords as e:
            damaged.update(e.folders)
    if damaged and not args.skip_damaged:
        raise DamagedRecords(damaged, then="Nothing was drawn and no file changed. Restore {it} (git "
                             "checkout -- {paths}, or the pack {it} came in), or pass --skip-damaged to draw "
                             "from the whole records only.")
    for folder, problems in damaged.items():
        print(f"left out, damaged (--skip-damaged): {display_path(folder)}: {'; '.join(problems)}",
              file=sys.stderr)
    for root in roots:
        print(f"== {display_path(root)} -> {display_path(results.figures_dir_for(root))}")
        results.build(root, skip_damaged=args.skip_damaged)
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

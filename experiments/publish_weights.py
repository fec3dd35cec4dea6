#!/usr/bin/env python3
"""Publish the reported weights of the full-schedule networks that the figures and notebooks use (seed 0
of plain-20/56, ResNet-20/56/110 and the tutorial recipe's ResNet-20; a network's float32 run where it has
only that, as a CPU's run) into results/weights/, in half precision with their SHA-256 (resnet.pretrained).
Runs that have not finished here are listed and skipped.

    python experiments/publish_weights.py
    python -c "from resnet.pretrained import load; model, norm = load('resnet56')"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a copied tree, nothing installed

from resnet import cli, pretrained  # noqa: E402
from resnet.records import RESULTS_DIR, RunFolder, standing_run  # noqa: E402
from resnet.results import display_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(RESULTS_DIR / "runs"), help="folder of the run folders")
    args = parser.parse_args(argv)
    for name in pretrained.PUBLISHED:
        run_dir = standing_run(Path(args.runs) / name)  # its float32 run where it has only that
        if not RunFolder(run_dir).finished():
            print(f"{name}: not finished under {args.runs}; skipped")
            continue
        path = pretrained.publish(run_dir)
        print(f"{run_dir.name}: {display_path(path)} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

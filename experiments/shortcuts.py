#!/usr/bin/env python3
"""The shortcut ablation (paper section 3.3, Table 3, here on CIFAR-10): options A, B and C.

A: identity, zero-padding where the shape changes (parameter-free); B: 1x1 projection where the shape
changes, identity elsewhere; C: projections on every shortcut. ResNet-20/32/44/56, the paper's recipe.
The option-A runs are the degradation experiment's ResNets (the same run folders, trained once).

    python experiments/shortcuts.py --quick
    python experiments/shortcuts.py --time-limit 540          # on a GPU; run again until all finished
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a copied tree, nothing installed

from resnet import cli, models, results  # noqa: E402
from resnet.config import SHORTCUT_DEPTHS, RunConfig, paper_config  # noqa: E402


def configs() -> list[RunConfig]:
    return [paper_config(f"resnet{d}", shortcut=s) for s in models.SHORTCUTS for d in SHORTCUT_DEPTHS]


def main(argv: list[str] | None = None) -> int:
    args = cli.experiment_parser(__doc__).parse_args(argv)
    cli.run_jobs(cli.sweep_jobs(configs(), args), args)
    results.build(cli.results_root(args), only=("shortcuts",))
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

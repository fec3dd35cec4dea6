#!/usr/bin/env python3
"""Figure 6 and Table 6: plain and residual networks of 20, 32, 44 and 56 layers (and ResNet-110).

The paper's recipe throughout (section 4.2); the only difference between a plain net and its ResNet is
the identity shortcuts (option A where the shape changes), so both have the same parameters. Plain nets
get worse with depth, ResNets better: the degradation problem and its fix.

    python experiments/degradation.py --quick                           # minutes on a CPU: results/quick/
    python experiments/degradation.py --with-110 --seeds 3 --time-limit 540   # on a GPU, 9 runs at once;
                                                                         # run again until all finished
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a copied tree, nothing installed

from resnet import cli, results  # noqa: E402
from resnet.config import FIGURE6_ARCHS, RunConfig, paper_config  # noqa: E402


def configs(*, with_110: bool = False) -> list[RunConfig]:
    archs = [a for a in FIGURE6_ARCHS if with_110 or a != "resnet110"]
    return [paper_config(arch) for arch in archs]  # resnet110 gets the paper's warm-up from the recipe


def main(argv: list[str] | None = None) -> int:
    parser = cli.experiment_parser(__doc__)
    parser.add_argument("--with-110", action="store_true", help="also ResNet-110, with its warm-up")
    args = parser.parse_args(argv)
    cli.run_jobs(cli.sweep_jobs(configs(with_110=args.with_110), args), args)
    results.build(cli.results_root(args), only=("degradation",))
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

#!/usr/bin/env python3
"""Figure 6 and Table 6: plain and residual networks of 20, 32, 44 and 56 layers (and ResNet-110).

The paper's recipe throughout (section 4.2); the only difference between a plain net and its ResNet is
the identity shortcuts (option A where the shape changes), so both have the same parameters. Plain nets
get worse with depth, ResNets better: the degradation problem and its fix.

    python experiments/degradation.py --quick            # minutes on a CPU: results/quick/, figures/quick/
    python experiments/degradation.py --with-110 --jobs 3 --seeds 3    # the paper's schedule, on a GPU
"""

from __future__ import annotations

import make_figures
from resnet import cli
from resnet import train as engine

DEPTHS = (20, 32, 44, 56)


def configs(*, with_110: bool = False) -> list[engine.RunConfig]:
    archs = [f"plain{d}" for d in DEPTHS] + [f"resnet{d}" for d in DEPTHS] + (["resnet110"] if with_110 else [])
    return [engine.paper_config(arch) for arch in archs]  # resnet110 gets the paper's warm-up from the recipe


def main() -> int:
    parser = cli.experiment_parser(__doc__)
    parser.add_argument("--with-110", action="store_true", help="also ResNet-110, with its warm-up")
    args = parser.parse_args()
    cli.run_jobs(cli.sweep_jobs(configs(with_110=args.with_110), args), args)
    make_figures.build(cli.results_root(args), only=("degradation",))
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

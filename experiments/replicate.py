#!/usr/bin/env python3
"""Every full-schedule run of the replication as one resumable sweep, in the order that gets the most
finished networks out of GPU time that comes in slices:

  1. seed 0 of the 17 networks: Figure 6 and Table 6 (plain-20/32/44/56, ResNet-20/32/44/56/110, option A)
     and the shortcut ablation's options B and C at 20/32/44/56 layers;
  2. the tutorial recipe's ResNet-20, and ResNet-20 seed 0 once more in float32 (what bf16 costs);
  3. seeds 1 and 2 of the 17; then ResNet-110's seeds 3 and 4 (the paper reports 110 over five runs).

    python experiments/replicate.py --time-limit 540      # on a GPU: ~8 runs at once; run it again until
                                                           # its last line says every run finished
    python experiments/replicate.py --list                # the plan, and which runs have finished

Then the figures' analyses, which train nothing once the runs exist: experiments/confusion.py,
experiments/layer_responses.py --with-110, experiments/publish_weights.py, experiments/make_figures.py.
"""

from __future__ import annotations

from resnet import cli, models, results
from resnet.config import (FIGURE6_ARCHS, SHORTCUT_DEPTHS, ConfigError, RunConfig, paper_config, quick,
                           tutorial_config)
from resnet.records import default_run_dir, summary_of
from resnet.sweep import Job


def plan() -> list[RunConfig]:
    """The runs, in priority order (see the module docstring)."""
    networks = [paper_config(a) for a in FIGURE6_ARCHS]
    networks += [paper_config(f"resnet{d}", shortcut=s)
                 for s in models.SHORTCUTS[1:] for d in SHORTCUT_DEPTHS]
    extras = [tutorial_config("resnet20"), paper_config("resnet20", precision="fp32")]
    more_seeds = [c.replace(seed=s) for s in (1, 2) for c in networks]
    more_110 = [paper_config("resnet110", seed=s) for s in (3, 4)]
    return networks + extras + more_seeds + more_110


def main(argv: list[str] | None = None) -> int:
    parser = cli.experiment_parser(__doc__)
    parser.add_argument("--list", action="store_true",
                        help="print the plan and each run's status, train nothing")
    args = parser.parse_args(argv)
    if args.seeds != 1:
        raise ConfigError("the plan fixes its seeds (0-2, ResNet-110 0-4); leave --seeds out")
    root = cli.results_root(args) / "runs"
    jobs = [Job(c, default_run_dir(c, root=root)) for c in (map(quick, plan()) if args.quick else plan())]
    if args.list:
        for i, job in enumerate(jobs, 1):
            summary = summary_of(job.out)
            done = f"{summary.get('iterations_done', 0):,} of {summary.get('iterations_planned', 64_000):,}"
            print(f"{i:3d}. {job.out.name:<28s} {summary['status']:<10s} "
                  f"{done if 'iterations_done' in summary else ''}")
        return 0
    cli.run_jobs(jobs, args)
    results.build(cli.results_root(args), only=("degradation", "shortcuts"))
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

#!/usr/bin/env python3
"""Every full-schedule run of the replication as one resumable sweep (55 runs: the 17 networks' seeds 0-2,
ResNet-110's seeds 3-4, the tutorial recipe's run and a float32 control), in the order that gets the most
finished networks out of GPU time that comes in slices:

  1. ResNet-32 (option A) seeds 0-2;
  2. seed 0 of the depth series and the shortcut ablation, deepest first: plain-56 and ResNet-56 A, B, C;
     then 44, 32 and 20 layers;
  3. ResNet-110 seeds 0-4 (the paper reports 110 over five runs);
  4. the tutorial recipe's ResNet-20, and ResNet-20 seed 0 once more in float32 (what bf16 costs);
  5. seeds 1 and 2 of every other network.

    python experiments/replicate.py --time-limit 540      # on a GPU; run it again until its last line
                                                           # says every run finished
    python experiments/replicate.py --list                # the plan as units, and which runs finished

On a GPU the runs of one depth and recipe that stand at the same iteration (any seed, plain or any shortcut
option) train together as one grouped network (resnet.group; at most --group K of them, default 12),
opened where the first of them comes in this order. Under --time-limit a unit opens only when it can
finish in time at the pace of the cost table (--costs, measured on the GPU by benchmarks/probe.py), cut to
the runs of it that can: its other runs then join a later unit (resnet.plan).

Then the figures' analyses, which train nothing once the runs exist: experiments/confusion.py,
experiments/layer_responses.py --with-110, experiments/publish_weights.py, experiments/make_figures.py.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a copied tree, nothing installed

from resnet import cli, models, transfer  # noqa: E402
from resnet.config import RECIPES, SHORTCUT_DEPTHS, ConfigError, RunConfig  # noqa: E402
from resnet.config import paper_config, tutorial_config  # noqa: E402
from resnet.pretrained import PUBLISHED  # noqa: E402
from resnet.plan import Costs  # noqa: E402
from resnet.records import DamagedRecords, Job, damage  # noqa: E402
from resnet.config import GPU_GROUP  # noqa: E402
from resnet.sweep import groups  # noqa: E402

COSTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "costs.json"


def plan() -> list[RunConfig]:
    """The 55 runs, in priority order (see the module docstring)."""
    first = [paper_config("resnet32", seed=s) for s in range(3)]
    depth_series = [c for d in (56, 44, 32, 20) for c in [paper_config(f"plain{d}")]
                    + [paper_config(f"resnet{d}", shortcut=o) for o in models.SHORTCUTS]]
    resnet110 = [paper_config("resnet110", seed=s) for s in range(5)]
    extras = [tutorial_config("resnet20"), paper_config("resnet20", precision="fp32")]
    networks = [c for c in depth_series if c.seed == 0]
    other_seeds = [c.replace(seed=s) for s in (1, 2) for c in networks]
    ordered = first + depth_series + resnet110 + extras + other_seeds
    return [c for i, c in enumerate(ordered) if c not in ordered[:i]]  # each run once, where it first comes


def covered_last(jobs: list[Job]) -> list[Job]:
    """``jobs`` with those whose network and seed a float32 run outside the plan already holds (a CPU's run,
    trained in segments: results/runs/resnet56-A-paper-s0-fp32) moved to the end, in their order: that run
    is the seed's, so GPU time goes first to the networks that have no run."""
    planned = {job.out for job in jobs}

    def covered(job: Job) -> bool:
        twin = job.out.with_name(f"{job.out.name}-fp32")
        return (job.config.precision == "bf16" and twin not in planned
                and Job(job.config, twin).folder.holds_a_run())

    return [job for job in jobs if not covered(job)] + [job for job in jobs if covered(job)]


def short_plan() -> list[RunConfig]:
    """What --short trains: Figure 6's 20- and 56-layer networks, the tutorial recipe in full (it is short
    already), seed 1 of ResNet-20 and ResNet-56 (the seed spread against which benchmarks/fidelity.py
    compares the engine with the independent reference), then the 32- and 44-layer networks, then the
    shortcut ablation's options B and C at 20, 32, 44 and 56 layers."""
    first = [paper_config(a) for a in ("resnet20", "resnet56", "plain20", "plain56")]
    seed_1 = [paper_config(a, seed=1) for a in ("resnet20", "resnet56")]
    middle = [paper_config(a) for a in ("resnet32", "resnet44", "plain32", "plain44")]
    ablation = [paper_config(f"resnet{d}", shortcut=o) for o in models.SHORTCUTS[1:] for d in SHORTCUT_DEPTHS]
    return first + [tutorial_config("resnet20")] + seed_1 + middle + ablation


def rehearsal(configs: list[RunConfig], iterations: int) -> list[RunConfig]:
    """``configs`` cut to ``iterations`` each (the paper recipe's rate steps kept at 1/2 and 3/4, three
    evaluations): the whole sequence of a machine's work in minutes, before its hours are spent."""
    cut = {"eval_every": max(1, iterations // 3), "schedule": "custom"}
    return [c.replace(**cut, **RECIPES[c.recipe].shortened(iterations)) for c in configs]


def shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N): the K-th of N disjoint parts of the plan."""
    k, _, n = text.partition("/")
    try:
        k_, n_ = int(k), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 2/4; got {text!r}") from None
    if not 1 <= k_ <= n_:
        raise argparse.ArgumentTypeError(f"expected 1 <= K <= N in K/N; got {text!r}")
    return k_, n_


def main(argv: list[str] | None = None) -> int:
    parser = cli.experiment_parser(__doc__)
    parser.add_argument("--list", action="store_true",
                        help="print the plan as the units a GPU trains (each with its estimated seconds) and "
                             "the finished runs; train nothing")
    parser.add_argument("--costs", type=Path, default=COSTS, metavar="FILE.json",
                        help="the measured cost table a time limit plans with (default: "
                             "benchmarks/results/costs.json; benchmarks/probe.py writes one on the GPU)")
    parser.add_argument("--shard", type=shard, default=None, metavar="K/N",
                        help="only the K-th of N disjoint parts of the plan (every N-th run from the K-th), "
                             "so that N machines split it")
    parser.add_argument("--pack", type=Path, default=None, metavar="FILE.tar",
                        help="train nothing; write the runs' records (the published networks' model.pt, and "
                             "unfinished runs' checkpoints within --checkpoint-mb) into FILE.tar, split into "
                             "FILE.part2.tar, ... where one archive would pass --archive-mb")
    parser.add_argument("--archive-mb", type=float, default=15, metavar="MB",
                        help="with --pack: at most this many MiB per archive (default 15: a lent GPU machine "
                             "sends back files of at most 16 MiB)")
    parser.add_argument("--checkpoint-mb", type=float, default=64, metavar="MB",
                        help="with --pack: at most this many MB of checkpoints, the most advanced runs first "
                             "(default 64)")
    parser.add_argument("--unpack", type=Path, nargs="+", default=None, metavar="FILE.tar",
                        help="train nothing; merge packed runs into the results folder (never replacing a "
                             "finished run, nor taking a run whose config is not the plan's)")
    parser.add_argument("--no-figures", action="store_true",
                        help="train only: leave the degradation and shortcut figures to make_figures.py "
                             "(a GPU slice, whose figures would not come back)")
    parser.add_argument("--rehearse", type=cli.positive_int, default=None, metavar="N",
                        help="every run cut to N iterations: rehearse a machine's whole sequence (train, "
                             "stop, pack, continue, unpack, figures) in minutes; needs --results")
    args = parser.parse_args(argv)
    if args.seeds != 1:
        raise ConfigError("the plan fixes its seeds (0-2, ResNet-110 0-4); leave --seeds out")
    if args.rehearse is not None and (args.results is None or args.short or args.quick):
        raise ConfigError("--rehearse cuts the full plan and needs --results (a rehearsal's runs never go "
                          "into results/); leave --short and --quick out")
    configs = short_plan() if args.short else plan()
    jobs = cli.plan_jobs(configs if args.rehearse is None else rehearsal(configs, args.rehearse), args)
    if args.shard is not None:
        k, n = args.shard
        jobs = jobs[k - 1::n]
    jobs = covered_last(jobs)  # after the shards: each machine's part stays the plan's
    costs = Costs.load(args.costs)
    if args.list:
        return list_units(jobs, costs, size=args.group or GPU_GROUP)
    if args.pack is not None:
        return pack(jobs, args)
    if args.unpack is not None:
        return unpack(jobs, args)
    cli.run_jobs(jobs, args, costs=costs)
    if not args.no_figures:
        from resnet import results  # pandas and matplotlib: only to draw, not to train, pack or list

        results.build(cli.results_root(args), only=("degradation", "shortcuts"))
    return 0


def list_units(jobs: list[Job], costs: Costs | None, *, size: int) -> int:
    """The plan as the units a GPU's sweep opens (resnet.sweep.groups), one paragraph each: its runs and
    its estimated seconds by the cost table; then the runs that have finished, and those whose records are
    damaged (neither finished nor trained again: a sweep leaves them alone)."""
    damaged = damage(job.folder for job in jobs)
    todo = [job for job in jobs if job.out not in damaged and not job.folder.finished(job.config)]
    units = groups(todo, size)
    source = f"estimated by {costs.source}" if costs else "no cost table: no estimates"
    finished = [job.out.name for job in jobs if job not in todo and job.out not in damaged]
    print(f"plan: {len(jobs)} runs, {len(finished)} finished, "
          + (f"{len(damaged)} damaged, " if damaged else "")
          + f"{len(todo)} to train as {len(units)} units of at most {size} runs ({source}; under a time "
          "limit a unit is cut to the runs that can finish, and the others wait for a later one)")
    for i, unit in enumerate(units, 1):
        done = unit[0].folder.report().iterations_done or 0
        left = unit[0].config.iterations - done
        seconds = (f"about {costs.seconds([j.config for j in unit], left):,.0f} s" if costs
                   else "not estimated")
        start = f", from iteration {done:,}" if done else ""
        print("\n" + textwrap.fill(f"unit {i} ({seconds}{start}): " + ", ".join(j.out.name for j in unit),
                                   width=110, subsequent_indent="  "))
    if finished:
        print("\n" + textwrap.fill("finished: " + ", ".join(finished), width=110, subsequent_indent="  "))
    for path, problems in damaged.items():
        print("\n" + textwrap.fill(f"damaged, not trained until restored or moved away: {path.name}: "
                                   + "; ".join(problems), width=110, subsequent_indent="  "))
    return 0


def pack(jobs: list[Job], args: argparse.Namespace) -> int:
    """The runs' records into archives (resnet.transfer.pack); the damaged ones are left out, and named in
    an error once the others are packed."""
    damaged = damage(job.folder for job in jobs)
    for path in transfer.pack(jobs, args.pack, archive_mb=args.archive_mb, published=PUBLISHED,
                              checkpoint_mb=args.checkpoint_mb):
        with tarfile.open(path) as tar:
            names = tar.getnames()
        runs = sorted({n.split("/")[0] for n in names if "/" in n})
        checkpoints = sum(n.endswith("checkpoint.pt") for n in names)
        print(f"{path}: {path.stat().st_size / 2**20:.1f} MB, {len(runs)} runs ({checkpoints} with their "
              f"checkpoint)")
    if damaged:
        raise DamagedRecords(damaged, then="The other runs were packed, not {it}: restore {it} from "
                             "where {it} came (git checkout -- {paths}, or the pack {it} came in), then "
                             "pack again.")
    return 0


def unpack(jobs: list[Job], args: argparse.Namespace) -> int:
    done = transfer.unpack(args.unpack, jobs)
    for item in done:
        print(f"  {item.run:<28s} {item.action:<9s} {item.reason}")
    counts = {a: sum(d.action == a for d in done) for a in ("added", "replaced", "kept", "rejected")}
    print("unpack: " + ", ".join(f"{n} {a}" for a, n in counts.items()) + f" into {cli.results_root(args)}")
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

"""What every command-line entry point shares: common flags, and turning failures into clear messages.

A user who mistypes a flag, points at a missing data set or whose run diverges gets one paragraph and a
non-zero exit, never a traceback. Exit codes: 2 bad input (arguments, data, run folder), 3 diverged,
4 failed (out of memory, a CUDA error: the run's summary says 'failed'), 130 interrupted. A command
stopped by its --time-limit exits 0: its runs are checkpointed, and running the same command again
continues them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from resnet import cifar10, pretrained
from resnet.config import (GPU_GROUP, QUICK, SHORT, ConfigError, Deadline, Execution, RunConfig, on_schedule,
                           schedule_of)
from resnet.pretrained import WeightsError
from resnet.records import RESULTS_DIR, Job, RunFolderError, Summary, default_run_dir
from resnet.sweep import run_sweep
from resnet.train import Diverged, RunFailed

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_FAILED = 4
EXIT_INTERRUPTED = 130


def fail(message: str, *, code: int = EXIT_BAD_INPUT, prefix: str = "error") -> NoReturn:
    print(textwrap.fill(f"{prefix}: {message}", width=100), file=sys.stderr)
    sys.exit(code)


def main_guard(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main`` and exit with its code; known failures become one clear paragraph."""
    try:
        code = main()
    except (cifar10.DataError, ConfigError, RunFolderError, WeightsError) as e:
        fail(str(e))
    except Diverged as e:
        fail(f"{e}. The run stopped with status 'diverged'; its last good checkpoint is kept. A lower "
             f"--lr (or the paper's warm-up for very deep nets) usually helps.", code=EXIT_DIVERGED,
             prefix="diverged")
    except RunFailed as e:
        fail(f"{e}.", code=EXIT_FAILED, prefix="failed")
    except KeyboardInterrupt:
        fail("stopped by the user; the records and the last checkpoint are kept, and running the same "
             "command again (with --resume for a single run) continues from there.",
             code=EXIT_INTERRUPTED, prefix="interrupted")
    sys.exit(code or 0)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder holding cifar-10-batches-py/ or cifar-10-batches-bin/ "
                             "(default: $CIFAR10_ROOT, else the repository's data/)")
    parser.add_argument("--download", action="store_true",
                        help="download the official CIFAR-10 archive into --data-dir if it is missing")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to train (default: cuda when there is a GPU)")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """How runs are executed: never what they compute (that is the config)."""
    parser.add_argument("--time-limit", type=positive_seconds, default=None, metavar="SECONDS",
                        help="end cleanly before this many seconds: unfinished runs are checkpointed, and "
                             "the same command continues them")
    parser.add_argument("--finish-by", type=positive_seconds, default=None, metavar="SECONDS",
                        help="with --time-limit: open only the units that can finish within this many "
                             "seconds (default: the time limit); longer than it when later commands on the "
                             "same machine continue what this one pauses")
    parser.add_argument("--no-graph", dest="graph", action="store_const", const=False, default=None,
                        help="on CUDA, run the eager step instead of the CUDA-graph step")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (GPU)")
    parser.add_argument("--cudnn-benchmark", choices=("on", "off"), default=None,
                        help="let cuDNN time its convolution algorithms and keep the fastest (default: on "
                             "with CUDA; benchmarks/probe.py measures whether it pays)")


def experiment_parser(description: str) -> argparse.ArgumentParser:
    """The flags every experiment script takes."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    add_engine_args(parser)
    add_schedule_args(parser)
    parser.add_argument("--seeds", type=positive_int, default=1, help="seeds per network (mean and spread)")
    parser.add_argument("--at-once", "--jobs", dest="at_once", type=positive_int, default=None,
                        metavar="N", help="units trained at once: processes on the CPU (default 1), groups "
                                          "or runs on their own streams on CUDA (default 8)")
    parser.add_argument("--group", type=positive_int, default=None, metavar="K",
                        help=f"at most K runs of one depth and recipe (any seed, plain or any shortcut) "
                             f"train as one grouped network (default {GPU_GROUP} on CUDA, 1 on the CPU; 1: "
                             "every run alone)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                        help="iterations between checkpoints (default: at every evaluation)")
    parser.add_argument("--results", type=Path, default=None,
                        help="results folder (default: results/, results/short/ with --short, "
                             "results/quick/ with --quick)")
    return parser


def add_schedule_args(parser: argparse.ArgumentParser) -> None:
    """--short and --quick: the schedules besides the paper's (resnet.config.SCHEDULES)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--short", action="store_true",
                       help=f"the paper's recipe at 1/32 of its length ({SHORT['iterations']:,} iterations "
                            f"on all training images: hours on a CPU), recorded under results/short/")
    group.add_argument("--quick", action="store_true",
                       help=f"a short schedule on a subset ({QUICK['iterations']} iterations, "
                            f"{QUICK['train_subset']:,} training images: minutes), recorded under "
                            "results/quick/")


def schedule(args: argparse.Namespace) -> str:
    """The schedule the flags ask for: "full", "short" or "quick"."""
    return "quick" if args.quick else "short" if getattr(args, "short", False) else "full"


def results_root(args: argparse.Namespace) -> Path:
    """--results, else the folder of the flags' schedule: results/, results/short/ or results/quick/."""
    return Path(args.results) if args.results is not None else results_dir(schedule(args))


def results_dir(name: str) -> Path:
    return RESULTS_DIR if name == "full" else RESULTS_DIR / name


def sweep_jobs(configs: Sequence[RunConfig], args: argparse.Namespace) -> list[Job]:
    """One job per config and seed (seed-major), in the results folder and on the schedule the flags
    choose."""
    configs = [cfg.replace(seed=seed) for seed in range(args.seeds) for cfg in configs]  # seed 0 first
    return plan_jobs(configs, args)


def plan_jobs(configs: Sequence[RunConfig], args: argparse.Namespace) -> list[Job]:
    """A job for each of ``configs`` on the flags' schedule, in the flags' results folder."""
    jobs = []
    for config in configs:
        c = on_schedule(config, schedule(args))
        # a run lives with its schedule: the tutorial recipe runs in full under --short, so in results/
        root = Path(args.results) if args.results is not None else results_dir(schedule_of(c))
        jobs.append(Job(c, default_run_dir(c, root=root / "runs")))
    return jobs


def job_root(job: Job) -> Path:
    """The results folder that holds ``job``'s run: plan_jobs puts it at <root>/runs/<name>, with the
    root of the run's own schedule (results/ for the tutorial recipe, which runs in full on --short)."""
    return job.out.parent.parent


def execution(args: argparse.Namespace, *, costs: Any = None) -> Execution:
    """How the flags ask runs to be executed (device, graph, compile, runs at once, threads, time limit,
    progress), with the command line that continues the work, and ``costs`` (resnet.plan.Costs) to plan
    a time limit with."""
    cudnn = getattr(args, "cudnn_benchmark", None)
    return Execution(device=args.device, graph=args.graph, compile=args.compile,
                     cudnn_benchmark=None if cudnn is None else cudnn == "on",
                     at_once=getattr(args, "at_once", None), group=getattr(args, "group", None),
                     threads=getattr(args, "threads", None),
                     checkpoint_every=getattr(args, "checkpoint_every", None),
                     progress=not getattr(args, "no_progress", False),
                     deadline=Deadline.after(args.time_limit), costs=costs,
                     finish_by=(Deadline.after(args.finish_by) if getattr(args, "finish_by", None) else None),
                     command=this_command())


def run_jobs(jobs: Sequence[Job], args: argparse.Namespace, *, data: Any = None,
             costs: Any = None) -> list[Summary]:
    """The sweep of ``jobs`` with the flags' data, device, concurrency, engine and time limit (planned with
    ``costs``, a resnet.plan.Costs, when given)."""
    return run_sweep(jobs, execution(args, costs=costs), data=data, data_dir=args.data_dir,
                     download=args.download)


def this_command() -> str:
    """The command line this process was started with, as a user would type it again."""
    return shlex.join(["python3", *sys.argv])


def finished_networks(jobs: Sequence[Job], *,
                      purpose: str) -> Iterator[tuple[Job, Any, pretrained.Normalization]]:
    """(job, model, normalisation) for each finished job, in eval mode on the CPU; a note for the rest."""
    for job in jobs:
        status = job.folder.status
        if status != "finished":
            print(f"{job.out.name}: not finished ({status}); {purpose}")
            continue
        if not job.folder.model_path.is_file():  # a clone holds the records of finished runs, not weights
            print(f"{job.out.name}: finished, but its weights ({job.folder.model_path.name}) are not in "
                  f"{job.out}: the repository keeps a run's records, not its weights; move the "
                  f"folder aside to train it again; {purpose}")
            continue
        model, norm = pretrained.load_file(job.folder.model_path)
        yield job, model, norm

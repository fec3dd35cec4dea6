"""What every command-line entry point shares: common flags, and turning failures into clear messages.

A user who mistypes a flag, points at a missing data set or whose run diverges gets one paragraph and a
non-zero exit, never a traceback. Exit codes: 2 bad input (arguments, data, run folder), 3 diverged,
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from resnet import data as cifar
from resnet import train as engine

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


def fail(message: str, *, code: int = EXIT_BAD_INPUT, prefix: str = "error") -> NoReturn:
    print(textwrap.fill(f"{prefix}: {message}", width=100), file=sys.stderr)
    sys.exit(code)


def main_guard(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main`` and exit with its code; known failures become one clear paragraph."""
    try:
        code = main()
    except (cifar.DataError, engine.ConfigError, engine.RunFolderError) as e:
        fail(str(e))
    except engine.Diverged as e:
        fail(f"{e}. The run stopped with status 'diverged'; its last good checkpoint is kept. A lower "
             f"--lr (or the paper's warm-up for very deep nets) usually helps.", code=EXIT_DIVERGED,
             prefix="diverged")
    except KeyboardInterrupt:
        fail("stopped by the user; the records and the last checkpoint are kept, and running the same "
             "command again with --resume (experiments resume by themselves) continues from there.",
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


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder holding cifar-10-batches-py (default: $CIFAR10_ROOT, else ./data)")
    parser.add_argument("--download", action="store_true",
                        help="download the official CIFAR-10 archive into --data-dir if it is missing")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to train (default: cuda when there is a GPU)")


def experiment_parser(description: str) -> argparse.ArgumentParser:
    """The flags every experiment script takes."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--quick", action="store_true",
                        help=f"a short schedule on a subset ({engine.QUICK['iterations']} iterations, "
                             f"{engine.QUICK['train_subset']:,} training images), recorded under results/quick/")
    parser.add_argument("--seeds", type=positive_int, default=1, help="seeds per network (mean and spread)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="runs at once (processes)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    parser.add_argument("--results", type=Path, default=None,
                        help="results folder (default: results/, or results/quick/ with --quick)")
    return parser


def results_root(args: argparse.Namespace) -> Path:
    if args.results is not None:
        return Path(args.results)
    return engine.RESULTS_DIR / "quick" if args.quick else engine.RESULTS_DIR


def sweep_jobs(configs: Sequence[engine.RunConfig], args: argparse.Namespace) -> list[engine.Job]:
    """One job per config and seed, in the results folder the flags choose, on the quick schedule if asked."""
    root = results_root(args) / "runs"
    jobs = []
    for cfg in configs:
        for seed in range(args.seeds):
            c = cfg.replace(seed=seed)
            if args.quick:
                c = engine.quick(c)
            jobs.append(engine.Job(c, engine.default_run_dir(c, root=root)))
    return jobs


def run_jobs(jobs: Sequence[engine.Job], args: argparse.Namespace, *, data: Any = None) -> list[dict[str, Any]]:
    return engine.run_sweep(jobs, n_jobs=args.jobs, data=data, data_dir=args.data_dir, device=args.device,
                            download=args.download, compile=args.compile)


def trained_runs(jobs: Sequence[engine.Job], *, purpose: str) -> Iterator[tuple[engine.Job, dict[str, Any], Any, dict]]:
    """(job, summary, model, saved state) for each finished job, in eval mode on the CPU; a note for the rest."""
    for job in jobs:
        summary = engine.summary_of(job.out)
        if summary.get("status") != "finished":
            print(f"{job.out.name}: not finished ({summary.get('status')}); {purpose}")
            continue
        model, state = engine.load_trained(job.out)
        yield job, summary, model, state

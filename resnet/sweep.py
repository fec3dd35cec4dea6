"""Sweeps: many independent runs, resumable, within a time limit.

On CUDA one process trains several runs at once on its GPU, each on its own CUDA stream, advancing them
in turn (a small network leaves most of an H100 idle; several fill it). With several GPUs each gets its
share of the runs, in a process of its own. On the CPU the runs go to separate processes (``jobs`` at
once), or run one after another in this process.

A finished run is skipped, so running an interrupted sweep again continues it; a run that another
process is training is left alone (resnet.records.RunLock) and named; a run that diverged stays diverged
until its folder is removed. With a time limit every unfinished run is checkpointed before it, and the
last line printed says how many runs finished and that the same command continues the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnet import data as cifar
from resnet.config import ConfigError, RunConfig
from resnet.records import RunFolderError, holds_a_run, run_finished, summary_of, write_json
from resnet.train import Deadline, Diverged, Run, RunFailed, load_data, resolve_device, train

__all__ = ["Job", "SweepOptions", "allow_concurrent_streams", "run_sweep", "sweep_status_line",
           "train_in_turn"]

CHUNK = 50  # iterations a run is advanced by before the next run's turn (on one GPU)


@dataclass(frozen=True)
class Job:
    config: RunConfig
    out: Path


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep's runs are executed (never what they compute)."""

    data_dir: str | None = None
    download: bool = False
    device: str = "auto"
    at_once: int | None = None  # processes on the CPU (default 1), runs per GPU on CUDA (default 8)
    graph: bool | None = None
    compile: bool = False
    progress: bool = True
    threads: int | None = None
    deadline: Deadline = Deadline()
    command: str | None = None  # the command line that continues the sweep, for its last line


def run_sweep(jobs: Sequence[Job], *, data: cifar.CIFAR10 | None = None,
              **options: Any) -> list[dict[str, Any]]:
    """Train ``jobs`` (skipping finished and diverged ones) and return one summary per job, in order.
    ``options`` are :class:`SweepOptions` fields; ``data``, when given, is used by runs in this process."""
    opts = SweepOptions(**options)
    allow_concurrent_streams()
    device = resolve_device(opts.device)
    todo = [job for job in jobs if _wants_training(job)]
    if todo:
        # the data is read and verified once, up front: a missing data set fails before any run starts
        data = data if data is not None else load_data(opts.data_dir, download=opts.download)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1 and len(todo) > 1:
        _in_processes(train_in_turn, _gpu_shares(todo), opts, torch.cuda.device_count())
    elif device.type == "cuda":
        train_in_turn(todo, dataclasses.replace(opts, device=str(device)), data)
    elif (opts.at_once or 1) > 1 and len(todo) > 1:
        _in_processes(_train_on_cpu, [[job] for job in todo], opts, opts.at_once)
    else:
        _train_on_cpu(todo, opts, data)
    summaries = [summary_of(job.out) for job in jobs]
    print("\n".join(run_lines([job.out for job in todo]) + [sweep_status_line(summaries, opts.command)]),
          file=sys.stderr)
    return summaries


def run_lines(folders: Sequence[Path]) -> list[str]:
    """One line per run, for a command's last lines: status, how far it got, the ms per iteration it ran
    at, and its test error (finished) or what stopped it."""
    lines = []
    for out in folders:
        s = summary_of(out)
        done, planned = s.get("iterations_done"), s.get("iterations_planned")
        where = f"{done:,} of {planned:,}" if done is not None and planned else ""
        speed = f"{s['ms_per_iteration']:.2f} ms/it" if s.get("ms_per_iteration") else ""
        detail = (f"test error {s['final_test_error']:.2%}"
                  if s.get("status") == "finished" and s.get("final_test_error") is not None
                  else s.get("message") or "")
        lines.append(f"  {out.name:<26} {s.get('status', 'missing'):<10} {where:>17} {speed:>13}  {detail}")
    return lines


def allow_concurrent_streams(streams: int = 32) -> None:
    """Let up to ``streams`` CUDA streams run side by side. The driver gives a process 8 hardware queues
    by default (CUDA_DEVICE_MAX_CONNECTIONS), and more concurrent runs than that queue behind each other's
    kernels. The setting is read when CUDA starts in this process, so it is made before any CUDA work;
    a value set by the user is kept."""
    if not torch.cuda.is_initialized():
        os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", str(streams))


def sweep_status_line(summaries: Sequence[dict[str, Any]], command: str | None = None) -> str:
    """The last line of a sweep: how many runs finished, and the command that continues the others."""
    done = sum(s.get("status") == "finished" for s in summaries)
    line = f"sweep: {done} of {len(summaries)} runs finished"
    if done < len(summaries):
        line += (f"; to continue the others (failed ones are retried): {command}" if command
                 else "; running the same command again continues the unfinished ones")
    return line


def _wants_training(job: Job) -> bool:
    if run_finished(job.out, job.config):
        print(f"sweep: {job.out.name}: finished before, skipped", file=sys.stderr)
        return False
    if summary_of(job.out).get("status") == "diverged":
        print(f"sweep: {job.out.name}: diverged before, skipped (remove {job.out} to train it again)",
              file=sys.stderr)
        return False
    return True


def _report(job: Job, summary: dict[str, Any]) -> None:
    status, err = summary.get("status"), summary.get("final_test_error")
    detail = (f"test error {err:.2%} in {summary.get('wall_time_s')} s"
              if status == "finished" and err is not None
              else summary.get("message"))
    print(f"sweep: {job.out.name}: {status}: {detail}", file=sys.stderr)


# -- the CPU: one run after another in a process -------------------------------------------------------
def _train_on_cpu(jobs: Sequence[Job], opts: SweepOptions, data: cifar.CIFAR10 | None = None) -> None:
    if opts.threads:
        torch.set_num_threads(opts.threads)
    for job in jobs:
        if opts.deadline.remaining() < 5:
            break
        data = data if data is not None else load_data(opts.data_dir, download=opts.download)
        try:
            _report(job, train(job.config, data=data, out=job.out, device=opts.device,
                               resume=holds_a_run(job.out), graph=opts.graph, compile=opts.compile,
                               progress=opts.progress, deadline=opts.deadline))
        except (ConfigError, RunFolderError) as e:  # one run's failure does not end the sweep
            _report(job, {"status": "skipped", "message": str(e)})
        except Exception as e:  # Diverged and RunFailed wrote their summaries; anything else is named here
            _report(job, summary_of(job.out) if isinstance(e, (Diverged, RunFailed))
                    else {"status": "failed", "message": f"{type(e).__name__}: {e}"})


# -- one GPU: several runs at once, each on its own stream ---------------------------------------------
def train_in_turn(jobs: Sequence[Job], opts: SweepOptions, data: cifar.CIFAR10 | None = None) -> None:
    """Several runs in this process: up to ``opts.at_once`` open at a time, advanced in turn by ``CHUNK``
    iterations each (on CUDA each run's work goes to its own stream, so the GPU overlaps them); the next
    job starts as one ends, and an ended run's model, optimizer and graph are released. A run that fails
    is recorded as 'failed' and the others go on. At the deadline, or when the sweep itself is stopped,
    every open run is paused with a checkpoint."""
    data = data if data is not None else load_data(opts.data_dir, download=opts.download)
    device = resolve_device(opts.device)
    slots = opts.at_once or 8
    # one stream per slot, reused by the slot's runs: torch.cuda.Stream() cycles through a pool of 32, so
    # fresh streams for 55 runs would put two open runs on one stream
    streams = [torch.cuda.Stream(device) if device.type == "cuda" else None for _ in range(slots)]
    pending, active = list(jobs), {}
    try:
        while pending or active:
            for slot in range(slots):
                while slot not in active and pending and opts.deadline.remaining() > 10:
                    run = _open_run(pending.pop(0), opts, data, streams[slot])
                    if run is not None:
                        active[slot] = run
            trained = ended = 0
            for slot, run in list(active.items()):
                n, over = _turn(run, opts.deadline)
                trained, ended = trained + n, ended + over
                if over:
                    del active[slot]
            if not trained and not ended:
                break  # the deadline is near: no run could take another step
    finally:  # the time limit came, or the sweep was stopped: every open run keeps a checkpoint
        for run in active.values():
            _settle(run, run.pause)


def _open_run(job: Job, opts: SweepOptions, data: cifar.CIFAR10,
              stream: torch.cuda.Stream | None) -> Run | None:
    run = Run(job.config, data=data, out=job.out, device=opts.device, resume=holds_a_run(job.out),
              graph=opts.graph, compile=opts.compile, stream=stream)
    try:
        run.__enter__()
    except (ConfigError, RunFolderError) as e:
        _report(job, {"status": "skipped", "message": str(e)})
        return None
    except Exception as e:  # e.g. out of memory while building it: recorded, and the sweep goes on
        _report(job, _failed_to_open(job, e))
        return None
    if run.done:  # another process finished it after this sweep started
        _settle(run, run.finish)
        return None
    return run


def _turn(run: Run, deadline: Deadline) -> tuple[int, bool]:
    """One turn of ``run``: (iterations trained, whether it has ended and left the rotation)."""
    try:
        trained = run.advance(CHUNK, deadline=deadline)
    except Diverged:  # advance wrote the 'diverged' summary
        _settle(run, lambda: run.summary or {})
        return 0, True
    except Exception as e:  # a capture, CUDA or out-of-memory error ends this run, not the sweep
        _settle(run, functools.partial(run.fail, e))
        return 0, True
    if run.done:
        _settle(run, run.finish)
        return trained, True
    return trained, False


def _settle(run: Run, end: Callable[[], dict[str, Any]]) -> None:
    """End ``run`` with ``end`` (finish, pause or fail), report it and release it; a failure while ending
    it is recorded as the run's failure."""
    try:
        summary = end()
    except Exception as e:
        summary = run.fail(e)
    finally:
        run.close()
    _report(Job(run.config, run.out), summary)


def _failed_to_open(job: Job, error: Exception) -> dict[str, Any]:
    summary = {"status": "failed", "message": f"{type(error).__name__}: {error}", "arch": job.config.arch,
               "shortcut": job.config.shortcut, "recipe": job.config.recipe, "seed": job.config.seed}
    if not run_finished(job.out):
        write_json(job.out / "summary.json", summary)
    return summary


# -- several processes ---------------------------------------------------------------------------------
def _gpu_shares(jobs: Sequence[Job]) -> list[list[Job]]:
    n = torch.cuda.device_count()
    return [list(jobs[i::n]) for i in range(n) if jobs[i::n]]


def _in_processes(target: Any, shares: list[list[Job]], opts: SweepOptions, processes: int) -> None:
    """``target(share, opts)`` for each share, ``processes`` at once (spawned: CUDA and fork do not mix)."""
    per_process = dataclasses.replace(opts, progress=False,
                                      threads=opts.threads or max(1, (os.cpu_count() or 1) // processes))
    gpu = target is train_in_turn
    options = [dataclasses.replace(per_process, device=f"cuda:{i}") if gpu else per_process
               for i in range(len(shares))]
    with ProcessPoolExecutor(max_workers=processes, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(target, shares, options))

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

import contextlib
import dataclasses
import multiprocessing as mp
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnet import data as cifar
from resnet.config import ConfigError, RunConfig
from resnet.records import RunFolderError, holds_a_run, run_finished, summary_of
from resnet.train import Deadline, Diverged, Run, load_data, resolve_device, train

__all__ = ["Job", "SweepOptions", "run_sweep", "sweep_status_line", "train_in_turn"]

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


def run_sweep(jobs: Sequence[Job], *, data: cifar.CIFAR10 | None = None,
              **options: Any) -> list[dict[str, Any]]:
    """Train ``jobs`` (skipping finished and diverged ones) and return one summary per job, in order.
    ``options`` are :class:`SweepOptions` fields; ``data``, when given, is used by runs in this process."""
    opts = SweepOptions(**options)
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
    print(sweep_status_line(summaries), file=sys.stderr)
    return summaries


def sweep_status_line(summaries: Sequence[dict[str, Any]]) -> str:
    """The last line of a sweep: how many runs finished, and how to continue the others."""
    done = sum(s.get("status") == "finished" for s in summaries)
    line = f"sweep: {done} of {len(summaries)} runs finished"
    if done < len(summaries):
        line += "; running the same command again continues the unfinished ones"
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
        except (Diverged, ConfigError, RunFolderError) as e:  # one run's failure does not end the sweep
            _report(job, {"status": "diverged" if isinstance(e, Diverged) else "skipped", "message": str(e)})


# -- one GPU: several runs at once, each on its own stream ---------------------------------------------
def train_in_turn(jobs: Sequence[Job], opts: SweepOptions, data: cifar.CIFAR10 | None = None) -> None:
    """Several runs in this process: up to ``opts.at_once`` open at a time, advanced in turn by ``CHUNK``
    iterations each (on CUDA each run's work goes to its own stream, so the GPU overlaps them); the next
    job starts as one ends. Near the deadline every open run is paused with a checkpoint."""
    data = data if data is not None else load_data(opts.data_dir, download=opts.download)
    pending, active = list(jobs), []
    with contextlib.ExitStack() as stack:
        while pending or active:
            while pending and len(active) < (opts.at_once or 8) and opts.deadline.remaining() > 10:
                run = _open_run(pending.pop(0), opts, data, stack)
                if run is not None:
                    active.append(run)
            before = [run.state.iteration for run in active]
            ended = [run for run in list(active) if _advance(run, opts.deadline)]
            if not ended and before == [run.state.iteration for run in active]:
                break  # the deadline is near: no run could take another step
            active = [run for run in active if run not in ended]
        for run in active:  # the time limit came: every unfinished run keeps a checkpoint
            _report(Job(run.config, run.out), run.pause())


def _open_run(job: Job, opts: SweepOptions, data: cifar.CIFAR10, stack: contextlib.ExitStack) -> Run | None:
    run = Run(job.config, data=data, out=job.out, device=opts.device, resume=holds_a_run(job.out),
              graph=opts.graph, compile=opts.compile)
    try:
        stack.enter_context(run)
    except (ConfigError, RunFolderError) as e:
        _report(job, {"status": "skipped", "message": str(e)})
        return None
    if run.done:  # another process finished it after this sweep started
        _report(job, run.finish())
        run.lock.release()
        return None
    return run


def _advance(run: Run, deadline: Deadline) -> bool:
    """One turn of ``run``; True when it has ended (finished or diverged) and leaves the rotation."""
    try:
        run.advance(CHUNK, deadline=deadline)
    except Diverged:
        _report(Job(run.config, run.out), run.summary or {})
        run.lock.release()
        return True
    if run.done:
        _report(Job(run.config, run.out), run.finish())
        run.lock.release()
        return True
    return False


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

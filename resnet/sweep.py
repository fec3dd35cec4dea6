"""Sweeps: many independent runs, resumable, within a time limit.

On CUDA one process trains several runs at once on its GPU, each on its own CUDA stream, advancing them
in turn (a small network leaves most of a GPU idle; several fill it). With several GPUs each gets its
share of the runs, in a process of its own. On the CPU the runs go to separate processes (``at_once`` at
once), or run one after another in this process.

A finished run is skipped, so running an interrupted sweep again continues it; a run that another
process is training is left alone (resnet.records.RunLock) and named; a run that diverged stays diverged
until its folder is removed; a run whose records are damaged (resnet.records.RunFolder.read) is named and
left as it is, never trained over; a run that failed is recorded with its message, the sweep goes on, and
the next sweep retries it. With a time limit every unfinished run is checkpointed before it, and the last
lines say per run where it is and how fast it went, and which command continues the others.

On CUDA, the runs of one depth and recipe (any seed, plain or any shortcut option) that stand at the same
iteration train as one grouped network (resnet.group, ``Execution.group`` at most per group): one
iteration of K runs is then as many GPU kernels as one run's, each K times larger, which fills the GPU
where streams side by side cannot. Each run keeps its own folder, records and checkpoint, as if it had
trained alone.

Under a time limit, one GPU's sweep opens a unit only when the open units and it can all finish before the
limit, at the pace a measured cost table gives (else at the pace the sweep measures), cutting a group to
the runs that can and filling the time left with smaller units (resnet.plan.next_unit): units advanced in
turn move at the same number of iterations per turn and so would all end together, and a ten-minute
command that opened eight full-schedule runs at once would end with eight checkpoints and no finished
network.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from resnet.cifar10 import CIFAR10, load_data
from resnet.config import ConfigError, Execution, RunConfig
from resnet.group import GroupRun, MemberFailed, can_group, network_of
from resnet.plan import Costs, checkpoints_mb, next_unit, unit_key, units
from resnet.models import arch_depth
from resnet.records import Job, RunFolder, RunFolderError, Summary
from resnet.train import Diverged, Run, RunFailed, failure, train

__all__ = ["Pace", "allow_concurrent_streams", "groups", "run_sweep", "run_lines",
           "sweep_status_line", "train_in_turn"]

CHUNK = 50  # iterations a run is advanced by before the next run's turn (on one GPU)
MEASURE_S = 20.0  # wall seconds of training measured before a time-limited sweep opens a second run
PACE_WINDOW_S = 60.0  # the pace is measured over the last this many seconds (it changes as runs open)


def run_sweep(jobs: Sequence[Job], execution: Execution = Execution(), *, data: CIFAR10 | None = None,
              data_dir: str | None = None, download: bool = False) -> list[Summary]:
    """Train ``jobs`` (skipping finished and diverged ones) and return one summary per job, in order
    (status 'missing' for a run that never started). ``data``, when given, is used by runs in this
    process; others read ``data_dir``."""
    allow_concurrent_streams()
    device = execution.torch_device
    todo = [job for job in jobs if _wants_training(job)]
    if todo:  # the data is read and verified once, up front: a missing data set fails before any run starts
        data = data if data is not None else load_data(data_dir, download=download)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1 and len(todo) > 1:
        n = torch.cuda.device_count()
        shares = [list(todo[i::n]) for i in range(n) if todo[i::n]]
        _in_processes(train_in_turn, shares, execution, n, data_dir=data_dir, download=download)
    elif device.type == "cuda" or execution.group_size(device) > 1:
        train_in_turn(todo, execution.replace(device=str(device)), data)
    elif execution.units_at_once(device) > 1 and len(todo) > 1:
        _in_processes(_train_on_cpu, [[job] for job in todo], execution, execution.units_at_once(device),
                      data_dir=data_dir, download=download)
    else:
        _train_on_cpu(todo, execution, data)
    summaries = [job.folder.report() for job in jobs]
    last = sweep_status_line(summaries, execution.command)
    print("\n".join(run_lines([job.folder for job in todo]) + [last]), file=sys.stderr)
    return summaries


def allow_concurrent_streams(streams: int = 32) -> None:
    """Let up to ``streams`` CUDA streams run side by side. The driver gives a process 8 hardware queues
    by default (CUDA_DEVICE_MAX_CONNECTIONS), and more concurrent runs than that queue behind each other's
    kernels. The setting is read when CUDA starts in this process, so it is made before any CUDA work;
    a value set by the user is kept."""
    if not torch.cuda.is_initialized():
        os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", str(streams))


def run_lines(folders: Sequence[RunFolder]) -> list[str]:
    """One line per run, for a command's last lines: status, how far it got, the ms per iteration it ran
    at, and its test error (finished) or what stopped it."""
    lines = []
    for folder in folders:
        s = folder.report()
        where = f"{s.iterations_done:,} of {s.iterations_planned:,}" if s.iterations_planned else ""
        speed = f"{s.ms_per_iteration:.2f} ms/it" if s.ms_per_iteration else ""
        detail = (f"test error {s.final_test_error:.2%}" if s.status == "finished" and s.final_test_error
                  is not None else s.message or "")
        lines.append(f"  {folder.name:<26} {s.status:<10} {where:>17} {speed:>13}  {detail}")
    return lines


def sweep_status_line(summaries: Sequence[Summary], command: str | None = None) -> str:
    """The last line of a sweep: how many runs finished, and the command that continues the others."""
    done = sum(s.status == "finished" for s in summaries)
    line = f"sweep: {done} of {len(summaries)} runs finished"
    if done < len(summaries):
        line += (f"; to continue the others (failed ones are retried): {command}" if command
                 else "; running the same command again continues the unfinished ones")
    return line


def _wants_training(job: Job) -> bool:
    folder = job.folder
    if folder.finished(job.config):
        print(f"sweep: {folder.name}: finished before, skipped", file=sys.stderr)
        return False
    report = folder.report()
    if report.status == "diverged":
        print(f"sweep: {folder.name}: diverged before, skipped (remove {folder.path} to train it again)",
              file=sys.stderr)
        return False
    if report.status == "damaged":  # neither finished nor trained over: its owner restores it first
        print(f"sweep: {folder.name}: damaged, skipped ({report.message}); restore {folder.path} from where "
              f"it came, or move it away to train the run afresh", file=sys.stderr)
        return False
    return True


def _report(name: str, summary: Summary) -> None:
    detail = (f"test error {summary.final_test_error:.2%} in {summary.wall_time_s} s"
              if summary.status == "finished" and summary.final_test_error is not None else summary.message)
    print(f"sweep: {name}: {summary.status}: {detail}", file=sys.stderr)


# -- the CPU: one run after another in a process -------------------------------------------------------
def _train_on_cpu(jobs: Sequence[Job], execution: Execution, data: CIFAR10 | None = None, *,
                  data_dir: str | None = None, download: bool = False) -> None:
    if execution.threads:
        torch.set_num_threads(execution.threads)
    for job in jobs:
        if execution.deadline.remaining() < 5:
            break
        data = data if data is not None else load_data(data_dir, download=download)
        try:
            summary = train(job.config, data=data, out=job.out, execution=execution,
                            resume=job.folder.holds_a_run())
        except (ConfigError, RunFolderError) as e:  # one run's failure does not end the sweep
            summary = Summary("skipped", str(e))
        except (Diverged, RunFailed):  # their summaries are written
            summary = job.folder.report()
        except Exception as e:
            summary = _failed_to_open(job, e)
        _report(job.out.name, summary)


# -- one GPU: several runs at once, each on its own stream ---------------------------------------------
def train_in_turn(jobs: Sequence[Job], execution: Execution, data: CIFAR10 | None = None, *,
                  data_dir: str | None = None, download: bool = False) -> None:
    """Several runs in this process: up to ``execution.units_at_once`` units open at a time, advanced in
    turn by ``CHUNK`` iterations each (on CUDA each unit's work goes to its own stream, so the GPU overlaps
    them); the runs of one depth and recipe at the same iteration open together as one grouped network
    (see groups); the next unit opens as one ends (under a time limit, the next that can still finish:
    resnet.plan.next_unit), and an ended run is dropped with its model, optimizer and graph. A run that
    fails is recorded as 'failed' and the others go on. At the deadline, or when the sweep itself is
    stopped, every open run is paused with a checkpoint."""
    data = data if data is not None else load_data(data_dir, download=download)
    device = execution.torch_device
    at_once = execution.units_at_once(device)
    # one stream per unit at once, reused by the units that follow it: torch.cuda.Stream() cycles through a
    # pool of 32, so fresh streams for 55 runs would put two open runs on one stream
    streams = [torch.cuda.Stream(device) if device.type == "cuda" else None for _ in range(at_once)]
    # runs that were started before come first: they are the nearest to their end
    pending = sorted(jobs, key=lambda job: not job.folder.holds_a_run())
    active: dict[int, Run | GroupRun] = {}
    pace = Pace(execution.clock)
    try:
        while pending or active:
            _fill(active, pending, streams, pace, execution, data)
            work, ended = _turns(active)
            pace.add(work)
            if not work and not ended:
                break  # the deadline is near: no run could take another step
    finally:  # the time limit came, or the sweep was stopped: every open run keeps a checkpoint
        for unit in active.values():
            runs = _open_runs(unit)
            _close(unit, unit.pause)
            _report_ended(runs)


def groups(jobs: Sequence[Job], size: int) -> list[list[Job]]:
    """``jobs`` as the units a sweep opens, in order: up to ``size`` runs of one depth and recipe, of any
    seed and shortcuts, that stand at the same iteration (so that they also end together) as one group,
    placed where its first run was; every other run alone (resnet.plan.units)."""
    return units(jobs, size, lambda job: unit_key(job, _iterations_done, can_group, network_of))


class Pace:
    """The sweep's pace: work (iterations x the network's weighted layers, see _work) per wall second over
    the last PACE_WINDOW_S seconds; None until MEASURE_S seconds have been measured. Wall time, so it
    counts evaluations, checkpoints and the opening of runs too, and a busier GPU shows as a higher pace."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.samples = deque([(clock(), 0.0)])  # (time, work done by then)

    def add(self, work: float) -> None:
        now = self.clock()
        self.samples.append((now, self.samples[-1][1] + work))
        while len(self.samples) > 2 and now - self.samples[1][0] >= PACE_WINDOW_S:
            self.samples.popleft()

    def rate(self) -> float | None:
        (t0, w0), (t1, w1) = self.samples[0], self.samples[-1]
        return (w1 - w0) / (t1 - t0) if t1 - t0 >= MEASURE_S else None


def _work(config: RunConfig, iterations: int) -> float:
    """What ``iterations`` of ``config`` cost, in layer-iterations: an iteration of these networks costs
    about in proportion to its weighted layers (the same widths at every depth)."""
    return float(iterations * arch_depth(config.arch))


def _iterations_done(job: Job) -> int:
    """How far an earlier command took the run: the iteration its checkpoint holds, where it resumes, when
    it has a readable one; else what its summary says. A summary can be stale (a failed run's, a killed
    run's from an earlier session), and the runs a unit groups must stand at one iteration (resnet.group)."""
    saved = _saved_iteration(job.folder.checkpoint_path)
    if saved is not None:
        return saved
    summary = job.folder.summary()
    return (summary.iterations_done or 0) if summary is not None else 0


def _saved_iteration(path: Path) -> int | None:
    """The iteration of the checkpoint at ``path``, or None when there is none readable."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read_iteration(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _read_iteration(path: str, mtime_ns: int, size: int) -> int | None:
    """The checkpoint's iteration, read once per version of the file (the sweep asks at every turn); its
    tensors are mapped, not read."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["state"]["iteration"])
    except Exception:  # unreadable: opening the run says why
        return None


def _work_left(job: Job) -> float:
    """The work a pending run has left: its plan less what an earlier command did."""
    return _work(job.config, max(0, job.config.iterations - _iterations_done(job)))


def _open_runs(unit: Run | GroupRun) -> list[Run]:
    """The runs of ``unit`` that have not ended."""
    return [run for run in unit.runs if not run.ended]


def _open_work(unit: Run | GroupRun) -> float:
    """The work an open run (or each open run of a group) has left."""
    return sum(_work(r.config, r.data.total_iterations - r.state.iteration) for r in _open_runs(unit))


def _open_run(unit: Sequence[Job], execution: Execution, data: CIFAR10,
              stream: torch.cuda.Stream | None) -> Run | GroupRun | None:
    """Open a unit of ``groups``: a Run, or a GroupRun of several (without those of them that cannot be
    opened: another process trains them, say). What cannot be opened is recorded, and the sweep goes on."""
    jobs = list(unit)
    while jobs:
        try:
            if len(jobs) > 1:
                return GroupRun(jobs, data=data, execution=execution, stream=stream)
            return Run(jobs[0].config, data=data, out=jobs[0].out, execution=execution,
                       resume=jobs[0].folder.holds_a_run(), stream=stream)
        except MemberFailed as e:  # the others open without it
            _not_opened(e.job, e.error)
            jobs.remove(e.job)
        except Exception as e:  # e.g. out of memory while building it: each run recorded, the sweep goes on
            for job in jobs:
                _not_opened(job, e)
            return None
    return None


def _not_opened(job: Job, error: BaseException) -> None:
    if isinstance(error, (ConfigError, RunFolderError)):
        _report(job.out.name, Summary("skipped", str(error)))
    else:  # e.g. out of memory while building it
        _report(job.out.name, _failed_to_open(job, error))


def _fill(active: dict[int, Run | GroupRun], pending: list[Job], streams: Sequence[torch.cuda.Stream | None],
          pace: Pace, execution: Execution, data: CIFAR10) -> None:
    """Open pending units into the free slots of ``active`` (one stream each), the next that
    resnet.plan.next_unit chooses each time (estimated from execution.costs, else at the measured pace),
    until the slots are full, nothing fits, or the deadline is near."""
    costs, rate = execution.costs, pace.rate()
    if costs is not None and execution.torch_device.type == "cuda":  # a table measured on another GPU
        costs = costs.on(torch.cuda.get_device_name(execution.torch_device))

    def estimate(unit: list[Job]) -> float | None:
        left = max(0, unit[0].config.iterations - _iterations_done(unit[0]))
        if costs is not None:
            return costs.seconds([job.config for job in unit], left)
        return sum(map(_work_left, unit)) / rate if rate else None

    for slot, stream in enumerate(streams):
        while slot not in active and pending and execution.deadline.remaining() > 10:
            horizon = execution.finish_by or execution.deadline
            unit = next_unit(groups(pending, execution.group_size(execution.torch_device)), estimate=estimate,
                             open_seconds=_open_seconds(active, costs, rate),
                             seconds_left=horizon.remaining(), anything_open=bool(active),
                             size_mb=checkpoints_mb)
            if unit is None:
                break
            for job in unit:
                pending.remove(job)
            opened = _open_run(unit, execution, data, stream)
            if opened is not None:
                active[slot] = opened


def _open_seconds(active: dict[int, Run | GroupRun], costs: Costs | None, rate: float | None) -> float | None:
    """The seconds the open units still need: by the cost table, else at the measured pace (None while it
    is not measured and a unit is open)."""
    if costs is not None:
        return sum(costs.seconds([r.config for r in _open_runs(unit)],
                                 max(r.data.total_iterations - r.state.iteration for r in _open_runs(unit)))
                   for unit in active.values() if _open_runs(unit))
    work = sum(_open_work(unit) for unit in active.values())
    return work / rate if rate else (0.0 if not work else None)


def _turns(active: dict[int, Run | GroupRun]) -> tuple[float, int]:
    """One turn of every open unit: (the work they did, how many ended). An ended unit leaves ``active``,
    and nothing here holds it after: the sweep keeps no ended run's model, optimizer or graph."""
    work, ended = 0.0, 0
    for slot in list(active):
        done, over = _turn(active[slot])
        work, ended = work + done, ended + over
        if over:
            del active[slot]
    return work, ended


def _turn(unit: Run | GroupRun) -> tuple[float, bool]:
    """One turn of ``unit``: (the work it did, whether it has ended and left the rotation). Each run that
    ends in it (a single run, or any member of a group, whichever way the turn ends) is reported."""
    runs = _open_runs(unit)
    before = [run.state.iteration for run in runs]
    try:
        unit.advance(CHUNK)
    except KeyboardInterrupt:  # this run may be mid-iteration: its last periodic checkpoint is what stays
        _close(unit, functools.partial(unit.end, "unfinished", message="interrupted by the user; the "
                                       "same command continues it from its last checkpoint"))
        raise
    except Diverged:  # a single run's advance ended it 'diverged'
        return 0.0, True
    except Exception as e:  # a capture, CUDA or out-of-memory error ends this run, not the sweep
        _close(unit, functools.partial(unit.end, "failed", message=failure(e)))
        return 0.0, True
    else:
        work = sum(_work(run.config, run.state.iteration - start) for run, start in zip(runs, before))
        if unit.trained:
            _close(unit, unit.end)
            return work, True
        return work, unit.ended
    finally:
        _report_ended(runs)


def _close(unit: Run | GroupRun, end: Callable[[], object]) -> None:
    """End ``unit`` with ``end`` (its end or pause); a failure while ending it is recorded as the run's
    failure."""
    try:
        end()
    except Exception as e:
        unit.end("failed", message=failure(e))


def _report_ended(runs: Sequence[Run]) -> None:
    for run in runs:
        if run.ended:
            _report(run.folder.name, run.summary)


def _failed_to_open(job: Job, error: Exception) -> Summary:
    summary = Summary("failed", f"{type(error).__name__}: {error}", arch=job.config.arch,
                      shortcut=job.config.shortcut, recipe=job.config.recipe, seed=job.config.seed)
    if not job.folder.finished():
        job.folder.write_summary(summary)
    return summary


# -- several processes ---------------------------------------------------------------------------------
def _in_processes(target: Callable[..., None], shares: list[list[Job]], execution: Execution,
                  processes: int, **data: object) -> None:
    """``target(share, execution)`` for each share, ``processes`` at once (spawned: CUDA and fork do not
    mix); on CUDA the i-th share trains on GPU i."""
    threads = execution.threads or max(1, (os.cpu_count() or 1) // processes)
    per_process = execution.replace(progress=False, threads=threads)
    gpu = target is train_in_turn
    executions = [per_process.replace(device=f"cuda:{i}") if gpu else per_process for i in range(len(shares))]
    with ProcessPoolExecutor(max_workers=processes, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(functools.partial(target, **data), shares, executions))

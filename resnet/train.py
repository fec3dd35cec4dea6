"""The training engine: a run that a driver advances step by step, and :func:`train`, the loop.

    summary = train(paper_config("resnet20"), data=load_data())       # results/runs/resnet20-A-paper-s0

    with Run(config, data=data, out=folder) as run:     # several of these can share one GPU (resnet.sweep)
        while not run.trained:
            run.advance(100)
        summary = run.end("finished")

One iteration (Run.advance): the learning rate for it (a pure function of the iteration), the next batch
(augmented on the device), the step (forward, loss, backward, update), then the iteration counted; at an
evaluation a log row (training loss and error since the last row, validation and test error), at the
checkpoint interval the state saved; the run ends at its last iteration, when early stopping says so, or,
paused with a checkpoint, near the deadline. The data on the device is resnet.loader's, the state (the
checkpoint) resnet.state's, the step resnet.step's, the recipe and how runs execute resnet.config's, the
files resnet.records', data parallelism resnet.distributed's. The learning rate is a pure function
of the iteration and the data order a pure function of (seed, epoch), so a run killed at any point
resumes from its checkpoint and ends exactly as an uninterrupted run would. Nothing is ever chosen on the
test set: the reported model is the final iteration's (for the tutorial recipe, the one it has when early
stopping on the validation split ends it); with a validation split, the lowest-validation-error weights'
test error is recorded beside it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import torch

from resnet import models
from resnet.cifar10 import CIFAR10, load_data
from resnet.config import ConfigError, Execution, RunConfig, describe_schedule, learning_rate
from resnet.distributed import AGREE_EVERY, Dist
from resnet.records import RunFolder, RunFolderError, Summary, code_version, default_run_dir
from resnet.loader import DeviceData
from resnet.state import Diverged, RunState
from resnet.step import make_step, set_learning_rate

__all__ = ["Diverged", "RunFailed", "Run", "failure", "near_deadline", "train"]  # Diverged: from resnet.state


class RunFailed(RuntimeError):
    """A run stopped by anything but divergence (out of memory, a CUDA error, a bug); its summary says
    'failed' and its last checkpoint is kept."""


class Run:
    """One training run of ``config``: opened when built (claiming its folder: RunFolderError when another
    process trains it, or when it holds a run and ``resume`` is not set; resuming from the checkpoint),
    advanced by a driver (:func:`train`; resnet.sweep, several at once on one GPU; resnet.group, several as
    one network), ended with a status by :meth:`end` (or :meth:`pause`, which checkpoints first), which
    writes the summary and lets go of the lock and the step. A driver drops a run that has ended."""

    def __init__(self, config: RunConfig, *, data: CIFAR10, out: str | os.PathLike | None = None,
                 execution: Execution = Execution(), resume: bool = False, dist: Dist | None = None,
                 stream: torch.cuda.Stream | None = None, group: Sequence[str] = ()) -> None:
        self.config, self.execution, self.dist = config, execution, dist or Dist()
        self.group = list(group)  # the runs it trains with as one network (resnet.group), when it does
        self.device = self.dist.device(execution.torch_device)
        self.uses_graph = execution.uses_graph(self.device, distributed=self.dist.enabled)
        execution.prepare(self.device)
        self.checkpoint_every = execution.checkpoint_every or config.eval_every
        self.folder = RunFolder(out if out is not None else default_run_dir(config))
        self.stream = stream or (torch.cuda.Stream(self.device) if self.device.type == "cuda" else None)
        self.clock, self.slowest_save_s = execution.clock, 0.0  # the deadline's clock; a save's reserve
        self.summary: Summary | None = None
        self.folder.claim(resume=resume, lock=self.dist.is_writer)
        try:
            self.data = DeviceData.prepare(config, data, self.device, self.dist)
            self.state = RunState.new(config, self.device, len(data.classes))
            if resume and self.folder.checkpoint_path.exists():
                self.state.load_checkpoint(self.folder.read_checkpoint(config, self.device))
            self.step = None if self.group else make_step(  # a group's member is stepped by its group
                self.state, self.dist.wrap(self.state.model, self.device), precision=config.precision,
                compile=execution.compile, graph_stream=self.stream if self.uses_graph else None)
            self.lr = learning_rate(self.state.iteration, config, warmup_end=self.state.warmup_end)
            set_learning_rate(self.state.optimizer, self.lr)
            self.batches = self.data.batches(self.state.iteration, self.dist)
            self.code = code_version()  # the code this session runs
            self.session_start, self.elapsed_before = self.clock(), self.state.elapsed_s
            self.train_before = self.state.train_s
            self.state.segments.append(_segment(self))  # this session: a segment of the run
            if self.dist.is_writer:
                self.folder.write_config(config, _execution_record(self))
                self.folder.write_log(self.state.rows)  # drops rows written after the last checkpoint
            if self.stream is not None:
                self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the data was uploaded there
        except BaseException:
            self.folder.lock.release()
            raise

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.folder.lock.release()

    @property
    def runs(self) -> list[Run]:  # the runs this unit trains, as a group's are its members: itself
        return [self]

    @property
    def trained(self) -> bool:  # nothing left to train: its last iteration done, or early stopping ended it
        return self.state.at_end(self.config, self.data.total_iterations)

    @property
    def ended(self) -> bool:  # ended with a status (finished, unfinished, failed, diverged): summary written
        return self.summary is not None

    # -- training ------------------------------------------------------------------------------------
    def advance(self, iterations: int) -> int:
        """Train up to ``iterations`` more (fewer at the end, or near the deadline); return how many.
        One iteration: the rate for it, the next batch, the step; then count it, at an evaluation add a log
        row, at the checkpoint interval save the state. Diverged: after ending the run 'diverged'."""
        start = self.state.iteration
        try:
            with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                while self.state.iteration - start < iterations and not self.trained and not _late(self):
                    t0 = self.clock()
                    self.set_learning_rate()
                    self.step(*next(self.batches))  # forward, backward, update; counts summed on the device
                    train_stats = self.state.count_iteration(self.config, self.data, self.dist)
                    self.state.train_s += self.clock() - t0  # evaluation and checkpoints are not training
                    self.after_step(train_stats)
        except Diverged as e:
            self.end("diverged", message=str(e))
            raise
        return self.state.iteration - start

    # The pieces of an iteration around the step (resnet.group calls them for each of its members)
    def set_learning_rate(self) -> bool:
        """Set the rate of the coming iteration, a pure function of it; whether it changed."""
        lr = learning_rate(self.state.iteration, self.config, warmup_end=self.state.warmup_end)
        if lr == self.lr:
            return False
        set_learning_rate(self.state.optimizer, lr)
        self.lr = lr
        return True

    def after_step(self, train_stats: tuple[float, float] | None,
                   test: dict[str, float] | None = None) -> None:
        """At an evaluation (``train_stats``: the training loss and error since the last), the log row (with
        ``test``, when the caller measured the test set); at the checkpoint interval and the end, the
        checkpoint."""
        state = self.state
        if train_stats is not None:
            if self.dist.is_writer:
                state.record_evaluation(self.data, *train_stats, config=self.config, lr=self.lr,
                                        elapsed_s=self.elapsed_s(), test=test)
                self.folder.write_log(state.rows)
            # every process stops early when rank 0's validation says so
            state.checks_without_improvement = self.dist.rank0_value(state.checks_without_improvement,
                                                                     self.device)
        if state.iteration % self.checkpoint_every == 0 or self.trained:
            self.save_checkpoint()

    # -- records -------------------------------------------------------------------------------------
    def elapsed_s(self) -> float:  # wall seconds of this run over all its sessions
        return self.elapsed_before + self.clock() - self.session_start

    def update_segment(self) -> None:
        """This session's entry in the run's segments: how far it has trained the run, in how long."""
        self.state.segments[-1].update(
            to_iteration=self.state.iteration, seconds=round(self.clock() - self.session_start, 2),
            train_seconds=round(self.state.train_s - self.train_before, 2))

    def wait(self) -> None:  # for the run's queued GPU work: the host runs many iterations ahead of it
        if self.stream is not None:
            self.stream.synchronize()

    def save_checkpoint(self) -> None:
        """Write the state after the last queued iteration, from finite weights only."""
        t0 = self.clock()
        self.wait()
        self.state.check_weights()
        if self.dist.is_writer:
            self.state.elapsed_s = self.elapsed_s()
            self.update_segment()
            self.folder.write_checkpoint(self.config, self.state.to_checkpoint())
        self.slowest_save_s = max(self.slowest_save_s, self.clock() - t0)

    def pause(self) -> Summary:
        """End 'unfinished' before the end (a time limit), with a checkpoint of now to continue from."""
        if self.ended:
            return self.summary
        self.save_checkpoint()
        return self.end("unfinished", message=f"stopped by the time limit at iteration "
                        f"{self.state.iteration} of {self.data.total_iterations}")

    def end(self, status: str = "finished", *, message: str | None = None) -> Summary:
        """End the run with ``status``: "finished" (model.pt is written), "unfinished" (its last checkpoint
        continues it), "failed" (out of memory, a CUDA error, a bug: the last checkpoint retries it) or
        "diverged". Writes summary.json, lets go of the lock and the step; returns the summary."""
        if self.summary is None:
            with contextlib.suppress(RuntimeError) if status == "failed" else contextlib.nullcontext():
                self.wait()  # after a CUDA error the device may refuse even this
            self.update_segment()
            self.summary = _summary(self, status, message)
            if self.dist.is_writer:
                if status == "finished":
                    self.folder.write_model(self.state.reported_model(self.config, self.data))
                self.folder.write_summary(self.summary)
        self.folder.lock.release()
        self.step = None  # a CUDA graph holds its memory pool while it is referenced
        return self.summary


def _late(run: Run) -> bool:
    """Whether ``run`` must stop for the deadline; data-parallel processes decide it together."""
    late = near_deadline(run.execution, [run], extra_iterations=AGREE_EVERY * run.dist.enabled)
    return run.dist.decide_together(late, run.state.iteration, run.device)


def failure(error: BaseException) -> str:
    """A failed run's message: the error's type and text."""
    return f"{type(error).__name__}: {error}".strip()


def near_deadline(execution: Execution, runs: Sequence[Run], *, extra_iterations: int = 0) -> bool:
    """Whether the deadline leaves too little for 3 more iterations of ``runs`` (stepped together, as one
    run or a group; ``extra_iterations`` beyond those) and, for each, an evaluation and a checkpoint,
    with 2 s to spare."""
    per_iteration = max(run.state.seconds_per_iteration() for run in runs)
    reserve = 2.0 + (3 + extra_iterations) * per_iteration + 2 * sum(run.slowest_save_s for run in runs)
    return execution.deadline.remaining() < reserve


def cpu_name() -> str:
    """The CPU's model as the kernel names it (/proc/cpuinfo), else what platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _segment(run: Run) -> dict[str, Any]:
    """A new segment's entry (resnet.state.RunState.segments): where the session starts, the code, the
    device (on a CPU its model, the instruction set torch's kernels use and the threads) and how it runs."""
    device = run.device
    where = ({"device": "cuda", "gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else
             {"device": "cpu", "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "threads": torch.get_num_threads()})
    return {"from_iteration": run.state.iteration, "to_iteration": run.state.iteration, "seconds": 0.0,
            "train_seconds": 0.0, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **run.code, **where,
            "compile": run.execution.compile, "graph": run.uses_graph, "torch_version": torch.__version__}


def _execution_record(run: Run) -> dict[str, Any]:
    """config.json's "run": how the run is executed, which changes nothing it computes beyond rounding."""
    data, device = run.data, run.device
    precision = ("float32" if device.type != "cuda" else
                 "bf16-autocast" if run.config.precision == "bf16" else "float32 (TF32 off)")
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu ({cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, "
                 f"{torch.get_num_threads()} threads)")
    return {"device": str(device), "device_name": name, "world_size": run.dist.world_size,
            "graph": run.uses_graph, "compile": run.execution.compile,
            "cudnn_benchmark": run.execution.benchmarks_cudnn(device), "group": run.group or None,
            "checkpoint_every": run.checkpoint_every,
            "precision": precision, "total_iterations": data.total_iterations,
            "batches_per_epoch": len(data.loader), "train_images": len(data.loader.labels),
            "val_images": 0 if data.val is None else len(data.val[1]), "test_images": len(data.test[1])}


def _summary(run: Run, status: str, message: str | None) -> Summary:
    """What summary.json says: the reported errors, how far the run got, how fast, on what, with what."""
    cfg, state, execution = run.config, run.state, _execution_record(run)
    last = state.rows[-1] if state.rows else {}
    best = (state.best_on_test(run.data, cfg.precision) if status == "finished" else None) or {}
    return Summary(
        status=status, message=message, arch=cfg.arch, shortcut=cfg.shortcut, recipe=cfg.recipe,
        seed=cfg.seed,
        final_test_error=last.get("test_error"), final_train_error=last.get("train_error"),
        final_val_error=last.get("val_error"),
        selected_iteration=state.iteration if last else None, selection="final iteration",
        best_val_iteration=best.get("iteration"), best_val_error=best.get("val_error"),
        best_val_test_error=best.get("test_error"),
        iterations_done=state.iteration, iterations_planned=run.data.total_iterations,
        warmup_end=state.warmup_end if cfg.warmup_lr is not None else None,
        parameters=models.count_parameters(state.model),
        wall_time_s=round(run.elapsed_s(), 2), train_time_s=round(state.train_s, 2),
        images_per_s=round(state.images / state.train_s, 1) if state.train_s > 0 else None,
        ms_per_iteration=round(1000 * state.train_s / state.iteration, 2) if state.iteration else None,
        device=execution["device_name"], precision=execution["precision"], graph=run.uses_graph,
        world_size=run.dist.world_size, torch_version=torch.__version__, **run.code,
        data=run.data.name, data_fingerprint=run.data.fingerprint, schedule=describe_schedule(cfg),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), segments=[dict(s) for s in state.segments])


# --------------------------------------------------------------------------------------------------
# The loop

def train(config: RunConfig, *, data: CIFAR10 | None = None, data_dir: str | None = None,
          download: bool = False, out: str | os.PathLike | None = None, execution: Execution = Execution(),
          resume: bool = False, dist: Dist | None = None, stream: torch.cuda.Stream | None = None) -> Summary:
    """Train ``config`` to its end, or until the execution's deadline comes near, and return its summary:
    "finished", or "unfinished" with a checkpoint that ``resume=True`` continues from (a finished run is
    left as it is). Raises Diverged when the loss or the weights become non-finite, and RunFailed (after
    writing a 'failed' summary) when anything else stops the run."""
    folder = RunFolder(out if out is not None else default_run_dir(config))
    if resume and folder.finished(config):
        return folder.summary()
    data = data if data is not None else load_data(data_dir, download=download)
    with Run(config, data=data, out=folder.path, execution=execution, resume=resume, dist=dist,
             stream=stream) as run:
        bar = _progress_bar(run) if execution.progress and run.dist.is_writer else None
        try:
            while not run.trained:
                trained = run.advance(100)
                if bar is not None:
                    bar.update(trained)
                if not trained:
                    break  # the deadline is near
        except KeyboardInterrupt:  # the last periodic checkpoint stays: it is a consistent state
            run.end("unfinished", message="interrupted by the user; --resume continues from the last "
                                           "checkpoint")
            raise
        except (Diverged, ConfigError, RunFolderError):
            raise
        except Exception as e:
            summary = run.end("failed", message=failure(e))
            raise RunFailed(f"the run in {folder.path} failed: {summary.message}. Its last checkpoint is "
                            f"kept; --resume retries it from there") from e
        finally:
            if bar is not None:
                bar.close()
        return run.end() if run.trained else run.pause()


def _progress_bar(run: Run) -> Any:
    from tqdm.auto import tqdm
    return tqdm(total=run.data.total_iterations, initial=run.state.iteration, desc=run.folder.name,
                unit="it", dynamic_ncols=True)


"""The training engine: a run that a driver advances step by step, and :func:`train`, the loop.

    summary = train(paper_config("resnet20"), data=load_data())       # results/runs/resnet20-A-paper-s0

    with Run(config, data=data, out=folder) as run:     # several of these can share one GPU (resnet.sweep)
        while not run.done:
            run.advance(100)
        summary = run.finish()

The parts (state, step, evaluation) are in resnet.step, the recipe and how runs execute in resnet.config,
the files in resnet.records, data parallelism in resnet.distributed. The learning rate is a pure function
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
from resnet.step import DeviceData, Diverged, RunState, make_step, set_learning_rate

__all__ = ["Diverged", "RunFailed", "Run", "train"]  # Diverged: from resnet.step


class RunFailed(RuntimeError):
    """A run stopped by anything but divergence (out of memory, a CUDA error, a bug); its summary says
    'failed' and its last checkpoint is kept."""


class Run:
    """One training run of ``config``, opened when built, advanced by a driver (:func:`train`, or
    resnet.sweep for several at once on one GPU, each on its own CUDA stream), closed by :meth:`finish`,
    :meth:`pause` or :meth:`fail`, which write the summary and let go of the lock, model, graph and data.
    Building it claims the run folder (RunFolderError when another process trains it, or when it holds a
    run and ``resume`` is not set), builds network and step and resumes from the checkpoint."""

    def __init__(self, config: RunConfig, *, data: CIFAR10, out: str | os.PathLike | None = None,
                 execution: Execution = Execution(), resume: bool = False, dist: Dist | None = None,
                 stream: torch.cuda.Stream | None = None, group: Sequence[str] = ()) -> None:
        self.config, self.execution, self.dist = config, execution, dist or Dist()
        self.group = list(group)  # the runs it trains with as one network (resnet.group), when it does
        self.device = self.dist.device(execution.torch_device)
        self.uses_graph = execution.uses_graph(self.device, distributed=self.dist.enabled)
        self.checkpoint_every = execution.checkpoint_every or config.eval_every
        self.folder = RunFolder(out if out is not None else default_run_dir(config))
        self.stream = stream or (torch.cuda.Stream(self.device) if self.device.type == "cuda" else None)
        self.clock = execution.clock  # what the deadline is read on times the run too
        self.summary: Summary | None = None
        self.slowest_save_s = 0.0  # what a deadline must leave room for
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
        self.close()

    def close(self) -> None:
        """Release the lock and everything the run holds on its device (a sweep opens many runs)."""
        self.folder.lock.release()
        self.step = self.batches = self.data = self.state = None

    # -- training ------------------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        """Finished, paused, failed or diverged: closed, with its summary written."""
        return self.summary is not None

    @property
    def open(self) -> list[Run]:
        """The runs it trains that are still open, as for a group (resnet.group): itself, until it ends."""
        return [] if self.ended else [self]

    @property
    def done(self) -> bool:
        """Closed, or trained to its end (or stopped early on validation, the tutorial recipe)."""
        return self.summary is not None or self.state.at_end(self.config, self.data.total_iterations)

    def advance(self, iterations: int) -> int:
        """Train up to ``iterations`` more (fewer at the end, or near the deadline), evaluating and
        checkpointing at their intervals; return how many. Diverged: after writing a 'diverged' summary."""
        start = self.state.iteration
        try:
            with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                for _ in range(iterations):
                    if self.done or self._out_of_time():
                        break
                    self._iterate()
        except Diverged as e:
            self.finish("diverged", message=str(e))
            raise
        return self.state.iteration - start if self.state is not None else 0

    def _out_of_time(self) -> bool:  # data-parallel processes decide it together (resnet.distributed)
        late = near_deadline(self.execution, [self], extra_iterations=AGREE_EVERY * self.dist.enabled)
        return self.dist.decide_together(late, self.state.iteration, self.device)

    def _iterate(self) -> None:
        t0 = self.clock()
        self.set_learning_rate()
        self.step(*next(self.batches))  # forward, backward, update; the loss and errors summed on the device
        train_stats = self.state.count_iteration(self.config, self.data, self.dist)
        self.state.train_s += self.clock() - t0  # evaluation and checkpoints are not training time
        self.log_and_checkpoint(train_stats)

    # The parts of an iteration around the step, in order (resnet.group steps several runs at once)
    def set_learning_rate(self) -> bool:
        """Set the rate of the coming iteration, a pure function of it; whether it changed."""
        lr = learning_rate(self.state.iteration, self.config, warmup_end=self.state.warmup_end)
        if lr == self.lr:
            return False
        set_learning_rate(self.state.optimizer, lr)
        self.lr = lr
        return True

    def log_and_checkpoint(self, train_stats: tuple[float, float] | None) -> None:
        """At an evaluation, the log row; at the checkpoint interval (and the end), the checkpoint."""
        state, cfg = self.state, self.config
        if train_stats is not None:
            if self.dist.is_writer:  # a log row: training loss and error since the last row, test error
                state.record_evaluation(self.data, *train_stats, config=cfg, lr=self.lr,
                                        elapsed_s=self.elapsed_s())
                self.folder.write_log(state.rows)
            checks = state.checks_without_improvement  # all stop early when rank 0's validation says so
            state.checks_without_improvement = self.dist.rank0_value(checks, self.device)
        if state.iteration % self.checkpoint_every == 0 or self.done:
            self.save_checkpoint()

    # -- records -------------------------------------------------------------------------------------
    def elapsed_s(self) -> float:  # wall seconds of this run over all its sessions
        return self.elapsed_before + self.clock() - self.session_start

    def wait(self) -> None:
        """Wait for the run's queued GPU work (the host runs many iterations ahead of the run's stream)."""
        if self.stream is not None:
            self.stream.synchronize()

    def save_checkpoint(self) -> None:
        """Write the state after the last queued iteration, from finite weights only."""
        t0 = self.clock()
        self.wait()
        self.state.check_weights()
        if self.dist.is_writer:
            self.state.elapsed_s = self.elapsed_s()
            self.folder.write_checkpoint(self.config, self.state.to_checkpoint())
        self.slowest_save_s = max(self.slowest_save_s, self.clock() - t0)

    def pause(self, message: str | None = None) -> Summary:
        """Stop before the end (a time limit): checkpoint now, so that the next session starts here."""
        self.save_checkpoint()
        return self.finish("unfinished", message=message or f"stopped by the time limit at iteration "
                           f"{self.state.iteration} of {self.data.total_iterations}")

    def fail(self, error: BaseException) -> Summary:
        """Status 'failed' (out of memory, a CUDA error, a bug); the last checkpoint stays for a retry."""
        return self.finish("failed", message=f"{type(error).__name__}: {error}".strip())

    def finish(self, status: str = "finished", *, message: str | None = None) -> Summary:
        """Write summary.json (and model.pt when finished), close the run and return the summary."""
        if self.summary is None:
            with contextlib.suppress(RuntimeError) if status == "failed" else contextlib.nullcontext():
                self.wait()  # after a CUDA error the device may refuse even this
            self.summary = _summary(self, status, message)
            if self.dist.is_writer:
                if status == "finished":
                    self.folder.write_model(self.state.reported_model(self.config, self.data))
                self.folder.write_summary(self.summary)
        self.close()
        return self.summary


def near_deadline(execution: Execution, runs: Sequence[Run], *, extra_iterations: int = 0) -> bool:
    """Whether the deadline leaves too little for 3 more iterations of ``runs`` (stepped together, as one
    run or a group; ``extra_iterations`` beyond those) and, for each, an evaluation and a checkpoint,
    with 2 s to spare."""
    per_iteration = max(run.state.seconds_per_iteration() for run in runs)
    reserve = 2.0 + (3 + extra_iterations) * per_iteration + 2 * sum(run.slowest_save_s for run in runs)
    return execution.deadline.remaining() < reserve


def _execution_record(run: Run) -> dict[str, Any]:
    """config.json's "run": how the run is executed, which changes nothing it computes beyond rounding."""
    data, device = run.data, run.device
    precision = ("float32" if device.type != "cuda" else
                 "bf16-autocast" if run.config.precision == "bf16" else "float32 (TF32 off)")
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    return {"device": str(device), "device_name": name, "world_size": run.dist.world_size,
            "graph": run.uses_graph, "compile": run.execution.compile, "group": run.group or None,
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
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


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
            while not run.done:
                trained = run.advance(100)
                if bar is not None:
                    bar.update(trained)
                if not trained:
                    break  # the deadline is near
        except KeyboardInterrupt:  # the last periodic checkpoint stays: it is a consistent state
            run.finish("unfinished", message="interrupted by the user; --resume continues from the last "
                                              "checkpoint")
            raise
        except (Diverged, ConfigError, RunFolderError):
            raise
        except Exception as e:
            summary = run.fail(e)
            raise RunFailed(f"the run in {folder.path} failed: {summary.message}. Its last checkpoint is "
                            f"kept; --resume retries it from there") from e
        finally:
            if bar is not None:
                bar.close()
        return run.finish() if run.done else run.pause()


def _progress_bar(run: Run) -> Any:
    from tqdm.auto import tqdm
    return tqdm(total=run.data.total_iterations, initial=run.state.iteration, desc=run.folder.name,
                unit="it", dynamic_ncols=True)


"""The training engine: a run's state, its training step (eager, or captured once in a CUDA graph and
replayed), evaluation, and a run that a driver advances step by step. :func:`train` is the loop.

    summary = train(paper_config("resnet20"), data=load_data(), out="results/runs/resnet20-A-paper-s0")

    with Run(config, data=data, out=folder) as run:     # several of these can share one GPU (resnet.sweep)
        while not run.done:
            run.advance(100)
        summary = run.finish()

The recipe lives in resnet.config, the files in resnet.records, data parallelism in resnet.distributed.
The learning rate is a pure function of the iteration and the data order a pure function of (seed, epoch),
so a run killed at any point resumes from its checkpoint and ends exactly as an uninterrupted run would.
Nothing is ever chosen on the test set: the reported model is the final iteration's, or, for the
tutorial recipe, the one chosen on the validation split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet import data as cifar
from resnet import inference, models
from resnet.config import ConfigError, RunConfig, describe_schedule, learning_rate
from resnet.distributed import Dist
from resnet.records import (RunFolderError, RunLock, atomic_torch_save, code_version, default_run_dir,
                            holds_a_run, read_json, run_finished, write_json, write_log)

__all__ = ["Diverged", "RunFailed", "Deadline", "RunData", "RunState", "TrainStep", "CudaGraphStep", "Run",
           "evaluate", "train", "load_data", "load_trained", "read_checkpoint", "resolve_device",
           "set_learning_rate", "keep_device_flags", "compiled", "on_device"]


class Diverged(RuntimeError):
    """The training loss or the weights became NaN or infinite."""


class RunFailed(RuntimeError):
    """A run stopped by anything but divergence (out of memory, a CUDA error, a bug); its summary says
    'failed' and its last checkpoint is kept."""


AGREE_EVERY = 10  # iterations between the data-parallel processes' joint decisions to stop for a deadline


# --------------------------------------------------------------------------------------------------
# What a run trains on, and when it must stop

def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be cpu, cuda or auto; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine; "
                          "use --device cpu (or leave --device out)")
    return torch.device(device)


_DATA_CACHE: dict[str, cifar.CIFAR10] = {}


def load_data(data_dir: str | os.PathLike | None = None, *, download: bool = False) -> cifar.CIFAR10:
    """CIFAR-10 from ``data_dir`` (else $CIFAR10_ROOT, else the repository's data/), read and verified once
    per process."""
    root = str(cifar.resolve_data_dir(data_dir))
    if root not in _DATA_CACHE:
        _DATA_CACHE[root] = cifar.load_cifar10(root, download=download)
    return _DATA_CACHE[root]


def _process_age() -> float:
    """Seconds since this process started (read from /proc; 0 where that is not available)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass(frozen=True)
class Deadline:
    """When a command with ``--time-limit`` must have ended, counted from the start of its process, as a
    wall-clock time that worker processes share. ``Deadline(None)`` never arrives."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        if seconds is None:
            return cls(None)
        if not seconds > 0:
            raise ConfigError(f"--time-limit must be a positive number of seconds; got {seconds}")
        return cls(time.time() + seconds - _process_age())

    def remaining(self) -> float:
        return math.inf if self.at is None else self.at - time.time()


@dataclass
class RunData:
    """The tensors one run trains and evaluates on, on its device."""

    loader: cifar.TrainLoader
    mean: torch.Tensor
    std: torch.Tensor
    test: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor] | None
    total_iterations: int

    @classmethod
    def prepare(cls, config: RunConfig, data: cifar.CIFAR10, device: torch.device, dist: Dist) -> RunData:
        images, labels, test_images, test_labels = on_device(data, device)
        val = None
        if config.val_size:
            if config.val_size >= len(labels):
                raise ConfigError(f"val_size {config.val_size} leaves no training images "
                                  f"(have {len(labels)})")
            split = cifar.train_val_split(len(labels), val_size=config.val_size, seed=0)
            train_idx, val_idx = (i.to(device) for i in split)
            val = (images[val_idx], labels[val_idx])
            images, labels = images[train_idx], labels[train_idx]
        if config.train_subset:
            if config.train_subset > len(labels):
                raise ConfigError(f"train_subset {config.train_subset} exceeds the {len(labels)} "
                                  "training images")
            # a fixed, seed-independent subset: every network of a quick sweep sees the same images
            keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(12345))
            keep = keep[: config.train_subset].sort().values.to(device)
            images, labels = images[keep], labels[keep]
        if len(labels) < config.batch_size:
            raise ConfigError(f"only {len(labels)} training images; a batch needs {config.batch_size}")
        if config.batch_size % dist.world_size:
            raise ConfigError(f"batch_size {config.batch_size} is not divisible by {dist.world_size} "
                              "processes")
        n_test = config.test_subset or len(test_labels)
        # the normalisation comes from the training images only, never the test set
        mean, std = cifar.normalization_stats(images, mode=config.normalization)
        loader = cifar.TrainLoader(images, labels, batch_size=config.batch_size, seed=config.seed, mean=mean,
                                   std=std)
        total = config.iterations if config.max_epochs is None else min(config.iterations,
                                                                         config.max_epochs * len(loader))
        return cls(loader, mean, std, (test_images[:n_test], test_labels[:n_test]), val, total)


_ON_DEVICE: dict[tuple[int, str], tuple[cifar.CIFAR10, tuple[torch.Tensor, ...]]] = {}


def on_device(data: cifar.CIFAR10, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels) of ``data`` on ``device``, uploaded once per
    process: the runs of a sweep share one copy (180 MB of CIFAR-10 on a GPU) instead of one each."""
    key = (id(data), str(device))
    if key not in _ON_DEVICE:  # the entry keeps ``data`` alive, so its id is not reused
        tensors = (data.train_images, data.train_labels, data.test_images, data.test_labels)
        _ON_DEVICE[key] = (data, tuple(t.to(device) for t in tensors))
    return _ON_DEVICE[key][1]


# --------------------------------------------------------------------------------------------------
# The state of a run: exactly what its checkpoint holds

@dataclass
class RunState:
    """Everything a run carries from one iteration to the next. Its fields *are* the checkpoint: modules
    and optimizers are saved by their state_dict, tensors as they are, the rest as plain values.

    ``stats`` [2, 3] lives on the device: (loss sum, wrong, images) since the last evaluation (row 0) and
    since the last warm-up check (row 1); every step adds to it and nothing reads it between checks."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    stats: torch.Tensor
    iteration: int = 0
    warmup_end: int | None = None  # the iteration the warm-up ended (0 for a recipe without warm-up)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the log, one row per evaluation
    best: dict[str, Any] | None = None  # the validation-chosen model (early-stopping recipe)
    checks_without_improvement: int = 0
    elapsed_s: float = 0.0  # wall seconds of all sessions so far (resume)
    train_s: float = 0.0  # of which spent in training iterations
    images: int = 0

    @classmethod
    def new(cls, config: RunConfig, device: torch.device, num_classes: int) -> RunState:
        torch.manual_seed(config.seed)  # the initial weights are a function of the seed alone
        model = models.build_model(config.arch, shortcut=config.shortcut, num_classes=num_classes)
        # channels_last: the faster layout for convolutions on the GPU's tensor cores and the CPU's oneDNN
        model = model.to(device, memory_format=torch.channels_last)
        # On CUDA: the fused update (one kernel, capturable) and the learning rate as a device tensor
        cuda = {"fused": True, "lr": torch.tensor(config.lr, device=device)} if device.type == "cuda" else {}
        if config.optimizer == "sgd":
            optimizer = torch.optim.SGD(model.parameters(), **{"lr": config.lr, "momentum": config.momentum,
                                                               "weight_decay": config.weight_decay, **cuda})
        else:  # Adam keeps a step count: on CUDA it must live on the device for the graph to capture it
            capturable = {"capturable": True} if device.type == "cuda" else {}
            optimizer = torch.optim.Adam(model.parameters(), **{"lr": config.lr,
                                                                "weight_decay": config.weight_decay,
                                                                **cuda, **capturable})
        stats = torch.zeros(2, 3, dtype=torch.float64, device=device)
        return cls(model, optimizer, stats, warmup_end=None if config.warmup_lr is not None else 0)

    def select_on_validation(self, val_error: float, test_error: float) -> None:
        """The tutorial recipe: keep the weights with the lowest validation error so far; count the checks
        in a row without improvement (early stopping). The test error is only carried along."""
        if self.best is None or val_error < self.best["val_error"]:
            weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.best = {"iteration": self.iteration, "val_error": val_error, "test_error": test_error,
                         "model": weights}
            self.checks_without_improvement = 0
        else:
            self.checks_without_improvement += 1

    def to_checkpoint(self) -> dict[str, Any]:
        def saved(value: Any) -> Any:
            if hasattr(value, "state_dict"):
                return value.state_dict()
            return value.detach().cpu() if isinstance(value, torch.Tensor) else value
        return {f.name: saved(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):
            current, saved = getattr(self, f.name), checkpoint[f.name]
            if isinstance(current, torch.optim.Optimizer):
                current.load_state_dict(keep_device_flags(saved, current))
            elif hasattr(current, "load_state_dict"):
                current.load_state_dict(saved)
            elif isinstance(current, torch.Tensor):
                current.copy_(saved)
            else:
                setattr(self, f.name, saved)


#: What an optimizer is built with for its device, not what it has learnt: a CPU run has float rates and
#: the default update, a CUDA run a device-tensor rate and the fused, capturable update.
DEVICE_FLAGS = ("lr", "fused", "foreach", "capturable", "differentiable")


def keep_device_flags(saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``saved`` (an optimizer state_dict) with ``optimizer``'s own device flags. Optimizer.load_state_dict
    restores the saved groups whole, so a run checkpointed on the CPU and resumed on CUDA would otherwise
    get the foreach update with a tensor rate (a host sync per step, and no capture), and a CUDA Adam
    resumed on the CPU would stay capturable. The flags also decide where Adam's step counts go."""
    groups = [{**{k: v for k, v in g.items() if k not in DEVICE_FLAGS},
               **{k: mine[k] for k in DEVICE_FLAGS if k in mine}}
              for g, mine in zip(saved["param_groups"], optimizer.param_groups)]
    return {**saved, "param_groups": groups}


def compiled(net: nn.Module) -> nn.Module:
    """``torch.compile(net)``. Each architecture of a sweep recompiles ResNet.forward, and past Dynamo's
    recompile limit (8) it would quietly run the rest eagerly, mixing compiled and eager numbers: the
    limit is raised above the number of networks in a plan, and hitting it is an error."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 128))
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(config, name):
            setattr(config, name, True)
            break
    return torch.compile(net)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate. On CUDA the rate is a 0-d tensor on the GPU, filled in place, so a
    captured step reads the new value on its next replay and no step waits for the host."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


# --------------------------------------------------------------------------------------------------
# One training iteration, and evaluation

class TrainStep:
    """One iteration on (x, y): forward, cross-entropy, backward, optimizer update, and the batch's
    (loss sum, wrong, images) added to ``stats`` on the device. Nothing waits for the host."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer, stats: torch.Tensor, *,
                 device: torch.device, precision: str) -> None:
        self.net, self.optimizer, self.stats = net, optimizer, stats
        self.device, self.precision = device, precision

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with inference.autocast(self.device, self.precision):
            out = self.net(x.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(out, y)
        loss.backward()
        self.optimizer.step()
        n = y.shape[0]
        self.stats[:, 0] += loss.detach().double() * n
        self.stats[:, 1] += (out.detach().argmax(1) != y).sum()
        self.stats[:, 2] += n


class CudaGraphStep:
    """A :class:`TrainStep` recorded once in a CUDA graph and replayed: one launch per iteration instead
    of hundreds (the eager step is launch-bound on a GPU: the GPU waits on Python).

    The first ``WARMUP`` calls run the step eagerly (real iterations of the run, on its side stream, as
    capture requires: lazy initialisation and the optimizer's state happen outside the graph). The next
    call records the step into static input buffers; from then on each call copies its batch into them
    and replays. The learning rate is a device tensor (see set_learning_rate), so the schedule needs no
    new capture. Load checkpoints before the first call: the graph holds the tensors it recorded."""

    WARMUP = 3

    def __init__(self, step: TrainStep, stream: torch.cuda.Stream) -> None:
        self.step, self.stream = step, stream
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.x = self.y = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.calls += 1
        if self.graph is None and self.calls <= self.WARMUP:
            return self.step(x, y)
        if self.graph is None:
            self.x = torch.empty_like(x, memory_format=torch.channels_last)
            self.y = torch.empty_like(y)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self.step(self.x, self.y)
            self.graph = graph  # only a completed capture is ever replayed
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, mean: torch.Tensor,
             std: torch.Tensor, precision: str = "bf16") -> dict[str, float]:
    """Error (fraction) and mean cross-entropy of ``model`` on the un-augmented ``images``, through the
    one inference path (resnet.inference.logits). One host synchronisation."""
    out = inference.logits(model, images, mean=mean, std=std, precision=precision)
    labels = labels.to(out.device)
    error, loss = torch.stack([(out.argmax(1) != labels).double().mean(),
                               F.cross_entropy(out, labels).double()]).tolist()
    return {"error": error, "loss": loss}


# --------------------------------------------------------------------------------------------------
# A run that a driver advances

class Run:
    """One training run of ``config``, advanced by a driver: :func:`train` for one run, resnet.sweep for
    several at once on one GPU (each run's work goes to its own CUDA stream, ``stream`` or a new one).

    ``with Run(...)`` takes the run folder's lock, builds the network, resumes from the checkpoint when
    ``resume`` is set and writes config.json; :meth:`advance` trains, evaluating, logging and
    checkpointing at their intervals; :meth:`finish`, :meth:`pause` or :meth:`fail` writes the summary;
    leaving the block releases the lock and the run's model, optimizer, graph and data. ``graph``
    (default: on for CUDA in a single process) captures the step in a CUDA graph; ``compile`` wraps the
    network in torch.compile first.
    """

    def __init__(self, config: RunConfig, *, data: cifar.CIFAR10, out: str | os.PathLike | None = None,
                 device: str = "auto", resume: bool = False, graph: bool | None = None, compile: bool = False,
                 checkpoint_every: int | None = None, dist: Dist | None = None,
                 stream: torch.cuda.Stream | None = None) -> None:
        self.config, self.data, self.resume, self.compile = config, data, resume, compile
        self.out = Path(out) if out is not None else default_run_dir(config)
        self.dist = dist or Dist()
        self.device = self.dist.device(resolve_device(device))
        self.graph = (self.device.type == "cuda" and not self.dist.enabled) if graph is None else graph
        if self.graph and (self.device.type != "cuda" or self.dist.enabled):
            raise ConfigError("a CUDA-graph step needs a CUDA device and a single process; "
                              "use the eager step")
        self.checkpoint_every = checkpoint_every or config.eval_every
        if self.checkpoint_every <= 0:
            raise ConfigError(f"checkpoint_every must be positive; got {checkpoint_every}")
        self.lock = RunLock(self.out)
        self.summary: dict[str, Any] | None = None
        self._save_s = 0.0  # the slowest checkpoint so far: what a deadline must leave room for
        self.stream = stream or (torch.cuda.Stream(self.device) if self.device.type == "cuda" else None)

    # -- opening and closing -------------------------------------------------------------------------
    def __enter__(self) -> Run:
        if not self.resume and holds_a_run(self.out):
            raise RunFolderError(f"{self.out} already holds a run. Pass --resume to continue it "
                                 f"(a finished run is left as it is), or choose another folder with --out; "
                                 f"nothing was changed.")
        if self.dist.is_writer:
            self.lock.acquire()
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock and everything the run holds on its device (a sweep opens many runs)."""
        self.lock.release()
        self.step = self.batches = self.run_data = self.state = None

    def _open(self) -> None:
        self.state = None
        if self.resume and run_finished(self.out, self.config):
            self.summary = read_json(self.out / "summary.json")
            return
        self.run_data = RunData.prepare(self.config, self.data, self.device, self.dist)
        self.state = RunState.new(self.config, self.device, len(self.data.classes))
        net = self.dist.wrap(self.state.model, self.device)
        net = compiled(net) if self.compile else net
        step = TrainStep(net, self.state.optimizer, self.state.stats, device=self.device,
                         precision=self.config.precision)
        self.step = CudaGraphStep(step, self.stream) if self.graph else step
        if self.resume and (self.out / "checkpoint.pt").exists():
            self.state.load_checkpoint(read_checkpoint(self.out / "checkpoint.pt", self.config, self.device))
        self.lr = learning_rate(self.state.iteration, self.config, warmup_end=self.state.warmup_end)
        set_learning_rate(self.state.optimizer, self.lr)
        self.batches = _batches(self.run_data.loader, self.state.iteration, self.dist)
        self.code_version = code_version()  # the code this session runs
        self.session_start, self.elapsed_before = time.perf_counter(), self.state.elapsed_s
        if self.dist.is_writer:
            write_json(self.out / "config.json", {"config": self.config.to_dict(), "run": _execution(self)})
            write_log(self.out / "log.csv", self.state.rows)  # drops rows written after the last checkpoint
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the data was uploaded there

    # -- training ------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Finished: the last iteration is done, early stopping has stopped it, or it was finished before."""
        if self.summary is not None:
            return True
        stopped = (self.config.patience is not None
                   and self.state.checks_without_improvement > self.config.patience)
        return stopped or self.state.iteration >= self.run_data.total_iterations

    def advance(self, iterations: int, *, deadline: Deadline = Deadline()) -> int:
        """Train up to ``iterations`` more iterations (fewer when the run ends or the deadline comes near),
        evaluating and checkpointing at their intervals; return how many it trained. Raises Diverged after
        writing a 'diverged' summary."""
        start = self.state.iteration if self.state is not None else 0
        try:
            with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                for _ in range(iterations):
                    if self.done or self._out_of_time(deadline):
                        break
                    self._iterate()
        except Diverged as e:
            self.finish("diverged", message=str(e))
            raise
        return (self.state.iteration - start) if self.state is not None else 0

    def _out_of_time(self, deadline: Deadline) -> bool:
        """Whether to stop for the deadline. Data-parallel processes decide together, every AGREE_EVERY
        iterations (their deadlines differ by their start-up): one stopping alone would hang the others."""
        if not self.dist.enabled:
            return deadline.remaining() < self.reserve_s()
        if self.state.iteration % AGREE_EVERY:
            return False
        late = torch.tensor([float(deadline.remaining() < self.reserve_s())], device=self.device)
        return bool(self.dist.all_reduce(late).item())

    def _iterate(self) -> None:
        state, cfg = self.state, self.config
        t0 = time.perf_counter()
        lr = learning_rate(state.iteration, cfg, warmup_end=state.warmup_end)
        if lr != self.lr:
            set_learning_rate(state.optimizer, lr)
            self.lr = lr
        self.step(*next(self.batches))
        state.iteration += 1
        state.images += cfg.batch_size
        if state.warmup_end is None and state.iteration % cfg.warmup_check_every == 0:
            # paper section 4.2: the warm-up rate until the training error is below 80%
            if self._training_stats(1)[1] < cfg.warmup_until_train_error:
                state.warmup_end = state.iteration
        at_eval = state.iteration % cfg.eval_every == 0 or self.done
        train_stats = self._training_stats(0) if at_eval else None  # waits for the queued steps
        state.train_s += time.perf_counter() - t0  # evaluation and checkpoints are not training time
        if train_stats is not None:
            _log_evaluation(self, *train_stats)
        if state.iteration % self.checkpoint_every == 0 or self.done:
            self.save_checkpoint()

    def reserve_s(self) -> float:
        """Seconds to keep in hand before a deadline: some iterations, an evaluation and a checkpoint."""
        per_iteration = self.state.train_s / max(1, self.state.iteration)
        return 2.0 + (3 + AGREE_EVERY * self.dist.enabled) * per_iteration + 2 * self._save_s

    def _training_stats(self, row: int) -> tuple[float, float]:
        """(mean loss, error) of the iterations counted in ``stats[row]``, over all processes; resets it."""
        loss, wrong, seen = self.dist.all_reduce(self.state.stats[row].clone()).tolist()
        self.state.stats[row].zero_()
        if not math.isfinite(loss):
            raise Diverged(f"the training loss became non-finite before iteration {self.state.iteration}")
        return loss / max(seen, 1), wrong / max(seen, 1)

    # -- records -------------------------------------------------------------------------------------
    def elapsed_s(self) -> float:
        """Wall seconds of this run over all its sessions."""
        return self.elapsed_before + time.perf_counter() - self.session_start

    def wait(self) -> None:
        """Block until the run's queued GPU work is done: the host runs many iterations ahead of its stream,
        and whatever reads the run's tensors from outside that stream must not see a half-done step."""
        if self.stream is not None:
            self.stream.synchronize()

    def save_checkpoint(self) -> None:
        """Write the state of the last queued iteration, from finite weights only (an update can overflow
        with a finite loss)."""
        t0 = time.perf_counter()
        self.wait()
        if not torch.stack([p.detach().float().sum()
                            for p in self.state.model.parameters()]).isfinite().all():
            raise Diverged(f"the weights became non-finite before iteration {self.state.iteration}")
        if self.dist.is_writer:
            self.state.elapsed_s = self.elapsed_s()
            atomic_torch_save({"config": self.config.to_dict(), "state": self.state.to_checkpoint()},
                              self.out / "checkpoint.pt")
        self._save_s = max(self._save_s, time.perf_counter() - t0)

    def pause(self, message: str | None = None) -> dict[str, Any]:
        """Stop before the end (a time limit): checkpoint now, so the next session starts here."""
        self.save_checkpoint()
        return self.finish("unfinished", message=message or f"stopped by the time limit at iteration "
                           f"{self.state.iteration} of {self.run_data.total_iterations}")

    def fail(self, error: BaseException) -> dict[str, Any]:
        """Record that the run failed (out of memory, a capture or CUDA error, a bug): status 'failed' with
        the message; its last checkpoint is kept, so a later sweep retries it from there."""
        return self.finish("failed", message=f"{type(error).__name__}: {error}".strip())

    def finish(self, status: str = "finished", *, message: str | None = None) -> dict[str, Any]:
        """Write summary.json (and model.pt when finished) and return the summary."""
        if self.summary is not None and status == "finished":
            return self.summary
        with contextlib.suppress(RuntimeError) if status == "failed" else contextlib.nullcontext():
            self.wait()  # after a CUDA error the device may refuse even this
        self.summary = _summary(self, status, message)
        if self.dist.is_writer:
            if status == "finished":
                atomic_torch_save(_reported_model(self), self.out / "model.pt")
            write_json(self.out / "summary.json", self.summary)
        return self.summary


def _log_evaluation(run: Run, loss: float, error: float) -> None:
    """Append a log row: the training loss and error since the last row, the test (and validation) error."""
    state, data = run.state, run.run_data
    if run.dist.is_writer:
        norm = dict(mean=data.mean, std=data.std, precision=run.config.precision)
        test = evaluate(state.model, *data.test, **norm)
        val = evaluate(state.model, *data.val, **norm) if data.val is not None else None
        state.rows.append({
            "iteration": state.iteration, "epoch": round(state.iteration / len(data.loader), 3),
            "lr": float(f"{run.lr:.8g}"), "train_loss": round(loss, 6), "train_error": round(error, 6),
            "val_error": None if val is None else round(val["error"], 6), "test_loss": round(test["loss"], 6),
            "test_error": round(test["error"], 6), "elapsed_s": round(run.elapsed_s(), 2)})
        write_log(run.out / "log.csv", state.rows)
        if val is not None and run.config.patience is not None:
            state.select_on_validation(val["error"], test["error"])
    if run.dist.enabled:  # every process stops early when rank 0's validation says so
        count = torch.tensor([state.checks_without_improvement], device=run.device)
        state.checks_without_improvement = int(run.dist.broadcast(count).item())


def read_checkpoint(path: Path, config: RunConfig, device: torch.device) -> dict[str, Any]:
    """The saved RunState of ``config``'s run in ``path``; RunFolderError when unreadable or another run's."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # a checkpoint that cannot be read is a user-facing problem, not a traceback
        raise RunFolderError(f"cannot read the checkpoint {path} ({type(e).__name__}: {e}); move it away "
                             f"to start the run afresh") from None
    if checkpoint.get("config") != config.to_dict():
        raise RunFolderError(f"{path} belongs to a run with another config; choose another --out or rerun "
                             f"with the config in {path.parent / 'config.json'}")
    return checkpoint["state"]


def _batches(loader: cifar.TrainLoader, start: int,
             dist: Dist) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches from iteration ``start`` on, across epochs: a pure function of
    (seed, iteration)."""
    epoch, offset = divmod(start, len(loader))
    while True:
        yield from loader.epoch(epoch, start=offset, rank=dist.rank, world_size=dist.world_size)
        epoch, offset = epoch + 1, 0


def _precision(run: Run) -> str:
    if run.device.type != "cuda":
        return "float32"
    return "bf16-autocast" if run.config.precision == "bf16" else "float32 (TF32 off)"


def _execution(run: Run) -> dict[str, Any]:
    """How the run is executed (config.json's "run"): nothing here changes what it computes beyond
    rounding."""
    data = run.run_data
    return {"device": str(run.device), "world_size": run.dist.world_size, "graph": run.graph,
            "compile": run.compile, "checkpoint_every": run.checkpoint_every, "precision": _precision(run),
            "total_iterations": data.total_iterations, "batches_per_epoch": len(data.loader),
            "train_images": len(data.loader.labels),
            "val_images": 0 if data.val is None else len(data.val[1]), "test_images": len(data.test[1])}


def _reported_model(run: Run) -> dict[str, Any]:
    best = run.state.best
    return {"config": run.config.to_dict(), "model": best["model"] if best else run.state.model.state_dict(),
            "mean": run.run_data.mean.cpu(), "std": run.run_data.std.cpu(), "classes": list(run.data.classes)}


def _summary(run: Run, status: str, message: str | None) -> dict[str, Any]:
    """What summary.json says: the reported errors, how far the run got, how fast, on what, with what."""
    cfg, state = run.config, run.state
    last, best = (state.rows[-1] if state.rows else {}), state.best
    device = (torch.cuda.get_device_name(run.device) if run.device.type == "cuda"
              else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    return {
        "status": status, "message": message,
        "arch": cfg.arch, "shortcut": cfg.shortcut, "recipe": cfg.recipe, "seed": cfg.seed,
        "final_test_error": best["test_error"] if best else last.get("test_error"),
        "final_train_error": last.get("train_error"),
        "final_val_error": best["val_error"] if best else last.get("val_error"),
        "selected_iteration": best["iteration"] if best else (state.iteration if last else None),
        "selection": "validation" if best else "final iteration",
        "iterations_done": state.iteration, "iterations_planned": run.run_data.total_iterations,
        "warmup_end": state.warmup_end if cfg.warmup_lr is not None else None,
        "parameters": models.count_parameters(state.model),
        "wall_time_s": round(run.elapsed_s(), 2), "train_time_s": round(state.train_s, 2),
        "images_per_s": round(state.images / state.train_s, 1) if state.train_s > 0 else None,
        "ms_per_iteration": round(1000 * state.train_s / state.iteration, 2) if state.iteration else None,
        "device": device, "precision": _precision(run), "graph": run.graph, "world_size": run.dist.world_size,
        "torch_version": torch.__version__, **run.code_version,
        "data": run.data.name, "data_fingerprint": run.data.fingerprint,
        "schedule": describe_schedule(cfg), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------------------------------
# The loop

def train(config: RunConfig, *, data: cifar.CIFAR10 | None = None, data_dir: str | None = None,
          download: bool = False, out: str | os.PathLike | None = None, deadline: Deadline = Deadline(),
          progress: bool = True, **run_options: Any) -> dict[str, Any]:
    """Train ``config`` to its end, or until ``deadline`` (``Deadline.after(seconds)``: a command's time
    limit) comes near, and return its summary: status "finished", or "unfinished" with a checkpoint that
    ``resume=True`` continues from. Raises Diverged when the loss or the weights become non-finite, and
    RunFailed (after writing a 'failed' summary) when anything else stops it.
    ``run_options`` go to :class:`Run` (device, resume, graph, compile, checkpoint_every, dist, stream)."""
    data = data if data is not None else load_data(data_dir, download=download)
    with Run(config, data=data, out=out, **run_options) as run:
        if run.done:
            return run.finish()
        bar = _progress_bar(run) if progress and run.dist.is_writer else None
        try:
            while not run.done:
                trained = run.advance(100, deadline=deadline)
                if bar is not None:
                    bar.update(trained)
                if not trained:
                    break  # the deadline is near
        except KeyboardInterrupt:
            run.finish("unfinished",
                       message="interrupted by the user; --resume continues from the last checkpoint")
            raise
        except (Diverged, ConfigError, RunFolderError):
            raise
        except Exception as e:
            summary = run.fail(e)
            raise RunFailed(f"the run in {run.out} failed: {summary['message']}. Its last checkpoint is "
                            f"kept; --resume retries it from there") from e
        finally:
            if bar is not None:
                bar.close()
        return run.finish() if run.done else run.pause()


def _progress_bar(run: Run) -> Any:
    from tqdm.auto import tqdm
    return tqdm(total=run.run_data.total_iterations, initial=run.state.iteration, desc=run.out.name,
                unit="it", dynamic_ncols=True)


def load_trained(run_dir: str | os.PathLike, *, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The reported model of a finished run and its saved state (config, normalisation, classes)."""
    path = Path(run_dir) / "model.pt"
    if not path.exists():
        raise RunFolderError(f"{path} is missing: the run in {run_dir} has not finished here (model weights "
                             f"are not committed; rerun the experiment to produce them)")
    state = torch.load(path, map_location=device, weights_only=False)
    cfg = RunConfig.from_dict(state["config"])
    model = models.build_model(cfg.arch, shortcut=cfg.shortcut, num_classes=len(state["classes"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state

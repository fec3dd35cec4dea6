"""The training engine: the paper's recipe as data, the loop, evaluation, checkpoints, run records, sweeps.

The recipe (paper section 4.2) is one frozen :class:`RunConfig`; experiments override only what differs.
The learning rate is a pure function of the iteration (:func:`learning_rate`), the data order a pure
function of (seed, epoch) (:class:`resnet.data.TrainLoader`), so a run killed at any point resumes from
its last checkpoint and finishes exactly as an uninterrupted run would.

Every run writes to its own folder:

    config.json    the full config (recipe + how it was run)
    log.csv        one row per evaluation: iteration, lr, train loss/error, val/test error, elapsed seconds
    summary.json   final test error, status (finished | diverged | interrupted), parameters, speed, versions
    checkpoint.pt  model, optimizer, RNG states, data position, iteration (for --resume; never committed)
    model.pt       the reported weights (final iteration, or the validation-chosen ones) for analysis

All records are written atomically (temporary file, then rename). Errors are fractions in [0, 1].
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet import data as cifar
from resnet import models

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"

LOG_FIELDS = ("iteration", "epoch", "lr", "train_loss", "train_error", "val_error", "test_loss", "test_error",
              "elapsed_s")


class ConfigError(ValueError):
    """A run config or command-line value that cannot describe a valid run."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class RunFolderError(RuntimeError):
    """The run folder holds another run, or a run that cannot be resumed with this config."""


# --------------------------------------------------------------------------------------------------
# The recipe as data
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result. Defaults: the paper's CIFAR-10 recipe (section 4.2).

    SGD with momentum 0.9, weight decay 1e-4, mini-batch 128, learning rate 0.1 divided by 10 at 32k and
    48k iterations, 64k iterations (about 164 epochs of 50k images), evaluated every 500 iterations, on
    all 50k training images. ``warmup_lr`` is the paper's ResNet-110 warm-up: that rate until the training
    error falls below ``warmup_until_train_error``, then back to ``lr`` and the normal schedule.
    """

    arch: str = "resnet20"
    shortcut: str = "A"
    recipe: str = "paper"
    optimizer: str = "sgd"  # "sgd" | "adam"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    iterations: int = 64_000
    milestones: tuple[int, ...] = (32_000, 48_000)
    lr_decay: float = 0.1
    warmup_lr: float | None = None
    warmup_until_train_error: float = 0.80
    warmup_check_every: int = 20  # the warm-up's training error is measured over this many mini-batches
    eval_every: int = 500
    val_size: int = 0  # 5000 = the paper's 45k/5k split; 0 = train on all 50k (the reported models)
    patience: int | None = None  # early stopping: stop after more than this many checks without improvement
    max_epochs: int | None = None
    train_subset: int | None = None  # quick runs: the first N (shuffled) training images
    test_subset: int | None = None  # quick runs: the first N test images
    normalization: str = "pixel"  # "pixel": the paper's per-pixel mean subtraction; "channel": mean/std
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(self.arch in models.ARCHS, f"unknown arch {self.arch!r}; choose one of {', '.join(models.ARCHS)}")
        need(self.shortcut in ("A", "B", "C"), f"shortcut must be A, B or C; got {self.shortcut!r}")
        need(self.recipe in ("paper", "tutorial"), f"recipe must be 'paper' or 'tutorial'; got {self.recipe!r}")
        need(self.optimizer in ("sgd", "adam"), f"optimizer must be 'sgd' or 'adam'; got {self.optimizer!r}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number; got {self.lr}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1); got {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0; got {self.weight_decay}")
        need(self.batch_size > 0, f"batch_size must be positive; got {self.batch_size}")
        need(self.iterations > 0, f"iterations must be positive; got {self.iterations}")
        need(list(self.milestones) == sorted(self.milestones) and all(m > 0 for m in self.milestones),
             f"milestones must be increasing positive iterations; got {self.milestones}")
        need(0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1]; got {self.lr_decay}")
        need(self.warmup_lr is None or self.warmup_lr > 0, f"warmup_lr must be positive; got {self.warmup_lr}")
        need(0 < self.warmup_until_train_error <= 1, "warmup_until_train_error must be in (0, 1]")
        need(self.warmup_check_every > 0, "warmup_check_every must be positive")
        need(self.eval_every > 0, f"eval_every must be positive; got {self.eval_every}")
        need(self.val_size >= 0, f"val_size must be >= 0; got {self.val_size}")
        need(self.patience is None or self.patience >= 0, "patience must be >= 0")
        need(self.patience is None or self.val_size > 0,
             "early stopping (patience) needs a validation split (val_size > 0): it never looks at the test set")
        need(self.max_epochs is None or self.max_epochs > 0, "max_epochs must be positive")
        need(self.train_subset is None or self.train_subset >= self.batch_size,
             f"train_subset must hold at least one batch ({self.batch_size}); got {self.train_subset}")
        need(self.test_subset is None or self.test_subset > 0, "test_subset must be positive")
        need(self.normalization in ("pixel", "channel"), "normalization must be 'pixel' or 'channel'")
        need(self.seed >= 0, f"seed must be >= 0; got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **overrides: Any) -> RunConfig:
        """A copy with ``overrides``; unknown keys are an error, not silently ignored."""
        return RunConfig.from_dict({**self.to_dict(), **overrides})

    @property
    def depth(self) -> int | None:
        digits = "".join(c for c in self.arch if c.isdigit())
        return int(digits) if digits else None


def paper_config(arch: str = "resnet20", **overrides: Any) -> RunConfig:
    """The paper's CIFAR-10 recipe for ``arch``, with its warm-up for 110 layers and deeper (section 4.2)."""
    if arch not in models.ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(models.ARCHS)}")
    base = RunConfig(arch=arch)
    if arch in models.CIFAR_ARCHS and (base.depth or 0) >= 110:
        base = base.replace(warmup_lr=0.01)
    return base.replace(**overrides)


def tutorial_config(arch: str = "resnet20", **overrides: Any) -> RunConfig:
    """The tutorial reproduction's recipe: Adam (lr 1e-3, weight decay 1e-4) on a 45k/5k split, validation
    accuracy every 50 iterations, stop after more than 5 checks without improvement, at most 50 epochs.
    The reported model is the validation-chosen one."""
    base = RunConfig(arch=arch, recipe="tutorial", optimizer="adam", lr=1e-3, weight_decay=1e-4,
                     iterations=50 * (45_000 // 128), milestones=(), eval_every=50, val_size=5000, patience=5,
                     max_epochs=50)
    return base.replace(**overrides)


RECIPES = {"paper": paper_config, "tutorial": tutorial_config}

# The --quick schedule of every experiment: a short, proportionally scaled schedule on a subset, so the
# whole degradation sweep finishes in minutes on a 2-core CPU. Records go to results/quick/, never mixed
# with full runs, and every figure drawn from them says so.
QUICK = dict(iterations=200, milestones=(100, 150), eval_every=25, train_subset=10_000, test_subset=1_000)
QUICK_TUTORIAL = dict(iterations=600, eval_every=50, train_subset=10_000, val_size=1_000, test_subset=1_000,
                      patience=5, max_epochs=50)


def quick(config: RunConfig) -> RunConfig:
    """``config`` on the quick schedule (see ``QUICK``)."""
    return config.replace(**(QUICK_TUTORIAL if config.recipe == "tutorial" else QUICK))


def is_quick(config: RunConfig) -> bool:
    """True for a config on the quick schedule: what figures drawn from its records must say."""
    return quick(config) == config


def describe_schedule(config: RunConfig) -> str:
    """A one-line description of a run's schedule and data, for figure titles and tables."""
    data = f"{config.train_subset:,} training images" if config.train_subset else "all training images"
    test = f", first {config.test_subset:,} test images" if config.test_subset else ""
    return f"{config.iterations:,} iterations, batch {config.batch_size}, {data}{test}"


def learning_rate(iteration: int, config: RunConfig, *, warmup_end: int | None = None) -> float:
    """The learning rate for ``iteration`` (0-based): a pure function of the iteration and, during the
    warm-up, of when the training error first fell below the threshold (``warmup_end``, None while it has
    not). Paper section 4.2: 0.1, divided by 10 at 32k and 48k; ResNet-110 uses 0.01 until the training
    error is below 80% (about 400 iterations), then goes back to 0.1."""
    if config.warmup_lr is not None and (warmup_end is None or iteration < warmup_end):
        return config.warmup_lr
    passed = sum(iteration >= m for m in config.milestones)
    return config.lr * config.lr_decay ** passed


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------

def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def write_log(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_FIELDS})
    atomic_write_bytes(path, buf.getvalue().encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def git_commit() -> str:
    """The code version: the commit hash, with '+dirty' when tracked files differ from it."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_run_dir(config: RunConfig, *, root: Path | None = None) -> Path:
    """``results/runs/<arch>-<shortcut>-<recipe>-s<seed>`` (plain nets have no shortcut in the name)."""
    root = Path(root) if root is not None else RESULTS_DIR / "runs"
    parts = [config.arch] if config.arch.startswith("plain") else [config.arch, config.shortcut]
    return root / "-".join([*parts, config.recipe, f"s{config.seed}"])


def run_finished(out: Path, config: RunConfig | None = None) -> bool:
    """True when ``out`` holds a finished run (of ``config``, when given)."""
    try:
        summary = read_json(Path(out) / "summary.json")
        saved = read_json(Path(out) / "config.json")["config"]
    except (OSError, ValueError, KeyError):
        return False
    return summary.get("status") == "finished" and (config is None or saved == config.to_dict())


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be cpu, cuda or auto; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine")
    return torch.device(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (its convolutions and matmuls run on the tensor cores); float32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, mean: torch.Tensor,
             std: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Error (fraction) and mean cross-entropy of ``model`` on the un-augmented ``images``, in eval mode.
    Counts stay on the device: one host synchronisation at the end."""
    was_training = model.training
    model.eval()
    device = images.device
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in cifar.iterate_batches(images, labels, batch_size=batch_size, mean=mean, std=std):
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out = model(x)
        wrong += (out.argmax(1) != y).sum()
        loss += F.cross_entropy(out.float(), y, reduction="sum").double()
    model.train(was_training)
    n = len(labels)
    return {"error": wrong.item() / n, "loss": loss.item() / n}


# --------------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------------

@dataclass
class _Accum:
    """Training loss and errors since the last evaluation, kept on the device (no per-step sync)."""

    loss: torch.Tensor
    wrong: torch.Tensor
    seen: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> _Accum:
        return cls(torch.zeros((), dtype=torch.float64, device=device),
                   torch.zeros((), dtype=torch.int64, device=device))


def _distributed() -> tuple[int, int]:
    """(rank, world_size) when launched by torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


class Trainer:
    """One run of ``config``: builds the model, optimizer and data, trains, evaluates, writes the records.

    Data-parallel training (torch.distributed, launched by ``torchrun``) keeps the global batch: each of
    the W processes takes its 1/W slice of every mini-batch, gradients are averaged, and only rank 0
    evaluates and writes. As in the paper, which split its batch of 128 over two GPUs, BN statistics are
    computed per process.
    """

    def __init__(self, config: RunConfig, *, data: cifar.CIFAR10 | None = None, data_dir: str | None = None,
                 out: str | os.PathLike | None = None, device: str = "auto", checkpoint_every: int | None = None,
                 resume: bool = False, compile: bool = False, progress: bool = True,
                 download: bool = False) -> None:
        self.config = config
        self.out = Path(out) if out is not None else default_run_dir(config)
        self.rank, self.world_size = _distributed()
        if self.world_size > 1 and config.batch_size % self.world_size:
            raise ConfigError(f"batch_size {config.batch_size} is not divisible by {self.world_size} processes")
        self.device = resolve_device(device)
        if self.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        self.checkpoint_every = checkpoint_every or config.eval_every
        if self.checkpoint_every <= 0:
            raise ConfigError(f"checkpoint_every must be positive; got {checkpoint_every}")
        self.resume = resume
        self.compile = compile
        self.progress = progress and self.rank == 0
        self.is_writer = self.rank == 0
        self._check_run_folder()

        self.data = data if data is not None else load_data(data_dir, download=download)
        self.code_version = git_commit()  # the code this run was started with
        self.data_name = str(cifar.describe(self.data)["name"])  # e.g. "CIFAR-10 (JPEG re-encoded)"
        self._prepare_data()
        self._build()

    # -- setup ------------------------------------------------------------------------------------
    def _check_run_folder(self) -> None:
        has_run = (self.out / "summary.json").exists() or (self.out / "checkpoint.pt").exists()
        if has_run and not self.resume:
            raise RunFolderError(
                f"{self.out} already holds a run. Pass --resume to continue it (a finished run is left as it "
                f"is), or choose another folder with --out; nothing there was changed.")

    def _prepare_data(self) -> None:
        cfg, d = self.config, self.data
        train_images, train_labels = d.train_images, d.train_labels
        self.val_images = self.val_labels = None
        if cfg.val_size:
            if cfg.val_size >= len(train_labels):
                raise ConfigError(f"val_size {cfg.val_size} leaves no training images (have {len(train_labels)})")
            train_idx, val_idx = cifar.train_val_split(len(train_labels), val_size=cfg.val_size, seed=0)
            self.val_images, self.val_labels = train_images[val_idx], train_labels[val_idx]
            train_images, train_labels = train_images[train_idx], train_labels[train_idx]
        if cfg.train_subset:
            if cfg.train_subset > len(train_labels):
                raise ConfigError(f"train_subset {cfg.train_subset} exceeds the {len(train_labels)} training images")
            # a fixed, seed-independent subset: every network of a quick sweep sees the same images
            keep = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(12345))
            keep = keep[: cfg.train_subset].sort().values
            train_images, train_labels = train_images[keep], train_labels[keep]
        test_images, test_labels = d.test_images, d.test_labels
        if cfg.test_subset:
            test_images, test_labels = test_images[: cfg.test_subset], test_labels[: cfg.test_subset]
        if len(train_labels) < cfg.batch_size:
            raise ConfigError(f"only {len(train_labels)} training images; a batch needs {cfg.batch_size}")

        dev = self.device
        # the statistics come from the training images only, never the test set
        self.mean, self.std = (t.to(dev) for t in cifar.normalization_stats(train_images, mode=cfg.normalization))
        self.train_images, self.train_labels = train_images.to(dev), train_labels.to(dev)
        self.test_images, self.test_labels = test_images.to(dev), test_labels.to(dev)
        if self.val_images is not None:
            self.val_images, self.val_labels = self.val_images.to(dev), self.val_labels.to(dev)
        self.loader = cifar.TrainLoader(self.train_images, self.train_labels, batch_size=cfg.batch_size,
                                        seed=cfg.seed, mean=self.mean, std=self.std)
        self.batches_per_epoch = len(self.loader)
        self.total_iterations = cfg.iterations
        if cfg.max_epochs is not None:
            self.total_iterations = min(cfg.iterations, cfg.max_epochs * self.batches_per_epoch)

    def _build(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed alone
        model = models.build_model(cfg.arch, shortcut=cfg.shortcut, num_classes=len(self.data.classes))
        self.num_parameters = models.count_parameters(model)
        # channels_last: the faster layout for convolutions on the GPU's tensor cores and the CPU's oneDNN
        model = model.to(self.device, memory_format=torch.channels_last)
        self.model = model  # the plain module: checkpoints and analysis use it
        self.net: nn.Module = model
        if self.world_size > 1:
            import torch.distributed as dist
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.compile:
            self.net = torch.compile(self.net)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay, **fused)
        else:
            self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)

        # state that a checkpoint carries
        self.iteration = 0
        self.warmup_end: int | None = None if cfg.warmup_lr is not None else 0
        self.rows: list[dict[str, Any]] = []
        self.accum = _Accum.zeros(self.device)
        self.warm_accum = _Accum.zeros(self.device)
        self.best: dict[str, Any] | None = None  # validation-chosen weights (early-stopping recipe)
        self.checks_without_improvement = 0
        self.elapsed_before = 0.0  # wall seconds of earlier sessions of this run (resume)
        self.train_seconds_before = 0.0
        self.images_before = 0

    # -- checkpoints --------------------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "config": cfg.to_dict(),
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "warmup_end": self.warmup_end,
            "rows": self.rows,
            "accum": (self.accum.loss.cpu(), self.accum.wrong.cpu(), self.accum.seen),
            "warm_accum": (self.warm_accum.loss.cpu(), self.warm_accum.wrong.cpu(), self.warm_accum.seen),
            "best": self.best,
            "checks_without_improvement": self.checks_without_improvement,
            "data_order": {"seed": cfg.seed, "epoch": self.iteration // self.batches_per_epoch,
                           "batch": self.iteration % self.batches_per_epoch},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "elapsed_s": self._elapsed(),
            "train_seconds": self.train_seconds_before + self._train_seconds,
            "images": self.images_before + self._images,
        }

    def save_checkpoint(self) -> None:
        if self.is_writer:
            atomic_torch_save(self._checkpoint_state(), self.out / "checkpoint.pt")

    def _load_checkpoint(self) -> bool:
        path = self.out / "checkpoint.pt"
        if not path.exists():
            return False
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as e:  # a checkpoint that cannot be read is a user-facing problem, not a traceback
            raise RunFolderError(f"cannot read the checkpoint {path} ({type(e).__name__}: {e}); move it away to "
                                 f"start the run afresh") from None
        if state["config"] != self.config.to_dict():
            raise RunFolderError(f"{path} belongs to a run with another config; choose another --out or "
                                 f"rerun with the config in {self.out / 'config.json'}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        self.warmup_end = state["warmup_end"]
        self.rows = state["rows"]
        self.accum = _Accum(state["accum"][0].to(self.device), state["accum"][1].to(self.device), state["accum"][2])
        self.warm_accum = _Accum(state["warm_accum"][0].to(self.device), state["warm_accum"][1].to(self.device),
                                 state["warm_accum"][2])
        self.best = state["best"]
        self.checks_without_improvement = state["checks_without_improvement"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        self.elapsed_before = state["elapsed_s"]
        self.train_seconds_before = state["train_seconds"]
        self.images_before = state["images"]
        return True

    # -- the loop -----------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._t0)

    def _batches(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, offset = divmod(start, self.batches_per_epoch)
        while True:
            yield from self.loader.epoch(epoch, start=offset, rank=self.rank, world_size=self.world_size)
            epoch, offset = epoch + 1, 0

    def _step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            out = self.net(x)
            loss = F.cross_entropy(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        n = y.size(0)
        wrong = (out.detach().argmax(1) != y).sum()
        for acc in (self.accum, self.warm_accum) if self.warmup_end is None else (self.accum,):
            acc.loss += loss.detach().double() * n
            acc.wrong += wrong
            acc.seen += n

    def _reduce(self, acc: _Accum) -> tuple[float, float]:
        """(mean loss, error) of the mini-batches in ``acc``, over all processes."""
        stats = torch.stack([acc.loss, acc.wrong.double(), torch.tensor(float(acc.seen), device=self.device,
                                                                         dtype=torch.float64)])
        if self.world_size > 1:
            import torch.distributed as dist
            dist.all_reduce(stats)
        loss, wrong, seen = stats.tolist()
        return loss / max(seen, 1), wrong / max(seen, 1)

    def _check_warmup(self) -> None:
        _, err = self._reduce(self.warm_accum)
        if not math.isfinite(self.warm_accum.loss.item()):
            raise Diverged(f"the training loss became non-finite during the warm-up, before iteration "
                           f"{self.iteration}")
        if err < self.config.warmup_until_train_error:
            self.warmup_end = self.iteration
        self.warm_accum = _Accum.zeros(self.device)

    def _evaluate(self) -> bool:
        """Log a row; return True when early stopping says to stop."""
        cfg = self.config
        train_loss, train_error = self._reduce(self.accum)
        if not math.isfinite(train_loss):
            raise Diverged(f"the training loss became non-finite between iterations "
                           f"{self.rows[-1]['iteration'] if self.rows else 0} and {self.iteration}")
        self.accum = _Accum.zeros(self.device)
        stop = torch.zeros(1, device=self.device)
        if self.is_writer:
            test = evaluate(self.model, self.test_images, self.test_labels, mean=self.mean, std=self.std)
            val = (evaluate(self.model, self.val_images, self.val_labels, mean=self.mean, std=self.std)
                   if self.val_images is not None else None)
            row = {"iteration": self.iteration, "epoch": round(self.iteration / self.batches_per_epoch, 3),
                   "lr": float(f"{learning_rate(self.iteration - 1, cfg, warmup_end=self.warmup_end):.8g}"),
                   "train_loss": round(train_loss, 6), "train_error": round(train_error, 6),
                   "val_error": None if val is None else round(val["error"], 6),
                   "test_loss": round(test["loss"], 6), "test_error": round(test["error"], 6),
                   "elapsed_s": round(self._elapsed(), 2)}
            self.rows.append(row)
            write_log(self.out / "log.csv", self.rows)
            if val is not None and cfg.patience is not None:
                if self.best is None or val["error"] < self.best["val_error"]:
                    self.best = {"iteration": self.iteration, "val_error": val["error"],
                                 "test_error": test["error"],
                                 "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}
                    self.checks_without_improvement = 0
                else:
                    self.checks_without_improvement += 1
                # "stop when it has not improved for more than `patience` checks in a row"
                stop[0] = float(self.checks_without_improvement > cfg.patience)
            if self._bar is not None:
                post = {"loss": f"{train_loss:.3f}", "train_err": f"{train_error:.3f}",
                        "test_err": f"{test['error']:.3f}"}
                if val is not None:
                    post["val_err"] = f"{val['error']:.3f}"
                self._bar.set_postfix(post, refresh=False)
        if self.world_size > 1:
            import torch.distributed as dist
            dist.broadcast(stop, 0)
        return bool(stop.item())

    def run(self) -> dict[str, Any]:
        """Train to the end (or until early stopping), write the records, return the summary.
        Raises Diverged (after writing a 'diverged' summary) when the loss becomes non-finite."""
        cfg = self.config
        self._t0 = time.perf_counter()
        self._train_seconds, self._images = 0.0, 0
        self._bar = None
        if self.resume and run_finished(self.out, cfg):
            return read_json(self.out / "summary.json")
        resumed = self.resume and self._load_checkpoint()
        if self.is_writer:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", {"config": cfg.to_dict(), "run": self._run_info()})
            if resumed:
                write_log(self.out / "log.csv", self.rows)  # drop rows written after the last checkpoint
        if self.iteration >= self.total_iterations or (resumed and self._stopped_early()):
            return self._finish("finished")
        if self.progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=self.total_iterations, initial=self.iteration, desc=self.out.name,
                             unit="it", dynamic_ncols=True, file=sys.stderr)
        self.net.train()
        batches = self._batches(self.iteration)
        t_train = time.perf_counter()
        try:
            while self.iteration < self.total_iterations:
                x, y = next(batches)
                self._step(x, y, learning_rate(self.iteration, cfg, warmup_end=self.warmup_end))
                self.iteration += 1
                self._images += cfg.batch_size
                if self._bar is not None:
                    self._bar.update(1)
                if self.warmup_end is None and self.warm_accum.seen >= cfg.warmup_check_every * len(y):
                    self._check_warmup()
                at_eval = self.iteration % cfg.eval_every == 0 or self.iteration == self.total_iterations
                at_ckpt = self.iteration % self.checkpoint_every == 0 or self.iteration == self.total_iterations
                if at_eval or at_ckpt:
                    self._sync()
                    self._train_seconds += time.perf_counter() - t_train
                    stop = self._evaluate() if at_eval else self._check_finite()
                    if at_ckpt or stop:
                        self._check_weights()
                        self.save_checkpoint()
                    if stop:
                        break
                    t_train = time.perf_counter()
        except Diverged as e:
            self._close_bar()
            self._finish("diverged", message=str(e))
            raise
        except KeyboardInterrupt:
            self._close_bar()
            self._finish("interrupted", message="interrupted by the user; --resume continues from the last "
                                                "checkpoint")
            raise
        self._close_bar()
        return self._finish("finished")

    def _stopped_early(self) -> bool:
        return self.config.patience is not None and self.checks_without_improvement > self.config.patience

    def _check_finite(self) -> bool:
        if not math.isfinite(self.accum.loss.item()):
            raise Diverged(f"the training loss became non-finite before iteration {self.iteration}")
        return False

    def _check_weights(self) -> None:
        """A checkpoint is only written from finite weights: an update can overflow with a finite loss."""
        finite = torch.stack([p.detach().float().sum() for p in self.model.parameters()]).isfinite().all()
        if not finite.item():
            raise Diverged(f"the weights became non-finite before iteration {self.iteration}")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _run_info(self) -> dict[str, Any]:
        return {"device": str(self.device), "world_size": self.world_size, "compile": self.compile,
                "checkpoint_every": self.checkpoint_every, "precision": "bf16-autocast"
                if self.device.type == "cuda" else "float32", "total_iterations": self.total_iterations,
                "batches_per_epoch": self.batches_per_epoch, "train_images": len(self.train_labels),
                "val_images": 0 if self.val_labels is None else len(self.val_labels),
                "test_images": len(self.test_labels)}

    def _finish(self, status: str, *, message: str | None = None) -> dict[str, Any]:
        cfg = self.config
        last = self.rows[-1] if self.rows else {}
        final_test = last.get("test_error")
        selected = self.iteration if last else None
        reported_model = self.model.state_dict()
        if self.best is not None:  # the early-stopping recipe reports its validation-chosen model
            final_test, selected = self.best["test_error"], self.best["iteration"]
            reported_model = self.best["model"]
        train_seconds = self.train_seconds_before + self._train_seconds
        images = self.images_before + self._images
        summary = {
            "status": status,
            "message": message,
            "arch": cfg.arch, "shortcut": cfg.shortcut, "recipe": cfg.recipe, "seed": cfg.seed,
            "final_test_error": final_test,
            "final_train_error": last.get("train_error"),
            "final_val_error": last.get("val_error") if self.best is None else self.best["val_error"],
            "selected_iteration": selected,
            "selection": "validation" if self.best is not None else "final iteration",
            "iterations_done": self.iteration,
            "iterations_planned": self.total_iterations,
            "warmup_end": self.warmup_end if cfg.warmup_lr is not None else None,
            "parameters": self.num_parameters,
            "wall_time_s": round(self._elapsed(), 2),
            "train_time_s": round(train_seconds, 2),
            "images_per_s": round(images / train_seconds, 1) if train_seconds > 0 else None,
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
            else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "world_size": self.world_size,
            "torch_version": torch.__version__,
            "git_commit": self.code_version,
            "data_fingerprint": self.data.fingerprint,
            "data": self.data_name,
            "schedule": describe_schedule(cfg),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if self.is_writer:
            if status == "finished":
                atomic_torch_save({"config": cfg.to_dict(), "model": reported_model,
                                   "mean": self.mean.cpu(), "std": self.std.cpu(),
                                   "classes": list(self.data.classes)}, self.out / "model.pt")
            write_json(self.out / "summary.json", summary)
        return summary


def train(config: RunConfig, **kwargs: Any) -> dict[str, Any]:
    """Run ``config`` to the end and return its summary (see :class:`Trainer` for the keyword arguments)."""
    return Trainer(config, **kwargs).run()


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


# --------------------------------------------------------------------------------------------------
# Sweeps: independent runs, several at once, resumable
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    config: RunConfig
    out: Path


@dataclass
class SweepOptions:
    data_dir: str | None = None
    device: str = "auto"
    download: bool = False
    compile: bool = False
    progress: bool = True
    threads: int | None = None


_DATA_CACHE: dict[str, cifar.CIFAR10] = {}


def load_data(data_dir: str | None = None, *, download: bool = False) -> cifar.CIFAR10:
    """CIFAR-10 from ``data_dir`` (or $CIFAR10_ROOT, or ./data), read once per process."""
    root = str(cifar.resolve_data_dir(data_dir))
    if root not in _DATA_CACHE:
        _DATA_CACHE[root] = cifar.load_cifar10(root, download=download)
    return _DATA_CACHE[root]


def _run_job(job: Job, opts: SweepOptions) -> dict[str, Any]:
    """Run (or resume) one job; never raises for a run that fails on its own account."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    resume = (job.out / "checkpoint.pt").exists() or (job.out / "summary.json").exists()
    try:
        return Trainer(job.config, data=load_data(opts.data_dir, download=opts.download), out=job.out,
                       device=opts.device, resume=resume, compile=opts.compile, progress=opts.progress).run()
    except Diverged as e:
        return {"status": "diverged", "message": str(e), "out": str(job.out)}
    except (ConfigError, RunFolderError) as e:
        return {"status": "error", "message": str(e), "out": str(job.out)}


def run_sweep(jobs: Sequence[Job], *, n_jobs: int = 1, data: cifar.CIFAR10 | None = None,
              **options: Any) -> list[dict[str, Any]]:
    """Run ``jobs`` as independent runs, ``n_jobs`` processes at once, skipping finished ones, so running an
    interrupted sweep again resumes it. Returns one summary per job, in order. On one GPU, several
    processes raise the total throughput of small networks (see benchmarks/). ``data``, when given, is
    used by runs in this process; worker processes read the data from ``data_dir``."""
    opts = SweepOptions(**options)
    if data is not None:
        _DATA_CACHE[str(cifar.resolve_data_dir(opts.data_dir))] = data
    todo = [j for j in jobs if not run_finished(j.out, j.config)]
    skipped = len(jobs) - len(todo)
    if skipped:
        print(f"sweep: {skipped} of {len(jobs)} runs already finished, skipped", file=sys.stderr)
    if todo:
        # the data set is loaded (and checked) once up front, so a missing data set fails before any run starts
        load_data(opts.data_dir, download=opts.download)
    if n_jobs <= 1 or len(todo) <= 1:
        for job in todo:
            _report(job, _run_job(job, opts))
    else:
        import multiprocessing as mp
        opts = dataclasses.replace(opts, progress=False,
                                   threads=opts.threads or max(1, (os.cpu_count() or 1) // n_jobs))
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("spawn")) as pool:
            for job, result in zip(todo, pool.map(_run_job, todo, [opts] * len(todo))):
                _report(job, result)
    return [summary_of(j.out) for j in jobs]


def _report(job: Job, result: dict[str, Any]) -> None:
    if result.get("status") == "finished":
        err = result.get("final_test_error")
        print(f"sweep: {job.out.name}: finished, test error {err:.2%} in {result.get('wall_time_s')} s",
              file=sys.stderr)
    else:
        print(f"sweep: {job.out.name}: {result.get('status')}: {result.get('message')}", file=sys.stderr)


def summary_of(out: Path) -> dict[str, Any]:
    try:
        return read_json(Path(out) / "summary.json")
    except (OSError, ValueError):
        return {"status": "missing", "out": str(out)}


__all__ = [
    "RunConfig", "ConfigError", "Diverged", "RunFolderError", "paper_config", "tutorial_config", "RECIPES",
    "QUICK", "quick", "is_quick", "load_data", "learning_rate", "evaluate", "Trainer", "train", "load_trained", "Job", "run_sweep",
    "default_run_dir", "run_finished", "write_json", "read_json", "git_commit",
]

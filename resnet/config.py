"""The recipe as data: one frozen, validated :class:`RunConfig`, the paper's and the tutorial's recipes,
the schedules (full, short, quick), and the learning rate as a pure function of the iteration.

    cfg = paper_config("resnet110")                  # the paper's recipe, with its warm-up (section 4.2)
    cfg = paper_config("resnet20", **scaled_schedule(2_000))   # lr steps at 1/2 and 3/4 of a shorter run
    lr = learning_rate(iteration, cfg, warmup_end=400)

Everything that decides a run's numbers is a field of the config; how a run is executed (device, CUDA
graph, compile, threads, time limit) is an :class:`Execution`, recorded beside it in config.json.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from resnet import models

__all__ = ["ConfigError", "RunConfig", "Execution", "GPU_GROUP", "Deadline", "resolve_device",
           "paper_config", "tutorial_config", "STOP_RULES", "Recipe", "RECIPES", "FIGURE6_ARCHS",
           "SHORTCUT_DEPTHS", "scaled_schedule", "SCHEDULES", "SHORT", "QUICK", "QUICK_TUTORIAL",
           "on_schedule", "schedule_of", "quick", "is_quick", "describe_schedule", "evaluates_after",
           "checks_without_improvement", "learning_rate"]


class ConfigError(ValueError):
    """A run config or command-line value that cannot describe a valid run."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result. Defaults: the paper's CIFAR-10 recipe (section 4.2).

    SGD with momentum 0.9, weight decay 1e-4, mini-batch 128, learning rate 0.1 divided by 10 at 32k and
    48k iterations, 64k iterations (about 164 epochs of 50k images), evaluated every 500 iterations, on
    all 50k training images. ``warmup_lr`` is the paper's ResNet-110 warm-up: that rate until the training
    error falls below ``warmup_until_train_error``, then back to ``lr`` and the normal schedule.
    ``precision``: "bf16" computes under bf16 autocast where the device has it (CUDA) and in float32 on
    the CPU; "fp32" computes in float32 everywhere (the control run that measures what bf16 costs).

    Where the paper is explicit, the recipe follows it; ``normalization="pixel"`` is its "per-pixel mean
    subtracted" (section 4.2), on [0, 1]: a BN follows the first conv, so the [0, 255] of its Caffe inputs
    is the same network function. Where it is silent, the choices are torchvision's: Kaiming fan-out init
    of the convs (models.init_weights), PyTorch's default init of the linear layer, BN's default momentum
    and epsilon, weight decay on every parameter. The common reproductions normalise per channel and
    use Kaiming fan-in; benchmarks/results/fidelity.md measures the engine against such a reference.
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
    eval_in_epoch: bool = False  # count eval_every in each epoch's batches (the tutorial), not the run's
    test_every: int = 1  # the test set is evaluated at every test_every-th evaluation, and at the end
    val_size: int = 0  # 5000 = the paper's 45k/5k split; 0 = train on all 50k (the reported models)
    stop_rule: str | None = None  # early stopping on validation: see STOP_RULES
    patience: int | None = None  # stop when more than this many checks in a row did not improve
    max_epochs: int | None = None
    train_subset: int | None = None  # quick runs: a fixed subset of N training images
    test_subset: int | None = None  # quick runs: the first N test images
    normalization: str = "pixel"  # "pixel": the paper's per-pixel mean subtraction; "channel": mean/std
    precision: str = "bf16"
    seed: int = 0
    schedule: str = "full"  # the schedule it is on (SCHEDULES), or "custom": a length of its own

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        for problem in self.problems():
            raise ConfigError(problem)

    def problems(self) -> list[str]:
        """Every way this config fails to describe a valid run (empty when it is valid)."""
        checks = [
            (self.arch in models.ARCHS,
             f"unknown arch {self.arch!r}; choose one of {', '.join(models.ARCHS)}"),
            (self.shortcut in models.SHORTCUTS, f"shortcut must be A, B or C; got {self.shortcut!r}"),
            (self.recipe in RECIPES, f"recipe must be one of {', '.join(RECIPES)}; got {self.recipe!r}"),
            (self.optimizer in ("sgd", "adam"), f"optimizer must be 'sgd' or 'adam'; got {self.optimizer!r}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number; got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1); got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0; got {self.weight_decay}"),
            (self.batch_size > 0, f"batch_size must be positive; got {self.batch_size}"),
            (self.iterations > 0, f"iterations must be positive; got {self.iterations}"),
            (list(self.milestones) == sorted(self.milestones) and all(m > 0 for m in self.milestones),
             f"milestones must be increasing positive iterations; got {self.milestones}"),
            (0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1]; got {self.lr_decay}"),
            (self.warmup_lr is None or self.warmup_lr > 0,
             f"warmup_lr must be positive; got {self.warmup_lr}"),
            (0 < self.warmup_until_train_error <= 1, "warmup_until_train_error must be in (0, 1]"),
            (self.warmup_check_every > 0, "warmup_check_every must be positive"),
            (self.eval_every > 0, f"eval_every must be positive; got {self.eval_every}"),
            (self.test_every > 0, f"test_every must be positive; got {self.test_every}"),
            (self.val_size >= 0, f"val_size must be >= 0; got {self.val_size}"),
            (self.stop_rule is None or self.stop_rule in STOP_RULES,
             f"stop_rule must be one of {', '.join(STOP_RULES)} (or None); got {self.stop_rule!r}"),
            ((self.stop_rule is None) == (self.patience is None),
             "early stopping needs both a stop_rule and a patience (or neither)"),
            (self.patience is None or self.patience >= 0, "patience must be >= 0"),
            (self.stop_rule is None or self.val_size > 0,
             "early stopping needs a validation split (val_size > 0): it never looks at the test set"),
            (self.max_epochs is None or self.max_epochs > 0, "max_epochs must be positive"),
            (self.train_subset is None or self.train_subset >= self.batch_size,
             f"train_subset must hold at least one batch ({self.batch_size}); got {self.train_subset}"),
            (self.test_subset is None or self.test_subset > 0, "test_subset must be positive"),
            (self.normalization in ("pixel", "channel"), "normalization must be 'pixel' or 'channel'"),
            (self.precision in ("bf16", "fp32"),
             f"precision must be 'bf16' or 'fp32'; got {self.precision!r}"),
            (self.seed >= 0, f"seed must be >= 0; got {self.seed}"),
            (self.schedule in (*SCHEDULES, "custom"),
             f"schedule must be one of {', '.join(SCHEDULES)} or custom; got {self.schedule!r}"),
        ]
        return [message for ok, message in checks if not ok]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        if d.get("patience") is not None and "stop_rule" not in d:
            d = {**d, "stop_rule": "best"}  # a record of the code before stop_rule: its one rule
        if "schedule" not in d:  # a record of the code before the field: the schedule it matches
            return _legacy_schedule(cls(**{**d, "schedule": "full"}))
        return cls(**d)

    def replace(self, **overrides: Any) -> RunConfig:
        """A copy with ``overrides``; unknown keys are an error, not silently ignored."""
        return RunConfig.from_dict({**self.to_dict(), **overrides})

    @property
    def depth(self) -> int:
        return models.arch_depth(self.arch)


def scaled_schedule(iterations: int) -> dict[str, Any]:
    """The paper's schedule shrunk (or stretched) to ``iterations``: the learning-rate steps stay at 1/2
    and 3/4 of the run, where 32k and 48k sit in 64k. The one place that scales the schedule."""
    if iterations <= 0:
        raise ConfigError(f"iterations must be positive; got {iterations}")
    return {"iterations": iterations, "milestones": (max(1, iterations // 2), max(1, iterations * 3 // 4))}


def paper_config(arch: str = "resnet20", **overrides: Any) -> RunConfig:
    """The paper's CIFAR-10 recipe for ``arch``, with its warm-up for 110 layers and deeper (section 4.2)."""
    config = RunConfig(arch=arch)  # the one check of the name (ConfigError)
    warmup = {"warmup_lr": 0.01} if config.depth >= 110 else {}
    return config.replace(**{**warmup, **overrides})


def tutorial_config(arch: str = "resnet20", **overrides: Any) -> RunConfig:
    """The tutorial reproduction's recipe, as its code runs it: Adam (lr 1e-3, weight decay 1e-4) on a
    45k/5k split; after every 50th mini-batch of each epoch (batches 50, 100, ..., 350 of 351) the
    validation accuracy; stop when more than 5 checks in a row were each no better than the check before
    (stop_rule "previous"), or after 50 epochs. The reported model is the one it has then (the final
    weights); the test set, which the rule never reads, is evaluated once an epoch (every 7th check) and at
    the end."""
    base = RunConfig(arch=arch, recipe="tutorial", optimizer="adam", lr=1e-3, weight_decay=1e-4,
                     iterations=50 * (45_000 // 128), milestones=(), eval_every=50, eval_in_epoch=True,
                     test_every=7, val_size=5000, stop_rule="previous", patience=5, max_epochs=50)
    return base.replace(**overrides)


#: The early-stopping rules: a validation check "improves" when its error is below that of the check just
#: before it ("previous": the tutorial's code), or below every earlier check's ("best": the common rule,
#: and this project's before it followed the tutorial's code). Either way the run stops when more than
#: ``patience`` checks in a row did not improve; the first check always improves.
STOP_RULES = ("previous", "best")


@dataclass(frozen=True)
class Recipe:
    """A recipe: the config it builds for a network (calling it builds one), whether the short schedule
    shortens it (``scales``: the paper's 64k iterations do, its rate steps kept at 1/2 and 3/4; the
    tutorial's early-stopped run is short already and stays as it is), its quick variant (``quick``: the
    overrides of the quick schedule) and whether its runs can train as one group (SGD, without early
    stopping: resnet.group)."""

    name: str
    build: Callable[..., RunConfig]
    scales: bool
    quick: dict[str, Any]
    groups: bool

    def __call__(self, arch: str, **overrides: Any) -> RunConfig:
        return self.build(arch, **overrides)

    def shortened(self, iterations: int) -> dict[str, Any]:
        """The overrides that make a run of this recipe ``iterations`` long."""
        return scaled_schedule(iterations) if self.scales else {"iterations": iterations}

#: The paper's CIFAR-10 networks: Figure 6 and Table 6 (plain nets and option-A ResNets), and the depths
#: of the shortcut ablation (Table 3's options A/B/C, which the paper ran on ImageNet, here on CIFAR-10).
FIGURE6_ARCHS = ("plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56",
                 "resnet110")
SHORTCUT_DEPTHS = (20, 32, 44, 56)

# The schedules every experiment runs on, each recorded in its own folder (results/, results/short/,
# results/quick/), never mixed, and named by every figure drawn from them:
#  - "full": the paper's 64k iterations on all 50k training images (a GPU's work);
#  - "short": the paper's recipe at 1/32 of its length (2,000 iterations, the rate divided by 10 at 1,000
#    and 1,500) on all 50k training images, tested on all 10k every 250: real results a 2-core CPU gives in
#    hours. Fixed here once, never tuned to its outcome. The tutorial recipe is short already and runs in
#    full on every schedule but quick;
#  - "quick": 200 iterations on a 10k subset, tested on the first 1k: the machinery in minutes.
SCHEDULES = ("full", "short", "quick")
SHORT = dict(**scaled_schedule(2_000), eval_every=250)
QUICK = dict(**scaled_schedule(200), eval_every=25, train_subset=10_000, test_subset=1_000)
QUICK_TUTORIAL = dict(iterations=600, eval_every=25, test_every=2, train_subset=10_000, val_size=1_000,
                      test_subset=1_000, max_epochs=50)

RECIPES = {"paper": Recipe("paper", paper_config, scales=True, quick=QUICK, groups=True),
           "tutorial": Recipe("tutorial", tutorial_config, scales=False, quick=QUICK_TUTORIAL, groups=False)}


def on_schedule(config: RunConfig, schedule: str) -> RunConfig:
    """``config`` on ``schedule`` (one of SCHEDULES), as its recipe has it there."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    recipe = RECIPES[config.recipe]
    if schedule == "quick":
        return config.replace(**recipe.quick, schedule="quick")
    if schedule == "short" and recipe.scales:
        return config.replace(**SHORT, schedule="short")
    return config


def schedule_of(config: RunConfig) -> str:
    """The schedule ``config`` is on: "full", "short", "quick" or "custom" (its own field)."""
    return config.schedule


def _legacy_schedule(config: RunConfig) -> RunConfig:
    """A config read from a record of the code before RunConfig.schedule: "quick" on a training subset
    (only the quick schedule had one), "short" where it is the short schedule of a recipe that scales, else
    "full"."""
    if config.train_subset is not None:
        return config.replace(schedule="quick")
    if RECIPES[config.recipe].scales and on_schedule(config, "short").replace(schedule="full") == config:
        return config.replace(schedule="short")
    return config


def quick(config: RunConfig) -> RunConfig:
    """``config`` on the quick schedule (see ``QUICK``)."""
    return on_schedule(config, "quick")


def is_quick(config: RunConfig) -> bool:
    """True for a config on the quick schedule: what figures drawn from its records must say."""
    return schedule_of(config) == "quick"


def describe_schedule(config: RunConfig) -> str:
    """A one-line description of a run's schedule and data, for figure titles and tables."""
    data = f"{config.train_subset:,} training images" if config.train_subset else "all training images"
    if config.val_size:
        data += f" less {config.val_size:,} held out for validation"
    test = f", first {config.test_subset:,} test images" if config.test_subset else ""
    full = RunConfig().iterations
    shorter = RECIPES[config.recipe].scales and config.iterations < full and full % config.iterations == 0
    part = f" (1/{full // config.iterations} of the paper's schedule)" if shorter else ""
    length = f"{config.iterations:,} iterations{part}"
    if config.stop_rule is not None:  # the run's length is the early stop's, not the budget's
        length = f"early stopping on validation, at most {config.iterations:,} iterations"
    return f"{length}, batch {config.batch_size}, {data}{test}"


def evaluates_after(iteration: int, config: RunConfig, *, batches_per_epoch: int) -> bool:
    """Whether the run evaluates after its ``iteration``-th step (counted from 1): every ``eval_every``
    steps of the run, or with ``eval_in_epoch`` after every ``eval_every``-th batch of each epoch (the
    tutorial's batches 50, 100, ..., 350 of 351: the count starts again with each epoch). A run also
    evaluates at its end, whatever this says."""
    step = (iteration - 1) % batches_per_epoch + 1 if config.eval_in_epoch else iteration
    return step % config.eval_every == 0


def checks_without_improvement(val_errors: Sequence[float], rule: str) -> int:
    """How many validation checks in a row, up to the last of ``val_errors``, did not improve under
    ``rule`` (see STOP_RULES): a pure function of the sequence, so a resumed run counts as an uninterrupted
    one. A tie does not improve (the tutorial counts an accuracy "lower than or equal to" the previous)."""
    count, reference = 0, math.inf
    for error in val_errors:
        count = 0 if error < reference else count + 1
        reference = error if rule == "previous" else min(reference, error)
    return count


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
# How runs are executed (never what they compute)

def resolve_device(device: str = "auto") -> torch.device:
    """"auto" (CUDA when there is a GPU), "cpu", "cuda" or "cuda:N"; ConfigError for anything else, or for
    CUDA on a machine without a GPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be cpu, cuda or auto; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA GPU on this machine; use "
                          "--device cpu (or leave --device out)")
    return torch.device(device)


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
    wall-clock time that worker processes share. ``Deadline()`` never arrives.

    ``clock`` is the clock the deadline is read on, and every duration that decides against it (a run's
    seconds per iteration, a checkpoint's, a sweep's pace) is measured on the same one: a test gives a clock
    that moves only when its runs step, so that no verdict depends on how fast the machine is."""

    at: float | None = None
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        if seconds is None:
            return cls(None)
        if not seconds > 0:
            raise ConfigError(f"--time-limit must be a positive number of seconds; got {seconds}")
        return cls(time.time() + seconds - _process_age())

    def remaining(self) -> float:
        return math.inf if self.at is None else self.at - self.clock()


#: At most how many runs a sweep trains as one grouped network on a GPU when not told (resnet.group): the
#: eleven runs left at one depth fit (plain, A, B and C of three seeds), and per-network cost falls with K
#: (benchmarks/results/grouped.md).
GPU_GROUP = 12


@dataclass(frozen=True)
class Execution:
    """How runs are executed, never what they compute: one object that Run, train, run_sweep and the
    command line share, validated here once.

    ``graph``: the step captured in a CUDA graph (default: on CUDA in a single process). ``cudnn_benchmark``:
    see benchmarks_cudnn. ``costs``: the measured cost table a time-limited sweep plans with (resnet.plan).
    ``at_once``: units at once, processes on the CPU (default 1), groups or runs on their own streams on
    CUDA (default 8). ``group``: at most this many runs of one depth and recipe trained as one grouped
    network (resnet.group; default GPU_GROUP on CUDA, 1 on the CPU, where it gains nothing; 1 trains every
    run alone). ``checkpoint_every``: iterations between checkpoints (default: at every evaluation).
    ``finish_by``: the horizon the planner opens units for, when it lies beyond ``deadline`` (the rest of a
    GPU slice of several commands on one machine: a unit the command pauses continues in the next).
    ``command``: the command line that continues the work, for the last lines a command prints."""

    device: str = "auto"
    graph: bool | None = None
    compile: bool = False
    cudnn_benchmark: bool | None = None
    at_once: int | None = None
    group: int | None = None
    threads: int | None = None
    checkpoint_every: int | None = None
    progress: bool = True
    deadline: Deadline = Deadline()
    finish_by: Deadline | None = None  # when the units a time-limited sweep opens must finish (the deadline)
    costs: Any = None  # a resnet.plan.Costs: what a unit of runs costs, for the time-limited planner
    command: str | None = None

    def __post_init__(self) -> None:
        device = resolve_device(self.device)
        if self.graph and device.type != "cuda":
            raise ConfigError("a CUDA-graph step needs a CUDA device; leave the graph off on the CPU")
        for name in ("at_once", "group", "threads", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value > 0):
                raise ConfigError(f"{name} must be a positive whole number; got {value!r}")

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def clock(self) -> Callable[[], float]:
        """The clock runs are timed on: the deadline's (see Deadline)."""
        return self.deadline.clock

    def uses_graph(self, device: torch.device, *, distributed: bool) -> bool:
        """Whether a run on ``device`` captures its step in a CUDA graph: as asked, else on CUDA in a single
        process (a data-parallel step cannot be captured: its all-reduce is NCCL's)."""
        if self.graph and distributed:
            raise ConfigError("a CUDA-graph step needs a single process; use the eager step with torchrun")
        return self.graph if self.graph is not None else device.type == "cuda" and not distributed

    def benchmarks_cudnn(self, device: torch.device) -> bool:
        """Whether cuDNN times its convolution algorithms and keeps the fastest (``cudnn.benchmark``): as
        asked, else on CUDA. It changes which kernels run, not what the network computes beyond rounding."""
        return self.cudnn_benchmark if self.cudnn_benchmark is not None else device.type == "cuda"

    def prepare(self, device: torch.device) -> None:
        """Set what this execution sets for the whole process on ``device`` (every run of a sweep shares
        it): cudnn.benchmark on CUDA."""
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = self.benchmarks_cudnn(device)

    def units_at_once(self, device: torch.device) -> int:
        """How many units (runs, or groups) train at once on ``device``: as asked, else 8 on CUDA (each on
        its own stream) and 1 on the CPU (more are more processes, one thread each)."""
        return self.at_once if self.at_once is not None else 8 if device.type == "cuda" else 1

    def group_size(self, device: torch.device) -> int:
        """At most how many runs train as one grouped network on ``device``."""
        return self.group if self.group is not None else GPU_GROUP if device.type == "cuda" else 1

    def replace(self, **changes: Any) -> Execution:
        return dataclasses.replace(self, **changes)

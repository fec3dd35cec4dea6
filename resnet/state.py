"""A run's state, which is its checkpoint: :class:`RunState` (network, optimizer, counters, log rows, early
stopping), built for a config on a device, saved and loaded whole. A run resumed from it continues exactly
as it would have gone on (resnet.train)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from resnet import models
from resnet.config import RunConfig, checks_without_improvement, evaluates_after
from resnet.distributed import Dist
from resnet.inference import evaluate
from resnet.loader import DeviceData

__all__ = ["Diverged", "RunState", "SINCE_EVAL", "SINCE_WARMUP_CHECK", "DEVICE_FLAGS", "keep_device_flags"]

SINCE_EVAL, SINCE_WARMUP_CHECK = 0, 1  # the rows of RunState.stats


class Diverged(RuntimeError):
    """The training loss or the weights became NaN or infinite."""


@dataclass
class RunState:
    """Everything a run carries from one iteration to the next. Its fields *are* the checkpoint: modules
    and optimizers are saved by their state_dict, tensors as they are, the rest as plain values.

    ``stats`` [2, 3] lives on the device: (loss sum, wrong, images) since the last evaluation (row
    SINCE_EVAL) and since the last warm-up check (row SINCE_WARMUP_CHECK); every step adds to both rows and
    nothing reads them between checks."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    stats: torch.Tensor
    iteration: int = 0
    warmup_end: int | None = None  # the iteration the warm-up ended (0 for a recipe without warm-up)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the log, one row per evaluation
    best: dict[str, Any] | None = None  # the lowest validation error so far: its iteration, error, weights
    checks_without_improvement: int = 0  # early stopping's count (config.checks_without_improvement)
    elapsed_s: float = 0.0  # wall seconds of all sessions so far (resume)
    train_s: float = 0.0  # of which spent in training iterations
    images: int = 0
    # one entry per session that trained the run (a segment: resnet.train.Run opens one), saying where and
    # with what code it ran; in the checkpoint, so a segment lost with its machine leaves no entry
    segments: list[dict[str, Any]] = field(default_factory=list)

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

    def at_end(self, config: RunConfig, total_iterations: int) -> bool:
        """Trained to the end, or stopped early: more than ``patience`` checks in a row did not improve."""
        stopped = config.patience is not None and self.checks_without_improvement > config.patience
        return stopped or self.iteration >= total_iterations

    def count_iteration(self, config: RunConfig, data: DeviceData, dist: Dist) -> tuple[float, float] | None:
        """Count the iteration just stepped; end the warm-up at the check where the training error is below
        its threshold (section 4.2); at an evaluation (or the end), return the (mean loss, error) of the
        training since the last one (waits for the GPU), else None."""
        self.iteration += 1
        self.images += config.batch_size
        if self.warmup_end is None and self.iteration % config.warmup_check_every == 0:
            if self.take_stats(SINCE_WARMUP_CHECK, dist)[1] < config.warmup_until_train_error:
                self.warmup_end = self.iteration
        at_eval = (evaluates_after(self.iteration, config, batches_per_epoch=len(data.loader))
                   or self.at_end(config, data.total_iterations))
        return self.take_stats(SINCE_EVAL, dist) if at_eval else None

    def seconds_per_iteration(self) -> float:
        return self.train_s / max(1, self.iteration)

    def take_stats(self, row: int, dist: Dist) -> tuple[float, float]:
        """(mean loss, error) of the iterations counted in ``stats[row]``, over all processes; resets the row.
        Waits for the queued steps. Raises Diverged when the loss is not finite."""
        loss, wrong, seen = dist.all_reduce(self.stats[row].clone()).tolist()
        self.stats[row].zero_()
        if not math.isfinite(loss):
            raise Diverged(f"the training loss became non-finite before iteration {self.iteration}")
        return loss / max(seen, 1), wrong / max(seen, 1)

    def check_weights(self) -> None:
        """Raise Diverged unless every weight is finite (an update can overflow with a finite loss)."""
        if not torch.stack([p.detach().float().sum() for p in self.model.parameters()]).isfinite().all():
            raise Diverged(f"the weights became non-finite before iteration {self.iteration}")

    def tests_now(self, config: RunConfig, data: DeviceData) -> bool:
        """Whether the coming log row measures the test set: every ``test_every``-th row, and the last."""
        return (len(self.rows) + 1) % config.test_every == 0 or self.at_end(config, data.total_iterations)

    def record_evaluation(self, data: DeviceData, loss: float, error: float, *, config: RunConfig, lr: float,
                          elapsed_s: float, test: dict[str, float] | None = None) -> None:
        """Append a log row: the training loss and error since the last row (``loss``, ``error``), the
        validation error now (keeping the weights with the lowest so far, and counting early stopping's
        checks), and the test error at every ``test_every``-th row and at the end (it decides nothing):
        ``test`` when the caller measured it (a group measures its members at once), else measured here."""
        evaluate_on = functools.partial(evaluate, self.model, mean=data.mean, std=data.std,
                                        precision=config.precision)
        val = evaluate_on(*data.val)["error"] if data.val is not None else None
        if val is not None:
            if self.best is None or val < self.best["val_error"]:
                weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                self.best = {"iteration": self.iteration, "val_error": val, "model": weights}
            if config.stop_rule is not None:
                errors = [row["val_error"] for row in self.rows] + [val]
                self.checks_without_improvement = checks_without_improvement(errors, config.stop_rule)
        if test is None:
            test = evaluate_on(*data.test) if self.tests_now(config, data) else {"loss": None, "error": None}
        self.rows.append({
            "iteration": self.iteration, "epoch": round(self.iteration / len(data.loader), 3),
            "lr": float(f"{lr:.8g}"), "train_loss": round(loss, 6), "train_error": round(error, 6),
            "val_error": None if val is None else round(val, 6),
            "test_loss": None if test["loss"] is None else round(test["loss"], 6),
            "test_error": None if test["error"] is None else round(test["error"], 6),
            "elapsed_s": round(elapsed_s, 2)})

    def best_on_test(self, data: DeviceData, precision: str) -> dict[str, Any] | None:
        """The lowest-validation-error weights' iteration, validation error and test error: a second number
        beside the final weights', chosen on the validation split and never on the test set."""
        if self.best is None:
            return None
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.best["model"])
        test = evaluate(model, *data.test, mean=data.mean, std=data.std, precision=precision)
        return {"iteration": self.best["iteration"], "val_error": round(self.best["val_error"], 6),
                "test_error": round(test["error"], 6)}

    def reported_model(self, config: RunConfig, data: DeviceData) -> dict[str, Any]:
        """model.pt: the reported weights (the final iteration's) with the config, the normalisation and the
        class names."""
        return {"config": config.to_dict(), "model": self.model.state_dict(), "mean": data.mean.cpu(),
                "std": data.std.cpu(), "classes": list(data.classes)}

    def to_checkpoint(self) -> dict[str, Any]:
        def saved(value: Any) -> Any:
            if hasattr(value, "state_dict"):
                return value.state_dict()
            return value.detach().cpu() if isinstance(value, torch.Tensor) else value
        return {f.name: saved(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):
            if f.name in RECORD_ONLY and f.name not in checkpoint:  # a checkpoint of older code
                continue
            current, saved = getattr(self, f.name), checkpoint[f.name]
            if isinstance(current, torch.optim.Optimizer):
                current.load_state_dict(keep_device_flags(saved, current))
            elif hasattr(current, "load_state_dict"):
                current.load_state_dict(saved)
            elif isinstance(current, torch.Tensor):
                current.copy_(saved)
            else:
                setattr(self, f.name, saved)


#: The fields that describe the run without deciding what it computes: a checkpoint written before they
#: existed loads without them (every other field must be there).
RECORD_ONLY = ("segments",)


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

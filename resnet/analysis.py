"""Analysis of trained networks and of run records: layer responses, confusion matrices, tables.

Figures and tables are drawn from run records (results/) only; the functions that need a trained model
(layer responses, confusion matrices) write their own small records that the figures then read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from resnet import data as cifar

# Paper Table 6: CIFAR-10 test error (%) of the ResNets (110: best of 5 runs; mean 6.61 +- 0.16).
PAPER_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
PAPER_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M", 1202: "19.4M"}
# The tutorial reproduction's ResNet-20 (Adam, early stopping): test accuracy 85.78%.
TUTORIAL_TEST_ERROR = 100 - 85.78


# ------------------------------------------------------------------------------------------ run records
def _depth(arch: str) -> int:
    return int(re.sub(r"\D", "", arch))


def load_runs(results_root: str | Path) -> pd.DataFrame:
    """One row per run folder under ``results_root/runs``: its config and summary, side by side."""
    rows = []
    for run in sorted(Path(results_root, "runs").glob("*/summary.json")):
        summary = json.loads(run.read_text())
        try:
            config = json.loads((run.parent / "config.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            continue
        rows.append({"run": run.parent.name, "path": str(run.parent), "depth": _depth(config["arch"]),
                     "residual": config["arch"].startswith("resnet"), "config": config,
                     **{f"cfg_{k}": v for k, v in config.items()},
                     **summary})
    return pd.DataFrame(rows)


def load_log(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "log.csv")


def seed_table(runs: pd.DataFrame, by: Sequence[str] = ("arch", "shortcut", "recipe")) -> pd.DataFrame:
    """Final test error (%) per network over its finished seeds: mean, standard deviation, count."""
    done = runs[runs["status"] == "finished"].copy()
    if done.empty:
        return pd.DataFrame(columns=[*by, "depth", "parameters", "error_mean", "error_std", "seeds"])
    done["error_pct"] = 100 * done["final_test_error"]
    table = done.groupby(list(by), sort=False).agg(
        depth=("depth", "first"), parameters=("parameters", "first"), error_mean=("error_pct", "mean"),
        error_std=("error_pct", lambda s: s.std(ddof=1) if len(s) > 1 else float("nan")),
        seeds=("error_pct", "size"), wall_time_s=("wall_time_s", "mean"), schedule=("schedule", "first"),
        data=("data", "first")).reset_index()
    return table.sort_values("depth").reset_index(drop=True)


def format_error(mean: float, std: float, n: int) -> str:
    """'8.52' for one seed, '8.52 ± 0.14 (3 seeds)' for several."""
    if n > 1 and not math.isnan(std):
        return f"{mean:.2f} ± {std:.2f} ({n} seeds)"
    return f"{mean:.2f}"


def format_params(n: int) -> str:
    return f"{n / 1e6:.2f}M"


# ------------------------------------------------------------------------------------------ trained models
@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
            batch_size: int = 500) -> torch.Tensor:
    """Predicted class of every image (un-augmented, eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    preds = [model(x.to(device)).argmax(1).cpu()
             for x, _ in cifar.iterate_batches(images, torch.zeros(len(images), dtype=torch.long),
                                               batch_size=batch_size, mean=mean, std=std)]
    return torch.cat(preds)


def confusion(labels: torch.Tensor | np.ndarray, preds: torch.Tensor | np.ndarray, *,
              num_classes: int = 10) -> np.ndarray:
    """The confusion matrix (rows: true class, columns: predicted class), by scikit-learn."""
    from sklearn.metrics import confusion_matrix
    return confusion_matrix(np.asarray(labels), np.asarray(preds), labels=list(range(num_classes)))


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    return np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)


@torch.inference_mode()
def layer_response_std(model: nn.Module, images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
                       batch_size: int = 500) -> np.ndarray:
    """Paper Figure 7: the standard deviation of each 3x3 layer's responses (after BN, before the addition
    and the ReLU) over all test images, channels and positions, in layer order."""
    model.eval()
    device = next(model.parameters()).device
    sums = sumsq = counts = None
    for x, _ in cifar.iterate_batches(images, torch.zeros(len(images), dtype=torch.long), batch_size=batch_size,
                                      mean=mean, std=std):
        responses = model.layer_responses(x.to(device))
        s = torch.stack([r.double().sum() for r in responses])
        q = torch.stack([r.double().square().sum() for r in responses])
        n = torch.tensor([r.numel() for r in responses], dtype=torch.float64, device=s.device)
        sums, sumsq, counts = (s, q, n) if sums is None else (sums + s, sumsq + q, counts + n)
    mu = sums / counts
    return (sumsq / counts - mu.square()).clamp_min(0).sqrt().cpu().numpy()


def responses_record(stds: Iterable[float], *, run_dir: str | Path, summary: dict[str, Any]) -> dict[str, Any]:
    return {"run": Path(run_dir).name, "arch": summary["arch"], "stds": [float(s) for s in stds],
            "final_test_error": summary["final_test_error"], "data": summary.get("data"),
            "data_fingerprint": summary.get("data_fingerprint"), "git_commit": summary.get("git_commit"),
            "schedule": summary.get("schedule")}


__all__ = ["PAPER_TABLE6", "PAPER_PARAMS", "TUTORIAL_TEST_ERROR", "load_runs", "load_log", "seed_table",
           "format_error", "format_params", "predict", "confusion", "per_class_accuracy", "layer_response_std",
           "responses_record"]

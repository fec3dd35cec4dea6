"""Analysis of trained networks: predictions, confusion matrices and layer responses (Figure 7), and the
small records that the figures are then drawn from.

Every function here runs its images through the one inference path (resnet.inference): the run's
normalisation, channels_last, and the precision of the run's own evaluation. So a confusion matrix
counts exactly the errors that the run's summary reports, on every device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from resnet import inference, pretrained
from resnet.cifar10 import CIFAR10
from resnet.config import RunConfig, describe_schedule, is_quick
from resnet.pretrained import Normalization
from resnet.records import (REPO_ROOT, Job, RunFolder, RunFolderError, Summary, code_version,
                            standing_run)

__all__ = ["predict", "confusion", "per_class_accuracy", "layer_response_std", "confusion_record",
           "responses_record", "published_file", "trained_networks", "keeps"]


def predict(model: nn.Module, images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
            precision: str = "bf16") -> torch.Tensor:
    """Predicted class of every image (un-augmented, eval mode), on the CPU."""
    return inference.logits(model, images, mean=mean, std=std, precision=precision).argmax(1).cpu()


def confusion(labels: torch.Tensor | np.ndarray, preds: torch.Tensor | np.ndarray, *,
              num_classes: int = 10) -> np.ndarray:
    """The confusion matrix (rows: true class, columns: predicted class), by scikit-learn."""
    from sklearn.metrics import confusion_matrix
    return confusion_matrix(np.asarray(labels), np.asarray(preds), labels=list(range(num_classes)))


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    return np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)


@torch.inference_mode()
def layer_response_std(model: nn.Module, images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
                       precision: str = "bf16", batch_size: int = 500) -> np.ndarray:
    """Paper Figure 7: the standard deviation of each 3x3 layer's responses (after BN, before the addition
    and the ReLU) over all images, channels and positions, in layer order."""
    device = inference.model_device(model)
    model.eval()
    per_batch = []  # per batch: [3, layers] = sum, sum of squares, count of each layer's responses
    with inference.autocast(device, precision):
        for x in inference.input_batches(images, mean=mean, std=std, device=device, batch_size=batch_size):
            per_batch.append(torch.stack([torch.stack([r.double().sum(), r.double().square().sum(),
                                                       torch.tensor(float(r.numel()), device=device)])
                                          for r in model.layer_responses(x)], dim=1))
    total, squares, count = torch.stack(per_batch).sum(0)
    mu = total / count
    return (squares / count - mu.square()).clamp_min(0).sqrt().cpu().numpy()


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it: a record names no machine's folders."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return Path(path).name


def published_file(folder: RunFolder, *, weights_dir: Path | None = None) -> Path | None:
    """The published weights of ``folder``'s finished run (a clone holds a run's records, not its model.pt):
    the file the manifest of ``weights_dir`` (default resnet.pretrained.WEIGHTS_DIR) lists under the run's
    name (its SHA-256 checked: pretrained.published_path), holding the run's own config and final test
    error. None when no file is listed or the listed one is of another run of that name (a quick run in a
    scratch folder has the name of the published full-schedule one)."""
    path = pretrained.published_path(folder.name, Path(weights_dir or pretrained.WEIGHTS_DIR))
    if path is None:
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    record = folder.read()
    try:
        same_config = record is not None and RunConfig.from_dict(saved["config"]) == record.config
    except Exception:  # a file of another code's config: not this run's
        same_config = False
    same_run = (record is not None
                and saved.get("summary", {}).get("final_test_error") == record.summary.final_test_error)
    return path if same_config and same_run else None


def trained_networks(jobs: Sequence[Job], *,
                     purpose: str) -> Iterator[tuple[Job, nn.Module, Normalization, str]]:
    """(job, model, normalisation, weights) for each finished job, the model in eval mode on the CPU, from
    the run's model.pt or, where only its records are here, from its published file (``weights`` names
    which, relative to the repository); a one-line note for the others. A job that has not finished but
    whose float32 twin has stands for that run (records.standing_run). Trains nothing."""
    for job in jobs:
        standing = standing_run(job.out)  # its float32 run where only that has finished (a CPU's)
        if standing != job.out:
            job = Job(job.config.replace(precision="fp32"), standing)
        status = job.folder.status
        if status != "finished":
            print(f"{job.out.name}: not finished ({status}); {purpose}")
            continue
        if job.folder.model_path.is_file():
            path, weights = job.folder.model_path, "the run's model.pt"
        else:
            path = published_file(job.folder)
            if path is None:
                print(f"{job.out.name}: finished, but its weights ({job.folder.model_path.name}) are not in "
                      f"{_shown(job.out)} and no published file is of this run: the repository keeps a "
                      f"run's records and the published networks' weights; move the folder aside to train "
                      f"it again; {purpose}")
                continue
            weights = f"{_shown(path)} (published, half precision)"
        model, norm = pretrained.load_file(path)
        yield job, model, norm, weights


def keeps(record: dict[str, Any] | None, folder: RunFolder, weights: str) -> bool:
    """Whether an existing ``record`` of ``folder``'s run stays rather than be measured again from
    ``weights``: it was made from the run's own model.pt (records without a "weights" field were) of this
    run (its code and final test error), and ``weights`` is only the published half-precision copy."""
    summary = folder.summary()
    return (record is not None and summary is not None and weights != "the run's model.pt"
            and record.get("weights", "the run's model.pt") == "the run's model.pt"
            and record.get("run") == folder.name
            and record.get("run_git_commit") == summary.git_commit
            and record.get("final_test_error") == summary.final_test_error)


def _provenance(folder: RunFolder, config: RunConfig, summary: Summary, n_images: int) -> dict[str, Any]:
    """What a record derived from a trained run says about where it came from: the run, its schedule, its
    data and the code of both the run and this analysis."""
    return {"run": folder.name, "arch": config.arch, "shortcut": config.shortcut, "recipe": config.recipe,
            "seed": config.seed, "selection": summary.selection, "final_test_error": summary.final_test_error,
            "test_images": n_images, "schedule": describe_schedule(config), "quick": is_quick(config),
            "data": summary.data, "data_fingerprint": summary.data_fingerprint,
            "run_git_commit": summary.git_commit, "run_code_fingerprint": summary.code_fingerprint,
            **code_version()}


def _trained(folder: RunFolder) -> tuple[RunConfig, Summary]:
    """The finished run's config and summary, its records read whole (RunFolder.read: DamagedRecords)."""
    record = folder.read()
    if record is None or record.config is None or record.summary.status != "finished":
        raise RunFolderError(f"{folder.path} holds no finished run; train it first")
    return record.config, record.summary


def confusion_record(model: nn.Module, norm: Normalization, data: CIFAR10, *,
                     folder: RunFolder, weights: str = "the run's model.pt") -> dict[str, Any]:
    """The confusion matrix of a run's reported model (``model``, ``norm``: resnet.pretrained.load_file of
    its model.pt or of its published file, as ``weights`` says) on the test images the run was evaluated
    on."""
    config, summary = _trained(folder)
    n = config.test_subset or len(data.test_labels)
    labels = data.test_labels[:n]
    preds = predict(model, data.test_images[:n], mean=norm.mean, std=norm.std, precision=config.precision)
    matrix = confusion(labels, preds, num_classes=len(data.classes))
    return {**_provenance(folder, config, summary, n), "weights": weights, "classes": list(data.classes),
            "matrix": matrix.tolist(),
            "per_class_accuracy": dict(zip(data.classes, per_class_accuracy(matrix).round(4).tolist())),
            "test_error": float((preds != labels).float().mean())}


def responses_record(model: nn.Module, norm: Normalization, data: CIFAR10, *,
                     folder: RunFolder, weights: str = "the run's model.pt") -> dict[str, Any]:
    """Figure 7's numbers for a run's reported model (read from ``weights``), on the test images the run
    was evaluated on."""
    config, summary = _trained(folder)
    n = config.test_subset or len(data.test_labels)
    stds = layer_response_std(model, data.test_images[:n], mean=norm.mean, std=norm.std,
                              precision=config.precision)
    return {**_provenance(folder, config, summary, n), "weights": weights, "stds": [float(s) for s in stds]}

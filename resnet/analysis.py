"""Analysis of trained networks: predictions, confusion matrices and layer responses (Figure 7), and the
small records that the figures are then drawn from.

Every function here runs its images through the one inference path (resnet.inference): the run's
normalisation, channels_last, and the precision of the run's own evaluation. So a confusion matrix
counts exactly the errors that the run's summary reports, on every device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from resnet import inference
from resnet.cifar10 import CIFAR10
from resnet.config import RunConfig, describe_schedule, is_quick
from resnet.pretrained import Normalization
from resnet.records import RunFolder, RunFolderError, Summary, code_version

__all__ = ["predict", "confusion", "per_class_accuracy", "layer_response_std", "confusion_record",
           "responses_record"]


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
    config, summary = folder.config(), folder.summary()
    if config is None or summary is None or summary.status != "finished":
        raise RunFolderError(f"{folder.path} holds no finished run; train it first")
    return config, summary


def confusion_record(model: nn.Module, norm: Normalization, data: CIFAR10, *,
                     folder: RunFolder) -> dict[str, Any]:
    """The confusion matrix of a run's reported model (``model``, ``norm``: resnet.pretrained.load_file of
    its model.pt) on the test images the run was evaluated on."""
    config, summary = _trained(folder)
    n = config.test_subset or len(data.test_labels)
    labels = data.test_labels[:n]
    preds = predict(model, data.test_images[:n], mean=norm.mean, std=norm.std, precision=config.precision)
    matrix = confusion(labels, preds, num_classes=len(data.classes))
    return {**_provenance(folder, config, summary, n), "classes": list(data.classes),
            "matrix": matrix.tolist(),
            "per_class_accuracy": dict(zip(data.classes, per_class_accuracy(matrix).round(4).tolist())),
            "test_error": float((preds != labels).float().mean())}


def responses_record(model: nn.Module, norm: Normalization, data: CIFAR10, *,
                     folder: RunFolder) -> dict[str, Any]:
    """Figure 7's numbers for a run's reported model, on the test images the run was evaluated on."""
    config, summary = _trained(folder)
    n = config.test_subset or len(data.test_labels)
    stds = layer_response_std(model, data.test_images[:n], mean=norm.mean, std=norm.std,
                              precision=config.precision)
    return {**_provenance(folder, config, summary, n), "stds": [float(s) for s in stds]}

"""Trained networks that load by name: the reported weights of the full-schedule runs the figures and
notebooks use, published in the repository in half precision with a content hash, and a loader that also
reads our run folders and the checkpoints of the widely used option-A CIFAR reproduction.

    model, norm = load("resnet56")                         # seed 0, option A, the paper's recipe
    logits = model(norm(images))                           # images: uint8 [N, 3, 32, 32]
    model, norm = load_file("results/runs/resnet20-A-paper-s0/model.pt")
    model, norm = load_file("resnet20-12fc0121.th", arch="resnet20")    # akamaster/pytorch_resnet_cifar10

Published files live in results/weights/, named <run>-<first 8 hex of their SHA-256>.pt and listed in
results/weights/MANIFEST.json with the full hash; the loader checks it. Quick runs publish nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from resnet import models
from resnet.config import RunConfig, schedule_of
from resnet.loader import normalize
from resnet.records import FLOAT32, RESULTS_DIR, RunFolder, atomic_write_bytes, run_name

__all__ = ["WEIGHTS_DIR", "PUBLISHED", "WeightsError", "Normalization", "publish", "published", "load",
           "published_for", "published_path", "load_file"]

#: Where published weights live: results/weights/, or the folder $RESNET_WEIGHTS_DIR names.
WEIGHTS_DIR = Path(os.environ.get("RESNET_WEIGHTS_DIR") or RESULTS_DIR / "weights")
MANIFEST = "MANIFEST.json"
FORMAT = "resnet-cifar10-weights/1"
#: The networks whose weights are published (seed 0): Figure 7's five and the tutorial recipe's ResNet-20
#: (the confusion matrices use ResNet-56 and the tutorial network); each from its float32 run where it has
#: only that (records.standing_run: a CPU's run).
PUBLISHED = ("plain20-paper-s0", "plain56-paper-s0", "resnet20-A-paper-s0", "resnet56-A-paper-s0",
             "resnet110-A-paper-s0", "resnet20-A-tutorial-s0")
#: The normalisation the option-A reference checkpoints expect (its README: ImageNet's channel statistics).
REFERENCE_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class WeightsError(RuntimeError):
    """A weights file that is missing, damaged, or not the network asked for."""


@dataclass(frozen=True)
class Normalization:
    """What a network expects of its input: ``(images / 255 - mean) / std``, float32 [N, 3, 32, 32]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.mean, self.std)


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def publish(run_dir: str | Path, *, dest: Path = WEIGHTS_DIR) -> Path:
    """Publish a finished run's reported weights in half precision: dest/<run>-<sha8>.pt plus its entry
    in dest/MANIFEST.json (replacing an earlier file of the same run)."""
    run_dir = Path(run_dir)
    saved = _read(run_dir / "model.pt")
    config = RunConfig.from_dict(saved["config"])
    if schedule_of(config) != "full":
        raise WeightsError(f"{run_dir} is a {schedule_of(config)}-schedule run: only full-schedule networks "
                           f"are published")
    summary = RunFolder(run_dir).report().to_dict()
    half = {k: v.half() if v.is_floating_point() else v for k, v in saved["model"].items()}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "run": run_dir.name, "config": saved["config"], "model": half,
                "mean": saved["mean"].float(), "std": saved["std"].float(), "classes": saved["classes"],
                "summary": {k: summary.get(k)
                            for k in ("final_test_error", "final_train_error", "selection", "data",
                                      "data_fingerprint", "git_commit", "iterations_done")}}, buf)
    payload = buf.getvalue()
    digest = _sha256(payload)
    manifest = _manifest(dest)
    for old in [f for f, entry in manifest.items() if entry["run"] == run_dir.name]:
        (dest / old).unlink(missing_ok=True)
        del manifest[old]
    path = dest / f"{run_dir.name}-{digest[:8]}.pt"
    atomic_write_bytes(path, payload)
    manifest[path.name] = {"run": run_dir.name, "sha256": digest, "bytes": len(payload),
                           "final_test_error": summary.get("final_test_error")}
    atomic_write_bytes(dest / MANIFEST,
                       (json.dumps(dict(sorted(manifest.items())), indent=2) + "\n").encode())
    return path


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise WeightsError(f"{path} is damaged ({e}); restore it with `git checkout {path}`") from None


def published(folder: Path = WEIGHTS_DIR) -> tuple[str, ...]:
    """The runs whose weights are published in ``folder`` (empty when there are none, or no readable
    manifest)."""
    try:
        return tuple(sorted(entry["run"] for entry in _manifest(folder).values()))
    except WeightsError:
        return ()


def load(arch: str, *, shortcut: str = "A", recipe: str = "paper", seed: int = 0, device: str = "cpu",
         folder: Path = WEIGHTS_DIR) -> tuple[nn.Module, Normalization]:
    """The published network ``arch`` (with ``shortcut``, ``recipe``, ``seed``) in eval mode, and the
    normalisation it was trained with. Checks the file's SHA-256 against the manifest."""
    name = run_name(arch, shortcut, recipe, seed)
    run = published_for(name, published(folder))
    path = published_path(run, folder) if run is not None else None
    if path is None:
        have = ", ".join(published(folder)) or "none yet"
        raise WeightsError(f"no published weights for {name} in {folder} (published: {have}). Train it with "
                           f"the experiments and load its run folder's model.pt with load_file() instead.")
    return load_file(path, device=device)


def published_for(name: str, have: tuple[str, ...]) -> str | None:
    """Of the published runs ``have``, the one that stands for the run named ``name`` (load() loads it): the
    run itself, else its float32 twin ``<name>-fp32`` (a CPU's run, records.standing_run); None when neither
    is published."""
    return next((run for run in (name, name + FLOAT32) if run in have), None)


def published_path(run: str, folder: Path = WEIGHTS_DIR) -> Path | None:
    """The published file of the run named ``run``, its SHA-256 checked against the manifest; None when the
    manifest lists none. A listed file that is missing or does not match raises WeightsError."""
    entries = [(file, entry) for file, entry in sorted(_manifest(folder).items()) if entry["run"] == run]
    if not entries:
        return None
    file, entry = entries[0]
    path = Path(folder) / file
    if not path.exists():
        raise WeightsError(f"{path} is listed in {MANIFEST} but missing; restore it with "
                           f"`git checkout {path}`")
    if _sha256(path.read_bytes()) != entry["sha256"]:
        raise WeightsError(f"{path} does not match the SHA-256 in {MANIFEST}: the file is damaged or was "
                           f"replaced; restore it with `git checkout {path}`")
    return path


def load_file(path: str | Path, *, arch: str | None = None,
              device: str = "cpu") -> tuple[nn.Module, Normalization]:
    """A ready network (eval mode) and its normalisation from a weights file: a published file, a run's
    model.pt, or a reference option-A checkpoint ({'state_dict': ...} with 'module.' prefixes: pass its
    ``arch``). A file that does not fit the network raises WeightsError."""
    saved = _read(Path(path))
    if "config" in saved:  # ours: published, or a run's model.pt
        config = RunConfig.from_dict(saved["config"])
        if arch is not None and arch != config.arch:
            raise WeightsError(f"{path} holds a {config.arch}, not a {arch}")
        model = models.build_model(config.arch, shortcut=config.shortcut, num_classes=len(saved["classes"]))
        state, norm = saved["model"], Normalization(saved["mean"].float(), saved["std"].float())
    else:
        if arch is None:
            raise WeightsError(f"{path} is not one of ours (no config inside); say which network it holds "
                               "(arch=)")
        model = models.build_model(arch, shortcut="A")
        state = {k.removeprefix("module."): v for k, v in saved.get("state_dict", saved).items()}
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in REFERENCE_NORMALIZATION)
        norm = Normalization(mean, std)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:
        raise WeightsError(f"{path} does not fit a {arch or config.arch}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), norm


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise WeightsError(f"{path} is missing")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    except Exception as e:  # a truncated or foreign file: a clear message, not a traceback
        raise WeightsError(f"cannot read {path} ({type(e).__name__}: {e}); it is damaged or not a "
                           "weights file") from None
    if not isinstance(saved, dict):
        raise WeightsError(f"{path} holds a {type(saved).__name__}, not a weights file")
    return saved

"""The one inference path: a network's outputs for a set of images, as training's evaluation computes them.

Evaluation during training, the confusion matrix and the layer responses all run their images through
:func:`input_batches` under :func:`autocast`, so on every device their numbers agree with each other and
with the run's own summary: the same normalisation (the run's training-set statistics), the same memory
layout and the same precision (bf16 autocast on CUDA unless the run asked for float32; float32 on CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet.loader import normalize

__all__ = ["autocast", "step_precision", "no_tf32", "input_batches", "logits", "evaluate", "model_device"]


def autocast(device: torch.device, precision: str = "bf16") -> contextlib.AbstractContextManager:
    """The run's precision. bf16 autocast on CUDA (convolutions on the tensor cores) unless ``precision`` is
    "fp32"; float32 on the CPU. The autocast weight cache is off: a CUDA graph must not capture a cache that
    outlives it. "fp32" on CUDA is IEEE float32: cuDNN would otherwise run its convolutions in TF32 on
    Ampere and Hopper, and the control run would not measure what it says."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    if device.type == "cuda":
        return no_tf32()
    return contextlib.nullcontext()


def step_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """What a whole training step (forward, backward, update) runs under, around :func:`autocast`'s forward:
    TF32 off for "fp32" on CUDA. The backward's convolutions choose their kernels when they run, after the
    forward's autocast block has ended, so the float32 control's gradients need the flag held across them
    too (and a CUDA graph captured inside keeps float32 kernels for the whole step)."""
    if device.type == "cuda" and precision == "fp32":
        return no_tf32()
    return contextlib.nullcontext()


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and cuBLAS matrix products inside the block, restored after. Kernels
    are chosen when called (or captured), so a CUDA graph recorded inside keeps float32 kernels."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def input_batches(images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
                  batch_size: int = 1000) -> Iterator[torch.Tensor]:
    """``images`` (uint8 [N, 3, 32, 32], any device) as normalised float batches on ``device``, in order,
    channels_last: the paper's single un-augmented view of each test image."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    mean, std = mean.to(device), std.to(device)
    for lo in range(0, len(images), batch_size):
        x = normalize(images[lo:lo + batch_size].to(device, non_blocking=True), mean, std)
        yield x.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def logits(model: nn.Module, images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
           precision: str = "bf16", batch_size: int = 1000) -> torch.Tensor:
    """float32 outputs [N, ...] (float64 for a float64 model) of ``model`` in eval mode for ``images``, on
    the model's device.
    The model's train/eval mode is restored afterwards; nothing is synchronised with the host."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        dtype = next(model.parameters()).dtype  # float32; float64 in the tests of exactness
        out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        with autocast(device, precision):
            batches = input_batches(images, mean=mean, std=std, device=device, batch_size=batch_size)
            outs = [model(x.to(dtype)).to(out_dtype) for x in batches]
    finally:
        model.train(was_training)
    return torch.cat(outs)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, mean: torch.Tensor,
             std: torch.Tensor, precision: str = "bf16") -> dict[str, float]:
    """Error (fraction) and mean cross-entropy of ``model`` on the un-augmented ``images``, through
    :func:`logits`. One host synchronisation."""
    out = logits(model, images, mean=mean, std=std, precision=precision)
    labels = labels.to(out.device)
    error, loss = torch.stack([(out.argmax(1) != labels).double().mean(),
                               F.cross_entropy(out, labels).double()]).tolist()
    return {"error": error, "loss": loss}

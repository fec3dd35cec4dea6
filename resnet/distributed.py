"""Data-parallel training with ``torchrun``: the one place that knows about process groups.

    torchrun --nproc_per_node 2 experiments/train.py --arch resnet56

Each of the W processes takes its 1/W slice of every mini-batch (resnet.loader.TrainLoader's ``rank``),
gradients are averaged by DistributedDataParallel, and only rank 0 evaluates and writes. The global batch
stays 128, as in the paper, which split it over two GPUs; BN statistics are each process's own, as there.
A single process (no torchrun) gets ``Dist()``, whose methods do nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["AGREE_EVERY", "Dist"]

AGREE_EVERY = 10  # iterations between the processes' joint decisions (to stop for a deadline)


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel job (rank 0 of 1 when there is none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        """The job torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK), else one process."""
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")),
                   int(env.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 evaluates and writes records."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """Each process of a multi-GPU job trains on its own GPU."""
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` inside DistributedDataParallel (joining the process group first), or as it is."""
        if not self.enabled:
            return model
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=self.rank,
                                    world_size=self.world_size)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the processes, in place."""
        if self.enabled:
            torch.distributed.all_reduce(tensor)
        return tensor

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every process, in place."""
        if self.enabled:
            torch.distributed.broadcast(tensor, 0)
        return tensor

    def decide_together(self, flag: bool, iteration: int, device: torch.device) -> bool:
        """Whether any process says ``flag``, decided together every AGREE_EVERY iterations and False
        between (``flag`` itself in a single process): one process stopping alone at a deadline (theirs
        differ by their start-up) would leave the others waiting in an all-reduce."""
        if not self.enabled:
            return flag
        if iteration % AGREE_EVERY:
            return False
        return bool(self.all_reduce(torch.tensor([float(flag)], device=device)).item())

    def rank0_value(self, value: int, device: torch.device) -> int:
        """Rank 0's ``value`` on every process (``value`` itself in a single process)."""
        if not self.enabled:
            return value
        return int(self.broadcast(torch.tensor([value], device=device)).item())

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

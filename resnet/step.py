"""One training iteration: :class:`TrainStep` (forward, loss, backward, update, counts on the device), or
:class:`CudaGraphStep`, the same step captured once in a CUDA graph and replayed; :func:`make_step` builds
a run's, and :func:`set_learning_rate` feeds it the schedule without a new capture.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet import inference
from resnet.state import RunState

__all__ = ["make_step", "set_learning_rate", "compiled", "TrainStep", "CudaGraphStep"]


def compiled(net: nn.Module, *, recompile_limit: int = 128) -> nn.Module:
    """``torch.compile(net)``, with Dynamo's recompile limit (a setting of the whole process) raised to at
    least ``recompile_limit`` and reaching it made an error: each architecture of a sweep recompiles
    ResNet.forward, and past the default limit (8) Dynamo would quietly run the rest eagerly, mixing
    compiled and eager numbers."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), recompile_limit))
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
# One training iteration

class TrainStep:
    """One iteration on (x, y): forward, cross-entropy, backward, optimizer update, and the batch's
    (loss sum, wrong, images) added to ``stats`` on the device. Nothing waits for the host."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer, stats: torch.Tensor, *,
                 device: torch.device, precision: str) -> None:
        self.net, self.optimizer, self.stats = net, optimizer, stats
        self.device, self.precision = device, precision

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with inference.step_precision(self.device, self.precision):  # the backward's kernels too
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


def make_step(state: RunState, net: nn.Module, *, precision: str, compile: bool = False,
              graph_stream: torch.cuda.Stream | None = None) -> TrainStep | CudaGraphStep:
    """The run's step on ``net`` (the state's model, or its data-parallel wrapper): torch.compile'd when
    asked, captured in a CUDA graph on ``graph_stream`` when one is given."""
    step = TrainStep(compiled(net) if compile else net, state.optimizer, state.stats,
                     device=state.stats.device, precision=precision)
    return CudaGraphStep(step, graph_stream) if graph_stream is not None else step

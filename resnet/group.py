"""Several runs of one architecture trained as one grouped network: :class:`GroupRun`.

On a GPU a CIFAR ResNet's kernels are small (hundreds per iteration, each a fraction of the GPU), so one
run leaves most of it idle, and runs side by side on streams fill it only so far (benchmarks/results/
gpu.md: eight ResNet-110s on streams, 1.17 times one run's throughput). K networks of one shape can be one
network instead: every convolution a grouped convolution (``groups=K``), every BN over K times the
channels, the classifier a batched product. One iteration of the K runs is then as many kernels as one
run's, each K times larger (benchmarks/results/grouped.md: 1.2 to 2.4 times the runs on streams).

The grouped network *is* its K networks, not an approximation of them: run k's weights, BN statistics and
momentum are slices of the grouped tensors, its input is its own batch in channels 3k..3k+2, and the summed
loss gives each slice its own run's gradient. Each member stays an ordinary :class:`resnet.train.Run`
whose network's tensors are views into the grouped ones, so evaluation, the log, checkpoints, the summary
and model.pt are the member's own, in the format of a run trained alone: a member's checkpoint resumes
alone or in another group, and a run paused alone can join a group. Members are runs that differ only in
their seed (the seeds of one network), each with its own learning rate (ResNet-110's warm-up ends when
each run's own training error falls below 80%) and its own end: one that diverges or finishes early is
ended on its own while the others go on.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet import inference, models
from resnet.cifar10 import CIFAR10
from resnet.config import ConfigError, Execution, RunConfig
from resnet.records import Job, Summary
from resnet.state import Diverged
from resnet.step import CudaGraphStep, compiled
from resnet.train import Run, failure, near_deadline

__all__ = ["GroupedPad", "GroupedLinear", "grouped", "tie", "GroupSGD", "GroupStep", "GroupRun",
           "MemberFailed", "can_group", "network_of"]


# --------------------------------------------------------------------------------------------------
# K networks as one

class GroupedPad(nn.Module):
    """Option A's shortcut for K networks side by side in the channels: each network's channels padded as
    models.PadShortcut pads them."""

    def __init__(self, pad: models.PadShortcut, groups: int) -> None:
        super().__init__()
        self.pad, self.groups = pad, groups

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        out = self.pad(x.reshape(b * self.groups, -1, h, w))  # [B*K, c, H, W]: each network's own channels
        return out.reshape(b, -1, *out.shape[2:])


class GroupedLinear(nn.Module):
    """K linear layers: [B, K*i] -> [B, K, o], network k's output from its own i features."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([lin.weight.detach() for lin in linears]))  # [K, o, i]
        self.bias = nn.Parameter(torch.stack([lin.bias.detach() for lin in linears]))  # [K, o]

    def forward(self, x: Tensor) -> Tensor:
        k, _, i = self.weight.shape
        return torch.einsum("bki,koi->bko", x.reshape(x.shape[0], k, i), self.weight) + self.bias


def grouped(nets: Sequence[nn.Module]) -> nn.Module:
    """One network that computes ``nets`` (one architecture) side by side: input [B, K*3, H, W] (network
    k's batch in channels 3k..3k+2), output [B, K, classes]. Built from copies of the networks' weights and
    BN statistics, so it starts where they are; :func:`tie` then makes the networks views into it."""
    k = len(nets)

    def merge(mods: list[nn.Module]) -> nn.Module:
        first = mods[0]
        if isinstance(first, nn.Conv2d):
            conv = nn.Conv2d(k * first.in_channels, k * first.out_channels, first.kernel_size,
                             stride=first.stride, padding=first.padding, groups=k, bias=False,
                             dtype=first.weight.dtype, device=first.weight.device)
            conv.weight.data.copy_(torch.cat([m.weight.detach() for m in mods]))
            return conv
        if isinstance(first, nn.BatchNorm2d):
            bn = nn.BatchNorm2d(k * first.num_features, eps=first.eps, momentum=first.momentum,
                                dtype=first.weight.dtype, device=first.weight.device)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).data.copy_(torch.cat([getattr(m, name).detach() for m in mods]))
            bn.num_batches_tracked.copy_(first.num_batches_tracked)
            return bn
        if isinstance(first, nn.Linear):
            return GroupedLinear(mods)
        if isinstance(first, models.PadShortcut):
            return GroupedPad(copy.deepcopy(first), k)
        if any(True for _ in first.parameters(recurse=False)) or any(True for _ in first.buffers(False)):
            raise TypeError(f"cannot group {type(first).__name__}")
        out = copy.copy(first)  # a container or a parameter-free module: its children merged in turn
        out._modules = {name: None if child is None else merge([m._modules[name] for m in mods])
                        for name, child in first._modules.items()}
        return out

    return merge(list(nets))


def tie(group: nn.Module, nets: Sequence[nn.Module]) -> None:
    """Make every weight and BN statistic of ``nets`` a view of its slice of ``group`` (made by
    :func:`grouped` from them): what the group learns, each network holds, and each network's
    state_dict, evaluation and parameter count are its own. The parameters stay the same objects (only
    their data moves), so optimizers built on them still name them. BN's batch counter is one shared
    scalar: the group counts its batches as each network would."""
    members = [dict(net.named_modules()) for net in nets]
    for name, module in group.named_modules():
        for attr, value in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            for k, own in enumerate(m[name] for m in members):
                mine = getattr(own, attr)
                if value.dim() == 0:
                    own._buffers[attr] = value
                elif isinstance(mine, nn.Parameter):
                    mine.data = member_slice(value, k, len(nets))
                else:
                    own._buffers[attr] = member_slice(value, k, len(nets))


def member_slice(tensor: Tensor, k: int, groups: int) -> Tensor:
    """Network k's part of a grouped tensor: the k-th of ``groups`` equal blocks along dim 0 (a stacked
    [K, ...] tensor gives its [...] at k)."""
    if isinstance(tensor, nn.Parameter):
        tensor = tensor.data
    if tensor.dim() in (2, 3):  # GroupedLinear's stacked weight [K, o, i] and bias [K, o]
        return tensor[k]
    size = tensor.shape[0] // groups
    return tensor[k * size:(k + 1) * size]


class GroupSGD:
    """torch.optim.SGD's update (momentum, weight decay; no dampening or Nesterov) over a grouped network's
    parameters, with one learning rate per network: elementwise, so each slice moves exactly as its
    network's own SGD would move it. The rates live on the device, one tensor per parameter holding each
    network's rate on its slice: set_rate fills a slice in place (between steps, rarely), and a captured
    step reads the new value on its next replay."""

    def __init__(self, group: nn.Module, groups: int, *, momentum: float, weight_decay: float) -> None:
        self.names, self.params = map(list, zip(*group.named_parameters()))
        self.groups = groups
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers = [torch.zeros_like(p) for p in self.params]
        self.rates = [torch.zeros_like(p) for p in self.params]

    def set_rate(self, k: int, lr: float) -> None:
        for rate in self.rates:
            member_slice(rate, k, self.groups).fill_(lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        torch._foreach_add_(grads, self.params, alpha=self.weight_decay)  # d_p = g + wd * p
        torch._foreach_mul_(self.buffers, self.momentum)  # buf = momentum * buf + d_p (buf starts at 0)
        torch._foreach_add_(self.buffers, grads)
        torch._foreach_addcmul_(self.params, self.buffers, self.rates, value=-1)  # p -= lr * buf

    def adopt(self, k: int, net: nn.Module, optimizer: torch.optim.SGD) -> None:
        """Take network k's momentum from its own (never stepped) ``optimizer``, loaded from a checkpoint
        or new, and leave views of the group's momentum in its place, so that the optimizer's state_dict
        is the checkpoint of network k as if it had trained alone."""
        own = dict(net.named_parameters())
        for name, buffer in zip(self.names, self.buffers):
            view = member_slice(buffer, k, self.groups)
            state = optimizer.state[own[name]]
            if state.get("momentum_buffer") is not None:
                view.copy_(state["momentum_buffer"])
            state["momentum_buffer"] = view


class GroupStep:
    """One iteration of K networks as one: forward, each network's cross-entropy on its own batch, their
    sum backward, the update, and each network's (loss sum, wrong, images) added to its row of ``stats``
    [K, 2, 3] on the device. Nothing waits for the host; resnet.step.CudaGraphStep captures it."""

    def __init__(self, net: nn.Module, optimizer: GroupSGD, stats: Tensor, *, device: torch.device,
                 precision: str) -> None:
        self.net, self.optimizer, self.stats = net, optimizer, stats
        self.device, self.precision = device, precision

    def __call__(self, x: Tensor, y: Tensor) -> None:  # x [B, 3K, H, W], y [B, K]
        self.optimizer.zero_grad()
        with inference.autocast(self.device, self.precision):
            out = self.net(x.contiguous(memory_format=torch.channels_last))  # [B, K, classes]
            b, k, c = out.shape
            losses = F.cross_entropy(out.reshape(b * k, c), y.reshape(b * k), reduction="none")
            losses = losses.view(b, k).mean(0)  # [K]: each network's mean loss on its batch
        losses.sum().backward()  # network k's slice of the gradient is its own loss's
        self.optimizer.step()
        self.stats[:, :, 0] += (losses.detach().double() * b)[:, None]
        self.stats[:, :, 1] += (out.detach().argmax(2) != y).sum(0)[:, None]
        self.stats[:, :, 2] += b


def can_group(config: RunConfig) -> bool:
    """Whether ``config``'s run can train in a group: SGD, without the validation-based early stopping of
    the tutorial recipe (its end and its kept weights are each run's own decision)."""
    return config.optimizer == "sgd" and config.patience is None


def network_of(config: RunConfig) -> RunConfig:
    """What runs that train as one group share: the config but for its seed (the same network and recipe)."""
    return config.replace(seed=0)


# --------------------------------------------------------------------------------------------------
# Runs trained as one

class MemberFailed(Exception):
    """A group's member could not be opened (its folder held by another process, say): its ``job`` and the
    ``error``. The others can open as a group without it."""

    def __init__(self, job: Job, error: BaseException) -> None:
        super().__init__(str(error))
        self.job, self.error = job, error


class GroupRun:
    """Runs of one network (configs equal but for the seed; resnet.records.Job's) trained as one grouped
    network, advanced like a single :class:`resnet.train.Run` by a driver (resnet.sweep). Opening them
    raises MemberFailed when one of them cannot be opened. A member that finishes or diverges ends on its
    own; the group goes on while any member is open."""

    def __init__(self, jobs: Sequence[Job], *, data: CIFAR10, execution: Execution,
                 stream: torch.cuda.Stream | None) -> None:
        names = [job.out.name for job in jobs]
        network = network_of(jobs[0].config)
        if not all(can_group(job.config) and network_of(job.config) == network for job in jobs):
            raise ConfigError(f"{', '.join(names)}: only SGD runs that differ in their seed alone train as "
                              "one group")
        self.members: list[Run] = []
        try:
            for job in jobs:
                try:
                    self.members.append(Run(job.config, data=data, out=job.out, execution=execution,
                                            resume=job.folder.holds_a_run(), stream=stream, group=names))
                except Exception as e:
                    raise MemberFailed(job, e) from e
            self._build(execution)
        except BaseException:
            for run in self.members:
                run.folder.lock.release()
            raise

    def _build(self, execution: Execution) -> None:
        first = self.members[0]
        self.config, self.stream, self.device = first.config, first.stream, first.device
        k = len(self.members)
        nets = [run.state.model for run in self.members]
        self.net = grouped(nets).to(memory_format=torch.channels_last)
        tie(self.net, nets)
        self.optimizer = GroupSGD(self.net, k, momentum=self.config.momentum,
                                  weight_decay=self.config.weight_decay)
        self.stats = torch.stack([run.state.stats for run in self.members])  # [K, 2, 3]
        for i, run in enumerate(self.members):
            self.optimizer.adopt(i, run.state.model, run.state.optimizer)
            self.optimizer.set_rate(i, run.lr)
            run.state.stats = self.stats[i]  # the member's counts are its row of the group's
        step = GroupStep(compiled(self.net) if execution.compile else self.net, self.optimizer, self.stats,
                         device=self.device, precision=self.config.precision)
        self.step = CudaGraphStep(step, self.stream) if first.uses_graph else step
        self.last_batch: list[tuple[Tensor, Tensor] | None] = [None] * k
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the group was built there

    # -- what a driver sees, as for a Run ---------------------------------------------------------------
    @property
    def runs(self) -> list[Run]:
        return self.members

    @property
    def trained(self) -> bool:
        return not self._training()

    def _training(self) -> list[tuple[int, Run]]:
        """The members still training, with their places: neither ended (diverged, say) nor trained."""
        return [(i, run) for i, run in enumerate(self.members) if not (run.ended or run.trained)]

    @property
    def ended(self) -> bool:
        return all(run.ended for run in self.members)

    def advance(self, iterations: int) -> int:
        """Train every member that is still training up to ``iterations`` more, as Run.advance does; return
        how many group iterations ran. A member that diverges or reaches its end is ended on its own."""
        done = 0
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            while done < iterations and not self.trained and not self._late():
                self._iterate()
                done += 1
        return done

    def _late(self) -> bool:
        return near_deadline(self.members[0].execution, [run for _, run in self._training()])

    def _iterate(self) -> None:
        clock = self.members[0].clock
        t0 = clock()
        training = self._training()
        for i, run in training:
            if run.set_learning_rate():
                self.optimizer.set_rate(i, run.lr)
            self.last_batch[i] = next(run.batches)
        # an ended member's slice goes on computing on its last batch (or another's): nothing reads it
        fallback = next(b for b in self.last_batch if b is not None)
        batches = [b if b is not None else fallback for b in self.last_batch]
        self.step(torch.cat([x for x, _ in batches], 1), torch.stack([y for _, y in batches], 1))
        counted = [(run, self._guard(run, run.state.count_iteration, run.config, run.data, run.dist))
                   for _, run in training]
        seconds = clock() - t0  # evaluation and checkpoints are not training time
        for run, train_stats in counted:
            if not run.ended:
                run.state.train_s += seconds
                self._guard(run, run.after_step, train_stats)
            if not run.ended and run.trained:
                run.end("finished")

    def _guard(self, run: Run, work: Callable[..., object], *args: object) -> object:
        """``work(*args)`` for one member; divergence ends that member alone (with its last good
        checkpoint)."""
        try:
            return work(*args)
        except Diverged as e:
            run.end("diverged", message=str(e))
            return None

    # -- ending ----------------------------------------------------------------------------------------
    def end(self, status: str = "finished", *, message: str | None = None) -> None:
        """End every member still open with ``status`` (see Run.end)."""
        self._end(lambda run: run.end(status, message=message))

    def pause(self) -> None:
        """End every member still open 'unfinished', each with a checkpoint of now."""
        self._end(Run.pause)

    def _end(self, end: Callable[[Run], Summary]) -> None:
        """End every open member with ``end``; a failure while ending one is that member's failure."""
        for run in self.members:
            if run.ended:
                continue
            try:
                end(run)
            except Exception as e:
                run.end("failed", message=failure(e))
        self.step = None  # the group's CUDA graph and its memory pool

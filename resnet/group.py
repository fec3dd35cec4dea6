"""The runs of one depth trained as one grouped network: :class:`GroupRun`.

On a GPU a CIFAR ResNet's kernels are small (hundreds per iteration, each a fraction of the GPU), so one
run leaves most of it idle, and runs side by side on streams fill it only so far (benchmarks/results/
gpu.md). K networks of one depth can be one network instead: every 3x3 convolution a grouped convolution
(``groups=K``), every BN over K times the channels, the classifier a batched product. One iteration of the
K runs is then as many kernels as one run's, each K times larger (benchmarks/results/grouped.md).

plain-N and ResNet-N with options A, B and C share their 3x3 convolutions and differ only in each block's
shortcut, so one group holds any of them, of any seed (:class:`GroupedBlock`): the identity (or option A's
padding) is added under a per-channel 0/1 mask, and the projections of options B and C are grouped
convolutions over the members that have them.

The grouped network *is* its K networks, not an approximation of them: run k's weights, BN statistics and
momentum are slices of the grouped tensors and of nothing else, its input is its own batch in channels
3k..3k+2, and the summed loss gives each slice its own run's gradient (tests/test_group.py, in float64).
Each member stays an ordinary :class:`resnet.train.Run` whose network's tensors are views into the
grouped ones, so the log, checkpoints, the summary and model.pt are the member's own, in the format of a
run trained alone: a member's checkpoint resumes alone or in another group, and a run paused alone can
join a group. Each keeps its own learning rate (ResNet-110's warm-up ends when each run's own training
error falls below 80%) and its own end: one that diverges or finishes early is ended on its own while the
others go on. The group makes its members' batches with one gather and measures their test errors with one
grouped forward pass, so the host's work per iteration does not grow with K.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet import inference, models
from resnet.cifar10 import CIFAR10
from resnet.config import RECIPES, ConfigError, Execution, RunConfig
from resnet.loader import GroupedBatches
from resnet.records import Job, Summary
from resnet.state import Diverged
from resnet.step import CudaGraphStep, compiled
from resnet.train import Run, failure, near_deadline

__all__ = ["KINDS", "kind", "merged", "GroupedPad", "GroupedLinear", "GroupedBlock", "GroupedResNet",
           "grouped", "owned", "member_slice", "tie", "GroupSGD", "GroupStep", "evaluate_grouped", "GroupRun",
           "MemberFailed", "StandsApart", "can_group", "network_of"]


# --------------------------------------------------------------------------------------------------
# K networks as one

#: The order of a group's members: each block's members with a projection shortcut are then its last ones
#: (C everywhere; B and C where the shape changes), so that they form one grouped convolution.
KINDS = ("plain", "A", "B", "C")


def kind(config: RunConfig) -> str:
    """What a member's blocks add to their output: "plain" (nothing), or its shortcut option."""
    return config.shortcut if models.is_residual(config.arch) else "plain"


def merged(modules: Sequence[nn.Module], owners: Sequence[int]) -> nn.Module:
    """One module that computes ``modules`` (convolutions, BNs or linear layers of one shape, the networks
    ``owners`` of the group) side by side in the channels; its ``owners`` say whose slice is whose."""
    first, k = modules[0], len(modules)
    if isinstance(first, nn.Conv2d):
        out = nn.Conv2d(k * first.in_channels, k * first.out_channels, first.kernel_size, stride=first.stride,
                        padding=first.padding, groups=k, bias=False, dtype=first.weight.dtype,
                        device=first.weight.device)
        out.weight.data.copy_(torch.cat([m.weight.detach() for m in modules]))
    elif isinstance(first, nn.BatchNorm2d):
        out = nn.BatchNorm2d(k * first.num_features, eps=first.eps, momentum=first.momentum,
                             dtype=first.weight.dtype, device=first.weight.device)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(out, name).data.copy_(torch.cat([getattr(m, name).detach() for m in modules]))
        out.num_batches_tracked.copy_(first.num_batches_tracked)
    elif isinstance(first, nn.Linear):
        out = GroupedLinear(modules)
    else:
        raise TypeError(f"cannot group {type(first).__name__}")
    out.owners = list(owners)
    return out


class GroupedPad(nn.Module):
    """Option A's shortcut for networks side by side in the channels: each one's channels subsampled and
    padded as models.PadShortcut does it."""

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


class GroupedBlock(nn.Module):
    """The basic blocks of one place in K networks (members ordered as KINDS), as one block. The 3x3
    convolutions and their BNs are grouped over all K. The shortcuts fall in three sets: none (plain),
    identity (option A's zero-padding where the shape changes), projection (the last P members, a 1x1
    convolution and BN grouped over them alone). The first K - P members' sum is formed with the identity
    (or padding) of every one of them times a per-channel 0/1 mask, 0 for the plain members: o + s * 1 and
    o + s * 0 are exactly the sums each network forms alone (none, for a plain one)."""

    def __init__(self, blocks: Sequence[models.BasicBlock]) -> None:
        super().__init__()
        k = len(blocks)
        everyone = range(k)
        for name in ("conv1", "bn1", "conv2", "bn2"):
            setattr(self, name, merged([getattr(b, name) for b in blocks], everyone))
        self.relu = nn.ReLU()
        projected = [i for i, b in enumerate(blocks) if isinstance(b.shortcut, nn.Sequential)]
        if projected != list(range(k - len(projected), k)):
            raise ValueError("the members with a projection shortcut must come last (order them as KINDS)")
        self.k, self.first_projected = k, k - len(projected)
        self.shortcut = (nn.Sequential(*(merged([blocks[i].shortcut[j] for i in projected], projected)
                                         for j in range(2))) if projected else None)
        others = blocks[:self.first_projected]
        conv = blocks[0].conv1
        reshapes = conv.stride != (1, 1) or conv.in_channels != conv.out_channels
        self.adds = any(b.shortcut is not None for b in others)  # some of the first K - P add an identity
        self.pad = (GroupedPad(models.PadShortcut(conv.in_channels, conv.out_channels, conv.stride[0]),
                               len(others)) if reshapes and self.adds else None)
        # made on the members' device: a mask left on the CPU would meet CUDA activations (grouped checks it)
        flags = [float(b.shortcut is not None) for b in others]
        mask = None if all(flags) else torch.tensor(flags, dtype=conv.weight.dtype, device=conv.weight.device)
        self.register_buffer("mask", None if mask is None else mask.repeat_interleave(conv.out_channels)
                             .view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        inner, outer = x.shape[1] // self.k, out.shape[1] // self.k  # each network's channels in and out
        split_in, split_out = self.first_projected * inner, self.first_projected * outer
        if self.adds:
            identity = x[:, :split_in] if self.pad is None else self.pad(x[:, :split_in])
            if self.mask is not None:
                identity = identity * self.mask.to(identity.dtype)
            out[:, :split_out] += identity  # in place, as torchvision's blocks add their shortcut
        if self.shortcut is not None:
            out[:, split_out:] += self.shortcut(x[:, split_in:])
        return self.relu(out)


class GroupedResNet(nn.Module):
    """K CIFAR networks of one depth (plain or residual with any shortcut option, members ordered as
    KINDS) as one network: input [B, K*3, H, W] (network k's batch in channels 3k..3k+2), output
    [B, K, classes]. Built from copies of the networks' weights and BN statistics, so it starts where they
    are; :func:`tie` then makes the networks views into it. Its modules carry the names of the networks'
    (``layer2.0.shortcut.0`` is the projections' grouped convolution), and each module's ``owners`` the
    networks it holds a slice of: no tensor of the group belongs to a network that has no such tensor."""

    def __init__(self, nets: Sequence[models.ResNet]) -> None:
        super().__init__()
        everyone = range(len(nets))
        self.conv1 = merged([n.conv1 for n in nets], everyone)
        self.bn1 = merged([n.bn1 for n in nets], everyone)
        self.relu = nn.ReLU()
        for stage in ("layer1", "layer2", "layer3"):
            blocks = zip(*(getattr(n, stage) for n in nets))
            self.add_module(stage, nn.Sequential(*(GroupedBlock(list(b)) for b in blocks)))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = merged([n.linear for n in nets], everyone)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


def grouped(nets: Sequence[nn.Module]) -> GroupedResNet:
    """One network that computes ``nets`` (CIFAR networks of one depth, ordered as KINDS) side by side."""
    if not all(isinstance(n, models.ResNet) for n in nets) or len({len(n.layer1) for n in nets}) != 1:
        raise ValueError("only the CIFAR networks of one depth train as one group")
    group = GroupedResNet(nets)
    # every tensor of the group lives where its members' parameters do: a GroupRun moves nothing after this
    devices = {t.device for t in (*group.parameters(), *group.buffers())}
    if len(devices) != 1:
        raise ValueError("a grouped network's tensors must live on one device; found "
                         + ", ".join(sorted(map(str, devices))))
    return group


def owned(group: nn.Module) -> list[tuple[str, str, Tensor, list[int]]]:
    """(module name, attribute, tensor, owners) of every parameter and saved buffer of ``group``."""
    found = []
    for name, module in group.named_modules():
        owners = getattr(module, "owners", None)
        if owners is None:
            continue
        for attr, value in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if attr in module._non_persistent_buffers_set:
                continue
            found.append((name, attr, value, owners))
    return found


def tie(group: nn.Module, nets: Sequence[nn.Module]) -> None:
    """Make every weight and BN statistic of ``nets`` a view of its slice of ``group`` (made by
    :func:`grouped` from them): what the group learns, each network holds, and each network's
    state_dict, evaluation and parameter count are its own. The parameters stay the same objects (only
    their data moves), so optimizers built on them still name them. BN's batch counter is one shared
    scalar: the group counts its batches as each network would."""
    members = [dict(net.named_modules()) for net in nets]
    for name, attr, value, owners in owned(group):
        for place, k in enumerate(owners):
            own = members[k][name]
            if value.dim() == 0:
                own._buffers[attr] = value
            elif isinstance(getattr(own, attr), nn.Parameter):
                getattr(own, attr).data = member_slice(value, place, len(owners))
            else:
                own._buffers[attr] = member_slice(value, place, len(owners))


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
    owner's rate on its slice: set_rate fills a network's slices in place (between steps, rarely), and a
    captured step reads the new value on its next replay."""

    def __init__(self, group: nn.Module, *, momentum: float, weight_decay: float) -> None:
        found = [(f"{name}.{attr}" if name else attr, value, owners)
                 for name, attr, value, owners in owned(group) if isinstance(value, nn.Parameter)]
        self.names = [name for name, _, _ in found]
        self.params = [value for _, value, _ in found]
        self.owners = [owners for _, _, owners in found]
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers = [torch.zeros_like(p) for p in self.params]
        self.rates = [torch.zeros_like(p) for p in self.params]

    def slices(self, k: int, tensors: Sequence[Tensor]) -> list[tuple[int, Tensor]]:
        """(index, network k's slice) of each of ``tensors`` (one per parameter) that network k owns."""
        return [(i, member_slice(t, owners.index(k), len(owners)))
                for i, (t, owners) in enumerate(zip(tensors, self.owners)) if k in owners]

    def set_rate(self, k: int, lr: float) -> None:
        for _, rate in self.slices(k, self.rates):
            rate.fill_(lr)

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
        for i, view in self.slices(k, self.buffers):
            state = optimizer.state[own[self.names[i]]]
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
        with inference.step_precision(self.device, self.precision):  # the backward's kernels too
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


class _Repeated(nn.Module):
    """A grouped network fed one batch: each network gets the same images in its channels."""

    def __init__(self, net: GroupedResNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.net.conv1.owners)
        return self.net(x.repeat(1, k, 1, 1))


def evaluate_grouped(net: GroupedResNet, images: Tensor, labels: Tensor, *, mean: Tensor, std: Tensor,
                     precision: str = "bf16") -> list[dict[str, float]]:
    """Each network's error (fraction) and mean cross-entropy on the un-augmented ``images``, as
    resnet.inference.evaluate measures one network, in one grouped forward pass: one synchronisation."""
    out = inference.logits(_Repeated(net), images, mean=mean, std=std, precision=precision)  # [N, K, classes]
    labels = labels.to(out.device)[:, None].expand(-1, out.shape[1])
    errors = (out.argmax(2) != labels).double().mean(0)
    losses = F.cross_entropy(out.transpose(1, 2), labels, reduction="none").double().mean(0)
    return [{"error": e, "loss": loss} for e, loss in zip(*torch.stack([errors, losses]).tolist())]


def can_group(config: RunConfig) -> bool:
    """Whether ``config``'s run can train in a group: its recipe's runs can (not the tutorial's, whose end is
    each run's own decision on validation), with SGD (the group's update is GroupSGD's)."""
    return RECIPES[config.recipe].groups and config.optimizer == "sgd" and config.stop_rule is None


def network_of(config: RunConfig) -> RunConfig:
    """What runs that train as one group share: the config but for its seed and the network's shortcuts
    (none, or option A, B or C): the depth, the recipe and how it is computed."""
    return config.replace(seed=0, arch=f"resnet{config.depth}", shortcut="A")


# --------------------------------------------------------------------------------------------------
# Runs trained as one

class StandsApart(ConfigError):
    """A member whose state stands at another iteration than the group's: the group feeds every member the
    batches of one iteration, so it must train apart (a sweep keys its units on where each run's checkpoint
    stands; a stale summary, a failed run's or a killed run's, may say otherwise)."""


class MemberFailed(Exception):
    """A group's member could not be opened (its folder held by another process, say): its ``job`` and the
    ``error``. The others can open as a group without it."""

    def __init__(self, job: Job, error: BaseException) -> None:
        super().__init__(str(error))
        self.job, self.error = job, error


class GroupRun:
    """Runs of one depth and recipe (configs equal but for the seed and the shortcuts: network_of;
    resnet.records.Job's) trained as one grouped network, advanced like a single :class:`resnet.train.Run`
    by a driver (resnet.sweep). Opening them raises MemberFailed when one of them cannot be opened. A member
    that finishes or diverges ends on its own; the group goes on while any member is open."""

    def __init__(self, jobs: Sequence[Job], *, data: CIFAR10, execution: Execution,
                 stream: torch.cuda.Stream | None) -> None:
        jobs = sorted(jobs, key=lambda job: KINDS.index(kind(job.config)))  # projections last (GroupedBlock)
        names = [job.out.name for job in jobs]
        network = network_of(jobs[0].config)
        if not all(can_group(job.config) and network_of(job.config) == network for job in jobs):
            raise ConfigError(f"{', '.join(names)}: only SGD runs of one depth and recipe that differ in "
                              "their seed or shortcuts alone train as one group")
        self.members: list[Run] = []
        try:
            for job in jobs:
                try:
                    self.members.append(Run(job.config, data=data, out=job.out, execution=execution,
                                            resume=job.folder.holds_a_run(), stream=stream, group=names))
                except Exception as e:
                    raise MemberFailed(job, e) from e
            self._refuse_members_apart(jobs)
            self._build(execution)
        except BaseException:
            for run in self.members:
                run.folder.lock.release()
            raise

    def _refuse_members_apart(self, jobs: Sequence[Job]) -> None:
        """MemberFailed (StandsApart) for the first member whose state is not at the iteration most members
        stand at (the first member's, on a tie): one stream of batches (GroupedBatches) serves them all."""
        at = [run.state.iteration for run in self.members]
        where = max(at, key=lambda i: (at.count(i), -at.index(i)))
        for job, run in zip(jobs, self.members):
            if run.state.iteration != where:
                others = ", ".join(r.folder.name for r in self.members if r.state.iteration == where)
                raise MemberFailed(job, StandsApart(
                    f"{job.out.name} stands at iteration {run.state.iteration} and {others} at {where}: runs "
                    "train as one group only from one iteration, so it is left out of this group"))

    def _build(self, execution: Execution) -> None:
        first = self.members[0]
        self.config, self.stream, self.device = first.config, first.stream, first.device
        nets = [run.state.model for run in self.members]
        self.net = grouped(nets).to(memory_format=torch.channels_last)
        tie(self.net, nets)
        self.optimizer = GroupSGD(self.net, momentum=self.config.momentum,
                                  weight_decay=self.config.weight_decay)
        self.stats = torch.stack([run.state.stats for run in self.members])  # [K, 2, 3]
        for i, run in enumerate(self.members):
            self.optimizer.adopt(i, run.state.model, run.state.optimizer)
            self.optimizer.set_rate(i, run.lr)
            run.state.stats = self.stats[i]  # the member's counts are its row of the group's
        step = GroupStep(compiled(self.net) if execution.compile else self.net, self.optimizer, self.stats,
                         device=self.device, precision=self.config.precision)
        self.step = CudaGraphStep(step, self.stream) if first.uses_graph else step
        # every member's batch made at once (an ended member's slice goes on computing: nothing reads it)
        self.batches = GroupedBatches([run.data.loader for run in self.members], start=first.state.iteration)
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
        self.step(*next(self.batches))
        counted = [(i, run, self._guard(run, run.state.count_iteration, run.config, run.data, run.dist))
                   for i, run in training]
        seconds = clock() - t0  # evaluation and checkpoints are not training time
        tests = self._test([(i, run) for i, run, stats in counted if stats is not None and not run.ended
                            and run.state.tests_now(run.config, run.data)])
        for i, run, train_stats in counted:
            if not run.ended:
                run.state.train_s += seconds
                self._guard(run, run.after_step, train_stats, tests.get(i))
            if not run.ended and run.trained:
                run.end("finished")

    def _test(self, members: list[tuple[int, Run]]) -> dict[int, dict[str, float]]:
        """The test error and loss of ``members`` (place, run), measured at once by the grouped network."""
        if not members:
            return {}
        data = members[0][1].data
        measured = evaluate_grouped(self.net, *data.test, mean=data.mean, std=data.std,
                                    precision=self.config.precision)
        return {i: measured[i] for i, _ in members}

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

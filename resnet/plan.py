"""What a sweep opens next under a time limit: a unit (the runs of one depth trained as one group, or a run
alone) that can finish before the limit, at the pace a table of measured costs gives for it.

GPU time may come in stretches of minutes, and a run paused at the end of one lives only as long as the
machine that holds its checkpoint. So under a time limit the sweep opens a unit only when it and the units
already open can all finish in time, and it fills what time is left with smaller units that can:

    costs = Costs.load("benchmarks/results/costs.json")     # written by benchmarks/probe.py on the GPU
    unit = next_unit(pending, open_seconds=..., seconds_left=540, costs=costs, size=12)

The cost of a group iteration is modelled as ``per_layer * depth + per_work * work`` milliseconds, with
``work`` the layers the group computes (depth times its networks, plus every projection shortcut's
convolution: a network with option C has one in each block, with B two): the first term is what does not
grow with the group (kernel launches, latency), the second what does (these networks are memory-bound, and
each layer moves its feature maps). Both are fitted to the rows of the table; ``overhead`` (wall time over
training time: evaluations, checkpoints, opening) scales the estimate, and a float32 run (the control, TF32
off) costs ``fp32`` times its bf16 pace. A table measured on another GPU than this one is scaled by
OTHER_DEVICE until the machine's own probe replaces it. With no table the sweep falls back to the pace it
measures (resnet.sweep.Pace).

When nothing is open and nothing fits, the first unit opens all the same, to be paused by the limit (the
GPU never waits, and a unit longer than any command still moves), cut to the runs whose checkpoints fit
PAUSE_MB: what a paused unit leaves must travel back with the machine's pack.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnet import models
from resnet.config import RunConfig
from resnet.records import Job

__all__ = ["FIT_SHARE", "PAUSE_MB", "FP32", "OTHER_DEVICE", "Costs", "projections", "group_work",
           "checkpoint_mb", "checkpoints_mb", "unit_key", "units", "next_unit"]

FIT_SHARE = 0.8  # the share of the time left that the open units are planned to fill (estimates err)
#: At most this many MiB of checkpoints in a unit opened to be paused: what a lent GPU's slice packs back
#: (experiments/gpu_slice.sh's CHECKPOINT_MB; tests/test_slice.py keeps the two equal).
PAUSE_MB = 55.0
#: A float32 iteration (TF32 off) over a bf16 one, until a probe measures it ("fp32_factor" in the table):
#: these networks are memory-bound in bf16 (twice the bytes in float32) and lose the tensor cores.
FP32 = 4.0
#: A table measured on another GPU, scaled for this one: the committed table's H200 has 1.43 times an
#: H100's memory bandwidth, and these networks are memory-bound (the GPUs these slices are lent).
OTHER_DEVICE = 1.5


def projections(config: RunConfig) -> int:
    """The projection shortcuts (1x1 convolution and BN) of ``config``'s network: option C one per block,
    option B one at each of the two stage changes, A and plain nets none."""
    if not models.is_residual(config.arch) or config.shortcut == "A":
        return 0
    return 2 if config.shortcut == "B" else (config.depth - 2) // 2


def group_work(configs: Sequence[RunConfig]) -> float:
    """The layers one iteration of ``configs`` as one group computes (see the module docstring)."""
    return float(sum(c.depth + projections(c) for c in configs))


CHECKPOINT_RECORD_BYTES = 512  # what torch.save adds per tensor (its record, alignment), at most


def checkpoint_mb(config: RunConfig) -> float:
    """About the MiB of ``config``'s checkpoint: the network's weights and BN statistics and the optimizer's
    moments (SGD's momentum; Adam's two), in float32."""
    return _checkpoint_mb(config.arch, config.shortcut, 2 if config.optimizer == "adam" else 1)


@functools.lru_cache(maxsize=None)
def _checkpoint_mb(arch: str, shortcut: str, moments: int) -> float:
    with torch.device("meta"):  # shapes only: nothing is allocated
        net = models.build_model(arch, shortcut=shortcut)
    weights = sum(p.numel() for p in net.parameters())
    statistics = sum(b.numel() for b in net.buffers() if b.is_floating_point())
    tensors = len(net.state_dict()) + moments * len(list(net.parameters()))  # each a record in the archive
    return (4 * ((1 + moments) * weights + statistics) + CHECKPOINT_RECORD_BYTES * tensors) / 2**20


def checkpoints_mb(jobs: Sequence[Job]) -> float:
    """The MiB of the checkpoints ``jobs`` leave when paused."""
    return sum(checkpoint_mb(job.config) for job in jobs)


@dataclass(frozen=True)
class Costs:
    """Milliseconds per group iteration, ``per_layer * depth + per_work * work``, fitted to measured rows;
    ``overhead``: a run's wall time over its training time; ``fp32``: a float32 run's iteration over a bf16
    one's. ``source`` names the measurement."""

    per_layer: float
    per_work: float
    overhead: float = 1.0
    source: str = ""
    fp32: float = FP32
    device: str = ""  # the GPU that measured them ("": not said)

    @classmethod
    def fit(cls, rows: Sequence[dict[str, Any]], *, overhead: float = 1.0, source: str = "") -> Costs:
        """The least-squares fit to ``rows`` of {"depth", "work", "ms"} (ms per group iteration); with rows
        of one depth alone, the per-layer term is 0 and the per-work term their mean ratio."""
        if not rows:
            raise ValueError("no measured rows to fit")
        d = [float(r["depth"]) for r in rows]
        w = [float(r["work"]) for r in rows]
        y = [float(r["ms"]) for r in rows]
        dd, dw, ww = sum(a * a for a in d), sum(a * b for a, b in zip(d, w)), sum(b * b for b in w)
        dy, wy = sum(a * c for a, c in zip(d, y)), sum(b * c for b, c in zip(w, y))
        det = dd * ww - dw * dw
        if len({(a, b) for a, b in zip(d, w)}) < 2 or abs(det) < 1e-9 * dd * ww:
            return cls(0.0, sum(y) / sum(w), overhead, source)
        per_layer, per_work = (ww * dy - dw * wy) / det, (dd * wy - dw * dy) / det
        if per_layer < 0 or per_work <= 0:  # noise pushed a term below zero: the work alone explains it
            return cls(0.0, wy / ww, overhead, source)
        return cls(per_layer, per_work, overhead, source)

    @classmethod
    def load(cls, path: str | Path) -> Costs | None:
        """The table at ``path`` (benchmarks/probe.py's costs.json: {"rows": [{depth, work, ms}],
        "overhead", "device", "fp32_factor"}), or None when there is none."""
        try:
            table = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        rows = table.get("rows") or []
        if not rows:
            return None
        measured_on = table.get("device", "unknown device")
        costs = cls.fit(rows, overhead=float(table.get("overhead", 1.0)),
                        source=f"{Path(path).name} ({measured_on})")
        return dataclasses.replace(costs, fp32=float(table.get("fp32_factor") or FP32), device=measured_on)

    def on(self, device: str) -> Costs:
        """These costs for the GPU named ``device`` (a sweep on CUDA asks): as they are where it measured
        them (or where the table does not say), else scaled by OTHER_DEVICE."""
        if not self.device or device == self.device:
            return self
        return dataclasses.replace(self, per_layer=self.per_layer * OTHER_DEVICE,
                                   per_work=self.per_work * OTHER_DEVICE, device=device,
                                   source=f"{self.source}, times {OTHER_DEVICE} for {device}")

    def group_ms(self, configs: Sequence[RunConfig]) -> float:
        """Milliseconds per iteration of ``configs`` trained as one group (of one precision: a group's
        members share their config but for the seed and the shortcuts)."""
        ms = self.per_layer * configs[0].depth + self.per_work * group_work(configs)
        return ms * (self.fp32 if configs[0].precision == "fp32" else 1.0)

    def seconds(self, configs: Sequence[RunConfig], iterations: int) -> float:
        """Wall seconds for ``iterations`` more of ``configs`` as one group, evaluations and all."""
        return iterations * self.group_ms(configs) * self.overhead / 1000.0


def unit_key(job: Job, iterations_done: Callable[[Job], int], groupable: Callable[[RunConfig], bool],
             network_of: Callable[[RunConfig], RunConfig]) -> tuple[Any, ...]:
    """What the runs of one unit share: the network's depth and recipe (network_of) and where they stand; a
    run that cannot train in a group has a key of its own."""
    if not groupable(job.config):
        return ("alone", job.out)
    return (network_of(job.config), iterations_done(job))


def units(jobs: Sequence[Job], size: int, key: Callable[[Job], tuple[Any, ...]]) -> list[list[Job]]:
    """``jobs`` as units, in order: up to ``size`` runs of one key as one unit, placed where its first run
    was, the next ``size`` of that key where the first of them was, and so on."""
    found: list[list[Job]] = []
    filling: dict[tuple[Any, ...], list[Job]] = {}
    for job in jobs:
        k = key(job) if size > 1 else ("alone", job.out)
        unit = filling.get(k)
        if unit is not None and len(unit) < size:
            unit.append(job)
            continue
        found.append([job])
        filling[k] = found[-1]
    return found


def next_unit(candidates: Sequence[list[Job]], *, estimate: Callable[[list[Job]], float | None],
              open_seconds: float | None, seconds_left: float, anything_open: bool,
              size_mb: Callable[[list[Job]], float] | None = None) -> list[Job] | None:
    """The unit to open next, or None to wait: ``candidates`` are the pending units in priority order (as
    :func:`units` forms them), ``estimate`` a unit's seconds (None when it cannot be estimated yet),
    ``open_seconds`` what the open units still need (None when unknown), ``size_mb`` the MiB of a unit's
    checkpoints (checkpoints_mb).

    Without a deadline: the first candidate. With one: the first that, cut to its first m runs for the
    largest m that does, finishes with the open units within FIT_SHARE of the time left (a unit's later
    runs, its other seeds, wait for a unit of their own). When nothing fits and nothing is open, the first
    candidate all the same, so that the GPU never waits and a unit longer than any one command still moves
    (it is paused with a checkpoint that the next command continues), cut to its first runs whose
    checkpoints fit PAUSE_MB (at least one): the others wait, rather than be trained to be lost with a
    machine whose pack cannot carry them."""
    if not candidates:
        return None
    if math.isinf(seconds_left):
        return list(candidates[0])
    if open_seconds is not None:
        room = FIT_SHARE * seconds_left - open_seconds
        for unit in candidates:
            for m in range(len(unit), 0, -1):
                seconds = estimate(list(unit[:m]))
                if seconds is not None and seconds <= room:
                    return list(unit[:m])
    if anything_open:
        return None
    first = list(candidates[0])
    while size_mb is not None and len(first) > 1 and size_mb(first) > PAUSE_MB:
        first.pop()
    return first

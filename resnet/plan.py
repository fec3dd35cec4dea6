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
training time: evaluations, checkpoints, opening) scales the estimate. With no table the sweep falls back
to the pace it measures (resnet.sweep.Pace).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet import models
from resnet.config import RunConfig
from resnet.records import Job

__all__ = ["FIT_SHARE", "Costs", "projections", "group_work", "unit_key", "units", "next_unit"]

FIT_SHARE = 0.8  # the share of the time left that the open units are planned to fill (estimates err)


def projections(config: RunConfig) -> int:
    """The projection shortcuts (1x1 convolution and BN) of ``config``'s network: option C one per block,
    option B one at each of the two stage changes, A and plain nets none."""
    if not models.is_residual(config.arch) or config.shortcut == "A":
        return 0
    return 2 if config.shortcut == "B" else (config.depth - 2) // 2


def group_work(configs: Sequence[RunConfig]) -> float:
    """The layers one iteration of ``configs`` as one group computes (see the module docstring)."""
    return float(sum(c.depth + projections(c) for c in configs))


@dataclass(frozen=True)
class Costs:
    """Milliseconds per group iteration, ``per_layer * depth + per_work * work``, fitted to measured rows;
    ``overhead``: a run's wall time over its training time. ``source`` names the measurement."""

    per_layer: float
    per_work: float
    overhead: float = 1.0
    source: str = ""

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
        "overhead", "device"}), or None when there is none."""
        try:
            table = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        rows = table.get("rows") or []
        if not rows:
            return None
        return cls.fit(rows, overhead=float(table.get("overhead", 1.0)),
                       source=f"{Path(path).name} ({table.get('device', 'unknown device')})")

    def group_ms(self, configs: Sequence[RunConfig]) -> float:
        """Milliseconds per iteration of ``configs`` trained as one group."""
        return self.per_layer * configs[0].depth + self.per_work * group_work(configs)

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
              open_seconds: float | None, seconds_left: float, anything_open: bool) -> list[Job] | None:
    """The unit to open next, or None to wait: ``candidates`` are the pending units in priority order (as
    :func:`units` forms them), ``estimate`` a unit's seconds (None when it cannot be estimated yet),
    ``open_seconds`` what the open units still need (None when unknown).

    Without a deadline: the first candidate. With one: the first that, cut to its first m runs for the
    largest m that does, finishes with the open units within FIT_SHARE of the time left (a unit's later
    runs, its other seeds, wait for a unit of their own). When nothing fits and nothing is open, the first
    candidate all the same, so that the GPU never waits and a unit longer than any one command still moves
    (it is paused with a checkpoint that the next command continues)."""
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
    return None if anything_open else list(candidates[0])

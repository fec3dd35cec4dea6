"""The time-limited planner (resnet.plan) where its estimates meet a GPU slice: a unit opened to be paused
is cut to what the slice's pack brings back; a checkpoint's size is known before it is written; a float32
run and a table measured on another GPU are priced as they run. The sweep's use of them on a fake clock,
so that no verdict depends on the machine's speed."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny
from resnet import plan, records, sweep
from resnet import train as engine
from resnet.config import Execution, paper_config
from resnet.records import Job
from resnet.sweep import train_in_turn

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = Execution(device="cpu", progress=False)


def never_fits(unit) -> float:
    return 1e9


def test_a_unit_opened_to_be_paused_is_cut_to_what_the_pack_brings_back(tmp_path):
    """Nothing open and nothing fits (80 s left, say): the first unit opens to be paused, as far as its
    checkpoints fit PAUSE_MB. Eleven ResNet-56 runs (about 6.8 MiB each) open as 8, ResNet-110's five
    seeds (about 13.7 MiB) as 4; a unit that fits the time is not cut by size."""
    def unit(arch, n):
        return [Job(paper_config(arch, seed=s), tmp_path / f"{arch}-s{s}") for s in range(n)]

    def choose(candidates, estimate=never_fits):
        return plan.next_unit(candidates, estimate=estimate, open_seconds=0.0, seconds_left=80.0,
                              anything_open=False, size_mb=plan.checkpoints_mb)

    r56, r110 = unit("resnet56", 11), unit("resnet110", 5)
    assert choose([r56, r110]) == r56[:8]
    assert plan.checkpoints_mb(r56[:8]) <= plan.PAUSE_MB < plan.checkpoints_mb(r56[:9])
    assert choose([r110]) == r110[:4]
    assert choose([r56], estimate=lambda u: 1.0) == r56  # it finishes: nothing is paused
    assert plan.next_unit([r56], estimate=never_fits, open_seconds=0.0, seconds_left=80.0,
                          anything_open=True, size_mb=plan.checkpoints_mb) is None  # the open ones go on


def test_a_checkpoints_size_is_known_before_it_is_written(cifar_data, tmp_path):
    """plan.checkpoint_mb, from the network's shapes alone, is at least the checkpoint a run writes and
    within 5% of it (an estimate below would let a pack drop a checkpoint that the planner counted)."""
    config = tiny("resnet32", shortcut="C")
    engine.train(config, data=cifar_data, out=tmp_path / "run", execution=QUIET)
    written = (tmp_path / "run" / "checkpoint.pt").stat().st_size / 2**20
    assert written <= plan.checkpoint_mb(config) <= 1.05 * written


def test_a_sweep_opens_to_be_paused_only_what_the_pack_carries(cifar_data, tmp_path, slow_steps, monkeypatch,
                                                               opened_units):
    """Three ResNet-20 seeds that the table says cannot finish in the 12 s left, nothing open: the sweep
    opens them to be paused, but only the two whose checkpoints fit the pack (made to hold two here); the
    third waits for a later command, untouched."""
    jobs = [Job(tiny(seed=s, iterations=40, eval_every=20, milestones=(20,)), tmp_path / f"s{s}")
            for s in range(3)]
    monkeypatch.setattr(plan, "PAUSE_MB", 2.5 * plan.checkpoint_mb(jobs[0].config))
    clock = slow_steps(1.0)
    costs = plan.Costs(per_layer=0.0, per_work=50.0)  # 1 s per ResNet-20 iteration: 40 s do not fit
    train_in_turn(jobs, QUIET.replace(group=3, deadline=clock.deadline(12), costs=costs), cifar_data)
    assert opened_units == [["s0", "s1"]]
    assert [records.RunFolder(j.out).status for j in jobs] == ["unfinished", "unfinished", "missing"]


def test_a_float32_run_and_another_gpus_table_are_priced_as_they_run(tmp_path):
    """The float32 control costs FP32 times its bf16 pace, or the factor the probe measured; a table
    measured on an H200 plans an H100's sweep at OTHER_DEVICE times its costs, its own GPU's as measured."""
    rows = [{"depth": 20, "work": 20 * k, "ms": 0.5 * k} for k in (4, 8)]
    table = {"rows": rows, "overhead": 1.0, "device": "NVIDIA H200"}
    (tmp_path / "costs.json").write_text(json.dumps(table))
    costs = plan.Costs.load(tmp_path / "costs.json")
    bf16, fp32 = paper_config("resnet20"), paper_config("resnet20", precision="fp32")
    assert costs.seconds([fp32], 1000) == pytest.approx(plan.FP32 * costs.seconds([bf16], 1000))
    (tmp_path / "measured.json").write_text(json.dumps({**table, "fp32_factor": 2.5}))
    measured = plan.Costs.load(tmp_path / "measured.json")
    assert measured.seconds([fp32], 1000) == pytest.approx(2.5 * measured.seconds([bf16], 1000))
    assert costs.on("NVIDIA H200") == costs
    h100 = costs.on("NVIDIA H100 80GB HBM3")
    assert h100.seconds([bf16], 1000) == pytest.approx(plan.OTHER_DEVICE * costs.seconds([bf16], 1000))
    assert "H100" in h100.source and "H200" in h100.source
    assert plan.Costs(per_layer=0.0, per_work=1.0).on("any GPU").per_work == 1.0  # a table of no GPU


def test_a_sweep_on_cuda_plans_with_the_table_for_its_own_gpu(tmp_path, monkeypatch):
    """resnet.sweep hands the planner the costs for the GPU it runs on (checked with a fake CUDA device):
    the H200's table on an H100 is scaled."""
    seen = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(sweep, "next_unit", lambda candidates, **kw: seen.append(kw) or None)
    monkeypatch.setattr(sweep, "groups", lambda pending, size: [pending])
    costs = plan.Costs(per_layer=0.0, per_work=1.0, device="NVIDIA H200")

    class FakeCuda(Execution):
        @property
        def torch_device(self):
            return torch.device("cuda", 0)

    execution = FakeCuda(device="cpu", progress=False, costs=costs)
    job = Job(paper_config("resnet20"), tmp_path / "run")
    sweep._fill({}, [job], [None], sweep.Pace(), execution, None)
    assert seen and seen[0]["estimate"]([job]) == pytest.approx(
        costs.on("NVIDIA H100 80GB HBM3").seconds([job.config], job.config.iterations))
    scaled = plan.OTHER_DEVICE * costs.seconds([job.config], 64_000)
    assert seen[0]["estimate"]([job]) == pytest.approx(scaled)

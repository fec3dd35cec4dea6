"""Sweeps on the CPU: a failing run is recorded and the others go on, an interrupted sweep checkpoints its
open runs, ended runs are released, and runs resumed on another device keep that device's optimizer."""

from __future__ import annotations

import gc
import time
import weakref

import pytest
import torch

from resnet import inference, records
from resnet import train as engine
from resnet.config import paper_config, tutorial_config
from resnet.sweep import Job, SweepOptions, run_sweep, train_in_turn

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    base = dict(iterations=8, milestones=(4,), eval_every=4, batch_size=32, test_subset=64)
    return paper_config("resnet20", **{**base, **overrides})


def fail_for_seed(monkeypatch, seed: int, *, after: int, error: BaseException) -> None:
    """Make the runs of ``seed`` raise ``error`` at their step after ``after`` iterations."""
    advance = engine.Run._iterate

    def iterate(run):
        if run.config.seed == seed and run.state.iteration >= after:
            raise error
        advance(run)

    monkeypatch.setattr(engine.Run, "_iterate", iterate)


@pytest.mark.parametrize("in_turn", [True, False], ids=["in-turn", "one-after-another"])
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(cifar_data, tmp_path, capsys, monkeypatch,
                                                         in_turn):
    jobs = [Job(tiny(seed=s), tmp_path / f"s{s}") for s in range(3)]
    fail_for_seed(monkeypatch, 1, after=5, error=torch.OutOfMemoryError("CUDA out of memory (simulated)"))
    if in_turn:
        train_in_turn(jobs, SweepOptions(device="cpu", at_once=2), cifar_data)
    else:
        run_sweep(jobs, data=cifar_data, device="cpu", progress=False)
    status = [records.summary_of(j.out) for j in jobs]
    assert [s["status"] for s in status] == ["finished", "failed", "finished"]
    assert status[1]["message"] == "OutOfMemoryError: CUDA out of memory (simulated)"
    assert status[1]["iterations_done"] == 5
    # the failed run keeps its last checkpoint (iteration 4), and the next sweep retries it from there
    assert torch.load(jobs[1].out / "checkpoint.pt", weights_only=False)["state"]["iteration"] == 4
    assert "s1: failed: OutOfMemoryError" in capsys.readouterr().err
    monkeypatch.undo()
    assert [s["status"] for s in run_sweep(jobs, data=cifar_data, progress=False)] == ["finished"] * 3


def test_an_interrupted_sweep_checkpoints_every_open_run(cifar_data, tmp_path, monkeypatch):
    jobs = [Job(tiny(seed=s, iterations=200, eval_every=100), tmp_path / f"s{s}") for s in range(2)]
    fail_for_seed(monkeypatch, 1, after=60, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train_in_turn(jobs, SweepOptions(device="cpu", at_once=2), cifar_data)
    for job in jobs:
        summary = records.summary_of(job.out)
        assert summary["status"] == "unfinished"
        saved = torch.load(job.out / "checkpoint.pt", weights_only=False)["state"]["iteration"]
        assert saved == summary["iterations_done"] >= 50
    for job in jobs:  # and their locks are released
        with records.RunLock(job.out):
            pass


def test_ended_runs_are_released_while_the_sweep_goes_on(cifar_data, tmp_path, monkeypatch):
    """A sweep of many runs must not keep every ended run's model, optimizer (and on CUDA graph pool)."""
    models: list[weakref.ref] = []
    alive_at_open: list[int] = []
    enter = engine.Run.__enter__

    def tracked_enter(run):
        gc.collect()
        alive_at_open.append(sum(ref() is not None for ref in models))
        enter(run)
        models.append(weakref.ref(run.state.model))
        return run

    monkeypatch.setattr(engine.Run, "__enter__", tracked_enter)
    jobs = [Job(tiny(seed=s, iterations=4), tmp_path / f"s{s}") for s in range(4)]
    train_in_turn(jobs, SweepOptions(device="cpu", at_once=1), cifar_data)
    assert [records.summary_of(j.out)["status"] for j in jobs] == ["finished"] * 4
    assert alive_at_open == [0, 0, 0, 0]


def test_runs_of_a_process_share_one_copy_of_the_data(cifar_data):
    a = engine.on_device(cifar_data, torch.device("cpu"))
    b = engine.on_device(cifar_data, torch.device("cpu"))
    assert all(x is y for x, y in zip(a, b))
    one = engine.RunData.prepare(tiny(), cifar_data, torch.device("cpu"), engine.Dist())
    assert one.loader.images.data_ptr() == a[0].data_ptr()  # the full training set is not copied per run


@pytest.mark.parametrize("recipe", ["paper", "tutorial"])
def test_a_checkpoint_from_another_device_keeps_this_devices_optimizer(cifar_data, tmp_path, recipe):
    """Optimizer.load_state_dict restores the saved flags: a checkpoint written by a CUDA run (fused,
    capturable, a tensor rate) resumed on the CPU must get the CPU's optimizer back, and still step."""
    cfg = (tutorial_config if recipe == "tutorial" else paper_config)("resnet20", batch_size=32)
    cpu = engine.RunState.new(cfg, torch.device("cpu"), 10)
    built = [{k: g.get(k) for k in engine.DEVICE_FLAGS} for g in cpu.optimizer.param_groups]
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(cpu.model(x), y).backward()
    cpu.optimizer.step()
    saved = cpu.to_checkpoint()
    for group in saved["optimizer"]["param_groups"]:  # what a CUDA run's checkpoint carries
        group.update(fused=True, foreach=None, capturable=True, lr=torch.tensor(0.05))
    resumed = engine.RunState.new(cfg, torch.device("cpu"), 10)
    resumed.load_checkpoint(saved)
    assert [{k: g.get(k) for k in engine.DEVICE_FLAGS} for g in resumed.optimizer.param_groups] == built
    torch.nn.functional.cross_entropy(resumed.model(x), y).backward()
    resumed.optimizer.step()  # a capturable Adam refuses CPU tensors here
    assert all(p.isfinite().all() for p in resumed.model.parameters())


def test_the_float32_control_turns_tf32_off_on_cuda():
    """cuDNN runs float32 convolutions in TF32 on Ampere and Hopper unless told not to."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with inference.autocast(torch.device("cuda"), "fp32"):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        with inference.autocast(torch.device("cpu"), "fp32"):
            assert torch.backends.cudnn.allow_tf32  # nothing to change on the CPU
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_a_compiled_sweep_never_falls_back_to_eager_quietly():
    net = engine.compiled(torch.nn.Linear(2, 2))
    config = torch._dynamo.config
    limit = getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 0))
    assert limit >= 128 and (getattr(config, "fail_on_recompile_limit_hit", False)
                             or getattr(config, "fail_on_cache_limit_hit", False))
    assert hasattr(net, "_orig_mod")


def test_the_last_line_after_a_deadline(cifar_data, tmp_path, capsys):
    jobs = [Job(tiny(seed=s), tmp_path / f"s{s}") for s in range(2)]
    run_sweep(jobs, data=cifar_data, progress=False, deadline=engine.Deadline(time.time() + 0.5))
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("sweep: 0 of 2 runs finished")

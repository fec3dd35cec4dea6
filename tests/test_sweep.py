"""Sweeps (resnet.sweep) on the CPU: processes, runs advanced in turn (the one-GPU driver) equal to runs
alone, finished and diverged runs skipped, a time limit that checkpoints and continues, a failing run
recorded while the others go on, an interrupted sweep that checkpoints its open runs, ended runs released;
and what makes a run portable between devices: each device's optimizer flags, TF32 off for float32, a
compiled network that never falls back to eager quietly."""

from __future__ import annotations

import gc
import json
import math
import time
import weakref

import pytest
import torch

from conftest import tiny
from resnet import inference, plan, records, sweep
from resnet import step as step_module
from resnet import train as engine
from resnet.config import Deadline, Execution, paper_config, tutorial_config
from resnet.distributed import Dist
from resnet.loader import DeviceData
from resnet.records import Job
from resnet.state import DEVICE_FLAGS, RunState
from resnet.sweep import run_sweep, train_in_turn

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = Execution(device="cpu", progress=False)



def weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=False)["model"]


def same_log(a, b) -> bool:
    from resnet.results import load_log
    return load_log(a).drop(columns="elapsed_s").equals(load_log(b).drop(columns="elapsed_s"))


def fail_for_seed(monkeypatch, seed: int, *, after: int, error: BaseException) -> None:
    """Make the runs of ``seed`` raise ``error`` as their iteration after ``after`` iterations begins."""
    set_rate = engine.Run.set_learning_rate

    def failing(run):
        if run.config.seed == seed and run.state.iteration >= after:
            raise error
        return set_rate(run)

    monkeypatch.setattr(engine.Run, "set_learning_rate", failing)


@pytest.mark.parametrize("in_turn", [True, False], ids=["in-turn", "one-after-another"])
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(cifar_data, tmp_path, capsys, monkeypatch,
                                                         in_turn):
    jobs = [Job(tiny(seed=s), tmp_path / f"s{s}") for s in range(3)]
    fail_for_seed(monkeypatch, 1, after=5, error=torch.OutOfMemoryError("CUDA out of memory (simulated)"))
    if in_turn:
        train_in_turn(jobs, QUIET.replace(at_once=2), cifar_data)
    else:
        run_sweep(jobs, QUIET, data=cifar_data)
    status = [records.RunFolder(j.out).report() for j in jobs]
    assert [s.status for s in status] == ["finished", "failed", "finished"]
    assert status[1].message == "OutOfMemoryError: CUDA out of memory (simulated)"
    assert status[1].iterations_done == 5
    # the failed run keeps its last checkpoint (iteration 4), and the next sweep retries it from there
    assert torch.load(jobs[1].out / "checkpoint.pt", weights_only=False)["state"]["iteration"] == 4
    assert "s1: failed: OutOfMemoryError" in capsys.readouterr().err
    monkeypatch.undo()
    assert [s.status for s in run_sweep(jobs, QUIET, data=cifar_data)] == ["finished"] * 3


@pytest.mark.slow
def test_an_interrupted_sweep_checkpoints_every_open_run(cifar_data, tmp_path, monkeypatch):
    """Ctrl-C during one run's turn: that run may be mid-iteration, so it keeps its last periodic
    checkpoint; every other open run is paused with a checkpoint of where it is."""
    jobs = [Job(tiny(seed=s, iterations=200, eval_every=50), tmp_path / f"s{s}") for s in range(2)]
    fail_for_seed(monkeypatch, 1, after=60, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train_in_turn(jobs, QUIET.replace(at_once=2), cifar_data)
    paused, interrupted = (records.RunFolder(j.out).report() for j in jobs)
    assert paused.status == "unfinished" and paused.iterations_done >= 50
    assert torch.load(jobs[0].out / "checkpoint.pt", weights_only=False)["state"]["iteration"] == \
        paused.iterations_done
    assert interrupted.status == "unfinished" and "interrupted" in interrupted.message
    assert torch.load(jobs[1].out / "checkpoint.pt", weights_only=False)["state"]["iteration"] == 50
    for job in jobs:  # and their locks are released
        with records.RunLock(job.out):
            pass


def test_ended_runs_are_released_while_the_sweep_goes_on(cifar_data, tmp_path, monkeypatch):
    """A sweep of many runs must not keep every ended run's model, optimizer (and on CUDA graph pool)."""
    models: list[weakref.ref] = []
    alive_at_open: list[int] = []
    build = engine.Run.__init__

    def tracked(run, *args, **kwargs):
        gc.collect()
        alive_at_open.append(sum(ref() is not None for ref in models))
        build(run, *args, **kwargs)
        models.append(weakref.ref(run.state.model))

    monkeypatch.setattr(engine.Run, "__init__", tracked)
    jobs = [Job(tiny(seed=s, iterations=4), tmp_path / f"s{s}") for s in range(4)]
    train_in_turn(jobs, QUIET.replace(at_once=1), cifar_data)
    assert [records.RunFolder(j.out).status for j in jobs] == ["finished"] * 4
    assert alive_at_open == [0, 0, 0, 0]


def test_runs_of_a_process_share_one_copy_of_the_data(cifar_data):
    a = cifar_data.on(torch.device("cpu"))
    b = cifar_data.on(torch.device("cpu"))
    assert all(x is y for x, y in zip(a, b))
    one = DeviceData.prepare(tiny(), cifar_data, torch.device("cpu"), Dist())
    assert one.loader.images.data_ptr() == a[0].data_ptr()  # the full training set is not copied per run


@pytest.mark.parametrize("recipe", ["paper", "tutorial"])
def test_a_checkpoint_from_another_device_keeps_this_devices_optimizer(cifar_data, tmp_path, recipe):
    """Optimizer.load_state_dict restores the saved flags: a checkpoint written by a CUDA run (fused,
    capturable, a tensor rate) resumed on the CPU must get the CPU's optimizer back, and still step."""
    cfg = (tutorial_config if recipe == "tutorial" else paper_config)("resnet20", batch_size=32)
    cpu = RunState.new(cfg, torch.device("cpu"), 10)
    built = [{k: g.get(k) for k in DEVICE_FLAGS} for g in cpu.optimizer.param_groups]
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(cpu.model(x), y).backward()
    cpu.optimizer.step()
    saved = cpu.to_checkpoint()
    for group in saved["optimizer"]["param_groups"]:  # what a CUDA run's checkpoint carries
        group.update(fused=True, foreach=None, capturable=True, lr=torch.tensor(0.05))
    resumed = RunState.new(cfg, torch.device("cpu"), 10)
    resumed.load_checkpoint(saved)
    assert [{k: g.get(k) for k in DEVICE_FLAGS} for g in resumed.optimizer.param_groups] == built
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
    net = step_module.compiled(torch.nn.Linear(2, 2))
    config = torch._dynamo.config
    limit = getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 0))
    assert limit >= 128 and (getattr(config, "fail_on_recompile_limit_hit", False)
                             or getattr(config, "fail_on_cache_limit_hit", False))
    assert hasattr(net, "_orig_mod")


def test_the_last_line_after_a_deadline(cifar_data, tmp_path, capsys):
    jobs = [Job(tiny(seed=s), tmp_path / f"s{s}") for s in range(2)]
    run_sweep(jobs, QUIET.replace(deadline=Deadline(time.time() + 0.5)), data=cifar_data)
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("sweep: 0 of 2 runs finished")


def test_sweep_runs_in_processes_and_skips_finished(cifar_root, tmp_path, capsys):
    jobs = [Job(tiny(seed=s), tmp_path / f"s{s}") for s in (0, 1)]
    summaries = run_sweep(jobs, QUIET.replace(at_once=2), data_dir=str(cifar_root))
    assert [s.status for s in summaries] == ["finished", "finished"]
    # two seeds, two runs: their initial weights differ, so do their weights at the end
    first, second = (torch.load(j.out / "model.pt", weights_only=False)["model"] for j in jobs)
    assert not torch.equal(first["conv1.weight"], second["conv1.weight"])
    stamps = [(j.out / "summary.json").stat().st_mtime_ns for j in jobs]
    assert run_sweep(jobs, QUIET.replace(at_once=2), data_dir=str(cifar_root)) == summaries
    assert [(j.out / "summary.json").stat().st_mtime_ns for j in jobs] == stamps
    assert capsys.readouterr().err.strip().splitlines()[-1] == "sweep: 2 of 2 runs finished"


@pytest.mark.slow
def test_sweep_time_limit_checkpoints_and_continues(cifar_data, tmp_path, capsys, monkeypatch, slow_steps):
    """A sweep that meets its deadline leaves every unfinished run checkpointed; the same sweep continues."""
    jobs = [Job(tiny(seed=s, iterations=40, eval_every=10), tmp_path / f"s{s}") for s in (0, 1)]
    clock = slow_steps(0.2)  # 40 iterations take 8 s
    # the first run starts, then has to pause (leaving 2 s and 3 iterations); the second never starts
    soon = clock.deadline(8.1)
    summaries = run_sweep(jobs, QUIET.replace(deadline=soon), data=cifar_data)
    assert clock.now < soon.at
    assert summaries[0].status == "unfinished" and summaries[1].status == "missing"
    paused_at = torch.load(jobs[0].out / "checkpoint.pt", weights_only=False)["state"]["iteration"]
    assert paused_at == summaries[0].iterations_done == 28  # 28 * 0.2 s + 2 s + 3 * 0.2 s > 8.1 s
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "sweep: 0 of 2 runs finished; running the same command again continues the unfinished ones"
    monkeypatch.undo()
    summaries = run_sweep(jobs, QUIET, data=cifar_data)
    assert [s.status for s in summaries] == ["finished", "finished"]


@pytest.mark.slow
def test_runs_advanced_in_turn_equal_runs_alone(cifar_data, tmp_path, capsys, slow_steps):
    """The one-GPU driver (several runs in one process, advanced in turn), here on the CPU: each run ends
    exactly as it does alone, and a deadline pauses the open runs with checkpoints."""
    jobs = [Job(tiny(seed=s, iterations=8, eval_every=4), tmp_path / "turns" / f"s{s}") for s in range(3)]
    train_in_turn(jobs, QUIET.replace(at_once=2), cifar_data)
    assert [records.RunFolder(j.out).status for j in jobs] == ["finished"] * 3
    engine.train(jobs[2].config, data=cifar_data, out=tmp_path / "alone", execution=QUIET)
    assert same_log(jobs[2].out, tmp_path / "alone")
    assert all(torch.equal(weights(jobs[2].out)[k], v) for k, v in weights(tmp_path / "alone").items())

    clock = slow_steps(0.2)
    late = [Job(tiny(seed=s, iterations=200, eval_every=50), tmp_path / "late" / f"s{s}") for s in range(2)]
    deadline = clock.deadline(13.1)
    train_in_turn(late, QUIET.replace(deadline=deadline), cifar_data)
    assert clock.now < deadline.at
    summary = records.RunFolder(late[0].out).report()
    assert summary.status == "unfinished" and summary.iterations_done == 53  # 53 * 0.2 + 2 + 3 * 0.2 > 13.1
    assert torch.load(late[0].out / "checkpoint.pt", weights_only=False)["state"]["iteration"] == \
        summary.iterations_done
    # the second could not have finished beside the first: it was never opened, and the next command has it
    assert records.RunFolder(late[1].out).status == "missing"
    assert capsys.readouterr().err.count("stopped by the time limit at iteration") == 1


@pytest.mark.slow
def test_under_a_time_limit_only_runs_that_can_finish_are_opened(cifar_data, tmp_path, capsys, monkeypatch,
                                                                slow_steps, opened_units):
    """A (short) opens first; once the pace is measured, C (shorter) fits beside it and B (far too long)
    does not; B opens when nothing else is open, and the time limit pauses it with a checkpoint. (In plan
    order B would have opened second and moved in turn with A, delaying A's end and shutting C out.)"""
    monkeypatch.setattr(sweep, "MEASURE_S", 1.0)
    monkeypatch.setattr(sweep, "CHUNK", 5)
    clock = slow_steps(0.2)  # A's 40 iterations take 8 s, C's 10 take 2 s, B's 100,000 take 20,000 s
    a, b, c = (Job(tiny(seed=s, iterations=n, eval_every=20), tmp_path / name)
               for s, n, name in ((0, 40, "a"), (1, 100_000, "b"), (2, 10, "c")))
    deadline = clock.deadline(21)  # B opens when A ends at 10 s (C beside it), more than 10 s before it
    train_in_turn([a, b, c], QUIET.replace(at_once=2, deadline=deadline), cifar_data)
    assert clock.now < deadline.at
    assert opened_units == [["a"], ["c"], ["b"]]  # a unit of sweep.groups: on the CPU one run each
    assert [records.RunFolder(j.out).status for j in (a, b, c)] == ["finished", "unfinished", "finished"]
    assert 0 < records.RunFolder(b.out).report().iterations_done < 100_000
    assert "b: unfinished: stopped by the time limit" in capsys.readouterr().err


@pytest.mark.slow
def test_a_cost_table_opens_the_part_of_a_group_that_can_finish(cifar_data, tmp_path, slow_steps,
                                                                monkeypatch, opened_units):
    """Four depth-20 runs (plain, A, C, A): all four would need 35.6 s of the 30 s left (24 s to plan with),
    so only plain and A open, as a group of two that finishes; C and the second A wait, and open together
    only once nothing else is open and nothing fits (to be paused with a checkpoint by the limit)."""
    schedule = dict(iterations=40, eval_every=20, milestones=(20,))
    configs = [tiny("plain20", **schedule), tiny(**schedule), tiny(shortcut="C", **schedule),
               tiny(seed=1, **schedule)]
    jobs = [Job(c, tmp_path / f"{c.arch}-{c.shortcut}-s{c.seed}") for c in configs]
    clock = slow_steps(0.2)  # 0.2 s per network and iteration; the table says 10 ms per layer
    costs = plan.Costs(per_layer=0.0, per_work=10.0)
    train_in_turn(jobs, QUIET.replace(group=4, deadline=clock.deadline(30), costs=costs), cifar_data)
    names = [job.out.name for job in jobs]
    assert opened_units == [names[:2], names[2:]]
    status = [records.RunFolder(j.out).status for j in jobs]
    assert status == ["finished", "finished", "unfinished", "unfinished"]


def test_a_later_horizon_opens_a_unit_that_the_next_command_finishes(cifar_data, tmp_path, slow_steps,
                                                                    monkeypatch, opened_units):
    """With only this command's 14 s to plan for, ResNet-20's 20 s do not fit and ResNet-32's 3 s do: the
    short unit opens first. Told that the machine's later commands continue to 30 s (finish_by), the long
    unit opens first, and the command's limit pauses it for the next command to finish."""
    def jobs(name):
        return [Job(tiny(iterations=20, eval_every=10, milestones=(10,)), tmp_path / name / "r20"),
                Job(tiny("resnet32", iterations=2, eval_every=1, milestones=(1,)), tmp_path / name / "r32")]

    costs = plan.Costs(per_layer=0.0, per_work=50.0)  # 1 s per ResNet-20 iteration, as the clock below
    clock = slow_steps(1.0)
    train_in_turn(jobs("this"), QUIET.replace(deadline=clock.deadline(14), costs=costs), cifar_data)
    assert opened_units == [["r32"], ["r20"]]
    opened_units.clear()
    clock = slow_steps(1.0)
    later = QUIET.replace(deadline=clock.deadline(14), finish_by=clock.deadline(30), costs=costs)
    train_in_turn(jobs("later"), later, cifar_data)
    assert opened_units == [["r20"]] and records.RunFolder(tmp_path / "later" / "r20").status == "unfinished"


def test_which_unit_opens_next():
    """resnet.plan.next_unit: a unit's seconds from ``estimate``; 10 s left at FIT_SHARE 0.8 is 8 s."""
    assert plan.FIT_SHARE == 0.8
    seconds = {"a": 6.0, "b": 4.0, "c": 1.0, "x": 100.0}

    def estimate(unit):  # a unit's runs add up
        return sum(seconds[name] for name in unit)

    def choose(candidates, open_seconds, left=10.0, anything_open=True):
        return plan.next_unit(candidates, estimate=estimate, open_seconds=open_seconds, seconds_left=left,
                              anything_open=anything_open)

    assert choose([], 0.0) is None
    assert choose([["x"], ["c"]], 100.0, left=math.inf) == ["x"]  # no limit: in order
    assert choose([["x"]], 0.0, anything_open=False) == ["x"]  # nothing open: the GPU never waits
    assert choose([["c"]], None) is None  # a second unit waits until the open ones can be estimated
    assert choose([["a"], ["b"], ["c"]], 3.0) == ["b"]  # the first that fits
    assert choose([["a"]], 3.0) is None
    assert choose([["a", "b", "c"]], 0.0) == ["a"]  # a group cut to the runs that fit: its first
    assert choose([["b", "c", "a"]], 0.0) == ["b", "c"]
    assert choose([["x", "c"], ["b"]], 0.0) == ["b"]  # a unit whose first run cannot fit waits whole
    assert choose([["x"], ["x"]], 0.0, anything_open=False) == ["x"]  # none fits: the first anyway


def test_a_cost_table_plans_groups_that_finish(tmp_path):
    """Costs fitted to measured rows (ms per group iteration = per_layer * depth + per_work * work) give
    the rows back, count projections (C one per block, B two), and a missing table is None."""
    rows = [{"depth": d, "work": d * k, "ms": 0.1 * d + 0.03 * d * k} for d, k in ((20, 4), (20, 8), (56, 4))]
    (tmp_path / "costs.json").write_text(json.dumps({"rows": rows, "overhead": 1.25, "device": "a GPU"}))
    costs = plan.Costs.load(tmp_path / "costs.json")
    assert costs.per_layer == pytest.approx(0.1) and costs.per_work == pytest.approx(0.03)
    assert costs.overhead == 1.25 and "a GPU" in costs.source
    assert plan.Costs.load(tmp_path / "missing.json") is None
    assert [plan.projections(paper_config(a, shortcut=o)) for a, o in
            (("plain56", "C"), ("resnet56", "A"), ("resnet56", "B"), ("resnet56", "C"))] == [0, 0, 2, 27]
    unit = [paper_config("resnet56", shortcut=o) for o in "ABC"]
    assert plan.group_work(unit) == 56 * 3 + 2 + 27
    assert costs.seconds(unit, 1000) == pytest.approx(1000 * (5.6 + 0.03 * 197) * 1.25 / 1000)


def test_a_runs_work_left_counts_what_an_earlier_command_did(tmp_path):
    job = Job(tiny(iterations=1000), tmp_path / "run")
    assert sweep._work_left(job) == 1000 * 20  # ResNet-20: 20 weighted layers an iteration
    job.folder.path.mkdir()
    job.folder.write_summary(records.Summary("unfinished", iterations_done=900, iterations_planned=1000))
    assert sweep._work_left(job) == 100 * 20
    assert sweep._work(paper_config("plain56"), 10) == 560


def test_the_pace_is_measured_over_the_recent_past():
    now = [0.0]
    pace = sweep.Pace(clock=lambda: now[0])
    now[0] = 5.0
    pace.add(100)
    assert pace.rate() is None  # less than MEASURE_S measured
    now[0] = 25.0
    pace.add(100)
    assert pace.rate() == pytest.approx(200 / 25)
    now[0] = 100.0
    pace.add(0)  # 75 s without work: the old samples leave the window, and the pace shows it
    assert pace.rate() == 0.0


def test_sweep_skips_a_diverged_run(cifar_data, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(engine.Diverged):
        engine.train(tiny(lr=1e12, iterations=20, eval_every=2), data=cifar_data, out=out, execution=QUIET)
    jobs = [Job(tiny(lr=1e12, iterations=20, eval_every=2), out)]
    assert run_sweep(jobs, QUIET, data=cifar_data)[0].status == "diverged"
    assert "diverged before, skipped" in capsys.readouterr().err

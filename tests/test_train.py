"""The training engine: the recipe at its edges, run records, exact resume (after kill -9 and after a time
limit), divergence, the run-folder lock, sweeps and DDP. GPU-only checks are in tests/test_gpu.py."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnet import records
from resnet import train as engine
from resnet.config import (ConfigError, RunConfig, learning_rate, paper_config, quick, scaled_schedule,
                           tutorial_config)
from resnet.sweep import Job, run_sweep

REPO = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, str(REPO / "experiments" / "train.py")]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    """A few iterations of ResNet-20 at batch 32: seconds on a CPU."""
    base = dict(iterations=6, milestones=(3,), eval_every=3, batch_size=32, test_subset=64)
    return paper_config("resnet20", **{**base, **overrides})


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=False)["model"]


def same_log(a: Path, b: Path) -> bool:
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]
    return strip(records.read_log_rows(a / "log.csv")) == strip(records.read_log_rows(b / "log.csv"))


# ---------------------------------------------------------------------------------------------- recipe
def test_paper_defaults():
    cfg = RunConfig()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) \
        == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert (cfg.iterations, cfg.milestones, cfg.eval_every, cfg.val_size) \
        == (64_000, (32_000, 48_000), 500, 0)
    assert (cfg.precision, cfg.depth) == ("bf16", 20)
    assert paper_config("resnet56").warmup_lr is None
    assert paper_config("resnet110").warmup_lr == 0.01
    assert paper_config("resnet1202").warmup_lr == 0.01
    assert paper_config("resnet152").warmup_lr is None  # the ImageNet family has no CIFAR warm-up


@pytest.mark.parametrize("it, lr", [(0, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01), (48_000, 0.001),
                                    (63_999, 0.001), (64_000, 0.001)])
def test_schedule_edges(it, lr):
    assert learning_rate(it, RunConfig()) == pytest.approx(lr)


def test_warmup_edges():
    cfg = paper_config("resnet110")
    assert learning_rate(0, cfg) == 0.01 and learning_rate(5000, cfg) == 0.01  # training error not yet < 80%
    assert learning_rate(399, cfg, warmup_end=400) == 0.01
    assert learning_rate(400, cfg, warmup_end=400) == pytest.approx(0.1)  # back to 0.1, then the schedule
    assert learning_rate(32_000, cfg, warmup_end=400) == pytest.approx(0.01)
    assert learning_rate(48_000, cfg, warmup_end=400) == pytest.approx(0.001)


def test_scaled_and_quick_schedules():
    assert scaled_schedule(64_000) == {"iterations": 64_000, "milestones": (32_000, 48_000)}
    assert scaled_schedule(200)["milestones"] == (100, 150)
    q = quick(paper_config("resnet56"))
    assert (q.iterations, q.milestones, q.train_subset) == (200, (100, 150), 10_000)
    assert quick(tutorial_config("resnet20")).val_size == 1_000
    with pytest.raises(ConfigError):
        scaled_schedule(0)


def test_tutorial_recipe():
    cfg = tutorial_config("resnet20")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.val_size, cfg.eval_every, cfg.patience,
            cfg.max_epochs) == ("adam", 1e-3, 1e-4, 5000, 50, 5, 50)
    assert learning_rate(10_000, cfg) == 1e-3


def test_config_is_frozen_and_validated():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    with pytest.raises(ConfigError, match="unknown config keys: lrr"):
        cfg.replace(lrr=0.2)
    with pytest.raises(ConfigError, match="iterations"):
        cfg.replace(iterations=-5)
    with pytest.raises(ConfigError, match="unknown arch"):
        RunConfig(arch="resnet21")
    with pytest.raises(ConfigError, match="precision"):
        cfg.replace(precision="fp16")
    with pytest.raises(ConfigError, match="validation split"):
        cfg.replace(patience=3)  # early stopping without a validation split would select on the test set
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_run_folder_names():
    root = Path("r")
    assert records.default_run_dir(tiny(), root=root) == root / "resnet20-A-paper-s0"
    assert records.default_run_dir(paper_config("plain56", seed=2), root=root) == root / "plain56-paper-s2"
    assert records.default_run_dir(tiny(precision="fp32"), root=root) == root / "resnet20-A-paper-s0-fp32"


# ---------------------------------------------------------------------------------------------- records
def test_short_run_writes_all_records(cifar_data, tmp_path):
    out = tmp_path / "run"
    summary = engine.train(tiny(), data=cifar_data, out=out, progress=False)
    assert {p.name for p in out.iterdir()} >= {"config.json", "log.csv", "summary.json", "checkpoint.pt",
                                               "model.pt"}
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"] == tiny().to_dict()
    assert saved["run"]["graph"] is False and saved["run"]["device"] == "cpu"
    rows = records.read_log_rows(out / "log.csv")
    assert [int(r["iteration"]) for r in rows] == [3, 6]
    assert float(rows[0]["lr"]) == pytest.approx(0.1) and float(rows[1]["lr"]) == pytest.approx(0.01)
    for r in rows:
        assert 0 <= float(r["train_error"]) <= 1 and 0 <= float(r["test_error"]) <= 1
        assert float(r["train_loss"]) > 0 and float(r["elapsed_s"]) > 0
    assert json.loads((out / "summary.json").read_text()) == summary
    for key in ("final_test_error", "iterations_done", "status", "parameters", "wall_time_s", "images_per_s",
                "device", "torch_version", "git_commit", "data_fingerprint", "data"):
        assert summary[key] not in (None, ""), key
    assert summary["status"] == "finished" and summary["iterations_done"] == 6
    assert summary["final_test_error"] == float(rows[-1]["test_error"])
    assert summary["parameters"] == 269_722 and summary["precision"] == "float32"
    assert (summary["data_fingerprint"], summary["data"]) == (cifar_data.fingerprint, cifar_data.name)
    assert not list(out.glob(".*tmp*")), "no temporary files are left behind"


def test_existing_run_is_not_overwritten(cifar_data, tmp_path):
    out = tmp_path / "run"
    engine.train(tiny(), data=cifar_data, out=out, progress=False)
    before = (out / "summary.json").read_bytes()
    with pytest.raises(records.RunFolderError, match="--resume"):
        engine.train(tiny(), data=cifar_data, out=out, progress=False)
    with pytest.raises(records.RunFolderError, match="another config"):
        engine.train(tiny(lr=0.05), data=cifar_data, out=out, progress=False, resume=True)
    assert (out / "summary.json").read_bytes() == before
    # resuming a finished run changes nothing
    assert engine.train(tiny(), data=cifar_data, out=out, progress=False, resume=True)["status"] == "finished"
    assert (out / "summary.json").read_bytes() == before


def test_training_learns(cifar_data, tmp_path):
    """On the learnable synthetic set, a short run clearly beats chance (90% error)."""
    cfg = tiny(iterations=60, milestones=(45,), eval_every=30, test_subset=None)
    summary = engine.train(cfg, data=cifar_data, out=tmp_path / "run", progress=False)
    rows = records.read_log_rows(tmp_path / "run" / "log.csv")
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert summary["final_test_error"] < 0.6


# ---------------------------------------------------------------------------------------------- resume
def test_pause_anywhere_and_resume_equals_uninterrupted(cifar_data, tmp_path):
    """A run paused between evaluations (as a time limit does) and resumed in a new Run ends with exactly
    the log and weights of an uninterrupted run: the checkpoint is the whole state."""
    cfg = tiny(iterations=12, milestones=(5,), eval_every=4)
    engine.train(cfg, data=cifar_data, out=tmp_path / "ref", progress=False)
    with engine.Run(cfg, data=cifar_data, out=tmp_path / "paused") as run:
        run.advance(7)
        assert run.pause()["status"] == "unfinished"
    assert records.summary_of(tmp_path / "paused")["iterations_done"] == 7
    summary = engine.train(cfg, data=cifar_data, out=tmp_path / "paused", progress=False, resume=True)
    assert summary["status"] == "finished" and summary["iterations_done"] == 12
    assert same_log(tmp_path / "paused", tmp_path / "ref")
    ref = weights(tmp_path / "ref")
    assert all(torch.equal(weights(tmp_path / "paused")[k], ref[k]) for k in ref)


def test_kill_and_resume_equals_uninterrupted(cifar_root, cifar_data, tmp_path):
    """kill -9 of the command line mid-run, then --resume, ends exactly where an uninterrupted run ends."""
    cfg = paper_config("resnet20", **scaled_schedule(20), eval_every=10, test_subset=100)
    engine.train(cfg, data=cifar_data, out=tmp_path / "ref", progress=False)
    out = tmp_path / "killed"
    args = ["--arch", "resnet20", "--iterations", 20, "--eval-every", 10, "--checkpoint-every", 4,
            "--out", out, "--data-dir", cifar_root, "--device", "cpu", "--no-progress",
            "--test-subset", 100, "--threads", 1]
    proc = subprocess.Popen([*TRAIN, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (out / "checkpoint.pt").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    killed_at = torch.load(out / "checkpoint.pt", weights_only=False)["state"]["iteration"]
    assert 0 < killed_at < 20

    # the kill left the lock file behind, but the kernel released the lock with the process
    engine.train(cfg, data=cifar_data, out=out, progress=False, resume=True, checkpoint_every=4)
    assert same_log(out, tmp_path / "ref")
    assert json.loads((out / "summary.json").read_text())["iterations_done"] == 20
    ref = weights(tmp_path / "ref")
    assert all(torch.equal(weights(out)[k], ref[k]) for k in ref), \
        "the resumed run ends with the same weights"


def test_time_limit_from_the_command_line(run_script, cifar_root, tmp_path, monkeypatch):
    """--time-limit ends the command cleanly (exit 0, checkpoint written, a last line that says how to
    continue); the same command with --resume continues."""
    # pretend this process started long ago, so that the limit is reached after a few iterations
    deadline = engine.Deadline(time.time() + 6)
    monkeypatch.setattr(engine.Deadline, "after", classmethod(lambda cls, s: deadline if s else cls(None)))
    slow_step = engine.TrainStep.__call__
    monkeypatch.setattr(engine.TrainStep, "__call__",
                        lambda self, x, y: (time.sleep(0.3), slow_step(self, x, y)))
    out = tmp_path / "run"
    args = ("--arch", "resnet20", "--iterations", 400, "--eval-every", 50, "--data-dir", cifar_root,
            "--device", "cpu", "--no-progress", "--test-subset", 64, "--out", out, "--time-limit", 60)
    result = run_script("train", *args)
    assert result.code == 0, result.err
    assert time.time() < deadline.at, "stopped before the deadline"
    last = result.err.strip().splitlines()[-1]
    assert "0 of 1 runs finished" in last and "--resume" in last
    summary = records.summary_of(out)
    assert summary["status"] == "unfinished" and 0 < summary["iterations_done"] < 400
    assert torch.load(out / "checkpoint.pt", weights_only=False)["state"]["iteration"] \
        == summary["iterations_done"]


def test_deadline():
    assert engine.Deadline.after(None).remaining() == float("inf")
    left = engine.Deadline.after(100).remaining()
    assert left == pytest.approx(100 - engine._process_age(), abs=1.0)  # from this process's start
    with pytest.raises(ConfigError, match="positive"):
        engine.Deadline.after(0)


# ---------------------------------------------------------------------------------------------- faults
def test_divergence_stops_and_keeps_last_good_checkpoint(cifar_data, tmp_path, monkeypatch):
    """Weights that become NaN with a finite loss (as a far too high rate can do) end the run as diverged."""
    step = engine.TrainStep.__call__

    def poisoned(self, x, y):
        step(self, x, y)
        if self.stats[0, 2] >= 5 * 32:  # after the 5th iteration since the last evaluation
            with torch.no_grad():
                next(self.net.parameters()).fill_(float("nan"))

    monkeypatch.setattr(engine.TrainStep, "__call__", poisoned)
    out = tmp_path / "run"
    with pytest.raises(engine.Diverged, match="non-finite"):
        engine.train(tiny(iterations=20, eval_every=10, ), data=cifar_data, out=out, progress=False,
                     checkpoint_every=2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite" in summary["message"]
    state = torch.load(out / "checkpoint.pt", weights_only=False)["state"]
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (out / "model.pt").exists()


def test_divergence_from_the_command_line(run_script, cifar_root, tmp_path):
    result = run_script("train", "--arch", "resnet20", "--iterations", 20, "--eval-every", 2, "--lr", "1e12",
                        "--data-dir", cifar_root, "--out", tmp_path / "run", "--no-progress",
                        "--device", "cpu", "--test-subset", 64)
    assert result.code == 3, result.err
    assert result.err.startswith("diverged:") and "Traceback" not in result.err
    assert records.summary_of(tmp_path / "run")["status"] == "diverged"


@pytest.mark.parametrize("args, needle", [
    (["--arch", "resnet21"], "unknown --arch"),
    (["--arch", "vgg16"], "unknown --arch"),
    (["--arch", "resnet20", "--iterations", "-5"], "iterations must be positive"),
    (["--arch", "resnet20", "--lr", "0"], "lr must be"),
    (["--arch", "resnet20", "--time-limit", "0"], "positive number of seconds"),
    (["--arch", "resnet20", "--time-limit", "soon"], "number of seconds"),
    (["--arch", "resnet20", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
])
def test_bad_arguments_get_a_clear_message(run_script, args, needle, tmp_path):
    result = run_script("train", *args, "--out", tmp_path / "run", "--no-progress", "--device", "cpu")
    assert result.code == 2
    assert needle in result.message and "Traceback" not in result.err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu(run_script, cifar_root, tmp_path):
    result = run_script("train", "--arch", "resnet20", "--device", "cuda", "--data-dir", cifar_root,
                        "--out", tmp_path / "run")
    assert result.code == 2 and "no CUDA GPU" in result.message and not (tmp_path / "run").exists()


def test_command_line_smoke(cifar_root, tmp_path):
    """One real process: --help, then a bad argument (exit 2, one paragraph, no traceback)."""
    assert "--time-limit" in subprocess.run([*TRAIN, "--help"], capture_output=True, text=True).stdout
    res = subprocess.run([*TRAIN, "--arch", "resnet21"], capture_output=True, text=True, timeout=120)
    assert (res.returncode == 2 and res.stderr.startswith("error: unknown --arch")
            and "Traceback" not in res.stderr)


# ---------------------------------------------------------------------------------------------- the lock
def test_a_run_held_by_another_process_is_left_alone(cifar_data, tmp_path, capsys):
    out = tmp_path / "run"
    with records.RunLock(out):  # as if another process were training it
        with pytest.raises(records.RunFolderError, match=f"process {os.getpid()}"):
            engine.train(tiny(), data=cifar_data, out=out, progress=False)
        summaries = run_sweep([Job(tiny(), out)], data=cifar_data, progress=False)
        assert summaries[0]["status"] == "missing"
        err = capsys.readouterr().err
        assert f"process {os.getpid()}" in err and "left alone" in err
        assert err.strip().splitlines()[-1].startswith("sweep: 0 of 1 runs finished")
    assert not (out / "summary.json").exists() and not (out / "checkpoint.pt").exists()
    # lock released
    assert engine.train(tiny(), data=cifar_data, out=out, progress=False)["status"] == "finished"


# ---------------------------------------------------------------------------------------------- recipes
def test_tutorial_recipe_selects_on_validation(cifar_data, tmp_path):
    cfg = tutorial_config("resnet20", iterations=40, eval_every=4, val_size=200, batch_size=32, patience=2,
                          test_subset=64)
    summary = engine.train(cfg, data=cifar_data, out=tmp_path / "run", progress=False)
    rows = records.read_log_rows(tmp_path / "run" / "log.csv")
    vals = [float(r["val_error"]) for r in rows]
    best = min(range(len(vals)), key=lambda i: (vals[i], i))
    assert summary["selection"] == "validation"
    assert summary["selected_iteration"] == int(rows[best]["iteration"])
    assert summary["final_test_error"] == pytest.approx(float(rows[best]["test_error"]))
    # stopped exactly when more than `patience` checks in a row had not improved (or at the end)
    assert len(rows) - 1 - best <= cfg.patience + 1
    if summary["iterations_done"] < 40:
        assert len(rows) - 1 - best == cfg.patience + 1


def test_warmup_ends_when_training_error_falls(cifar_data, tmp_path):
    cfg = tiny(iterations=40, eval_every=10, milestones=(30,), warmup_lr=0.01, warmup_check_every=5,
               warmup_until_train_error=0.95)
    summary = engine.train(cfg, data=cifar_data, out=tmp_path / "run", progress=False)
    end = summary["warmup_end"]
    assert end is not None and end % 5 == 0 and end <= 40
    for r in records.read_log_rows(tmp_path / "run" / "log.csv"):
        assert float(r["lr"]) == pytest.approx(learning_rate(int(r["iteration"]) - 1, cfg, warmup_end=end))


# ---------------------------------------------------------------------------------------------- sweeps
def test_sweep_runs_in_processes_and_skips_finished(cifar_root, tmp_path, capsys):
    jobs = [Job(tiny(seed=s), tmp_path / f"s{s}") for s in (0, 1)]
    summaries = run_sweep(jobs, at_once=2, data_dir=str(cifar_root), progress=False)
    assert [s["status"] for s in summaries] == ["finished", "finished"]
    assert summaries[0]["final_train_error"] != summaries[1]["final_train_error"] or \
        summaries[0]["final_test_error"] != summaries[1]["final_test_error"]
    stamps = [(j.out / "summary.json").stat().st_mtime_ns for j in jobs]
    assert run_sweep(jobs, at_once=2, data_dir=str(cifar_root), progress=False) == summaries
    assert [(j.out / "summary.json").stat().st_mtime_ns for j in jobs] == stamps
    assert capsys.readouterr().err.strip().splitlines()[-1] == "sweep: 2 of 2 runs finished"


def test_sweep_time_limit_checkpoints_and_continues(cifar_data, tmp_path, capsys, monkeypatch):
    """A sweep that meets its deadline leaves every unfinished run checkpointed; the same sweep continues."""
    jobs = [Job(tiny(seed=s, iterations=40, eval_every=10), tmp_path / f"s{s}") for s in (0, 1)]
    step = engine.TrainStep.__call__
    monkeypatch.setattr(engine.TrainStep, "__call__", lambda self, x, y: (time.sleep(0.2), step(self, x, y)))
    # the first run starts, then has to pause; the second never starts
    soon = engine.Deadline(time.time() + 8)
    summaries = run_sweep(jobs, data=cifar_data, progress=False, deadline=soon)
    assert time.time() < soon.at
    assert summaries[0]["status"] == "unfinished" and summaries[1]["status"] == "missing"
    paused_at = torch.load(jobs[0].out / "checkpoint.pt", weights_only=False)["state"]["iteration"]
    assert 0 < paused_at == summaries[0]["iterations_done"] < 40
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "sweep: 0 of 2 runs finished; running the same command again continues the unfinished ones"
    monkeypatch.undo()
    summaries = run_sweep(jobs, data=cifar_data, progress=False)
    assert [s["status"] for s in summaries] == ["finished", "finished"]


def test_runs_advanced_in_turn_equal_runs_alone(cifar_data, tmp_path, capsys, monkeypatch):
    """The one-GPU driver (several runs in one process, advanced in turn), here on the CPU: each run ends
    exactly as it does alone, and a deadline pauses the open runs with checkpoints."""
    from resnet.sweep import SweepOptions, train_in_turn
    jobs = [Job(tiny(seed=s, iterations=8, eval_every=4), tmp_path / "turns" / f"s{s}") for s in range(3)]
    train_in_turn(jobs, SweepOptions(device="cpu", at_once=2), cifar_data)
    assert [records.summary_of(j.out)["status"] for j in jobs] == ["finished"] * 3
    engine.train(jobs[2].config, data=cifar_data, out=tmp_path / "alone", progress=False)
    assert same_log(jobs[2].out, tmp_path / "alone")
    assert all(torch.equal(weights(jobs[2].out)[k], v) for k, v in weights(tmp_path / "alone").items())

    step = engine.TrainStep.__call__
    monkeypatch.setattr(engine.TrainStep, "__call__", lambda self, x, y: (time.sleep(0.2), step(self, x, y)))
    late = [Job(tiny(seed=s, iterations=200, eval_every=50), tmp_path / "late" / f"s{s}") for s in range(2)]
    deadline = engine.Deadline(time.time() + 13)
    train_in_turn(late, SweepOptions(device="cpu", deadline=deadline), cifar_data)
    assert time.time() < deadline.at
    for job in late:
        summary = records.summary_of(job.out)
        assert summary["status"] == "unfinished" and 0 < summary["iterations_done"] < 200
        assert torch.load(job.out / "checkpoint.pt", weights_only=False)["state"]["iteration"] == \
            summary["iterations_done"]
    assert capsys.readouterr().err.count("stopped by the time limit at iteration") == 2


def test_sweep_skips_a_diverged_run(cifar_data, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(engine.Diverged):
        engine.train(tiny(lr=1e12, iterations=20, eval_every=2), data=cifar_data, out=out, progress=False)
    assert run_sweep([Job(tiny(lr=1e12, iterations=20, eval_every=2), out)], data=cifar_data)[0]["status"] \
        == "diverged"
    assert "diverged before, skipped" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    from resnet.distributed import Dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist = Dist(rank=rank, world_size=world, local_rank=rank)
    with engine.Run(tiny(iterations=4, eval_every=2), data=engine.load_data(root), out=out, device="cpu",
                    dist=dist) as run:
        run.advance(10)
        run.finish()
        torch.save(run.state.model.state_dict(), Path(out) / f"rank{rank}.weights")
    dist.close()


def _ddp_deadline_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    from resnet.distributed import Dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist = Dist(rank=rank, world_size=world, local_rank=rank)
    with engine.Run(tiny(iterations=40, eval_every=20), data=engine.load_data(root), out=out, device="cpu",
                    dist=dist) as run:
        run.advance(12)  # iteration 12; the next joint decision falls at iteration 20
        # rank 1's time is up, rank 0's is not: alone, rank 1 would stop and rank 0 would wait forever
        late = engine.Deadline(time.time() - 1) if rank == 1 else engine.Deadline()
        trained = run.advance(28, deadline=late)
        (Path(out) / f"rank{rank}.stopped").write_text(f"{run.state.iteration} {trained}")
        run.pause()
    dist.close()


def test_data_parallel_processes_stop_for_a_deadline_together(cifar_root, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_deadline_worker, args=(2, port, str(cifar_root), str(tmp_path)),
                                nprocs=2)
    stopped = [(tmp_path / f"rank{r}.stopped").read_text() for r in (0, 1)]
    assert stopped == ["20 8", "20 8"]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "unfinished"


def test_two_gloo_processes_agree_on_weights(cifar_root, cifar_data, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(cifar_root), str(tmp_path)), nprocs=2)
    w0, w1 = torch.load(tmp_path / "rank0.weights"), torch.load(tmp_path / "rank1.weights")
    # BN running statistics are each process's own (as on the paper's two GPUs); the weights are shared
    params = [k for k in w0 if "running_" not in k and "num_batches" not in k]
    for k in params:
        assert torch.allclose(w0[k], w1[k], atol=1e-6), k
    with engine.Run(tiny(), data=cifar_data, out=tmp_path / "init", device="cpu") as run:
        init = run.state.model.state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in params), "the processes trained"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"

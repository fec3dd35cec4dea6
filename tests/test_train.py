"""The training engine: the schedule at its edges, run records, kill-and-resume, divergence, sweeps, DDP."""

from __future__ import annotations

import csv
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

from resnet import data as cifar
from resnet import train as engine

REPO = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, str(REPO / "experiments" / "train.py")]


def tiny(**overrides):
    """A few iterations of ResNet-20 at batch 32: seconds on a CPU."""
    base = dict(iterations=6, milestones=(3,), eval_every=3, batch_size=32)
    return engine.paper_config("resnet20", **{**base, **overrides})


def run_cli(*args, timeout=240):
    return subprocess.run([*TRAIN, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def read_log(out: Path) -> list[dict[str, str]]:
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- recipe
def test_paper_defaults():
    cfg = engine.RunConfig()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert (cfg.iterations, cfg.milestones, cfg.eval_every, cfg.val_size) == (64_000, (32_000, 48_000), 500, 0)
    assert engine.paper_config("resnet56").warmup_lr is None
    assert engine.paper_config("resnet110").warmup_lr == 0.01
    assert engine.paper_config("resnet1202").warmup_lr == 0.01
    assert engine.paper_config("resnet152").warmup_lr is None  # the ImageNet family has no CIFAR warm-up


@pytest.mark.parametrize("it, lr", [(0, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01), (48_000, 0.001),
                                    (63_999, 0.001), (64_000, 0.001)])
def test_schedule_edges(it, lr):
    assert engine.learning_rate(it, engine.RunConfig()) == pytest.approx(lr)


def test_warmup_edges():
    cfg = engine.paper_config("resnet110")
    lr = engine.learning_rate
    assert lr(0, cfg) == 0.01 and lr(5000, cfg) == 0.01  # still warming up: training error not yet below 80%
    assert lr(399, cfg, warmup_end=400) == 0.01
    assert lr(400, cfg, warmup_end=400) == pytest.approx(0.1)  # back to 0.1, then the normal schedule
    assert lr(32_000, cfg, warmup_end=400) == pytest.approx(0.01)
    assert lr(48_000, cfg, warmup_end=400) == pytest.approx(0.001)


def test_tutorial_recipe():
    cfg = engine.tutorial_config("resnet20")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.val_size, cfg.eval_every, cfg.patience, cfg.max_epochs) \
        == ("adam", 1e-3, 1e-4, 5000, 50, 5, 50)
    assert engine.learning_rate(10_000, cfg) == 1e-3


def test_config_is_frozen_and_validated():
    cfg = engine.RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    with pytest.raises(engine.ConfigError, match="unknown config keys: lrr"):
        cfg.replace(lrr=0.2)
    with pytest.raises(engine.ConfigError, match="iterations"):
        cfg.replace(iterations=-5)
    with pytest.raises(engine.ConfigError, match="unknown arch"):
        engine.RunConfig(arch="resnet21")
    with pytest.raises(engine.ConfigError, match="validation split"):
        cfg.replace(patience=3)  # early stopping without a validation split would select on the test set
    assert engine.RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ---------------------------------------------------------------------------------------------- records
def test_short_run_writes_all_records(cifar_root, tmp_path):
    out = tmp_path / "run"
    summary = engine.train(tiny(), data_dir=cifar_root, out=out, progress=False)
    assert {p.name for p in out.iterdir()} >= {"config.json", "log.csv", "summary.json", "checkpoint.pt", "model.pt"}
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"] == tiny().to_dict()
    rows = read_log(out)
    assert [int(r["iteration"]) for r in rows] == [3, 6]
    assert set(engine.LOG_FIELDS) <= set(rows[0])
    assert float(rows[0]["lr"]) == pytest.approx(0.1) and float(rows[1]["lr"]) == pytest.approx(0.01)
    for r in rows:
        assert 0 <= float(r["train_error"]) <= 1 and 0 <= float(r["test_error"]) <= 1
        assert float(r["train_loss"]) > 0 and float(r["elapsed_s"]) > 0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    for key in ("final_test_error", "iterations_done", "status", "parameters", "wall_time_s", "images_per_s",
                "device", "torch_version", "git_commit", "data_fingerprint"):
        assert summary[key] not in (None, ""), key
    assert summary["status"] == "finished" and summary["iterations_done"] == 6
    assert summary["final_test_error"] == float(rows[-1]["test_error"])
    assert summary["parameters"] == 269_722
    assert summary["data_fingerprint"] == cifar.load_cifar10(cifar_root).fingerprint
    assert not list(out.glob(".*tmp*")), "no temporary files are left behind"


def test_existing_run_is_not_overwritten(cifar_root, tmp_path):
    out = tmp_path / "run"
    engine.train(tiny(), data_dir=cifar_root, out=out, progress=False)
    before = (out / "summary.json").read_bytes()
    with pytest.raises(engine.RunFolderError, match="--resume"):
        engine.train(tiny(), data_dir=cifar_root, out=out, progress=False)
    with pytest.raises(engine.RunFolderError, match="another config"):
        engine.train(tiny(lr=0.05), data_dir=cifar_root, out=out, progress=False, resume=True)
    assert (out / "summary.json").read_bytes() == before
    # resuming a finished run changes nothing
    assert engine.train(tiny(), data_dir=cifar_root, out=out, progress=False, resume=True)["status"] == "finished"
    assert (out / "summary.json").read_bytes() == before


def test_training_learns(cifar_root, tmp_path):
    """On the learnable synthetic set, a short run clearly beats chance (90% error)."""
    cfg = tiny(iterations=60, milestones=(45,), eval_every=30)
    summary = engine.train(cfg, data_dir=cifar_root, out=tmp_path / "run", progress=False)
    rows = read_log(tmp_path / "run")
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert summary["final_test_error"] < 0.6


# ---------------------------------------------------------------------------------------------- faults
def test_kill_and_resume_equals_uninterrupted(cifar_root, tmp_path):
    args = ["--arch", "resnet20", "--iterations", 30, "--eval-every", 10, "--checkpoint-every", 5,
            "--data-dir", cifar_root, "--device", "cpu", "--no-progress", "--test-subset", 100]
    ref = run_cli(*args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([*TRAIN, *map(str, args), "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoint.pt").exists():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    killed_at = torch.load(out / "checkpoint.pt", weights_only=False)["iteration"]
    assert 0 < killed_at < 30

    resumed = run_cli(*args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]
    assert strip(read_log(out)) == strip(read_log(tmp_path / "ref"))
    a = json.loads((out / "summary.json").read_text())
    b = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert a["final_test_error"] == b["final_test_error"] and a["iterations_done"] == 30
    wa = torch.load(out / "model.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "ref" / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wb), "the resumed run ends with exactly the same weights"


class _PoisonedTrainer(engine.Trainer):
    """Makes the weights NaN after the 5th step, as a learning rate far too high would."""

    def _step(self, x, y, lr):
        super()._step(x, y, lr)
        if self.iteration == 4:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))


def test_divergence_stops_and_keeps_last_good_checkpoint(cifar_root, tmp_path):
    out = tmp_path / "run"
    trainer = _PoisonedTrainer(tiny(iterations=20, eval_every=2), data_dir=cifar_root, out=out, progress=False)
    with pytest.raises(engine.Diverged, match="non-finite"):
        trainer.run()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite" in summary["message"]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (out / "model.pt").exists()


def test_divergence_from_the_command_line(cifar_root, tmp_path):
    res = run_cli("--arch", "resnet20", "--iterations", 20, "--eval-every", 2, "--lr", "1e12", "--data-dir",
                  cifar_root, "--out", tmp_path / "run", "--no-progress", "--device", "cpu")
    assert res.returncode == 3, res.stderr
    assert "diverged" in res.stderr and "Traceback" not in res.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("args, needle", [
    (["--arch", "resnet21"], "unknown --arch"),
    (["--arch", "vgg16"], "unknown --arch"),
    (["--arch", "resnet20", "--iterations", "-5"], "iterations"),
    (["--arch", "resnet20", "--lr", "0"], "lr must be"),
    (["--arch", "resnet20", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
])
def test_bad_arguments_get_a_clear_message(args, needle, tmp_path):
    res = run_cli(*args, "--out", tmp_path / "run", "--no-progress")
    assert res.returncode == 2
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


def test_cli_help():
    res = run_cli("--help")
    assert res.returncode == 0 and "--resume" in res.stdout and "plain110" in res.stdout


# ---------------------------------------------------------------------------------------------- recipes
def test_tutorial_recipe_selects_on_validation(cifar_root, tmp_path):
    cfg = engine.tutorial_config("resnet20", iterations=40, eval_every=4, val_size=200, batch_size=32, patience=2)
    summary = engine.train(cfg, data_dir=cifar_root, out=tmp_path / "run", progress=False)
    rows = read_log(tmp_path / "run")
    vals = [float(r["val_error"]) for r in rows]
    best = min(range(len(vals)), key=lambda i: (vals[i], i))
    assert summary["selection"] == "validation"
    assert summary["selected_iteration"] == int(rows[best]["iteration"])
    assert summary["final_test_error"] == pytest.approx(float(rows[best]["test_error"]))
    # stopped exactly when more than `patience` checks in a row had not improved (or at the end)
    assert len(rows) - 1 - best <= cfg.patience + 1
    if summary["iterations_done"] < 40:
        assert len(rows) - 1 - best == cfg.patience + 1


def test_warmup_ends_when_training_error_falls(cifar_root, tmp_path):
    cfg = tiny(iterations=40, eval_every=10, milestones=(30,), warmup_lr=0.01, warmup_check_every=5,
               warmup_until_train_error=0.95)
    summary = engine.train(cfg, data_dir=cifar_root, out=tmp_path / "run", progress=False)
    end = summary["warmup_end"]
    assert end is not None and end % 5 == 0 and end <= 40
    rows = read_log(tmp_path / "run")
    for r in rows:
        it = int(r["iteration"]) - 1
        assert float(r["lr"]) == pytest.approx(engine.learning_rate(it, cfg, warmup_end=end))


# ---------------------------------------------------------------------------------------------- sweeps
def test_sweep_runs_in_processes_and_skips_finished(cifar_root, tmp_path):
    jobs = [engine.Job(tiny(seed=s), tmp_path / f"s{s}") for s in (0, 1)]
    summaries = engine.run_sweep(jobs, n_jobs=2, data_dir=str(cifar_root), progress=False)
    assert [s["status"] for s in summaries] == ["finished", "finished"]
    assert summaries[0]["final_test_error"] != summaries[1]["final_test_error"] or \
        summaries[0]["final_train_error"] != summaries[1]["final_train_error"]
    stamps = [(j.out / "summary.json").stat().st_mtime_ns for j in jobs]
    again = engine.run_sweep(jobs, n_jobs=2, data_dir=str(cifar_root), progress=False)
    assert again == summaries
    assert [(j.out / "summary.json").stat().st_mtime_ns for j in jobs] == stamps


# ---------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = engine.Trainer(tiny(iterations=4, eval_every=2), data_dir=root, out=out, device="cpu",
                             progress=False)
    trainer.run()
    torch.save(trainer.model.state_dict(), Path(out) / f"rank{rank}.weights")
    import torch.distributed as dist
    dist.destroy_process_group()


def test_two_gloo_processes_agree_on_weights(cifar_root, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(cifar_root), str(tmp_path)), nprocs=2)
    w0 = torch.load(tmp_path / "rank0.weights")
    w1 = torch.load(tmp_path / "rank1.weights")
    assert w0.keys() == w1.keys()
    # BN running statistics are each process's own (as on the paper's two GPUs); the weights are shared
    params = [k for k in w0 if "running_" not in k and "num_batches" not in k]
    for k in params:
        assert torch.allclose(w0[k], w1[k], atol=1e-6), k
    init = engine.Trainer(tiny(), data_dir=cifar_root, out=tmp_path / "init", device="cpu").model.state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in params), "the processes trained"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"

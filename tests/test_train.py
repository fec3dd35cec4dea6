"""The training engine (resnet.train, resnet.state, resnet.step): run records, learning, exact resume (after
kill -9 and after a time limit), divergence, bad arguments, the run-folder lock, the tutorial recipe's early
stopping, the warm-up, and data parallelism (two gloo processes). GPU-only checks are in tests/test_gpu.py."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny
from resnet import records
from resnet import state as state_module
from resnet import step as step_module
from resnet import train as engine
from resnet.cifar10 import load_data
from resnet.config import Deadline, Execution, learning_rate, paper_config, scaled_schedule, tutorial_config
from resnet.records import RunFolder
from resnet.records import Job
from resnet.sweep import run_sweep

REPO = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, str(REPO / "experiments" / "train.py")]
QUIET = Execution(device="cpu", progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")



def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=False)["model"]


def log_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def same_log(a: Path, b: Path) -> bool:
    def strip(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]
    return strip(log_rows(a)) == strip(log_rows(b))


# ---------------------------------------------------------------------------------------------- records
def test_short_run_writes_all_records(cifar_data, tmp_path):
    out = tmp_path / "run"
    summary = engine.train(tiny(), data=cifar_data, out=out, execution=QUIET)
    assert {p.name for p in out.iterdir()} >= {"config.json", "log.csv", "summary.json", "checkpoint.pt",
                                               "model.pt"}
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"] == tiny().to_dict()
    assert saved["run"]["graph"] is False and saved["run"]["device"] == "cpu"
    assert saved["run"]["cudnn_benchmark"] is False  # cuDNN's algorithm search is a CUDA setting
    rows = log_rows(out)
    assert [int(r["iteration"]) for r in rows] == [4, 8]
    assert float(rows[0]["lr"]) == pytest.approx(0.1) and float(rows[1]["lr"]) == pytest.approx(0.01)
    for r in rows:
        assert 0 <= float(r["train_error"]) <= 1 and 0 <= float(r["test_error"]) <= 1
        assert float(r["train_loss"]) > 0 and float(r["elapsed_s"]) > 0
    assert RunFolder(out).summary() == summary
    for key in ("final_test_error", "iterations_done", "status", "parameters", "wall_time_s", "images_per_s",
                "ms_per_iteration", "device", "torch_version", "git_commit", "code_fingerprint",
                "data_fingerprint", "data"):
        assert getattr(summary, key) not in (None, ""), key
    assert summary.status == "finished" and summary.iterations_done == 8
    assert summary.final_test_error == float(rows[-1]["test_error"])
    assert summary.parameters == 269_722 and summary.precision == "float32"
    assert (summary.data_fingerprint, summary.data) == (cifar_data.fingerprint, cifar_data.name)
    assert not list(out.glob(".*tmp*")), "no temporary files are left behind"


def test_existing_run_is_not_overwritten(cifar_data, tmp_path):
    out = tmp_path / "run"
    engine.train(tiny(), data=cifar_data, out=out, execution=QUIET)
    before = (out / "summary.json").read_bytes()
    with pytest.raises(records.RunFolderError, match="--resume"):
        engine.train(tiny(), data=cifar_data, out=out, execution=QUIET)
    with pytest.raises(records.RunFolderError, match="another config"):
        engine.train(tiny(lr=0.05), data=cifar_data, out=out, execution=QUIET, resume=True)
    assert (out / "summary.json").read_bytes() == before
    # resuming a finished run changes nothing
    assert engine.train(tiny(), data=cifar_data, out=out, execution=QUIET, resume=True).status == "finished"
    assert (out / "summary.json").read_bytes() == before


@pytest.mark.slow
@pytest.mark.margins
def test_training_learns(cifar_data, tmp_path, margin):
    """On the learnable synthetic set, a short run clearly beats chance (90% test error, a loss of ln 10 =
    2.30). Batch 32: at batch 8 the rate of 0.1 makes 60 steps chaotic enough that one CPU's rounding ended
    at 60% test error and another's at 38% (docs/tests-and-benchmarks.md tabulates the margins)."""
    cfg = tiny(iterations=60, milestones=(45,), eval_every=30, batch_size=32, test_subset=None)
    summary = engine.train(cfg, data=cifar_data, out=tmp_path / "run", execution=QUIET)
    rows = log_rows(tmp_path / "run")
    margin("final test error", summary.final_test_error, "<", 0.5)
    margin("last row's training loss", float(rows[-1]["train_loss"]), "<", 1.5)


# ---------------------------------------------------------------------------------------------- resume
def test_pause_anywhere_and_resume_equals_uninterrupted(cifar_data, tmp_path):
    """A run paused between evaluations (as a time limit does) and resumed in a new Run ends with exactly
    the log and weights of an uninterrupted run: the checkpoint is the whole state."""
    cfg = tiny(iterations=12, milestones=(5,), eval_every=4)
    engine.train(cfg, data=cifar_data, out=tmp_path / "ref", execution=QUIET)
    with engine.Run(cfg, data=cifar_data, out=tmp_path / "paused", execution=QUIET) as run:
        run.advance(7)
        assert run.pause().status == "unfinished"
    assert records.RunFolder(tmp_path / "paused").report().iterations_done == 7
    summary = engine.train(cfg, data=cifar_data, out=tmp_path / "paused", execution=QUIET, resume=True)
    assert summary.status == "finished" and summary.iterations_done == 12
    assert same_log(tmp_path / "paused", tmp_path / "ref")
    ref = weights(tmp_path / "ref")
    assert all(torch.equal(weights(tmp_path / "paused")[k], ref[k]) for k in ref)


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(cifar_root, cifar_data, tmp_path):
    """kill -9 of the command line mid-run, then --resume, ends exactly where an uninterrupted run ends."""
    # the command line's --iterations 20 is a schedule of its own (resnet.config.RunConfig.schedule)
    cfg = paper_config("resnet20", **scaled_schedule(20), eval_every=10, batch_size=32, test_subset=100,
                       schedule="custom")
    engine.train(cfg, data=cifar_data, out=tmp_path / "ref", execution=QUIET)
    out = tmp_path / "killed"
    args = ["--arch", "resnet20", "--iterations", 20, "--eval-every", 10, "--checkpoint-every", 4,
            "--batch-size", 32, "--out", out, "--data-dir", cifar_root, "--device", "cpu", "--no-progress",
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
    engine.train(cfg, data=cifar_data, out=out, execution=QUIET.replace(checkpoint_every=4), resume=True)
    assert same_log(out, tmp_path / "ref")
    assert json.loads((out / "summary.json").read_text())["iterations_done"] == 20
    ref = weights(tmp_path / "ref")
    assert all(torch.equal(weights(out)[k], ref[k]) for k in ref), \
        "the resumed run ends with the same weights"


def test_time_limit_from_the_command_line(run_script, cifar_root, tmp_path, monkeypatch, slow_steps):
    """--time-limit ends the command cleanly (exit 0, checkpoint written, a last line that says how to
    continue); the same command with --resume continues."""
    clock = slow_steps(0.3)  # the limit is reached after a few iterations, on every machine
    deadline = clock.deadline(6)
    monkeypatch.setattr(Deadline, "after", classmethod(lambda cls, s: deadline if s else cls(None)))
    out = tmp_path / "run"
    args = ("--arch", "resnet20", "--iterations", 400, "--eval-every", 50, "--batch-size", 32, "--data-dir",
            cifar_root, "--device", "cpu", "--no-progress", "--test-subset", 64, "--out", out,
            "--time-limit", 60)
    result = run_script("train", *args)
    assert result.code == 0, result.err
    assert clock.now < deadline.at, "stopped before the deadline"
    last = result.err.strip().splitlines()[-1]
    assert "0 of 1 runs finished" in last and "--resume" in last
    summary = records.RunFolder(out).report()
    assert summary.status == "unfinished" and summary.iterations_done == 11  # 11 * 0.3 + 2 + 3 * 0.3 > 6
    assert torch.load(out / "checkpoint.pt", weights_only=False)["state"]["iteration"] \
        == summary.iterations_done


# ---------------------------------------------------------------------------------------------- faults
def test_divergence_stops_and_keeps_last_good_checkpoint(cifar_data, tmp_path, monkeypatch):
    """Weights that become NaN with a finite loss (as a far too high rate can do) end the run as diverged."""
    step = step_module.TrainStep.__call__
    cfg = tiny(iterations=20, eval_every=10)

    def poisoned(self, x, y):
        step(self, x, y)
        if self.stats[0, 2] >= 5 * cfg.batch_size:  # after the 5th iteration since the last evaluation
            with torch.no_grad():
                next(self.net.parameters()).fill_(float("nan"))

    monkeypatch.setattr(step_module.TrainStep, "__call__", poisoned)
    out = tmp_path / "run"
    with pytest.raises(engine.Diverged, match="non-finite"):
        engine.train(cfg, data=cifar_data, out=out, execution=QUIET.replace(checkpoint_every=2))
    summary = RunFolder(out).summary()
    assert summary.status == "diverged" and "non-finite" in summary.message
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
    assert records.RunFolder(tmp_path / "run").status == "diverged"


@pytest.mark.parametrize("args, needle", [
    (["--arch", "resnet21"], "unknown arch"),
    (["--arch", "vgg16"], "unknown arch"),
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
    """One real process, a bad argument: exit 2, one paragraph, no traceback (--help: test_experiments)."""
    res = subprocess.run([*TRAIN, "--arch", "resnet21"], capture_output=True, text=True, timeout=120)
    assert (res.returncode == 2 and res.stderr.startswith("error: unknown arch")
            and "Traceback" not in res.stderr)


# ---------------------------------------------------------------------------------------------- the lock
def test_a_run_held_by_another_process_is_left_alone(cifar_data, tmp_path, capsys):
    out = tmp_path / "run"
    with records.RunLock(out):  # as if another process were training it
        with pytest.raises(records.RunFolderError, match=f"process {os.getpid()}"):
            engine.train(tiny(), data=cifar_data, out=out, execution=QUIET)
        summaries = run_sweep([Job(tiny(), out)], QUIET, data=cifar_data)
        assert summaries[0].status == "unfinished"  # and its last lines say who trains it
        assert summaries[0].message.startswith(f"being trained by process {os.getpid()}")
        err = capsys.readouterr().err
        assert f"process {os.getpid()}" in err and "left alone" in err
        assert err.strip().splitlines()[-1].startswith("sweep: 0 of 1 runs finished")
    assert not (out / "summary.json").exists() and not (out / "checkpoint.pt").exists()
    # lock released
    assert engine.train(tiny(), data=cifar_data, out=out, execution=QUIET).status == "finished"


# ---------------------------------------------------------------------------------------------- recipes
class ScriptedValidation:
    """``resnet.state.evaluate`` with the validation errors a test chooses (one per check, in order) and the
    real evaluation of everything else (the test set)."""

    def __init__(self, errors: list[float], val_size: int, start: int = 0) -> None:
        self.errors, self.val_size, self.next = errors, val_size, start
        self.real = state_module.evaluate

    def __call__(self, model, images, labels, **kwargs):
        if len(labels) != self.val_size:
            return self.real(model, images, labels, **kwargs)
        self.next += 1
        return {"error": self.errors[self.next - 1], "loss": 1.0}


VAL = 900  # the scripted checks answer for the validation set: it is the one of this size


def tutorial_tiny(**overrides):
    """The tutorial recipe on the 1,000-image set: 900 of them for validation and 100 for training (25
    batches of 4 an epoch), checks after batches 10 and 20 of each epoch, the test set at every 3rd check."""
    base = dict(val_size=VAL, batch_size=4, eval_every=10, test_every=3, test_subset=64, iterations=1000)
    return tutorial_config("resnet20", **{**base, **overrides})


#: Checks 1-10: ties and rises count, a fall resets (0.7 after 0.8); the 6th non-improving check in a row
#: (the 10th check, after batch 20 of the 5th epoch: iteration 4 * 25 + 20) stops the run.
STOPS_AT_10TH = [0.9, 0.8, 0.8, 0.7, 0.75, 0.75, 0.8, 0.85, 0.85, 0.9, 0.1, 0.1]
CHECK_ITERATIONS = [10, 20, 35, 45, 60, 70, 85, 95, 110, 120]


@pytest.mark.slow
def test_tutorial_stops_at_the_sixth_check_no_better_than_the_one_before(cifar_data, tmp_path, monkeypatch):
    cfg = tutorial_tiny()
    monkeypatch.setattr(state_module, "evaluate", ScriptedValidation(STOPS_AT_10TH, VAL))
    summary = engine.train(cfg, data=cifar_data, out=tmp_path / "run", execution=QUIET)
    rows = log_rows(tmp_path / "run")
    assert [int(r["iteration"]) for r in rows] == CHECK_ITERATIONS  # batches 10 and 20 of each epoch
    assert [float(r["val_error"]) for r in rows] == STOPS_AT_10TH[:10]
    assert (summary.status, summary.iterations_done) == ("finished", 120)
    assert summary.selection == "final iteration"
    # the test set, which decides nothing, at every 3rd check and at the end
    assert [i + 1 for i, r in enumerate(rows) if r["test_error"]] == [3, 6, 9, 10]
    # the reported model is the final weights, and its test error the last row's
    final = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["state"]["model"]
    assert all(torch.equal(weights(tmp_path / "run")[k], v) for k, v in final.items())
    assert summary.final_test_error == float(rows[-1]["test_error"])
    # beside it, the lowest validation error's weights (the 4th check, iteration 45) and their test error
    assert (summary.best_val_iteration, summary.best_val_error) == (45, 0.7)
    monkeypatch.setattr(state_module, "evaluate", ScriptedValidation(STOPS_AT_10TH, VAL))
    every = engine.train(cfg.replace(test_every=1), data=cifar_data, out=tmp_path / "every", execution=QUIET)
    every_rows = log_rows(tmp_path / "every")  # testing more often changes nothing the run does
    assert [r["val_error"] for r in every_rows] == [r["val_error"] for r in rows]
    assert every.final_test_error == summary.final_test_error
    assert summary.best_val_test_error == float(every_rows[3]["test_error"])


def test_tutorial_stops_after_its_epoch_cap(cifar_data, tmp_path, monkeypatch):
    improving = [1 / (k + 2) for k in range(20)]
    monkeypatch.setattr(state_module, "evaluate", ScriptedValidation(improving, VAL))
    summary = engine.train(tutorial_tiny(max_epochs=2), data=cifar_data, out=tmp_path / "run",
                           execution=QUIET)
    rows = log_rows(tmp_path / "run")
    assert (summary.status, summary.iterations_done, summary.iterations_planned) == ("finished", 50, 50)
    assert [int(r["iteration"]) for r in rows] == [10, 20, 35, 45, 50]  # 4 checks, then the end (tested)
    assert rows[-1]["test_error"] and summary.final_test_error == float(rows[-1]["test_error"])
    assert summary.best_val_iteration == 50


@pytest.mark.slow
def test_tutorial_stop_counts_across_a_resume(cifar_data, tmp_path, monkeypatch):
    cfg = tutorial_tiny()
    monkeypatch.setattr(state_module, "evaluate", ScriptedValidation(STOPS_AT_10TH, VAL))
    whole = engine.train(cfg, data=cifar_data, out=tmp_path / "whole", execution=QUIET)
    monkeypatch.setattr(state_module, "evaluate", ScriptedValidation(STOPS_AT_10TH, VAL))
    with engine.Run(cfg, data=cifar_data, out=tmp_path / "resumed", execution=QUIET) as run:
        run.advance(75)  # 6 checks; the last two did not improve
        assert run.state.checks_without_improvement == 2
        run.pause()
    done = len(log_rows(tmp_path / "resumed"))
    monkeypatch.setattr(state_module, "evaluate", ScriptedValidation(STOPS_AT_10TH, VAL, start=done))
    resumed = engine.train(cfg, data=cifar_data, out=tmp_path / "resumed", execution=QUIET, resume=True)
    assert (resumed.iterations_done, resumed.best_val_iteration) == (whole.iterations_done, 45) == (120, 45)
    assert same_log(tmp_path / "whole", tmp_path / "resumed")
    resumed_weights = weights(tmp_path / "resumed")
    assert all(torch.equal(v, resumed_weights[k]) for k, v in weights(tmp_path / "whole").items())


@pytest.mark.margins
def test_warmup_ends_when_training_error_falls(cifar_data, tmp_path, margin):
    """The warm-up rate holds until the training error of the last 5 batches is below 50%: not at the first
    check (the untrained network is near chance, 90%), but once it has learnt, well within 60 iterations."""
    cfg = tiny(iterations=60, eval_every=10, milestones=(50,), warmup_lr=0.01, warmup_check_every=5,
               warmup_until_train_error=0.5)
    summary = engine.train(cfg, data=cifar_data, out=tmp_path / "run", execution=QUIET)
    end = summary.warmup_end
    assert end is not None and end % 5 == 0
    margin("iteration the warm-up ended", end, ">", 5)
    margin("iteration the warm-up ended", end, "<", 60)
    for r in log_rows(tmp_path / "run"):
        assert float(r["lr"]) == pytest.approx(learning_rate(int(r["iteration"]) - 1, cfg, warmup_end=end))


# ---------------------------------------------------------------------------------------------- DDP
def _joined(rank: int, world: int, port: int):
    """This process's place in a gloo job of ``world`` processes on this machine."""
    from resnet.distributed import Dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    return Dist(rank=rank, world_size=world, local_rank=rank)


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    dist = _joined(rank, world, port)
    with engine.Run(tiny(iterations=4, eval_every=2), data=load_data(root), out=out, execution=QUIET,
                    dist=dist) as run:
        run.advance(10)
        torch.save(run.state.model.state_dict(), Path(out) / f"rank{rank}.weights")
        run.end()
    dist.close()


def _ddp_deadline_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    dist = _joined(rank, world, port)
    with engine.Run(tiny(iterations=40, eval_every=20), data=load_data(root), out=out, execution=QUIET,
                    dist=dist) as run:
        run.advance(12)  # iteration 12; the next joint decision falls at iteration 20
        # rank 1's time is up, rank 0's is not: alone, rank 1 would stop and rank 0 would wait forever
        run.execution = QUIET.replace(deadline=Deadline(time.time() - 1) if rank == 1 else Deadline())
        trained = run.advance(28)
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
    assert RunFolder(tmp_path).status == "unfinished"


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
    with engine.Run(tiny(), data=cifar_data, out=tmp_path / "init", execution=QUIET) as run:
        init = run.state.model.state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in params), "the processes trained"
    summary = RunFolder(tmp_path).summary()
    assert summary.world_size == 2 and summary.status == "finished"

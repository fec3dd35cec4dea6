"""A run trained in segments that live in the repository: each segment ends by its time limit with a
checkpoint, the run folder is committed, and the next segment resumes it in a fresh clone on another machine
(experiments/train.py --resume, `make cpu-segment`). Resumed from the committed checkpoint, it ends exactly
as a run that never stopped; a segment lost before its commit costs that segment only; what a folder can
hold after a lost machine (a stale lock, a half-written checkpoint, another config's checkpoint) is
recovered or refused with one paragraph, never trained past."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import tiny
from resnet import records
from resnet import train as engine
from resnet.config import Deadline, Execution, scaled_schedule
from test_train import same_log, weights

REPO = Path(__file__).resolve().parent.parent
QUIET = Execution(device="cpu", progress=False)
RUN = "results/runs/resnet56-A-paper-s0-fp32"  # the CPU's full-schedule run, whose checkpoint is committed

pytestmark = pytest.mark.usefixtures("one_thread")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)
    return done.stdout


def config():
    """The command line's run below: 12 iterations of the paper's recipe, evaluated every 4."""
    return tiny(**scaled_schedule(12), eval_every=4, schedule="custom")


def segment(run_script, data_root: Path, out: Path, monkeypatch, slow_steps, *, stop_after: float | None):
    """One segment from the command line, as `make cpu-segment` runs it: --resume, with a time limit that
    pauses it (on a clock that moves only with its steps: 1 s a step) or none."""
    if stop_after is not None:
        clock = slow_steps(1.0)
        monkeypatch.setattr(Deadline, "after", classmethod(lambda cls, s: clock.deadline(stop_after)))
    args = ["--arch", "resnet20", "--iterations", 12, "--eval-every", 4, "--batch-size", 8, "--test-subset", 64,
            "--data-dir", data_root, "--device", "cpu", "--threads", 1, "--no-progress", "--out", out,
            "--resume"] + (["--time-limit", 100] if stop_after is not None else [])
    result = run_script("train", *args)
    monkeypatch.undo()
    assert result.code == 0, result.err
    return result


def test_the_segmented_runs_checkpoint_is_committed_and_no_other():
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", f"{RUN}/checkpoint.pt"], cwd=REPO)
    assert ignored.returncode == 1, f"{RUN}/checkpoint.pt must not be ignored: each segment commits it"
    other = subprocess.run(["git", "check-ignore", "-q", "--no-index", "results/runs/resnet20-A-paper-s0/"
                            "checkpoint.pt"], cwd=REPO)
    assert other.returncode == 0, "other runs' checkpoints stay out of the repository"


@pytest.mark.slow
def test_a_run_in_committed_segments_ends_as_one_that_never_stopped(run_script, cifar_root, cifar_data,
                                                                   tmp_path, monkeypatch, slow_steps):
    """Segment 1 pauses at iteration 6 and is committed; segment 2 trains on to 9 on the same machine and is
    lost with it (never committed); segment 3 resumes in a fresh clone, in another folder, from the committed
    checkpoint and finishes. Its log and weights are those of an uninterrupted run, and its records name the
    two segments that count, contiguous, each with its code, CPU, threads and seconds."""
    engine.train(config(), data=cifar_data, out=tmp_path / "whole", execution=QUIET)

    origin = tmp_path / "origin"
    origin.mkdir()
    shutil.copy2(REPO / ".gitignore", origin / ".gitignore")
    git(origin, "init", "-q")
    out = origin / RUN
    # 1 s a step, a limit of 10 s: the reserve (2 s and 3 steps) stops it after 6 iterations
    segment(run_script, cifar_root, out, monkeypatch, slow_steps, stop_after=10)
    assert records.RunFolder(out).report().iterations_done == 6
    git(origin, "add", ".")
    committed = set(git(origin, "ls-files").split())
    assert {f"{RUN}/{name}" for name in ("config.json", "log.csv", "summary.json", "checkpoint.pt")} <= committed
    assert f"{RUN}/run.lock" not in committed
    git(origin, "commit", "-q", "-m", "segment 1")

    segment(run_script, cifar_root, out, monkeypatch, slow_steps, stop_after=7)  # lost: never committed
    assert records.RunFolder(out).report().iterations_done == 9

    clone = tmp_path / "elsewhere" / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    resumed = clone / RUN
    assert records.RunFolder(resumed).report().iterations_done == 6  # as committed
    segment(run_script, cifar_root, resumed, monkeypatch, slow_steps, stop_after=None)

    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["iterations_done"] == 12
    assert same_log(resumed, tmp_path / "whole")
    whole = weights(tmp_path / "whole")
    assert all(torch.equal(weights(resumed)[k], whole[k]) for k in whole)
    spans = [(s["from_iteration"], s["to_iteration"]) for s in summary["segments"]]
    assert spans == [(0, 6), (6, 12)], "the lost segment left no entry"
    for s in summary["segments"]:
        assert s["device"] == "cpu" and s["threads"] == 1 and s["cpu"] and s["cpu_capability"]
        assert s["seconds"] >= s["train_seconds"] > 0 and s["git_commit"] and s["code_fingerprint"]


def test_what_a_lost_machine_leaves_is_recovered_or_refused(run_script, cifar_root, tmp_path, monkeypatch,
                                                            slow_steps):
    """A stale lock (a run.lock naming a process long gone, as a copied folder brings it) does not block
    the next segment; a half-written checkpoint and another config's checkpoint are refused with one
    paragraph and exit 2, and nothing in the folder changes."""
    out = tmp_path / "run"
    segment(run_script, cifar_root, out, monkeypatch, slow_steps, stop_after=10)
    (out / "run.lock").write_text("process 999999 on a machine that is gone since 2026-01-01 00:00:00")
    segment(run_script, cifar_root, out, monkeypatch, slow_steps, stop_after=8)
    assert records.RunFolder(out).report().iterations_done == 10

    def refused(folder: Path, needle: str) -> None:
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "run.lock"}
        result = run_script("train", "--arch", "resnet20", "--iterations", 12, "--eval-every", 4,
                            "--batch-size", 8, "--test-subset", 64, "--data-dir", cifar_root, "--device", "cpu",
                            "--no-progress", "--out", folder, "--resume")
        assert result.code == 2 and needle in result.message and "Traceback" not in result.err, result.err
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "run.lock"} == before

    half = tmp_path / "half"
    shutil.copytree(out, half)
    checkpoint = (half / "checkpoint.pt").read_bytes()
    (half / "checkpoint.pt").write_bytes(checkpoint[: len(checkpoint) // 2])
    refused(half, "cannot read the checkpoint")

    other = tmp_path / "other"
    shutil.copytree(out, other)
    saved = torch.load(other / "checkpoint.pt", weights_only=False)
    saved["config"] = {**saved["config"], "lr": 0.05}
    torch.save(saved, other / "checkpoint.pt")
    refused(other, "another config")

"""The sequence a lent GPU slice runs, rehearsed on the CPU at a few iterations per run: the repository
copied without .git and without installing anything, CIFAR-10 arriving in two parts, training stopped by
its time limit mid-run, packed, continued, packed again, a second machine's shard, everything unpacked
into a fresh copy, and the figures drawn there naming the runs' data and code.

The commands that train to the end and the one that draws the figures are real processes started from the
copied tree, as on the GPU machine (python3 there has no `resnet` installed: the scripts find the package
beside themselves, and the records name the code by the fingerprint of its sources). The others (a refusal,
packing, unpacking, and the training its time limit stops) run the same scripts in the test's process,
which saves an interpreter and a torch import each; the stopped one on a clock that moves only with its
training steps, so that where the limit stops it is the same on a fast machine and a slow one."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cifar_fixture import BATCHES_DIR, write_cifar10
from conftest import run_main
from resnet import config, records

REPO = Path(__file__).resolve().parent.parent
COPIED = ("resnet", "experiments", "benchmarks", "tests", "hubconf.py", "pyproject.toml")
PART_1 = ("data_batch_1", "data_batch_2", "data_batch_3", "batches.meta")
PLAN = [records.default_run_dir(c).name
        for c in runpy.run_path(str(REPO / "experiments" / "replicate.py"), run_name="plan")["plan"]()]
#: iterations of each rehearsed run: the time limit stops the first at 6, so that it pauses and continues
REHEARSE = 12
# the shards that hold plain-20, seed 0, and ResNet-20, seed 0, alone
PLAIN20, RESNET20 = (f"{PLAN.index(name) + 1}/{len(PLAN)}"
                     for name in ("plain20-paper-s0", "resnet20-A-paper-s0"))


def copy_tree(dest: Path) -> Path:
    """The working tree as the GPU machine receives it: the files, no .git, no virtual environment."""
    dest.mkdir()
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def command(tree: Path, script: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python3 experiments/<script>.py ...`` in ``tree``, with an environment that points at nothing
    of this checkout (no PYTHONPATH, no CIFAR10_ROOT), one torch thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CIFAR10_ROOT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, f"experiments/{script}.py", *map(str, args)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=timeout)


def summary(results: Path, run: str) -> dict:
    return json.loads((results / "runs" / run / "summary.json").read_text())


def stopped_by_the_time_limit(tree: Path, script: str, *args, monkeypatch, slow_steps,
                              limit: float):
    """``python3 experiments/<script>.py ... --time-limit LIMIT`` in this process (run_main), its time a
    clock that moves by 1 s per training step: where the limit stops it is the same on every machine."""
    clock = slow_steps(1.0)
    with monkeypatch.context() as patch:
        patch.setattr(config.Deadline, "after", classmethod(lambda cls, s: clock.deadline(s)))
        return run_main(tree, script, *args, "--time-limit", limit)


@pytest.mark.slow
def test_a_gpu_slice_rehearsed_on_the_cpu(tmp_path, monkeypatch, slow_steps):
    tree = copy_tree(tmp_path / "tree")
    assert not (tree / ".git").exists()
    full = write_cifar10(tmp_path / "cifar", n_train_per_batch=200, n_test=200, seed=0) / BATCHES_DIR
    data = tree / "data" / BATCHES_DIR
    data.mkdir(parents=True)
    for name in PART_1:  # the first call brings the first part of the data
        shutil.copy2(full / name, data / name)
    results, out = tmp_path / "r", tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("CIFAR10_ROOT", str(tree / "data"))  # for the commands run in this process (run_main)
    train = ["--results", results, "--rehearse", REHEARSE, "--device", "cpu"]

    # with one part of the data, a clear message and nothing trained
    first = run_main(tree, "replicate", *train, "--shard", PLAIN20, "--time-limit", 30)
    assert first.code == 2 and "data_batch_4" in first.err and "Traceback" not in first.err
    assert not (results / "runs").exists()

    for name in os.listdir(full):  # the second call brings the rest
        shutil.copy2(full / name, data / name)
    # the time limit stops the run mid-way; the last lines say where it is and how to continue
    stopped = stopped_by_the_time_limit(tree, "replicate", *train, "--shard", PLAIN20, limit=10.2,
                                        monkeypatch=monkeypatch, slow_steps=slow_steps)
    assert stopped.code == 0, stopped.err
    last = stopped.err.strip().splitlines()
    assert last[-1] == ("sweep: 0 of 1 runs finished; to continue the others (failed ones are retried): "
                        "python3 experiments/replicate.py " + " ".join(map(str, train))
                        + f" --shard {PLAIN20} --time-limit 10.2")
    assert "plain20-paper-s0" in last[-2] and "unfinished" in last[-2] and "ms/it" in last[-2]
    paused = summary(results, "plain20-paper-s0")
    assert paused["status"] == "unfinished" and paused["iterations_done"] == 6  # 6 * 1 + 2 + 3 * 1 > 10.2

    packed = run_main(tree, "replicate", *train, "--shard", PLAIN20, "--pack", out / "a.tar")
    assert packed.code == 0, packed.err
    with tarfile.open(out / "a.tar") as tar:
        assert "plain20-paper-s0/checkpoint.pt" in tar.getnames()

    # the same command again continues from the folder left on disk, and finishes
    third = command(tree, "replicate", *train, "--shard", PLAIN20, "--time-limit", 240)
    assert third.returncode == 0, third.stderr
    assert third.stderr.strip().endswith("sweep: 1 of 1 runs finished"), third.stderr
    finished = summary(results, "plain20-paper-s0")
    assert finished["iterations_done"] == REHEARSE
    # a copied tree has no commit, but its records name the code by the fingerprint of its sources
    assert finished["git_commit"] == "unknown" and finished["code_fingerprint"] == records.code_fingerprint()
    assert run_main(tree, "replicate", *train, "--shard", PLAIN20, "--pack", out / "b.tar").code == 0

    # a second machine trains another shard of the same plan
    other = tmp_path / "r2"
    train_other = ["--results", other, "--rehearse", REHEARSE, "--device", "cpu", "--shard", RESNET20]
    assert command(tree, "replicate", *train_other).returncode == 0
    assert run_main(tree, "replicate", *train_other, "--pack", out / "c.tar").code == 0

    # everything lands in a fresh copy: the finished runs win, the plan's configs only
    fresh = copy_tree(tmp_path / "fresh")

    def unpack(*tars, rehearse=REHEARSE) -> str:  # what `replicate.py --unpack` prints (it always exits 0)
        done = run_main(fresh, "replicate", "--results", fresh / "results", "--rehearse", rehearse,
                        "--unpack", *tars)
        assert done.code == 0, done.err
        return done.out

    merged = unpack(out / "a.tar")
    assert "unpack: 1 added, 0 replaced" in merged, merged
    merged = unpack(out / "b.tar", out / "c.tar")
    assert "unpack: 1 added, 1 replaced, 0 kept, 0 rejected" in merged, merged
    again = unpack(out / "a.tar")
    assert "unpack: 0 added, 0 replaced, 1 kept, 0 rejected" in again, again
    assert summary(fresh / "results", "plain20-paper-s0")["status"] == "finished"
    assert not (fresh / "results" / "runs" / "plain20-paper-s0" / "checkpoint.pt").exists()
    wrong = unpack(out / "b.tar", rehearse=REHEARSE - 4)
    assert "0 added, 0 replaced, 0 kept, 1 rejected" in wrong  # another plan's config

    # the figures, drawn in the fresh copy from its results/, name the runs' data and code
    figures = command(fresh, "make_figures")
    assert figures.returncode == 0, figures.stderr
    table = (fresh / "figures" / "table6.md").read_text()
    assert "CIFAR-10 (modified copy" in table and f"code {records.code_fingerprint()}" in table
    assert (fresh / "figures" / "fig6_degradation.png").stat().st_size > 10_000


FAKE_PART = """import shutil, sys
from pathlib import Path
src, dest = Path({src!r}), Path(sys.argv[1]) / {batches!r}
dest.mkdir(parents=True, exist_ok=True)
for name in {names!r} or [p.name for p in src.iterdir()]:
    shutil.copy2(src / name, dest / name)
sys.exit({rc})
"""


@pytest.mark.slow
def test_a_slice_whose_grouped_cuda_tests_fail_trains_runs_alone(tmp_path):
    """When 'check' finds a grouped-run CUDA test failing, the machine's train commands pass --group 1: a
    slice keeps training (runs alone, on streams) instead of failing every group."""
    tree = copy_tree(tmp_path / "tree")
    (tree / "tests" / "test_gpu.py").write_text(
        "def test_runs_trained_as_one_group_on_the_gpu():\n    assert False\n\n"
        "def test_graph_step_matches_eager_step():\n    pass\n")
    out, marker = tmp_path / "out", tmp_path / "no-group"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CIFAR10_ROOT")}
    env.update(OUT=str(out), RESULTS=str(tmp_path / "r"), NO_GROUP=str(marker), MACHINE=str(tmp_path / "m"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")

    def slice_script(*args):
        return subprocess.run(["bash", "experiments/gpu_slice.sh", *map(str, args)], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=120)

    check = slice_script("check")
    assert marker.exists() and "train every run alone" in check.stderr, check.stderr
    idle = slice_script("train", 20, "--device", "cpu")
    assert "every run trains alone (--group 1)" in idle.stderr, idle.stderr


@pytest.mark.slow
def test_the_slice_script_rehearsed_on_the_cpu(tmp_path):
    """experiments/gpu_slice.sh as a slice runs it, with stand-ins for the two data parts (.c1 writes its
    batches and says part 2 is missing, exit 3, as make_cifar10.py does): the CUDA tests (skipped here),
    a budget too small to train, bad usage, then a run trained within the budget and packed into $OUT."""
    tree = copy_tree(tmp_path / "tree")
    full = write_cifar10(tmp_path / "cifar", n_train_per_batch=200, n_test=200, seed=0) / BATCHES_DIR
    for part, names, rc in ((".c1", list(PART_1), 3), (".c2", None, 0)):
        (tree / part).mkdir()
        (tree / part / "make_cifar10.py").write_text(
            FAKE_PART.format(src=str(full), batches=BATCHES_DIR, names=names, rc=rc))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CIFAR10_ROOT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OUT=str(out), RESULTS=str(tmp_path / "r"),
               MACHINE=str(tmp_path / "machine"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")

    def slice_script(*args):
        return subprocess.run(["bash", "experiments/gpu_slice.sh", *map(str, args)], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=300)

    plan = ["--rehearse", 4, "--device", "cpu", "--shard", RESNET20]
    check = slice_script("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "skipped" in (out / "test_gpu.log").read_text()
    assert sorted(os.listdir(tree / "data" / BATCHES_DIR)) == sorted(PART_1)

    assert slice_script("train", "soon", *plan).returncode == 2
    idle = slice_script("train", 20, *plan)
    assert idle.returncode == 0 and "nothing trained" in idle.stderr, idle.stderr
    assert not (tmp_path / "r" / "runs").exists()

    # the probe (the call that carries the data's second part), at tiny sizes: its record comes back in
    # $OUT, and its decisions and cost table stay for this machine's train commands
    probe = slice_script("probe", 120, "--rehearse", "--device", "cpu")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    speed = json.loads((out / "speed.json").read_text())
    assert [name for name, step in speed["steps"].items() if "result" in step] == \
        ["costs", "overhead", "cudnn_benchmark", "streams_vs_group", "profile"]
    assert speed["steps"]["compile"]["skipped"] and (out / "speed.md").is_file()
    assert {"rows", "overhead"} <= json.loads((tmp_path / "machine" / "costs.json").read_text()).keys()
    assert "PROBE_FLAGS=" in (tmp_path / "machine" / "decisions.env").read_text()

    trained = slice_script("train", 240, *plan)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "--cudnn-benchmark" in trained.stderr  # the probe's decisions, applied
    assert "sweep: 1 of 1 runs finished" in (out / "train.log").read_text()
    with tarfile.open(out / "slice.tar") as tar:
        packed = json.loads(tar.extractfile("resnet20-A-paper-s0/summary.json").read())
    assert packed["status"] == "finished" and packed["iterations_done"] == 4
    assert "done in" in (out / "slice.log").read_text()

    # a later slice on a new machine: the runs come along in .c3/ archives, or committed in results/runs;
    # either way they land in $RESULTS before training, and the finished run is not trained again
    (tree / ".c3").mkdir()
    shutil.copy2(out / "slice.tar", tree / ".c3" / "carry.tar")
    env["RESULTS"] = str(tmp_path / "r2")
    assert slice_script("bring", *plan).returncode == 0  # the call that carries .c3 alone
    assert (tmp_path / "r2" / "runs" / "resnet20-A-paper-s0" / "summary.json").is_file()
    assert "unpack: 1 added" in (out / "slice.log").read_text()
    again = slice_script("train", 240, *plan)
    assert again.returncode == 0 and "resnet20-A-paper-s0: finished before, skipped" in again.stdout
    shutil.rmtree(tree / ".c3")
    shutil.copytree(tmp_path / "r2" / "runs", tree / "results" / "runs")
    env["RESULTS"] = str(tmp_path / "r3")
    assert slice_script("bring", *plan).returncode == 0  # copied from results/runs: no archive to unpack
    assert json.loads((tmp_path / "r3" / "runs" / "resnet20-A-paper-s0" / "summary.json").read_text()) \
        == packed

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

import importlib
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from cifar_fixture import BATCHES_DIR, write_cifar10
from conftest import run_main
from resnet import config, plan, records

REPO = Path(__file__).resolve().parent.parent
COPIED = ("resnet", "experiments", "benchmarks", "tests", "hubconf.py", "pyproject.toml")
PART_1 = ("data_batch_1", "data_batch_2", "data_batch_3", "batches.meta")
PLAN = [records.default_run_dir(c).name
        for c in runpy.run_path(str(REPO / "experiments" / "replicate.py"), run_name="plan")["plan"]()]
#: iterations of each rehearsed run: the time limit stops the first at 6, so that it pauses and continues
REHEARSE = 12
#: a budget (seconds) that no rehearsed command spends before the test's own time-out ends it: what the
#: probe's budget and the train command's limit decide is tested on fake clocks (test_the_probes_budget_...,
#: and the time-limit tests of test_sweep.py and test_plan.py), not on this machine's speed
NEVER = 3600
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
    # (torch's Inductor sets TORCHINDUCTOR_CACHE_DIR in a process that has compiled: the machine has none)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CIFAR10_ROOT",
                                                            "TORCHINDUCTOR_CACHE_DIR")}
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
    probe = slice_script("probe", NEVER, "--rehearse", "--device", "cpu")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    speed = json.loads((out / "speed.json").read_text())
    assert [name for name, step in speed["steps"].items() if "result" in step] == \
        ["costs", "fp32", "overhead", "cudnn_benchmark", "streams_vs_group", "profile"]
    assert speed["steps"]["costs"]["failed_rows"] == [] and len(speed["steps"]["costs"]["result"]) == 3
    assert speed["steps"]["compile"]["skipped"] and (out / "speed.md").is_file()
    assert speed["inductor_cache"] == str(tmp_path / "machine" / "inductor")  # kept, out of $OUT
    table = json.loads((tmp_path / "machine" / "costs.json").read_text())
    assert {"rows", "overhead", "fp32_factor"} <= table.keys() and table["fp32_factor"] > 0
    assert "PROBE_FLAGS=" in (tmp_path / "machine" / "decisions.env").read_text()

    trained = slice_script("train", NEVER, *plan)
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
    again = slice_script("train", NEVER, *plan)
    assert again.returncode == 0 and "resnet20-A-paper-s0: finished before, skipped" in again.stdout
    shutil.rmtree(tree / ".c3")
    shutil.copytree(tmp_path / "r2" / "runs", tree / "results" / "runs")
    env["RESULTS"] = str(tmp_path / "r3")
    assert slice_script("bring", *plan).returncode == 0  # copied from results/runs: no archive to unpack
    assert json.loads((tmp_path / "r3" / "runs" / "resnet20-A-paper-s0" / "summary.json").read_text()) \
        == packed


def slice_env(tmp_path: Path, **more: str) -> dict[str, str]:
    """The environment gpu_slice.sh runs in here: its folders in ``tmp_path``, python3 this interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CIFAR10_ROOT",
                                                            "TORCHINDUCTOR_CACHE_DIR", "STOWED")}
    env.update(OUT=str(tmp_path / "out"), RESULTS=str(tmp_path / "r"), MACHINE=str(tmp_path / "machine"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **more)
    return env


def slice_tree(tmp_path: Path) -> Path:
    """A tree that holds experiments/gpu_slice.sh alone."""
    tree = tmp_path / "tree"
    (tree / "experiments").mkdir(parents=True)
    shutil.copy2(REPO / "experiments" / "gpu_slice.sh", tree / "experiments" / "gpu_slice.sh")
    return tree


def run_slice(tree: Path, env: dict[str, str], *args) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "experiments/gpu_slice.sh", *map(str, args)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


STUB = """import os, sys
with open({log!r}, "a") as f:
    f.write(sys.argv[0] + " " + os.environ.get("TORCHINDUCTOR_CACHE_DIR", "unset") + "\\n")
"""


def test_the_slices_commands_share_one_compile_cache_that_does_not_come_back(tmp_path):
    """The probe and the train commands (stand-ins that write down the cache they are given) compile into
    one Inductor cache on the machine: not under $OUT, which every command empties and whose files come
    back, and not each command a cache of its own."""
    tree, log = slice_tree(tmp_path), tmp_path / "seen.log"
    for script in ("benchmarks/probe.py", "experiments/replicate.py"):
        (tree / script).parent.mkdir(exist_ok=True)
        (tree / script).write_text(STUB.format(log=str(log)))
    env = slice_env(tmp_path)
    run_slice(tree, env, "probe", NEVER)  # it exits 1: this stand-in decides nothing
    assert run_slice(tree, env, "train", NEVER).returncode == 0
    seen = [line.split() for line in log.read_text().splitlines()]
    assert [name for name, _ in seen] == ["benchmarks/probe.py"] + ["experiments/replicate.py"] * 2
    assert {cache for _, cache in seen} == {str(tmp_path / "machine" / "inductor")}


def load_probe(monkeypatch):
    """benchmarks/probe.py as a module, its data and device set-up replaced (nothing is read)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    probe = importlib.import_module("probe")
    opening = {"device": "a GPU", "torch_version": torch.__version__, "git_commit": "abc", "data": "CIFAR-10",
               "data_fingerprint": "f00", "command": "python benchmarks/probe.py"}
    monkeypatch.setattr(probe, "setup", lambda args, script: (torch.device("cpu"), None, opening))
    monkeypatch.setattr(probe, "overhead", lambda depth, k, ms, data, device: {
        "depth": depth, "k": k, "eval_s": 0.1, "checkpoint_s": 0.2, "pack_s": 0.1, "overhead": 1.1})
    return probe


def fake_timing(probe, monkeypatch, seconds: float, fails: str | None = None) -> list[bool]:
    """Every timing takes ``seconds`` on the probe's clock (nothing else takes any), a group whose first
    network is ``fails`` raises as out of memory; returns cudnn.benchmark as each timing found it."""
    now, benchmark = [0.0], []
    monkeypatch.setattr(probe, "clock", lambda: now[0])

    def time_grouped(members, *, precision="bf16", **timed):
        now[0] += seconds
        benchmark.append(torch.backends.cudnn.benchmark)
        if members[0][0] == fails:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"ms": 2.0 if precision == "bf16" else 5.0, "replay_ms": None, "compile_s": None}

    monkeypatch.setattr(probe, "time_grouped", time_grouped)
    return benchmark


def test_a_probe_ended_by_its_time_out_leaves_its_rows_and_decisions(tmp_path, monkeypatch):
    """gpu_slice.sh ends the probe with `timeout`: whatever it measured by then is on disk, decisions.env
    included; a cost row that fails (out of memory) is noted and the other rows make the table. The rows
    are timed with cudnn.benchmark on, as training runs, and the compile cache is left where the caller
    put it (torch's default here), not under --out."""
    probe = load_probe(monkeypatch)
    benchmark = fake_timing(probe, monkeypatch, 1.0, fails="resnet32")

    class Killed(BaseException):
        """What `timeout` does to the process, here during the profile step."""

    def profile(*args):
        raise Killed

    monkeypatch.setattr(probe, "profile", profile)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    before = torch.backends.cudnn.benchmark
    out = tmp_path / "out"
    with pytest.raises(Killed):
        probe.main(["--rehearse", "--out", str(out)])
    table = json.loads((out / "costs.json").read_text())
    assert [(r["depth"], r["k"]) for r in table["rows"]] == [(20, 2), (20, 4)]
    assert table["cudnn_benchmark"] is True and table["fp32_factor"] == 2.5
    speed = json.loads((out / "speed.json").read_text())
    (failed,) = speed["steps"]["costs"]["failed_rows"]
    assert failed["depth"] == 32 and "out of memory" in failed["failed"]
    assert "not measured: depth 32" in (out / "speed.md").read_text()
    assert list(speed["steps"]) == ["costs", "fp32", "overhead", "cudnn_benchmark", "streams_vs_group"]
    decisions = (out / "decisions.env").read_text()
    assert "--group 2" in decisions and "--cudnn-benchmark on" in decisions and "PACK_RESERVE=13" in decisions
    assert benchmark[:5] == [True] * 5 and benchmark[5:7] == [False, True]  # costs, fp32; then off, on
    assert torch.backends.cudnn.benchmark == before
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ and speed["inductor_cache"] is None
    assert sorted(p.name for p in out.iterdir()) == ["costs.json", "decisions.env", "speed.json", "speed.md"]


def test_the_probes_budget_is_counted_on_its_clock(tmp_path, monkeypatch):
    """10 s a timing on the probe's clock, a budget of 25 s: the cost rows stop at half the budget (two of
    the three), the float32 step starts at 20 s, and every step after 25 s is skipped with a note."""
    probe = load_probe(monkeypatch)
    fake_timing(probe, monkeypatch, 10.0)
    out = tmp_path / "out"
    assert probe.main(["--rehearse", "--out", str(out), "--budget", "25"]) == 0
    steps = json.loads((out / "speed.json").read_text())["steps"]
    assert [name for name, step in steps.items() if "result" in step] == ["costs", "fp32"]
    assert len(steps["costs"]["result"]) == 2
    for name in ("overhead", "cudnn_benchmark", "streams_vs_group", "profile"):
        assert steps[name] == {"skipped": "the budget of 25 s was spent"}
    assert "PROBE_FLAGS=" in (out / "decisions.env").read_text()


def test_committed_checkpoints_are_stowed_out_of_the_shipped_tree_and_back(tmp_path):
    """`gpu_slice.sh stow` moves every results/runs/*/checkpoint.pt into .git/stowed/<run>/ (out of the
    tree a GPU call ships), `unstow` moves them back; each does nothing when there is nothing to move, and
    refuses, moving nothing, where it would replace a checkpoint. Neither touches the slice's folders."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    tree = slice_tree(tmp_path)
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    runs, stowed = tree / "results" / "runs", tree / ".git" / "stowed"
    for run, text in (("a", "A"), ("b", "B")):
        (runs / run).mkdir(parents=True)
        (runs / run / "checkpoint.pt").write_text(text)
        (runs / run / "log.csv").write_text("iteration\n")
    env = slice_env(tmp_path)

    def checkpoints(root: Path) -> dict[str, str]:
        return {p.parent.name: p.read_text() for p in root.glob("*/checkpoint.pt")}

    stow = run_slice(tree, env, "stow")
    assert stow.returncode == 0 and "2 checkpoint(s) moved" in stow.stderr, stow.stderr
    assert checkpoints(runs) == {} and checkpoints(stowed) == {"a": "A", "b": "B"}
    assert (runs / "a" / "log.csv").is_file()  # the records stay
    again = run_slice(tree, env, "stow")
    assert again.returncode == 0 and "nothing to move" in again.stderr
    (runs / "a" / "checkpoint.pt").write_text("A, trained on")
    refused = run_slice(tree, env, "unstow")
    assert refused.returncode == 1 and "would be replaced" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert checkpoints(runs) == {"a": "A, trained on"} and checkpoints(stowed) == {"a": "A", "b": "B"}
    (runs / "a" / "checkpoint.pt").unlink()
    back = run_slice(tree, env, "unstow")
    assert back.returncode == 0 and checkpoints(runs) == {"a": "A", "b": "B"} and checkpoints(stowed) == {}
    assert run_slice(tree, env, "unstow").returncode == 0
    assert not (tmp_path / "out").exists() and not (tmp_path / "machine").exists()
    elsewhere = slice_tree(tmp_path / "not-a-checkout")
    lost = run_slice(elsewhere, {**env, "GIT_CEILING_DIRECTORIES": str(tmp_path)}, "stow")
    assert lost.returncode == 1 and "no git checkout" in " ".join(lost.stderr.split())


def test_what_a_slice_packs_is_what_the_planner_pauses():
    """gpu_slice.sh packs CHECKPOINT_MB of checkpoints; the planner opens a unit to be paused only as far
    as that holds (resnet.plan.PAUSE_MB)."""
    script = (REPO / "experiments" / "gpu_slice.sh").read_text()
    (mb,) = re.findall(r"^CHECKPOINT_MB=(\d+)", script, flags=re.M)
    assert float(mb) == plan.PAUSE_MB

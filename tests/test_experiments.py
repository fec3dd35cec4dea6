"""The experiment scripts as a user runs them: --help, a missing data set, bad arguments, the time limit,
and the quick schedules end to end (shrunk to a few iterations on the synthetic fixture).

Error cases run the script's main() in this process under resnet.cli.main_guard (the `run_script`
fixture), which is what its command line does; one real process per script checks that it starts.
A failure must be one clear paragraph on stderr and exit code 2: never a traceback, never a run folder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("degradation", "shortcuts", "confusion", "layer_responses", "make_figures", "train",
           "publish_weights", "replicate")
SWEEPS = ("degradation", "shortcuts", "confusion", "layer_responses", "replicate")
MISSING = "/nonexistent"


#: run by one fresh interpreter: each script in turn as ``python experiments/<script>.py --help`` runs it
#: (as __main__, its folder first on sys.path, sys.path restored after it), its exit code and output as JSON
AS_PROGRAMS = """import contextlib, io, json, runpy, sys
base, done = list(sys.path), {}
for path in sys.argv[1:]:
    sys.argv, sys.path[:] = [path, "--help"], [path.rsplit("/", 1)[0], *base]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code or 0
    done[path] = [code, out.getvalue()]
print(json.dumps(done))
"""


def test_every_script_starts_as_a_program():
    """Each script run as a program (`--help`), all by one interpreter: one torch import, not eight."""
    paths = [str(REPO / "experiments" / f"{script}.py") for script in SCRIPTS]
    proc = subprocess.run([sys.executable, "-c", AS_PROGRAMS, *paths], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    done = dict(zip(SCRIPTS, json.loads(proc.stdout).values()))
    for script, (code, out) in done.items():
        assert code == 0 and out.startswith("usage:"), (script, out)
        if script in SWEEPS:
            for flag in ("--quick", "--data-dir", "--seeds", "--at-once", "--results", "--time-limit",
                         "--no-graph"):
                assert flag in out, (script, flag)


@pytest.mark.parametrize("script", SWEEPS)
def test_missing_data_is_one_clear_message_and_writes_nothing(run_script, script, tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    results = tmp_path / "results"
    result = run_script(script, "--quick", "--data-dir", MISSING, "--results", results)
    assert result.code == 2, result.err
    assert result.message.startswith("error: CIFAR-10 not found") and "Traceback" not in result.err
    assert MISSING in result.message and "--download" in result.message and "--data-dir" in result.message
    assert not results.exists()  # the data is checked before any run starts: no folder, record or figure


@pytest.mark.parametrize("args, needle", [
    (("--at-once", "0"), "argument --at-once/--jobs: expected a positive number"),
    (("--seeds", "-1"), "argument --seeds: expected a positive number"),
    (("--time-limit", "-3"), "argument --time-limit: expected a positive number of seconds"),
    (("--device", "tpu"), "argument --device: invalid choice"),
])
def test_bad_arguments_exit_2_without_traceback(run_script, args, needle, tmp_path):
    result = run_script("degradation", "--quick", *args, "--results", tmp_path / "results")
    assert result.code == 2 and needle in result.message and "Traceback" not in result.err
    assert not (tmp_path / "results").exists()


def test_bad_network_for_confusion(run_script, tmp_path):
    result = run_script("confusion", "--networks", "resnet21:paper", "--results", tmp_path)
    assert result.code == 2 and "expected ARCH:RECIPE" in result.message


def test_time_limit_already_spent_trains_nothing_and_says_how_to_continue(run_script, cifar_root, tmp_path):
    """--time-limit counts from the start of the process: a limit already spent checkpoints nothing new,
    exits 0, and the last line says how many runs finished and that the same command continues."""
    result = run_script("degradation", "--quick", "--data-dir", cifar_root, "--results", tmp_path / "r",
                        "--device", "cpu", "--time-limit", "0.5")
    assert result.code == 0, result.err
    assert result.err.strip().splitlines()[-1].startswith(
        "sweep: 0 of 8 runs finished; to continue the others (failed ones are retried): python3 ")


# ------------------------------------------------------------------------------ the scripts, end to end
TINY = dict(iterations=4, milestones=(2,), eval_every=2, train_subset=256, test_subset=64, batch_size=8)
TINY_TUTORIAL = dict(iterations=6, eval_every=2, train_subset=256, val_size=200, test_subset=64,
                     batch_size=8, patience=5, max_epochs=50)


@pytest.fixture()
def tiny_quick(monkeypatch):
    """The --quick schedule shrunk to a few iterations: the same code path as a user's --quick."""
    import dataclasses

    from resnet import config
    for name, quick in (("paper", TINY), ("tutorial", TINY_TUTORIAL)):
        monkeypatch.setitem(config.RECIPES, name, dataclasses.replace(config.RECIPES[name], quick=quick))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_quick_experiments_end_to_end(run_script, tiny_quick, cifar_root, tmp_path):
    results = tmp_path / "results"
    common = ("--quick", "--data-dir", cifar_root, "--results", results, "--device", "cpu")
    for script in ("degradation", "confusion", "layer_responses"):
        result = run_script(script, *common)
        assert result.code == 0, (script, result.err)
    runs = sorted(p.name for p in (results / "runs").iterdir())
    assert runs == sorted([f"plain{d}-paper-s0" for d in (20, 32, 44, 56)] +
                          [f"resnet{d}-A-paper-s0" for d in (20, 32, 44, 56)] + ["resnet20-A-tutorial-s0"])
    paper = json.loads((results / "confusion" / "resnet56-A-paper-s0.json").read_text())
    tutorial = json.loads((results / "confusion" / "resnet20-A-tutorial-s0.json").read_text())
    assert (tutorial["selection"] == "final iteration" and tutorial["quick"]
            and sum(map(sum, tutorial["matrix"])) == 64)
    for record in (paper, tutorial):
        assert record["test_error"] == pytest.approx(record["final_test_error"])  # the run's own number
    responses = json.loads((results / "layer_responses.json").read_text())["runs"]
    assert [r["arch"] for r in responses] == ["plain20", "plain56", "resnet20", "resnet56"]
    assert [len(r["stds"]) for r in responses] == [19, 55, 19, 55]
    figures = {p.name for p in (results / "figures").iterdir()}
    assert {"fig6_degradation.png", "table6.md", "fig7_layer_responses.png",
            "confusion_resnet56-A-paper-s0.png", "confusion_resnet20-A-tutorial-s0.png"} <= figures
    again = run_script("degradation", *common)  # finished runs are skipped, not retrained
    assert again.err.count("finished before, skipped") == 8
    # a clone holds finished runs' records without their weights: a note, the other network's matrix
    (results / "runs" / "resnet56-A-paper-s0" / "model.pt").unlink()
    (results / "confusion" / "resnet20-A-tutorial-s0.json").unlink()
    clone = run_script("confusion", *common)
    assert clone.code == 0
    assert "resnet56-A-paper-s0: finished, but its weights (model.pt) are not in" in clone.out
    assert (results / "confusion" / "resnet20-A-tutorial-s0.json").is_file()
    assert (results / "runs" / "resnet56-A-paper-s0" / "summary.json").is_file()  # nothing lost


def test_replicate_lists_the_plan_as_units(run_script, tmp_path):
    """55 runs, ResNet-32's seeds first, then each depth's runs (any shortcut, any seed) as one unit of at
    most 12, deepest first, ResNet-110's five seeds, the tutorial run and the float32 control; each unit
    with its seconds estimated by the committed cost table."""
    result = run_script("replicate", "--list", "--results", tmp_path)
    assert result.code == 0 and result.out.startswith("plan: 55 runs, 0 finished, 55 to train as ")
    paragraphs = [" ".join(p.split()) for p in result.out.split("\n\n")[1:]]
    units = [p.split(": ", 1)[1].split(", ") for p in paragraphs]
    names = [name for unit in units for name in unit]
    assert len(names) == 55 == len(set(names)) and all(len(unit) <= 12 for unit in units)
    assert names[:3] == [f"resnet32-A-paper-s{s}" for s in range(3)]
    depths = [{n.split("-")[0] for n in unit} for unit in units[:4]]  # each depth's 12 runs as one unit
    assert [len(unit) for unit in units[:4]] == [12] * 4
    assert depths == [{f"plain{d}", f"resnet{d}"} for d in (32, 56, 44, 20)]
    assert units[4] == [f"resnet110-A-paper-s{s}" for s in range(5)]
    assert ["resnet20-A-tutorial-s0"] in units and ["resnet20-A-paper-s0-fp32"] in units
    assert all(re.search(r"\(about [\d,]+ s\)", p) for p in paragraphs)
    assert not tmp_path.joinpath("runs").exists()


def test_replicate_names_a_damaged_run_and_neither_lists_it_to_train_nor_packs_it(run_script, tmp_path):
    """A run folder whose summary was cut short (a copy or a commit cut short) is neither finished nor a
    run to train: --list names it with why, and --pack leaves it out with an error that names it, having
    packed the others; its files stay as they were."""
    from resnet.config import paper_config
    from resnet.records import RunFolder

    run = RunFolder(tmp_path / "runs" / "resnet32-A-paper-s0")
    run.write_config(paper_config("resnet32"), {"device": "cpu"})
    (run.path / "summary.json").write_text('{"status": "finished", "arch": ')
    before = {p.name: p.read_bytes() for p in run.path.iterdir()}
    listed = run_script("replicate", "--list", "--results", tmp_path)
    assert listed.code == 0 and listed.out.startswith("plan: 55 runs, 0 finished, 1 damaged, 54 to train as ")
    paragraphs = [" ".join(p.split()) for p in listed.out.split("\n\n")[1:]]
    assert paragraphs[-1] == ("damaged, not trained until restored or moved away: resnet32-A-paper-s0: "
                              "summary.json does not parse: Expecting value (line 1, column 32; cut short?)")
    assert not any("resnet32-A-paper-s0" in p for p in paragraphs[:-1])
    packed = run_script("replicate", "--results", tmp_path, "--pack", tmp_path / "out.tar")
    assert packed.code == 2 and "Traceback" not in packed.err
    said = "".join(packed.err.split())
    assert "".join(f"error: damaged run records: {run.path}: summary.json does not parse".split()) in said
    assert "".join("The other runs were packed, not it".split()) in said
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert tar.getnames() == ["MANIFEST.json"]
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == before


def test_publish_weights_skips_unfinished_runs(run_script, tmp_path):
    result = run_script("publish_weights", "--runs", tmp_path)
    assert result.code == 0 and result.out.count("not finished") == 6

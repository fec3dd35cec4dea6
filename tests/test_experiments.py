"""The experiment scripts' command lines: --help, a missing data set, bad arguments.

Every case runs the script as a user would (a subprocess of this Python). Each start pays for importing
torch, pandas and matplotlib, so all of them are started at once by one module fixture (a few at a
time) and the tests read their results: the module costs about the slowest few starts, not their sum.
A failure must be one clear paragraph on stderr and exit code 2: never a traceback, never a run folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "experiments"
SCRIPTS = ("degradation", "shortcuts", "confusion", "layer_responses", "make_figures", "train")
SWEEPS = ("degradation", "shortcuts", "confusion", "layer_responses")  # the scripts with --quick
MISSING = "/nonexistent"
NEEDS_DATA = ("degradation", "confusion", "layer_responses")
BAD_ARGS = {"jobs-0": ("--jobs", "0"), "seeds-negative": ("--seeds", "-1")}


def _cases(tmp: Path) -> dict[str, tuple[list[str], Path | None]]:
    """name -> (command, results folder it was pointed at)."""
    py = lambda script, *args: [sys.executable, str(EXPERIMENTS / f"{script}.py"), *map(str, args)]
    cases: dict[str, tuple[list[str], Path | None]] = {f"help-{s}": (py(s, "--help"), None) for s in SCRIPTS}
    for s in NEEDS_DATA:
        results = tmp / f"missing-{s}"
        cases[f"missing-{s}"] = (py(s, "--quick", "--data-dir", MISSING, "--results", results), results)
    for name, args in BAD_ARGS.items():
        results = tmp / f"bad-{name}"
        cases[f"bad-{name}"] = (py("degradation", "--quick", *args, "--results", results), results)
    return cases


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """name -> (CompletedProcess, results folder) for every case, run concurrently."""
    tmp = tmp_path_factory.mktemp("experiments")
    cases = _cases(tmp)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CIFAR10_ROOT", None)  # --data-dir alone decides where the data is looked for

    def run(cmd):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp, env=env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(cases, pool.map(run, (cmd for cmd, _ in cases.values()))))
    return {name: (done[name], results) for name, (_, results) in cases.items()}


def one_paragraph(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(ran, script):
    proc, _ = ran[f"help-{script}"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:") and "Traceback" not in proc.stderr
    if script in SWEEPS:
        assert "--quick" in proc.stdout
        for flag in ("--data-dir", "--seeds", "--jobs", "--results"):
            assert flag in proc.stdout


@pytest.mark.parametrize("script", NEEDS_DATA)
def test_missing_data_is_one_clear_message_and_writes_nothing(ran, script):
    proc, results = ran[f"missing-{script}"]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    message = one_paragraph(proc.stderr)
    assert message.startswith("error: CIFAR-10 not found")
    assert MISSING in message and "--download" in message and "--data-dir" in message
    # the data set is checked before any run starts: no run folder, no record, no figure
    assert not (results / "runs").exists()
    assert not results.exists() or not any(results.rglob("*")), sorted(results.rglob("*"))


@pytest.mark.parametrize("case", BAD_ARGS)
def test_bad_arguments_exit_2_without_traceback(ran, case):
    proc, results = ran[f"bad-{case}"]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "expected a positive number" in proc.stderr
    flag = BAD_ARGS[case][0]
    assert f"argument {flag}" in proc.stderr
    assert not results.exists()


# ------------------------------------------------------------------------------ the scripts, end to end
# Each experiment's main() runs in this process with its --quick schedule shrunk to a few iterations on
# the synthetic fixture (the real quick schedule needs 10,000 training images): the same code path a
# user's `--quick` takes, from the sweep to the records and the figure.
TINY = dict(iterations=4, milestones=(2,), eval_every=2, train_subset=256, test_subset=64, batch_size=32)
TINY_TUTORIAL = dict(iterations=6, eval_every=2, train_subset=256, val_size=200, test_subset=64, batch_size=32,
                     patience=5, max_epochs=50)


@pytest.fixture()
def tiny_quick(monkeypatch):
    from resnet import train as engine
    monkeypatch.setattr(engine, "QUICK", TINY)
    monkeypatch.setattr(engine, "QUICK_TUTORIAL", TINY_TUTORIAL)
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _main(script: str, monkeypatch, *args) -> None:
    import importlib
    module = importlib.import_module(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *map(str, args)])
    assert module.main() == 0


def test_confusion_and_layer_responses_end_to_end(tiny_quick, monkeypatch, cifar_root, tmp_path):
    import json
    results = tmp_path / "results"
    common = ("--quick", "--data-dir", cifar_root, "--results", results, "--device", "cpu")
    _main("confusion", monkeypatch, *common)
    record = json.loads((results / "confusion" / "resnet20-A-tutorial-s0.json").read_text())
    assert record["selection"] == "validation" and record["test_images"] == 64
    assert sum(map(sum, record["matrix"])) == 64
    assert record["test_error"] == record["summary_test_error"]  # the same model, the same images
    assert (results / "figures" / "confusion_resnet20-A-tutorial-s0.png").stat().st_size > 10_000

    _main("layer_responses", monkeypatch, *common)
    runs = json.loads((results / "layer_responses.json").read_text())["runs"]
    assert [r["arch"] for r in runs] == ["plain20", "plain56", "resnet20", "resnet56"]
    assert [len(r["stds"]) for r in runs] == [19, 55, 19, 55]
    assert (results / "figures" / "fig7_layer_responses.png").exists()

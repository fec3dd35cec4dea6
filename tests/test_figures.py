"""make_figures and the plots, drawn from real run records of tiny real runs (no number made up).

One module-scoped fixture trains plain-20, ResNet-20 (option A) and ResNet-20 (option B) for 4 iterations
on the synthetic `cifar_root` data set into <tmp>/results/runs/<default run folder>, exactly where the
experiments put their runs; the tests then draw every figure and table from those records, and write
the confusion and layer-response records the way experiments/confusion.py and layer_responses.py do.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet import analysis
from resnet import data as cifar
from resnet import train as engine

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "experiments"
if str(EXPERIMENTS) not in sys.path:
    sys.path.insert(0, str(EXPERIMENTS))

import make_figures  # noqa: E402

TINY = dict(iterations=4, eval_every=2, milestones=(2,), batch_size=32, test_subset=64)
RUNS = {"plain20": ("plain20", "A"), "resnet20-A": ("resnet20", "A"), "resnet20-B": ("resnet20", "B")}
BUILDERS = ("degradation", "shortcuts", "confusion", "layer_responses")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module: tiny batches gain nothing from more, and on a CPU shared with other
    jobs a team of threads stalls whenever one of them is descheduled (each small op then takes ~25x longer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_data):
    """{"root": <tmp>/results, "runs": {key: (config, run folder, summary)}} of three finished tiny runs."""
    root = tmp_path_factory.mktemp("figures") / "results"
    runs = {}
    for key, (arch, shortcut) in RUNS.items():
        cfg = engine.paper_config(arch, shortcut=shortcut, **TINY)
        out = engine.default_run_dir(cfg, root=root / "runs")
        summary = engine.train(cfg, data=cifar_data, out=out, device="cpu", progress=False)
        assert summary["status"] == "finished", summary
        runs[key] = (cfg, out, summary)
    return {"root": root, "runs": runs}


@pytest.fixture
def results_copy(trained, tmp_path):
    """A private copy of the results folder (without checkpoints), for tests that add records to it."""
    dst = tmp_path / "results"
    shutil.copytree(trained["root"], dst, ignore=shutil.ignore_patterns("checkpoint.pt"))
    runs = {k: (cfg, dst / "runs" / out.name, summary) for k, (cfg, out, summary) in trained["runs"].items()}
    return {"root": dst, "runs": runs}


def assert_png(path: Path, *, min_side: int = 300) -> None:
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > 5_000, f"{path} is suspiciously small ({path.stat().st_size} bytes)"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side, im.size
        assert np.asarray(im.convert("L")).std() > 1  # not a blank canvas


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pct(error: float) -> str:
    """How the tables print one seed's error: 100 * fraction, two decimals."""
    return f"{100 * error:.2f}"


# --------------------------------------------------------------------------------------------- the runs
def test_runs_are_where_the_experiments_put_them(trained):
    names = sorted(p.name for p in (trained["root"] / "runs").iterdir())
    assert names == ["plain20-paper-s0", "resnet20-A-paper-s0", "resnet20-B-paper-s0"]
    runs = analysis.load_runs(trained["root"])
    assert len(runs) == 3 and set(runs["status"]) == {"finished"}
    for _, _, summary in trained["runs"].values():
        assert summary["iterations_done"] == 4 and 0 <= summary["final_test_error"] <= 1


# ------------------------------------------------------------------------------- figures from the records
def test_build_draws_figures_and_tables_from_the_records(trained, tmp_path, capsys):
    out = tmp_path / "figs"
    made = make_figures.build(trained["root"], out=out)
    printed = capsys.readouterr().out

    expected = {"fig6_degradation.png", "table6.md", "table6.csv", "shortcuts.png", "shortcuts.md", "shortcuts.csv"}
    assert {Path(p).name for p in made} == expected
    assert {p.name for p in out.iterdir()} == expected  # nothing else, no temporary files left behind
    assert_png(out / "fig6_degradation.png")
    assert_png(out / "shortcuts.png")

    # the builders without records say so and go on
    assert "confusion: skipped" in printed
    assert "layer_responses: skipped" in printed
    assert "degradation: skipped" not in printed and "shortcuts: skipped" not in printed

    plain, res_a, res_b = (trained["runs"][k][2] for k in ("plain20", "resnet20-A", "resnet20-B"))

    # Table 6: ours = 100 * final_test_error of the summaries (option A only), the paper's beside it
    table6 = read_csv(out / "table6.csv")
    assert len(table6) == 1
    row = table6[0]
    assert row["layers"] == "20"
    assert row["plain, ours"] == pct(plain["final_test_error"])
    assert row["ResNet, ours"] == pct(res_a["final_test_error"])
    assert row["ResNet, paper"] == f"{analysis.PAPER_TABLE6[20]:.2f}"
    assert row["params"] == analysis.format_params(res_a["parameters"])
    assert row["paper params"] == analysis.PAPER_PARAMS[20]
    md = (out / "table6.md").read_text(encoding="utf-8")
    for value in (row["plain, ours"], row["ResNet, ours"], row["ResNet, paper"]):
        assert value in md
    assert res_a["schedule"] in md and res_a["data"] in md  # the table says which schedule and data

    # shortcuts: A and B from their summaries, C not run
    shortcuts = read_csv(out / "shortcuts.csv")
    assert len(shortcuts) == 1
    row = shortcuts[0]
    assert row["layers"] == "20"
    assert row["A error"] == pct(res_a["final_test_error"])
    assert row["B error"] == pct(res_b["final_test_error"])
    assert row["A params"] == f"{res_a['parameters']:,}"
    assert row["B params"] == f"{res_b['parameters']:,}"
    assert res_b["parameters"] > res_a["parameters"]  # option B's projections add parameters
    assert row["C error"] == "–" and row["C params"] == "–"


def test_empty_results_folder_skips_every_builder(tmp_path, capsys):
    empty = tmp_path / "results"
    (empty / "runs").mkdir(parents=True)
    out = tmp_path / "figs"
    assert make_figures.build(empty, out=out) == []
    printed = capsys.readouterr().out
    for name in BUILDERS:
        assert f"{name}: skipped" in printed
    assert not out.exists() or not any(out.iterdir())
    # a results folder that does not exist at all is no different
    assert make_figures.build(tmp_path / "missing", out=out) == []


def test_confusion_and_layer_response_records_draw_their_figures(results_copy, cifar_data, tmp_path, capsys):
    root, runs = results_copy["root"], results_copy["runs"]

    # the confusion record, as experiments/confusion.py writes it
    cfg, run_dir, summary = runs["resnet20-A"]
    model, state = engine.load_trained(run_dir)
    n = cfg.test_subset
    images, labels = cifar_data.test_images[:n], cifar_data.test_labels[:n]
    preds = analysis.predict(model, images, mean=state["mean"], std=state["std"])
    matrix = analysis.confusion(labels, preds, num_classes=len(cifar_data.classes))
    assert matrix.shape == (10, 10) and matrix.sum() == n
    test_error = float((preds != labels).float().mean())
    assert 1 - np.trace(matrix) / n == pytest.approx(test_error)
    # the reported model and its normalisation reproduce the run's own final test error
    assert test_error == pytest.approx(summary["final_test_error"], abs=1e-9)
    record = {
        "run": run_dir.name, "arch": cfg.arch, "recipe": cfg.recipe, "seed": cfg.seed,
        "selection": summary["selection"], "classes": list(cifar_data.classes), "matrix": matrix.tolist(),
        "per_class_accuracy": dict(zip(cifar_data.classes,
                                       analysis.per_class_accuracy(matrix).round(4).tolist())),
        "test_error": test_error, "test_images": n, "summary_test_error": summary["final_test_error"],
        "schedule": summary["schedule"], "data": summary["data"], "data_fingerprint": cifar_data.fingerprint,
        "git_commit": summary["git_commit"],
    }
    engine.write_json(root / "confusion" / f"{run_dir.name}.json", record)

    # the layer-response record, as experiments/layer_responses.py writes it
    records = []
    for key in ("plain20", "resnet20-A"):
        cfg, run_dir, summary = runs[key]
        model, state = engine.load_trained(run_dir)
        stds = analysis.layer_response_std(model, cifar_data.test_images[:n], mean=state["mean"], std=state["std"])
        assert stds.shape == (19,) and np.isfinite(stds).all() and (stds > 0).all()  # 6n+1 3x3 layers, n=3
        records.append(analysis.responses_record(stds, run_dir=run_dir, summary=summary) | {"test_images": n})
    engine.write_json(root / "layer_responses.json", {"runs": records, "git_commit": summary["git_commit"]})
    saved = json.loads((root / "layer_responses.json").read_text())["runs"]
    assert [r["arch"] for r in saved] == ["plain20", "resnet20"]
    assert all(r["final_test_error"] == runs[k][2]["final_test_error"] for r, k in zip(saved, ("plain20", "resnet20-A")))

    out = tmp_path / "figs"
    made = {Path(p).name for p in make_figures.build(root, only=("confusion", "layer_responses"), out=out)}
    printed = capsys.readouterr().out
    assert made == {"confusion_resnet20-A-paper-s0.png", "fig7_layer_responses.png"}
    assert "skipped" not in printed
    assert_png(out / "confusion_resnet20-A-paper-s0.png")
    assert_png(out / "fig7_layer_responses.png")


def test_make_figures_command_line(results_copy):
    """The script itself: --results draws into <results>/figures, exit 0; --help exits 0."""
    root = results_copy["root"]
    cmd = [sys.executable, str(EXPERIMENTS / "make_figures.py")]
    done = subprocess.run([*cmd, "--results", str(root)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert_png(root / "figures" / "fig6_degradation.png")
    assert (root / "figures" / "table6.md").is_file() and (root / "figures" / "shortcuts.csv").is_file()
    assert "confusion: skipped" in done.stdout and "layer_responses: skipped" in done.stdout


# ----------------------------------------------------------------------------------- analysis functions
def test_layer_response_std_is_the_population_std_of_each_layer(trained, cifar_data):
    _, run_dir, _ = trained["runs"]["resnet20-A"]
    model, state = engine.load_trained(run_dir)
    images = cifar_data.test_images[:7]
    # batches of 3: the function's running sums must combine batches (3 + 3 + 1) exactly
    got = analysis.layer_response_std(model, images, mean=state["mean"], std=state["std"], batch_size=3)
    with torch.no_grad():
        x = cifar.normalize(images, state["mean"], state["std"])
        responses = model.eval().layer_responses(x)
    want = np.array([torch.std(r.double().flatten(), correction=0).item() for r in responses])
    assert len(responses) == 19
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # and per-layer, not pooled over layers: the layers differ
    assert np.ptp(got) > 0


def test_confusion_by_hand():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 2])
    matrix = analysis.confusion(labels, preds, num_classes=4)  # class 3 never occurs: a row of zeros
    np.testing.assert_array_equal(matrix, [[1, 1, 0, 0],
                                           [0, 1, 0, 0],
                                           [1, 0, 2, 0],
                                           [0, 0, 0, 0]])
    np.testing.assert_allclose(analysis.per_class_accuracy(matrix), [0.5, 1.0, 2 / 3, 0.0])
    # numpy input, and rows are the true class: swapping labels and predictions transposes it
    np.testing.assert_array_equal(analysis.confusion(preds.numpy(), labels.numpy(), num_classes=4), matrix.T)

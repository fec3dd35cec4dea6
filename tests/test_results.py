"""The paper's artefacts from real records of tiny real runs (no number made up): Table 6, the shortcut
table, the figures, the confusion and layer-response records through the one inference path.

One module fixture trains plain-20, ResNet-20 (option A, two seeds) and ResNet-20 (option B) for 4
iterations on the synthetic `cifar_root` data into <tmp>/results/runs/, where the experiments put runs.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet import analysis, inference, pretrained, results
from resnet import train as engine
from resnet.config import Execution, paper_config
from resnet.loader import normalize
from resnet.records import DamagedRecords, RunFolder, default_run_dir, write_json

QUIET = Execution(device="cpu", progress=False)

TINY = dict(iterations=4, eval_every=2, milestones=(2,), batch_size=32, test_subset=64)
RUNS = {"plain20": ("plain20", "A", 0), "resnet20-A": ("resnet20", "A", 0),
        "resnet20-A-s1": ("resnet20", "A", 1), "resnet20-B": ("resnet20", "B", 0)}
BUILDERS = ("degradation", "shortcuts", "tutorial", "confusion", "layer_responses", "progress")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_data):
    """{"root": <tmp>/results, "runs": {key: (config, run folder, summary)}} of four finished tiny runs."""
    root = tmp_path_factory.mktemp("results") / "results"
    runs = {}
    for key, (arch, shortcut, seed) in RUNS.items():
        cfg = paper_config(arch, shortcut=shortcut, seed=seed, **TINY)
        out = default_run_dir(cfg, root=root / "runs")
        runs[key] = (cfg, out, engine.train(cfg, data=cifar_data, out=out, execution=QUIET))
    return {"root": root, "runs": runs}


@pytest.fixture
def results_copy(trained, tmp_path):
    """A private copy of the results folder (without checkpoints), for tests that add records to it."""
    dst = tmp_path / "results"
    shutil.copytree(trained["root"], dst, ignore=shutil.ignore_patterns("checkpoint.pt"))
    return {"root": dst,
            "runs": {k: (c, dst / "runs" / o.name, s) for k, (c, o, s) in trained["runs"].items()}}


def assert_png(path: Path, *, min_side: int = 300) -> None:
    assert path.is_file() and path.stat().st_size > 5_000, path
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= min_side, im.size
        assert np.asarray(im.convert("L")).std() > 1  # not a blank canvas


def pct(*errors: float) -> float:
    return 100 * float(np.mean(errors))


# ------------------------------------------------------------------------------------------ tables
def test_load_runs_and_the_one_line_label(trained):
    runs = results.load_runs(trained["root"])
    assert sorted(runs["run"]) == ["plain20-paper-s0", "resnet20-A-paper-s0", "resnet20-A-paper-s1",
                                   "resnet20-B-paper-s0"]
    assert list(runs.sort_values("run").residual) == [False, True, True, True]
    text, code = results.label(results.degradation_runs(runs)).rsplit(" · ", 1)
    assert text == ("4 iterations (1/16000 of the paper's schedule), batch 32, all training images, first 64 "
                    f"test images · {runs['data'][0]} · seeds\u00a00, 1")
    # the commit (+ when the tree differed from it), or in a tree without git the sources' fingerprint
    assert re.fullmatch(r"code ([0-9a-f]{7}\+?|[0-9a-f]{12})", code), code


def test_table6_is_the_summaries_mean_and_std_over_seeds(trained):
    (_, _, plain), (_, _, a0), (_, _, a1) = (trained["runs"][k]
                                             for k in ("plain20", "resnet20-A", "resnet20-A-s1"))
    table = results.table6(results.load_runs(trained["root"]))
    assert len(table) == 1
    row = table.iloc[0]
    assert row["layers"] == 20 and row["paper params"] == "0.27M" and row["params"] == "0.27M"
    assert row["plain test"] == f"{pct(plain.final_test_error):.2f}"
    assert row["plain train"] == f"{pct(plain.final_train_error):.2f}"
    std = np.std([100 * a0.final_test_error, 100 * a1.final_test_error], ddof=1)
    assert row["ResNet test"] == (f"{pct(a0.final_test_error, a1.final_test_error):.2f} ± "
                                  f"{std:.2f} (2 seeds)")
    assert row["ResNet test, paper"] == "8.75"  # option B runs are not Table 6's


def test_the_tutorial_table_reports_the_final_weights_beside_the_tutorial(results_copy, cifar_data):
    """A real (tiny) tutorial-recipe run: the table gives where it stopped, its final weights' accuracy (the
    reported number) beside the tutorial's 85.78%, and the lowest-validation-error weights' as a second."""
    from resnet.config import tutorial_config
    cfg = tutorial_config("resnet20", iterations=12, eval_every=4, val_size=200, batch_size=32,
                          test_subset=64)
    out = default_run_dir(cfg, root=results_copy["root"] / "runs")
    summary = engine.train(cfg, data=cifar_data, out=out, execution=QUIET)
    (row,) = results.tutorial_table(results.load_runs(results_copy["root"])).to_dict("records")
    assert row["run"] == "resnet20-A-tutorial-s0" and row["tutorial's test accuracy"] == "85.78"
    assert row["stopped at"].startswith(f"{summary.iterations_done:,} of ")
    assert row["test accuracy, final weights"] == f"{100 * (1 - summary.final_test_error):.2f}"
    assert row["lowest validation error at"] == f"{summary.best_val_iteration:,}"
    assert row["its test accuracy"] == f"{100 * (1 - summary.best_val_test_error):.2f}"
    made = results.build(results_copy["root"], only=("tutorial",), out=results_copy["root"] / "figures")
    assert [p.name for p in made] == ["tutorial.md", "tutorial.csv"]
    title = made[0].read_text().splitlines()[0]  # the split is the config's, as the label says it
    assert "all training images less 200 held out for validation" in title and "45k" not in title
    assert results.tutorial_table(results.load_runs(results_copy["root"]).iloc[:0]).empty


def test_shortcut_table(trained):
    (_, _, a0), (_, _, a1), (_, _, b) = (trained["runs"][k]
                                         for k in ("resnet20-A", "resnet20-A-s1", "resnet20-B"))
    row = results.shortcut_table(results.load_runs(trained["root"])).iloc[0]
    assert row["A test"].startswith(f"{pct(a0.final_test_error, a1.final_test_error):.2f} ± ")
    assert row["B test"] == f"{pct(b.final_test_error):.2f}"
    assert row["B train"] == f"{pct(b.final_train_error):.2f}"
    assert (row["A params"], row["B params"], row["C test"], row["C params"]) \
        == ("269,722", "272,474", "–", "–")


def test_records_root_prefers_full_then_short_then_quick_records(trained, tmp_path):
    assert results.records_root(trained["root"]) == trained["root"]
    assert results.records_root(trained["root"], showing="shortcuts") == trained["root"]
    empty = tmp_path / "results"
    assert results.records_root(empty) == empty / "quick"
    # short-schedule records of one Figure 6 network: Figure 6 from them, the shortcut ablation from quick
    shutil.copytree(trained["root"] / "runs" / "resnet20-A-paper-s0",
                    empty / "short" / "runs" / "resnet20-A-paper-s0")
    assert results.records_root(empty) == empty / "short"
    assert results.records_root(empty, showing="shortcuts") == empty / "quick"
    # a full-schedule tutorial matrix alone does not make results/ the confusion notebook's records
    tutorial = {"run": "resnet20-A-tutorial-s0", "recipe": "tutorial", "arch": "resnet20"}
    write_json(empty / "confusion" / "resnet20-A-tutorial-s0.json", tutorial)
    write_json(empty / "short" / "confusion" / "resnet56-A-paper-s0.json",
               {**tutorial, "run": "resnet56-A-paper-s0", "recipe": "paper", "arch": "resnet56"})
    assert results.records_root(empty, showing="confusion") == empty / "short"
    with pytest.raises(ValueError, match="showing"):
        results.records_root(empty, showing="table7")


def test_records_root_prefers_both_halves_of_figure6_to_a_longer_schedule(trained, tmp_path):
    """A first GPU slice finishes plain nets only: the notebooks keep the short schedule's whole Figure 6
    until the full schedule has ResNets too, and take a full-schedule half over a short-schedule half."""
    root = tmp_path / "results"
    plain, resnet = trained["runs"]["plain20"][1], trained["runs"]["resnet20-A"][1]
    shutil.copytree(plain, root / "runs" / plain.name)
    assert results.records_root(root) == root  # nothing else anywhere
    shutil.copytree(resnet, root / "short" / "runs" / resnet.name)
    assert results.records_root(root) == root  # one kind in each: the longer schedule
    shutil.copytree(plain, root / "short" / "runs" / plain.name)
    assert results.records_root(root) == root / "short"
    shutil.copytree(resnet, root / "runs" / resnet.name)
    assert results.records_root(root) == root


# ------------------------------------------------------------------------------------------ figures
def test_build_draws_figures_and_tables(trained, tmp_path, capsys):
    out = tmp_path / "figs"
    made = results.build(trained["root"], out=out)
    printed = capsys.readouterr().out
    expected = {"fig6_degradation.png", "table6.md", "table6.csv", "shortcuts.png", "shortcuts.md",
                "shortcuts.csv", "progress.md"}
    assert {Path(p).name for p in made} == expected == {p.name for p in out.iterdir()}
    assert_png(out / "fig6_degradation.png")
    assert_png(out / "shortcuts.png")
    assert "confusion: skipped" in printed and "layer_responses: skipped" in printed
    md = (out / "table6.md").read_text()
    label = results.label(results.degradation_runs(results.load_runs(trained["root"])))
    assert label in md and "never chosen on the test set" in md
    with open(out / "table6.csv", newline="") as f:
        assert list(csv.DictReader(f))[0]["ResNet test, paper"] == "8.75"


def test_figure6_and_table6_with_the_plain_nets_alone(results_copy, tmp_path):
    """The plan trains the plain nets first: after a first GPU slice Figure 6 has its left panel only."""
    runs = results_copy["runs"]
    for key in ("resnet20-A", "resnet20-A-s1", "resnet20-B"):
        shutil.rmtree(runs[key][1])
    made = results.build(results_copy["root"], only=("degradation",), out=tmp_path / "figs")
    assert {Path(p).name for p in made} == {"fig6_degradation.png", "table6.md", "table6.csv"}
    assert_png(tmp_path / "figs" / "fig6_degradation.png")
    with open(tmp_path / "figs" / "table6.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["plain test"] == f"{pct(runs['plain20'][2].final_test_error):.2f}"
    assert row["ResNet test"] == "–" and row["ResNet test, paper"] == "8.75"


def test_empty_results_folder_skips_every_builder(tmp_path, capsys):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    assert results.build(tmp_path / "results", out=tmp_path / "figs") == []
    printed = capsys.readouterr().out
    assert all(f"{name}: skipped" in printed for name in BUILDERS)
    assert results.build(tmp_path / "missing", out=tmp_path / "figs") == []
    assert not (tmp_path / "figs").exists()


def test_make_figures_command_line(run_script, results_copy, tmp_path):
    result = run_script("make_figures", "--results", results_copy["root"])
    assert result.code == 0, result.err
    assert_png(results_copy["root"] / "figures" / "fig6_degradation.png")
    assert "confusion: skipped" in result.out and "augmentation" not in result.out


# ------------------------------------------------------------------------------------------ damaged records
def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def squash(text: str) -> str:
    return "".join(text.split())


def cut_to(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def finished_short(run: Path) -> None:  # the last rows gone at a row's end: it parses, and ends too soon
    lines = (run / "log.csv").read_text().splitlines(keepends=True)
    (run / "log.csv").write_text("".join(lines[:-1]))


def disagree(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    write_json(run / "summary.json", {**summary, "final_test_error": 0.0948})


#: The issue's two cases (summary.json cut to its first line, log.csv cut to its first bytes) and the others
#: a copy or a commit cut short leaves, each with what make_figures says of it
DAMAGE = {
    "truncated summary": (lambda run: (run / "summary.json").write_text('{"status": "finished", "arch": '),
                          "summary.json does not parse: Expecting value (line 1, column 32; cut short?)"),
    "truncated log": (lambda run: cut_to(run / "log.csv", 120), "log.csv line 2 has"),
    "summary against its log": (disagree, "summary.json's final_test_error is 0.0948, but log.csv's row at "
                                          "iteration 4 says"),
    "missing config": (lambda run: (run / "config.json").unlink(), "config.json is missing"),
    "finished with a short log": (finished_short, "the run finished at iteration 4, but log.csv ends at "
                                                  "iteration 2 (cut short?)"),
}


@pytest.fixture(scope="module")
def drawn(trained, tmp_path_factory):
    """The tiny runs' results folder with its figures drawn (figures/ inside it), as a clone holds them."""
    root = tmp_path_factory.mktemp("drawn") / "results"
    shutil.copytree(trained["root"], root, ignore=shutil.ignore_patterns("checkpoint.pt"))
    results.build(root, out=root / "figures")
    return root


@pytest.mark.parametrize("kind", DAMAGE)
def test_make_figures_refuses_a_damaged_record_and_changes_no_file(kind, drawn, tmp_path, run_script):
    """One message naming the damaged folder and why, a non-zero exit, and every file as it was (the
    figures and tables drawn before it are not redrawn from the records that are left)."""
    root = tmp_path / "results"
    shutil.copytree(drawn, root)
    damage, reason = DAMAGE[kind]
    damage(root / "runs" / "plain20-paper-s0")
    before = snapshot(root)
    result = run_script("make_figures", "--results", root)
    assert result.code == 2 and result.out == "" and "Traceback" not in result.err
    said = squash(result.err)  # the paragraph is wrapped, at spaces and hyphens
    assert said.startswith(squash(f"error: damaged run records: {root / 'runs' / 'plain20-paper-s0'}: "))
    assert squash(reason) in said, result.err
    assert squash("Nothing was drawn and no file changed") in said and "--skip-damaged" in said
    assert snapshot(root) == before
    with pytest.raises(DamagedRecords, match="plain20-paper-s0"):
        results.load_runs(root)  # the notebooks' loader refuses it too


def test_skip_damaged_draws_from_the_whole_records_and_names_what_it_left_out(drawn, tmp_path, run_script):
    root = tmp_path / "results"
    shutil.copytree(drawn, root)
    for run in ("plain20-paper-s0", "resnet20-A-paper-s1"):
        (root / "runs" / run / "summary.json").write_text('{"status": "finished", "arch": ')
    result = run_script("make_figures", "--results", root)
    assert result.code == 2 and result.message.startswith("error: 2 damaged run records: ")
    assert all(run in squash(result.err) for run in ("plain20-paper-s0", "resnet20-A-paper-s1"))
    result = run_script("make_figures", "--results", root, "--skip-damaged")
    assert result.code == 0, result.err
    left_out = [line for line in result.err.splitlines() if line.startswith("left out, damaged")]
    assert [line.split(": ")[1] for line in left_out] == [
        str(root / "runs" / run) for run in ("plain20-paper-s0", "resnet20-A-paper-s1")]
    runs = results.load_runs(root, skip_damaged=True)
    assert sorted(runs["run"]) == ["resnet20-A-paper-s0", "resnet20-B-paper-s0"]
    with open(root / "figures" / "table6.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["plain test"] == "–" and "±" not in row["ResNet test"]  # drawn from the whole ones only


def test_augmentation_figure_has_a_producer(cifar_data, tmp_path, capsys):
    assert results.build_augmentation(None, tmp_path) == []
    assert "augmentation: skipped, no CIFAR-10" in capsys.readouterr().out
    (path,) = results.build_augmentation(cifar_data, tmp_path)
    assert_png(path)


def test_plot_shortcut_options_and_training_curves(trained, tmp_path):
    from resnet import plots
    assert_png(plots.save_figure(plots.plot_shortcut_options(), tmp_path / "options.png"))
    logs = {key: [results.load_log(out)] for key, (_, out, _) in trained["runs"].items()}
    assert_png(plots.save_figure(plots.plot_training_curves(logs, title="t"), tmp_path / "curves.png"))


# ----------------------------------------------------------------------------------------- one inference path
def test_confusion_and_responses_records_agree_with_the_run(results_copy, cifar_data, tmp_path, capsys):
    root = results_copy["root"]
    records = []
    for key in ("plain20", "resnet20-A"):
        cfg, run_dir, summary = results_copy["runs"][key]
        model, norm = pretrained.load_file(run_dir / "model.pt")
        rec = analysis.confusion_record(model, norm, cifar_data, folder=RunFolder(run_dir))
        # the reported model through the one inference path reproduces the run's own final test error
        assert rec["test_error"] == pytest.approx(summary.final_test_error, abs=1e-9)
        matrix = np.array(rec["matrix"])
        assert matrix.shape == (10, 10) and matrix.sum() == 64 == rec["test_images"]
        assert 1 - np.trace(matrix) / 64 == pytest.approx(rec["test_error"])
        write_json(root / "confusion" / f"{run_dir.name}.json", rec)
        records.append(analysis.responses_record(model, norm, cifar_data, folder=RunFolder(run_dir)))
    assert [len(r["stds"]) for r in records] == [19, 19] and records[0]["data"] == cifar_data.name
    write_json(root / "layer_responses.json", {"runs": records})
    assert [r["recipe"] for r in results.confusion_records(root)] == ["paper", "paper"]
    made = {Path(p).name for p in results.build(root, only=("confusion", "layer_responses"), out=tmp_path)}
    assert made == {"confusion_plain20-paper-s0.png", "confusion_resnet20-A-paper-s0.png",
                    "fig7_layer_responses.png"}
    assert "skipped" not in capsys.readouterr().out


def test_layer_response_std_is_the_population_std_of_each_layer(trained, cifar_data):
    _, run_dir, _ = trained["runs"]["resnet20-A"]
    model, norm = pretrained.load_file(run_dir / "model.pt")
    images = cifar_data.test_images[:7]
    got = analysis.layer_response_std(model, images, mean=norm.mean, std=norm.std, batch_size=3)  # 3+3+1
    with torch.no_grad():
        responses = model.eval().layer_responses(normalize(images, norm.mean, norm.std))
    want = np.array([torch.std(r.double().flatten(), correction=0).item() for r in responses])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.ptp(got) > 0  # per layer, not pooled over layers


def test_logits_restore_the_mode_and_match_a_plain_forward(trained, cifar_data):
    _, run_dir, _ = trained["runs"]["plain20"]
    model, norm = pretrained.load_file(run_dir / "model.pt")
    model.train()
    images = cifar_data.test_images[:5]
    out = inference.logits(model, images, mean=norm.mean, std=norm.std, batch_size=2)
    assert model.training, "the caller's mode is restored"
    with torch.no_grad():
        want = model.eval()(normalize(images, norm.mean, norm.std))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_confusion_by_hand():
    labels, preds = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2])
    matrix = analysis.confusion(labels, preds, num_classes=4)  # class 3 never occurs: a row of zeros
    np.testing.assert_array_equal(matrix, [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(analysis.per_class_accuracy(matrix), [0.5, 1.0, 2 / 3, 0.0])
    np.testing.assert_array_equal(analysis.confusion(preds.numpy(), labels.numpy(), num_classes=4), matrix.T)


def test_one_source_for_depth_and_the_quick_schedule():
    """`git grep` finds depth parsing, the quick schedule and Table 6 construction in one place each."""
    import subprocess
    repo = Path(__file__).resolve().parent.parent
    # benchmarks/reference.py is left out: it is the independent reference, and shares no code on purpose
    def grep(pattern: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "grep", "-l", "-E", pattern, "--", "resnet", "experiments",
                               "benchmarks", "notebooks", ":!benchmarks/reference.py"],
                              cwd=repo, capture_output=True, text=True)

    if grep(".").returncode != 0:
        pytest.skip("not a git checkout")
    assert grep(r"re\.compile\(r\"\(resnet\|plain\)").stdout.split() == ["resnet/models.py"]
    assert grep(r"iterations \* 3 // 4|// 2, 3 \*").stdout.split() == ["resnet/config.py"]
    assert grep(r"def table6").stdout.split() == ["resnet/results.py"]


# ------------------------------------------------------------------------------------------ kinds of runs
def computed_on_a_gpu(run: Path) -> None:
    """Say in ``run``'s summary that it computed as the GPU runs do (bf16 autocast on CUDA): the tables name
    how each seed computed from these two fields alone, and this suite has no GPU."""
    summary = json.loads((run / "summary.json").read_text())
    write_json(run / "summary.json", {**summary, "device": "NVIDIA H200", "precision": "bf16-autocast"})


def test_a_float32_run_is_a_seed_of_its_own_unless_it_has_a_bf16_twin(results_copy, cifar_data):
    """A float32 run of a network and seed that has no bf16 run (a CPU's, trained in segments) is that
    seed's run, and its cell says how it computed; a float32 run beside the same seed's bf16 run is that
    run's control, and in no mean."""
    runs = results_copy["runs"]
    for _, folder, _ in runs.values():
        computed_on_a_gpu(folder)
    cpu = {}
    for seed in (0, 2):  # seed 0 has a bf16 run (its control); seed 2 has none
        cfg = paper_config("resnet20", seed=seed, precision="fp32", **TINY)
        out = default_run_dir(cfg, root=results_copy["root"] / "runs")
        assert out.name == f"resnet20-A-paper-s{seed}-fp32"
        cpu[seed] = engine.train(cfg, data=cifar_data, out=out, execution=QUIET)
    (row,) = results.table6(results.load_runs(results_copy["root"])).to_dict("records")
    seeds = [runs["resnet20-A"][2], runs["resnet20-A-s1"][2], cpu[2]]
    errors = [100 * s.final_test_error for s in seeds]
    assert row["ResNet test"] == (f"{np.mean(errors):.2f} ± {np.std(errors, ddof=1):.2f} "
                                  "(3 seeds: 2 bf16, GPU; 1 float32, CPU)")
    assert row["plain test"] == f"{pct(runs['plain20'][2].final_test_error):.2f}"  # the usual kind: unnamed
    alone = results.seed_table(results.load_runs(results_copy["root"]).query("seed == 2"))
    assert results._percent(alone.iloc[0], usual="bf16, GPU") == f"{errors[2]:.2f} (float32, CPU)"


def test_progress_names_a_run_in_training_by_its_iterations_never_its_errors(results_copy, cifar_data,
                                                                            slow_steps):
    """A run paused by its time limit between segments: the progress line gives its iterations of those
    planned, its segments and pace (by segment, where they ran at different paces), and no error; a folder
    without one says that every run finished."""
    root = results_copy["root"]
    assert results.progress(results.load_runs(root), root) == (
        f"**In training:** no run under `{results.display_path(root / 'runs')}`; every run recorded there "
        "has finished.\n")
    clock = slow_steps(1.0)
    cfg = paper_config("resnet20", seed=3, precision="fp32", **{**TINY, "iterations": 400})
    out = default_run_dir(cfg, root=root / "runs")
    paused = engine.train(cfg, data=cifar_data, out=out,
                          execution=Execution(device="cpu", progress=False, deadline=clock.deadline(40)))
    assert paused.status == "unfinished" and 0 < paused.iterations_done < 400
    line = results.progress(results.load_runs(root), root)
    done = paused.iterations_done
    assert line.startswith(f"**In training:** `resnet20-A-paper-s3-fp32` (seed 3, float32, CPU, code "
                           f"{paused.git_commit[:7]}): {done:,} of 400 iterations ({done / 400:.0%}) in 1 "
                           "segment, "), line
    assert f"{paused.wall_time_s / done:.2f} s an iteration" in line
    assert "%" not in line.replace(f"({done / 400:.0%})", "")  # no error of any kind
    assert line.count("**In training:**") == 1
    made = results.build(root, only=("progress",), out=root / "figures")
    assert [p.name for p in made] == ["progress.md"] and made[0].read_text() == line
    # a second segment on a machine three times slower: the pace is given by segment, as a range
    clock = slow_steps(3.0)
    resumed = engine.train(cfg, data=cifar_data, out=out, resume=True,
                           execution=Execution(device="cpu", progress=False, deadline=clock.deadline(60)))
    assert resumed.status == "unfinished" and done < resumed.iterations_done < 400
    first, second = (s["seconds"] / (s["to_iteration"] - s["from_iteration"]) for s in resumed.segments)
    assert second > 2 * first
    line = results.progress(results.load_runs(root), root)
    assert f"({resumed.iterations_done / 400:.0%}) in 2 segments, " in line, line
    assert f"{first:.2f} to {second:.2f} s an iteration with its evaluations, by segment; at those paces" in line


def test_the_hours_left_come_from_the_measured_paces_not_the_rounded_ones():
    """ResNet-56's two committed segments (0.7693 and 0.4134 s an iteration) with 35,076 iterations left:
    7.50 h at the rounded 0.77 but 7.49 h at the pace measured, so the line says 4 to 7 h, not 4 to 8."""
    segments = [{"from_iteration": 0, "to_iteration": 9349, "seconds": 7192.0},
                {"from_iteration": 9349, "to_iteration": 28924, "seconds": 8092.57}]
    line = results._pace(segments, 7192.0 + 8092.57, 28924, 64000)
    assert line == ("0.41 to 0.77 s an iteration with its evaluations, by segment; at those paces about "
                    "4 to 7 h are left")
    one = results._pace(segments[1:], 8092.57, 28924, 64000)
    assert one == "0.41 s an iteration with its evaluations; at that pace about 4 h are left"

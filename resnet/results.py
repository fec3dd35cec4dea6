"""The paper's artefacts as functions of the run records: which runs, Table 6, the shortcut table, the
inputs of Figure 6, Figure 7 and the confusion matrices, and the one-line label every figure carries.
:func:`build` draws them all into figures/ (what `make figures` runs); notebooks call the same functions.

    root = records_root()                    # results/ with full-schedule runs, else results/short or /quick
    runs = load_runs(root)
    table6(runs)                             # ours (mean ± std over seeds) beside the paper's
    plots.plot_degradation(degradation_curves(runs), title=label(degradation_runs(runs)))

Errors in tables are percentages of the final iteration's error (or, for the tutorial recipe, of the
validation-chosen model's): never chosen on the test set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from resnet import cifar10, models, plots
from resnet.config import RunConfig, describe_schedule, is_quick
from resnet.records import (REPO_ROOT, RESULTS_DIR, DamagedRecords, RunFolder, atomic_write_bytes,
                            display_path)

__all__ = ["PAPER_TABLE6", "PAPER_PARAMS", "TUTORIAL_TEST_ERROR", "FIGURES_DIR", "markdown_table",
           "records_root", "schedule_name", "code_label",
           "figures_dir_for", "load_runs", "load_log", "degradation_runs", "shortcut_runs", "label",
           "seed_table", "run_kind", "usual_kind", "progress", "table6", "shortcut_table", "tutorial_table",
           "degradation_curves",
           "confusion_records", "layer_response_records", "build", "build_augmentation", "record_label",
           "record_code", "display_path"]

#: Paper Table 6: CIFAR-10 test error (%) of the ResNets. 110: best of 5 runs; their mean is 6.61 ± 0.16.
PAPER_TABLE6 = {20: "8.75", 32: "7.51", 44: "7.17", 56: "6.97", 110: "6.43 (best of 5; mean 6.61 ± 0.16)",
                1202: "7.93"}
PAPER_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M", 1202: "19.4M"}
#: The tutorial reproduction's ResNet-20 (Adam, early stopping): test accuracy 85.78%.
TUTORIAL_TEST_ERROR = round(100 - 85.78, 2)
FIGURES_DIR = REPO_ROOT / "figures"


# ------------------------------------------------------------------------------------------ which records
def records_root(results: Path = RESULTS_DIR, *, showing: str = "degradation") -> Path:
    """The best records there are for what a reader is ``showing`` ("degradation": Figure 6 and Table 6;
    "shortcuts"; "confusion", decided by the paper recipe's matrix; "layer_responses"): ``results``
    (the full schedule) when it holds them, else ``results/short``, else ``results/quick``. For Figure 6,
    records of both plain nets and ResNets come before those of one kind alone (a GPU slice finishes the
    plain nets first, and half a figure is a worse lesson than the whole figure at a shorter schedule)."""
    def figure6(root: Path) -> int:  # 2: the whole figure, 1: one kind of network, 0: none
        runs = degradation_runs(load_runs(root))
        return 0 if runs.empty else 1 + (runs["residual"].nunique() > 1)

    def shortcuts(root: Path) -> int:
        return 2 * (shortcut_runs(load_runs(root)).get("shortcut", pd.Series()).nunique() > 1)

    holds = {"degradation": figure6, "shortcuts": shortcuts,
             # the paper recipe's matrix decides: the tutorial's runs in full on the short schedule too
             "confusion": lambda r: 2 * any(c["recipe"] == "paper" for c in confusion_records(r)),
             "layer_responses": lambda r: 2 * bool(layer_response_records(r))}
    if showing not in holds:
        raise ValueError(f"showing must be one of {', '.join(holds)}; got {showing!r}")
    found = {root: holds[showing](root) for root in (results, results / "short")}
    best = max(found.values())
    return next(root for root, level in found.items() if level == best) if best else results / "quick"


def schedule_name(results_root: Path) -> str:
    """What a records folder holds, in words: for the notebooks' and the figures' first line."""
    name = Path(results_root).name
    return {"short": "short-schedule runs: 2,000 iterations, 1/32 of the paper's schedule, all 50k images",
            "quick": "quick runs: 200 iterations on a 10k subset, the machinery only"}.get(
        name, "full-schedule runs")


def figures_dir_for(results_root: Path) -> Path:
    """figures/ for results/, figures/short/ and figures/quick/ for results/short/ and results/quick/,
    <root>/figures for any other folder."""
    root = Path(results_root).resolve()
    known = {RESULTS_DIR.resolve(): FIGURES_DIR,
             **{(RESULTS_DIR / s).resolve(): FIGURES_DIR / s for s in ("short", "quick")}}
    return known.get(root, root / "figures")


#: CIFAR-10's training images (a run may take a subset, and hold some out for validation)
CIFAR10_TRAIN_IMAGES = 50_000


def load_runs(results_root: str | Path, *, skip_damaged: bool = False) -> pd.DataFrame:
    """One row per run record under ``results_root/runs`` (each read whole and checked: RunFolder.read): its
    summary, its config (as ``config`` and as ``cfg_<field>`` columns), its folder, depth and whether it is
    residual. A damaged record raises DamagedRecords naming every damaged folder, unless ``skip_damaged``
    (the caller names them: RunFolder.read, records.damage): a table never loses a run in silence."""
    rows, damaged = [], {}
    for path in sorted(Path(results_root, "runs").glob("*/summary.json")):
        folder = RunFolder(path.parent)
        try:
            record = folder.read()
        except DamagedRecords as e:
            damaged.update(e.folders)
            continue
        if record is None or record.config is None:
            continue  # being trained now, or failed before it had a config: nothing to draw
        # through RunConfig: a record written before a field existed gets that field's default
        config = record.config
        rows.append({"run": folder.name, "path": str(folder.path), "depth": config.depth,
                     "residual": models.is_residual(config.arch), "config": config.to_dict(),
                     **{f"cfg_{k}": v for k, v in config.to_dict().items()}, **record.summary.to_dict()})
    if damaged and not skip_damaged:
        raise DamagedRecords(damaged)
    return pd.DataFrame(rows)


def load_log(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "log.csv")


def _finished_paper_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The paper recipe's finished runs, less the float32 controls: a float32 run of a network and seed
    that also has a bf16 run is that run's control (what bf16 costs), not a seed of its own. A float32 run
    without one (a CPU's: the precision a CPU computes in) is that seed's run."""
    if runs.empty:
        return runs
    done = runs[(runs["recipe"] == "paper") & (runs["status"] == "finished")]
    key = ["arch", "shortcut", "seed", "cfg_iterations"]
    bf16 = set(map(tuple, done.loc[done["cfg_precision"] == "bf16", key].values.tolist()))
    control = (done["cfg_precision"] == "fp32") & done[key].apply(lambda r: tuple(r) in bf16, axis=1)
    return done[~control]


def run_kind(run: pd.Series) -> str:
    """How a run computed, from its summary: "bf16, GPU", "float32, GPU" or "float32, CPU"."""
    device = "CPU" if str(run.get("device") or "cpu").startswith("cpu") else "GPU"
    return f"{'bf16' if str(run.get('precision')).startswith('bf16') else 'float32'}, {device}"


def degradation_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 6's and Table 6's runs: the paper's recipe, finished, plain nets and option-A ResNets (the
    float32 control runs are left out)."""
    runs = _finished_paper_runs(runs)
    return runs if runs.empty else runs[(runs["shortcut"] == "A") | ~runs["residual"]]


def shortcut_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The shortcut ablation's runs: the paper's recipe, finished, ResNets of every option."""
    runs = _finished_paper_runs(runs)
    return runs if runs.empty else runs[runs["residual"]]


def label(runs: pd.DataFrame, *, code: bool = True) -> str:
    """The one line every figure and table carries: schedule, data and seeds, from the records themselves,
    e.g. "64,000 iterations, batch 128, all training images · CIFAR-10 · seeds 0, 1, 2 · code 5bdf716"
    (without the code with ``code=False``: a figure's title; its caption names the code)."""
    if runs.empty:
        return ""
    configs = [RunConfig.from_dict(c) for c in runs["config"]]
    schedules = [describe_schedule(c) for c in configs]
    quick = "quick run: " if all(is_quick(c) for c in configs) else ""
    seeds = sorted(set(runs["seed"]))
    seed_text = f"seed\u00a0{seeds[0]}" if len(seeds) == 1 else f"seeds\u00a0{', '.join(map(str, seeds))}"
    return (f"{quick}{max(set(schedules), key=schedules.count)} · "
            f"{' / '.join(sorted(set(runs['data'])))} · {seed_text}"
            + (f" · {code_label(runs)}" if code else ""))


def code_label(runs: pd.DataFrame) -> str:
    """The code that made ``runs``: commits (7 digits; '+dirty' marked '+'), else source fingerprints, as
    "code 5bdf716" or "code f685d1ccdb5a, 0b1c2d3 and 2 more"."""
    names = []
    for _, run in runs.iterrows():
        commit, fingerprint = str(run.get("git_commit") or "unknown"), run.get("code_fingerprint")
        name = (commit[:7] + ("+" if commit.endswith("+dirty") else "") if commit != "unknown"
                else str(fingerprint) if isinstance(fingerprint, str) else "unknown")
        if name not in names:
            names.append(name)
    more = f" and {len(names) - 2} more" if len(names) > 2 else ""
    return "code " + ", ".join(names[:2]) + more


# ------------------------------------------------------------------------------------------ tables
def seed_table(runs: pd.DataFrame, by: Iterable[str] = ("arch",)) -> pd.DataFrame:
    """Per network: final test and training error (%) over its finished seeds (mean, std, count)."""
    by = list(by)
    done = runs[runs["status"] == "finished"].assign(test=lambda d: 100 * d["final_test_error"],
                                                     train=lambda d: 100 * d["final_train_error"])
    if done.empty:
        return pd.DataFrame(columns=[*by, "depth", "parameters", "test_mean", "test_std", "train_mean",
                                     "train_std", "seeds"])
    def std(s: pd.Series) -> float:
        return s.std(ddof=1) if len(s) > 1 else math.nan

    def kinds(s: pd.Series) -> tuple[tuple[str, int], ...]:  # how the seeds computed, most common first
        counts = s.value_counts()
        return tuple((str(k), int(n)) for k, n in sorted(counts.items(), key=lambda kn: (-kn[1], kn[0])))

    done = done.assign(kind=done.apply(run_kind, axis=1))
    table = done.groupby(by, sort=False).agg(
        depth=("depth", "first"), parameters=("parameters", "first"), test_mean=("test", "mean"),
        test_std=("test", std), train_mean=("train", "mean"), train_std=("train", std),
        seeds=("test", "size"), wall_time_s=("wall_time_s", "mean"), kinds=("kind", kinds)).reset_index()
    return table.sort_values(["depth", *by]).reset_index(drop=True)


def usual_kind(table: pd.DataFrame) -> str | None:
    """The way most of a seed table's runs computed (run_kind): its cells name only the others."""
    counts: dict[str, int] = {}
    for kinds in table.get("kinds", []):
        for kind, n in kinds:
            counts[kind] = counts.get(kind, 0) + n
    return max(sorted(counts), key=counts.get) if counts else None


def _percent(row: pd.Series | None, which: str = "test", usual: str | None = None) -> str:
    """A table cell, in %: '8.52' for one seed, '8.52 ± 0.14 (3 seeds)' for several, '–' for none. Runs
    that computed otherwise than the table's ``usual`` kind are named: '6.97 (float32, CPU)', '7.10 ± 0.20
    (3 seeds: 2 bf16, GPU; 1 float32, CPU)'."""
    if row is None:
        return "–"
    mean, std, n = row[f"{which}_mean"], row[f"{which}_std"], int(row["seeds"])
    kinds = list(row.get("kinds") or ())
    named = usual is not None and any(kind != usual for kind, _ in kinds)
    if n > 1 and not math.isnan(std):
        what = f"{n} seeds" + (": " + "; ".join(f"{k} {kind}" for kind, k in kinds) if named else "")
        return f"{mean:.2f} ± {std:.2f} ({what})"
    return f"{mean:.2f}" + (f" ({kinds[0][0]})" if named else "")


def _row(table: pd.DataFrame, **match: Any) -> pd.Series | None:
    mask = pd.Series(True, index=table.index)
    for column, value in match.items():
        mask &= table[column] == value
    return table[mask].iloc[0] if mask.any() else None


def table6(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 6 beside our runs: per depth, parameters (ours, the paper's), the plain net's and the ResNet's
    final test and training error (mean ± std over seeds), and the paper's ResNet test error."""
    table = seed_table(degradation_runs(runs), by=("arch",))
    usual = usual_kind(table)
    rows = []
    for depth in sorted(set(table["depth"])):
        plain, res = _row(table, arch=f"plain{depth}"), _row(table, arch=f"resnet{depth}")
        rows.append({"layers": depth,
                     "params": f"{(res if res is not None else plain)['parameters'] / 1e6:.2f}M",
                     "paper params": PAPER_PARAMS.get(depth, "–"),
                     "plain test": _percent(plain, usual=usual),
                     "plain train": _percent(plain, "train", usual),
                     "ResNet test": _percent(res, usual=usual), "ResNet train": _percent(res, "train", usual),
                     "ResNet test, paper": PAPER_TABLE6.get(depth, "–")})
    return pd.DataFrame(rows)


def shortcut_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Options A, B and C per depth: final test and training error (mean ± std over seeds), and
    parameters."""
    table = seed_table(shortcut_runs(runs), by=("arch", "shortcut"))
    usual = usual_kind(table)
    rows = []
    for depth in sorted(set(table["depth"])):
        found = {option: _row(table, depth=depth, shortcut=option) for option in models.SHORTCUTS}
        row: dict[str, Any] = {"layers": depth}
        row.update({f"{option} test": _percent(found[option], usual=usual) for option in models.SHORTCUTS})
        row.update({f"{option} train": _percent(found[option], "train", usual)
                    for option in models.SHORTCUTS})
        row.update({f"{option} params": "–" if run is None else f"{int(run['parameters']):,}"
                    for option, run in found.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def tutorial_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The tutorial recipe's runs beside the tutorial's published accuracy: where early stopping ended each
    (iteration, epoch), the final weights' test accuracy (the reported number, as the tutorial reports its
    own), and the lowest-validation-error weights' iteration and accuracies (chosen on validation: a second
    number, never the reported one)."""
    if runs.empty:
        return pd.DataFrame()
    tutorial = runs[(runs["recipe"] == "tutorial") & (runs["status"] == "finished")]
    rows = []
    for _, run in tutorial.iterrows():
        config = RunConfig.from_dict(run["config"])
        per_epoch = _split(config)[0] // config.batch_size if not config.train_subset else None
        epoch = f" (epoch {run['iterations_done'] / per_epoch:.1f})" if per_epoch else ""
        best = run.get("best_val_iteration")
        if run["selection"] == "validation":  # a record of the code before the tutorial's own rule
            best = run["selected_iteration"]
            run = run.copy()
            run["best_val_error"] = run["final_val_error"]
            run["best_val_test_error"] = run["final_test_error"]
            run["final_test_error"] = math.nan
        rows.append({
            "run": run["run"],
            "stopped at": f"{int(run['iterations_done']):,} of {int(run['iterations_planned']):,}{epoch}",
            "test accuracy, final weights": _accuracy(run["final_test_error"]),
            "tutorial's test accuracy": f"{100 - TUTORIAL_TEST_ERROR:.2f}",
            "lowest validation error at": "–" if pd.isna(best) else f"{int(best):,}",
            "its validation accuracy": _accuracy(run["best_val_error"]),
            "its test accuracy": _accuracy(run["best_val_test_error"])})
    return pd.DataFrame(rows)


def _split(config: RunConfig) -> tuple[int, int]:
    """(training, validation) images of a run: its share of CIFAR-10's training set, less what it holds
    out."""
    images = config.train_subset or CIFAR10_TRAIN_IMAGES
    return images - config.val_size, config.val_size


def progress(runs: pd.DataFrame, results_root: Path) -> str:
    """One line per run still in training (unfinished: paused by a time limit, or between segments): where it
    stands, in iterations and time, never its errors, which are progress and not results until its last
    iteration; one line saying so when there is none."""
    where = display_path(Path(results_root) / "runs")
    training = runs[runs["status"] == "unfinished"] if not runs.empty else runs
    if training.empty:
        return f"**In training:** no run under `{where}`; every run recorded there has finished.\n"
    lines = []
    for _, run in training.sort_values("run").iterrows():
        done, planned = int(run["iterations_done"]), int(run["iterations_planned"])
        segments = run.get("segments") if isinstance(run.get("segments"), list) else []
        seconds = sum(s.get("seconds", 0.0) for s in segments) if segments else float(run["wall_time_s"] or 0)
        sessions = f" in {len(segments)} segment{'s' * (len(segments) != 1)}" if segments else ""
        codes = (list(dict.fromkeys(str(s.get("git_commit"))[:7] for s in segments))
                 or [str(run["git_commit"])[:7]])
        lines.append(
            f"**In training:** `{run['run']}` (seed {run['seed']}, {run_kind(run)}, code "
            f"{', '.join(codes)}): "
            f"{done:,} of {planned:,} iterations ({done / planned:.0%}){sessions}, {seconds / 3600:.1f} h so "
            f"far, {_pace(segments, seconds, done, planned)}. Its errors so far are progress, not "
            f"results: it joins the tables at its last iteration.")
    return "\n\n".join(lines) + "\n"


def _pace(segments: list[dict[str, Any]], seconds: float, done: int, planned: int) -> str:
    """A run's seconds an iteration (evaluations included) and the hours left at that pace; a range where its
    segments ran at different paces, as segments on different machines do (one CPU model, twice the time)."""
    paces = sorted(s["seconds"] / (s["to_iteration"] - s["from_iteration"]) for s in segments
                   if s.get("to_iteration", 0) > s.get("from_iteration", 0)) or ([seconds / done] if done else [])
    if not paces:
        return "no pace measured yet"
    ends = list(dict.fromkeys(f"{p:.2f}" for p in (paces[0], paces[-1])))
    hours = list(dict.fromkeys(f"{p * (planned - done) / 3600:.0f}" for p in (paces[0], paces[-1])))
    if len(ends) == 1:
        return f"{ends[0]} s an iteration with its evaluations; at that pace about {hours[0]} h are left"
    return (f"{ends[0]} to {ends[1]} s an iteration with its evaluations, by segment; at those paces about "
            f"{' to '.join(hours)} h are left")


def _accuracy(error: float | None) -> str:
    return "–" if error is None or pd.isna(error) else f"{100 * (1 - error):.2f}"


# ------------------------------------------------------------------------------------------ figure inputs
def degradation_curves(runs: pd.DataFrame) -> dict[str, list[pd.DataFrame]]:
    """Figure 6's input: each network's logs (one per seed), for plots.plot_degradation."""
    runs = degradation_runs(runs)
    return {} if runs.empty else {arch: [load_log(p) for p in group["path"]]
                                  for arch, group in runs.groupby("arch")}


def confusion_records(results_root: Path) -> list[dict[str, Any]]:
    """The confusion-matrix records (experiments/confusion.py): the paper's recipe first, then the
    tutorial's."""
    found = [json.loads(p.read_text()) for p in sorted(Path(results_root, "confusion").glob("*.json"))]
    return sorted(found, key=lambda r: (r["recipe"] != "paper", models.arch_depth(r["arch"]), r["run"]))


def layer_response_records(results_root: Path) -> list[dict[str, Any]]:
    """Figure 7's input: one record per network (experiments/layer_responses.py), plain nets first."""
    path = Path(results_root, "layer_responses.json")
    found = json.loads(path.read_text())["runs"] if path.exists() else []
    return sorted(found, key=lambda r: (models.is_residual(r["arch"]), models.arch_depth(r["arch"])))


def record_label(record: dict[str, Any], *, code: bool = True) -> str:
    """The one-line label of a record derived from a trained run (confusion, layer responses); without
    the code with ``code=False`` (a figure's title: record_code is its caption)."""
    quick = "quick run: " if record.get("quick") else ""
    text = f"{quick}{record['schedule']} · {record['data']} · seed\u00a0{record.get('seed', 0)}"
    return text + (f" · {record_code(record)}" if code else "")


def record_code(record: dict[str, Any]) -> str:
    """The code that made a derived record's run, as "code 5bdf716" (or the sources' fingerprint)."""
    commit = str(record.get("run_git_commit") or "unknown")
    return "code " + (commit[:7] if commit != "unknown" else record.get("run_code_fingerprint") or "unknown")


# ------------------------------------------------------------------------------------------ files
def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as a Markdown pipe table, every cell as it is printed ("70.00" stays "70.00"). Written here
    rather than by pandas' to_markdown so that the scripts need no tabulate (a GPU machine lacks it)."""
    def line(cells: Iterable[Any]) -> str:
        return "| " + " | ".join("" if c is None or (isinstance(c, float) and math.isnan(c)) else str(c)
                                 for c in cells) + " |"
    rows = [line(df.columns), "|" + " --- |" * len(df.columns)]
    return "\n".join(rows + [line(r) for r in df.itertuples(index=False)])


def _write_table(df: pd.DataFrame, path: Path, title: str) -> list[Path]:
    atomic_write_bytes(path.with_suffix(".csv"), df.to_csv(index=False).encode())
    atomic_write_bytes(path.with_suffix(".md"), f"{title}\n\n{markdown_table(df)}\n".encode())
    return [path.with_suffix(".md"), path.with_suffix(".csv")]


def _build_degradation(root: Path, out: Path, runs: pd.DataFrame) -> list[Path]:
    runs = degradation_runs(runs)
    if runs.empty:  # one side alone is drawn too: the plan finishes the plain nets first
        return []
    text = label(runs)
    fig = plots.plot_degradation(degradation_curves(runs),
                                 title=f"Figure 6 (CIFAR-10): plain vs residual\n{label(runs, code=False)}")
    title = (f"**Table 6 (CIFAR-10 error, %)**: ours ({text}; final iteration, never chosen on the test set; "
             f"test and training error) beside the paper's test error.")
    return [plots.save_figure(fig, out / "fig6_degradation.png", caption=code_label(runs)),
            *_write_table(table6(runs), out / "table6", title)]


def _build_shortcuts(root: Path, out: Path, runs: pd.DataFrame) -> list[Path]:
    runs = shortcut_runs(runs)
    if runs.empty or runs["shortcut"].nunique() < 2:
        return []
    text = label(runs)
    fig = plots.plot_shortcuts(seed_table(runs, by=("arch", "shortcut")),
                               title=f"Shortcut options A/B/C (CIFAR-10)\n{label(runs, code=False)}")
    title = f"**Shortcut options (CIFAR-10 test and training error, %)**: {text}; final iteration."
    return [plots.save_figure(fig, out / "shortcuts.png", caption=code_label(runs)),
            *_write_table(shortcut_table(runs), out / "shortcuts", title)]


def _build_tutorial(root: Path, out: Path, runs: pd.DataFrame) -> list[Path]:
    table = tutorial_table(runs)
    if table.empty:
        return []
    tutorial = runs[runs["run"].isin(table["run"])]
    rules = {RunConfig.from_dict(c).stop_rule for c in tutorial["config"]}
    rule = ("the tutorial's early stopping (a check no better than the one before it counts); the reported "
            "model is the final weights, as the tutorial's" if rules == {"previous"} else
            "early stopping on checks without a new best (this project's earlier rule), the reported model "
            "the validation-chosen one")
    # the split is the label's ("all training images less 5,000 held out for validation"): the configs'
    title = f"**The tutorial recipe (CIFAR-10 test accuracy, %)**: {label(tutorial)}; Adam, {rule}."
    return _write_table(table, out / "tutorial", title)


def _build_progress(root: Path, out: Path, runs: pd.DataFrame) -> list[Path]:
    if runs.empty:  # no records at all: nothing to say
        return []
    path = Path(out) / "progress.md"
    atomic_write_bytes(path, progress(runs, root).encode())
    return [path]


def _build_confusion(root: Path, out: Path, runs: pd.DataFrame) -> list[Path]:
    made = []
    for rec in confusion_records(root):
        title = (f"Confusion matrix: {rec['run']} ({rec['selection']}), "
                 f"test error {100 * rec['test_error']:.2f}%\n"
                 f"{record_label(rec, code=False)}")
        made.append(plots.save_figure(plots.plot_confusion(rec["matrix"], rec["classes"], title=title),
                                      out / f"confusion_{rec['run']}.png", caption=record_code(rec)))
    return made


def _build_layer_responses(root: Path, out: Path, runs: pd.DataFrame) -> list[Path]:
    records = layer_response_records(root)
    if not records:
        return []
    fig = plots.plot_layer_responses({r["arch"]: r["stds"] for r in records},
                                     title="Figure 7: std of 3x3 layer responses "
                                           "(after BN, before addition/ReLU)\n"
                                           + record_label(records[0], code=False))
    return [plots.save_figure(fig, out / "fig7_layer_responses.png",
                              caption="code " + ", ".join(sorted({record_code(r)[len("code "):]
                                                                  for r in records})))]


#: What each figure is drawn by: (results root, figures folder, the root's runs: load_runs) -> files written
BUILDERS: dict[str, Callable[[Path, Path, pd.DataFrame], list[Path]]] = {
    "degradation": _build_degradation, "shortcuts": _build_shortcuts, "tutorial": _build_tutorial,
    "confusion": _build_confusion,
    "layer_responses": _build_layer_responses, "progress": _build_progress,
}


def build(results_root: Path, *, only: Iterable[str] | None = None, out: Path | None = None,
          skip_damaged: bool = False) -> list[Path]:
    """Draw the figures and tables of ``results_root`` (all, or ``only`` those named) into ``out`` (default
    figures_dir_for(results_root)); a figure without finished runs is skipped with a one-line note. A
    damaged record raises DamagedRecords before anything is drawn, unless ``skip_damaged`` (load_runs)."""
    out = Path(out) if out is not None else figures_dir_for(results_root)
    unknown = set(only or ()) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(sorted(unknown))}; known: {', '.join(BUILDERS)}")
    runs = load_runs(results_root, skip_damaged=skip_damaged)
    made: list[Path] = []
    for name in only or BUILDERS:
        files = BUILDERS[name](Path(results_root), out, runs)
        print(f"{name}: " + (", ".join(map(display_path, files)) if files else
                             f"skipped, not enough finished runs for it under {display_path(results_root)}"))
        made += files
    return made


def build_augmentation(data: cifar10.CIFAR10 | None, out: Path = FIGURES_DIR) -> list[Path]:
    """figures/augmentation.png from the data's first training images (skipped, with a note, without data)."""
    if data is None:
        print("augmentation: skipped, no CIFAR-10 here (--data-dir, $CIFAR10_ROOT or data/ provides it)")
        return []
    path = plots.save_figure(plots.augmentation_figure(data, num_classes=5, seed=0),
                             Path(out) / "augmentation.png")
    print(f"augmentation: {display_path(path)} (from {data.name}, fingerprint {data.fingerprint})")
    return [path]

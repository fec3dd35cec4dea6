#!/usr/bin/env python3
"""Regenerate every figure and table from the run records in results/, in seconds: no data set, no GPU.

    python experiments/make_figures.py            # figures/ from results/, figures/quick/ from results/quick/

Full-schedule records (results/runs/...) draw figures/; quick runs (results/quick/...) draw figures/quick/,
and every title and table says which schedule and which data its numbers come from. A figure whose runs
are missing is skipped with a one-line note.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from resnet import analysis, cli, plots
from resnet import train as engine

FIGURES_DIR = engine.REPO_ROOT / "figures"
DEPTHS = (20, 32, 44, 56, 110)


def figures_dir_for(results_root: Path) -> Path:
    root = Path(results_root).resolve()
    if root == engine.RESULTS_DIR.resolve():
        return FIGURES_DIR
    if root == (engine.RESULTS_DIR / "quick").resolve():
        return FIGURES_DIR / "quick"
    return root / "figures"


def _label(runs: pd.DataFrame, quick: bool) -> str:
    """'<schedule> · <data>' from the records themselves, e.g. for titles."""
    schedules = [engine.describe_schedule(engine.RunConfig.from_dict(c)) for c in runs["config"]]
    schedule = max(set(schedules), key=schedules.count)
    data = runs["data"].mode().iloc[0] if "data" in runs else "?"
    return f"{'quick run: ' if quick else ''}{schedule} · {data}"


def _is_quick(results_root: Path) -> bool:
    """Whether the runs under ``results_root`` are quick runs, decided from their own configs."""
    configs = [json.loads(p.read_text())["config"] for p in Path(results_root, "runs").glob("*/config.json")]
    return bool(configs) and all(engine.is_quick(engine.RunConfig.from_dict(c)) for c in configs)


def _write_table(df: pd.DataFrame, path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine.atomic_write_bytes(path.with_suffix(".csv"), df.to_csv(index=False).encode())
    md = f"{title}\n\n{df.to_markdown(index=False, disable_numparse=True)}\n"
    engine.atomic_write_bytes(path.with_suffix(".md"), md.encode())


def _paper_runs(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return runs
    return runs[(runs["recipe"] == "paper") & (runs["status"] == "finished")]


# ------------------------------------------------------------------------------------------ builders
def degradation(results_root: Path, out: Path) -> list[Path]:
    runs = _paper_runs(analysis.load_runs(results_root))
    if not runs.empty:
        runs = runs[(runs["shortcut"] == "A") | ~runs["residual"]]
    if runs.empty or not (runs["residual"].any() and (~runs["residual"]).any()):
        return []
    quick = _is_quick(results_root)
    label = _label(runs, quick)
    curves = {}
    for (arch, depth), group in runs.groupby(["arch", "depth"]):
        curves[arch] = [analysis.load_log(p) for p in group["path"]]
    fig = plots.plot_degradation(curves, title=f"Figure 6 (CIFAR-10): plain vs residual\n{label}")
    png = plots.save_figure(fig, out / "fig6_degradation.png")

    table = analysis.seed_table(runs, by=("arch",))
    rows = []
    for depth in sorted(set(table["depth"])):
        res = table[(table["depth"] == depth) & table["arch"].str.startswith("resnet")]
        pla = table[(table["depth"] == depth) & table["arch"].str.startswith("plain")]
        fmt = lambda t: analysis.format_error(t["error_mean"].iloc[0], t["error_std"].iloc[0],
                                              int(t["seeds"].iloc[0])) if len(t) else "–"
        params = (res if len(res) else pla)["parameters"].iloc[0]
        rows.append({"layers": depth, "params": analysis.format_params(int(params)),
                     "paper params": analysis.PAPER_PARAMS.get(depth, "–"),
                     "plain, ours": fmt(pla), "ResNet, ours": fmt(res),
                     "ResNet, paper": f"{analysis.PAPER_TABLE6[depth]:.2f}" if depth in analysis.PAPER_TABLE6 else "–"})
    title = (f"**Table 6 (CIFAR-10 test error, %)**: ours ({label}; final iteration, never chosen on the test "
             f"set) beside the paper's.")
    _write_table(pd.DataFrame(rows), out / "table6", title)
    return [png, out / "table6.md", out / "table6.csv"]


def shortcuts(results_root: Path, out: Path) -> list[Path]:
    runs = _paper_runs(analysis.load_runs(results_root))
    if runs.empty:
        return []
    runs = runs[runs["residual"]]
    if runs.empty or runs["shortcut"].nunique() < 2:
        return []
    label = _label(runs, _is_quick(results_root))
    table = analysis.seed_table(runs, by=("arch", "shortcut"))
    fig = plots.plot_shortcuts(table, title=f"Shortcut options A/B/C (CIFAR-10)\n{label}")
    png = plots.save_figure(fig, out / "shortcuts.png")
    rows = []
    for depth in sorted(set(table["depth"])):
        row: dict[str, object] = {"layers": depth}
        for opt in ("A", "B", "C"):
            t = table[(table["depth"] == depth) & (table["shortcut"] == opt)]
            row[f"{opt} error"] = (analysis.format_error(t["error_mean"].iloc[0], t["error_std"].iloc[0],
                                                         int(t["seeds"].iloc[0])) if len(t) else "–")
            row[f"{opt} params"] = f"{int(t['parameters'].iloc[0]):,}" if len(t) else "–"
        rows.append(row)
    _write_table(pd.DataFrame(rows), out / "shortcuts",
                 f"**Shortcut options (CIFAR-10 test error, %)**: {label}; final iteration.")
    return [png, out / "shortcuts.md", out / "shortcuts.csv"]


def confusion(results_root: Path, out: Path) -> list[Path]:
    made = []
    for record_path in sorted(Path(results_root, "confusion").glob("*.json")):
        rec = json.loads(record_path.read_text())
        quick = "quick run: " if _is_quick(results_root) else ""
        title = (f"Confusion matrix: {rec['run']} ({rec['selection']}), test error {100 * rec['test_error']:.2f}%\n"
                 f"{quick}{rec['schedule']} · {rec['data']}")
        fig = plots.plot_confusion(rec["matrix"], rec["classes"], title=title)
        made.append(plots.save_figure(fig, out / f"confusion_{rec['run']}.png"))
    return made


def layer_responses(results_root: Path, out: Path) -> list[Path]:
    path = Path(results_root, "layer_responses.json")
    if not path.exists():
        return []
    records = json.loads(path.read_text())["runs"]
    if not records:
        return []
    quick = "quick run: " if _is_quick(results_root) else ""
    fig = plots.plot_layer_responses(
        {r["arch"]: r["stds"] for r in records},
        title=f"Figure 7: std of 3x3 layer responses (after BN, before addition/ReLU)\n"
              f"{quick}{records[0]['schedule']} · {records[0]['data']}")
    return [plots.save_figure(fig, out / "fig7_layer_responses.png")]


BUILDERS: dict[str, Callable[[Path, Path], list[Path]]] = {
    "degradation": degradation, "shortcuts": shortcuts, "confusion": confusion, "layer_responses": layer_responses,
}


def build(results_root: Path, *, only: Iterable[str] | None = None, out: Path | None = None) -> list[Path]:
    """Draw the figures and tables of ``results_root`` (all of them, or ``only`` those named)."""
    out = Path(out) if out is not None else figures_dir_for(results_root)
    unknown = set(only or ()) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(sorted(unknown))}; known: {', '.join(BUILDERS)}")
    made: list[Path] = []
    for name in only or BUILDERS:
        files = BUILDERS[name](Path(results_root), out)
        if files:
            print(f"{name}: " + ", ".join(str(_rel(f)) for f in files))
        else:
            print(f"{name}: skipped, no finished runs for it under {_rel(Path(results_root))}")
        made += files
    return made


def _rel(path: Path) -> Path:
    try:
        return Path(path).resolve().relative_to(engine.REPO_ROOT)
    except ValueError:
        return Path(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, action="append", default=None,
                        help="a results folder to draw (default: results/ and results/quick/)")
    args = parser.parse_args()
    roots = args.results or [engine.RESULTS_DIR, engine.RESULTS_DIR / "quick"]
    for root in roots:
        print(f"== {_rel(root)} -> {_rel(figures_dir_for(root))}")
        build(root)
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

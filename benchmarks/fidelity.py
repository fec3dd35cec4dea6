#!/usr/bin/env python3
"""Does the engine train like an independent reference? The table, from records that exist.

    python benchmarks/fidelity.py          # writes benchmarks/results/fidelity.md and fidelity.json

Engine: the short-schedule runs (``python experiments/replicate.py --short``: the paper's recipe at 2,000
iterations, the rate divided by 10 at 1,000 and 1,500, all 50,000 training images, all 10,000 test images
every 250 iterations) in results/short/runs/. Reference: benchmarks/reference.py at the same schedule, in
benchmarks/results/fidelity/reference-<net>-s<seed>.json. One change at a time: the reference's first 500
iterations with one of the engine's choices, in benchmarks/results/fidelity/changes/.

For each run: the training error over its first 250 and first 500 iterations (the rows' running error,
train mode, augmented batches, as both log it), and at the end of the run its training error over the last
250 iterations and its test error (final iteration; nothing is chosen on the test set).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIDELITY = REPO / "benchmarks" / "results" / "fidelity"
ENGINE = REPO / "results" / "short" / "runs"


def engine_rows(run: Path) -> list[dict[str, float]] | None:
    summary = run / "summary.json"
    if not summary.is_file() or json.loads(summary.read_text()).get("status") != "finished":
        return None
    with open(run / "log.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def reference_rows(path: Path) -> list[dict[str, float]] | None:
    return json.loads(path.read_text())["rows"] if path.is_file() else None


def measures(rows: list[dict[str, float]]) -> dict[str, float]:
    """Errors in %: training error over the first 250 and 500 iterations, and at the end."""
    by_it = {int(r["iteration"]): r for r in rows}
    out = {"train_0_250": 100 * by_it[250]["train_error"],
           "train_0_500": 100 * (by_it[250]["train_error"] + by_it[500]["train_error"]) / 2,
           "test_500": 100 * by_it[500]["test_error"]}
    last = rows[-1]
    if int(last["iteration"]) > 500:
        out.update(iterations=int(last["iteration"]), train_end=100 * last["train_error"],
                   test_end=100 * last["test_error"])
    return out


def mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> int:
    record: dict = {"engine": {}, "reference": {}, "changes": {}}
    lines = ["# The engine against an independent reference, at the short schedule", "",
             "Errors in %. Short schedule: 2,000 iterations, batch 128, lr 0.1 divided by 10 at 1,000 and "
             "1,500, all 50,000 training images, all 10,000 test images. Engine: `python "
             "experiments/replicate.py --short` (results/short/runs/). Reference: `python "
             "benchmarks/reference.py --depth D --seed S --out benchmarks/results/fidelity/"
             "reference-resnetD-sS.json` (torchvision's CIFAR10 and PIL transforms, a DataLoader, "
             "torch.optim.SGD with MultiStepLR, its own LambdaLayer ResNet). Training error: the running "
             "error of the augmented training batches over the iterations named; test error: the final "
             "iteration's. Mean ± std over the seeds shown.", "",
             "| network | side | seeds | train, it. 1-250 | train, it. 1-500 | test at 500 | train, "
             "it. 1751-2000 | test at 2,000 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for depth in (20, 56):
        for side in ("engine", "reference"):
            found = {}
            for seed in (0, 1, 2):
                rows = (engine_rows(ENGINE / f"resnet{depth}-A-paper-s{seed}") if side == "engine"
                        else reference_rows(FIDELITY / f"reference-resnet{depth}-s{seed}.json"))
                if rows and len(rows) >= 2:
                    found[seed] = measures(rows)
            record[side][f"resnet{depth}"] = found
            if not found:
                continue
            cols = ["train_0_250", "train_0_500", "test_500", "train_end", "test_end"]
            cells = [mean_spread([m[c] for m in found.values() if c in m])
                     if any(c in m for m in found.values()) else "–" for c in cols]
            seeds = ", ".join(map(str, found))
            lines.append(f"| ResNet-{depth} | {side} | {seeds} | " + " | ".join(cells) + " |")
    changes = sorted(FIDELITY.glob("changes/*.json")) + sorted(FIDELITY.glob("changes/*/log.csv"))
    if changes:
        lines += ["", "## One change at a time (ResNet-56, the first 500 iterations at lr 0.1)", "",
                  "Reference rows: `python benchmarks/reference.py --depth 56 --iterations 500 --milestones "
                  "1000 1500 --seed S <switches>`, each switch one of the engine's choices. Engine rows: the "
                  "engine's ResNet-56 on the same 500 iterations (`train(paper_config('resnet56', "
                  "iterations=500, milestones=(1000, 1500), eval_every=250, ...))`) with the config change "
                  "named.", "",
                  "| run | what differs | train, it. 1-250 | train, it. 1-500 | test at 500 |",
                  "| --- | --- | --- | --- | --- |"]
        for path in changes:
            if path.suffix == ".json":
                data = json.loads(path.read_text())
                cfg, rows, name = data["config"], data["rows"], path.stem
                what = " ".join(f"--{k.replace('_', '-')} {cfg[k]}"
                                for k in ("norm", "conv_init", "linear_init"))
                what = f"reference `{what} --seed {cfg['seed']}`"
            else:
                config = json.loads((path.parent / "config.json").read_text())["config"]
                rows, name = engine_rows(path.parent) or [], path.parent.name
                what = f"engine, normalization={config['normalization']}, seed {config['seed']}"
                if len(rows) < 2:
                    continue
            m = measures(rows)
            record["changes"][name] = {"what": what, **m}
            lines.append(f"| {name} | {what} | {m['train_0_250']:.2f} | {m['train_0_500']:.2f} | "
                         f"{m['test_500']:.2f} |")
    (REPO / "benchmarks" / "results" / "fidelity.md").write_text("\n".join(lines) + "\n")
    (REPO / "benchmarks" / "results" / "fidelity.json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

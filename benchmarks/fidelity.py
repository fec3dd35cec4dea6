#!/usr/bin/env python3
"""Does the engine train like an independent reference? The tables, from the records that exist.

    python benchmarks/fidelity.py          # writes benchmarks/results/fidelity.md and fidelity.json

Engine: the short-schedule runs (``python experiments/replicate.py --short``: the paper's recipe at 2,000
iterations, the rate divided by 10 at 1,000 and 1,500, all 50,000 training images, all 10,000 test images
every 250 iterations) in results/short/runs/, and the engine's 500-iteration ResNet-56 runs in
benchmarks/results/fidelity/changes/<name>/. Reference: benchmarks/reference.py at the same schedule
(benchmarks/results/fidelity/reference-resnet<D>-s<S>.json) and its 500-iteration runs
(changes/<name>.json), each with the switches it was run with.

For each run: the training error over iterations 1-250 and 251-500 (the running error of the augmented
training batches, train mode, as both log it), the test error at iteration 500, and at the end of a
2,000-iteration run the training error over its last 250 iterations and its test error (the final
iteration's; nothing is chosen on the test set). Errors in %.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIDELITY = REPO / "benchmarks" / "results" / "fidelity"
CHANGES = FIDELITY / "changes"
ENGINE = REPO / "results" / "short" / "runs"
COLUMNS = {"train_1_250": "train, it. 1-250", "train_251_500": "train, it. 251-500",
           "test_500": "test at 500", "train_end": "train, it. 1751-2000", "test_end": "test at 2,000"}


def engine_rows(run: Path) -> list[dict[str, float]] | None:
    """A finished engine run's log rows (or the rows so far of one that got past iteration 500)."""
    try:
        with open(run / "log.csv", newline="") as f:
            rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    except OSError:
        return None
    try:
        finished = json.loads((run / "summary.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        finished = False
    return rows if finished or (rows and rows[-1]["iteration"] >= 500) else None


def reference_rows(path: Path) -> list[dict[str, float]] | None:
    return json.loads(path.read_text())["rows"] if path.is_file() else None


def measures(rows: list[dict[str, float]], *, full: bool) -> dict[str, float]:
    by_it = {int(r["iteration"]): r for r in rows}
    out = {"train_1_250": 100 * by_it[250]["train_error"], "train_251_500": 100 * by_it[500]["train_error"],
           "test_500": 100 * by_it[500]["test_error"]}
    if full and 2000 in by_it:
        out.update(train_end=100 * by_it[2000]["train_error"], test_end=100 * by_it[2000]["test_error"])
    return out


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def side_runs(depth: int, side: str, *, full: bool) -> dict[int, dict[str, float]]:
    """{seed: measures} of one side's runs of ResNet-<depth> with its own defaults."""
    found = {}
    for seed in range(8):
        if side == "engine":
            rows = engine_rows(ENGINE / f"resnet{depth}-A-paper-s{seed}")
            if rows is None and not full:
                rows = engine_rows(CHANGES / f"engine-s{seed}")
        else:
            rows = reference_rows(FIDELITY / f"reference-resnet{depth}-s{seed}.json")
            if rows is None and not full:
                rows = reference_rows(CHANGES / f"reference-s{seed}.json")
        if rows is not None and (not full or rows[-1]["iteration"] >= 2000):
            found[seed] = measures(rows, full=full)
    return found


def main() -> int:
    record: dict = {"schedule": "2,000 iterations, lr 0.1 / 10 at 1,000 and 1,500, batch 128, all 50k "
                                "training images, all 10k test images",
                    "full": {}, "first_500": {}, "changes": {}}
    lines = ["# The engine against an independent reference, at the short schedule", "",
             "Written by `python benchmarks/fidelity.py` from the records; errors in %, mean ± std over the "
             "seeds named. Schedule: 2,000 iterations, batch 128, lr 0.1 divided by 10 at 1,000 and 1,500, "
             "all 50,000 training images, all 10,000 test images. Engine: `python experiments/replicate.py "
             "--short` (results/short/runs/; its defaults: per-pixel mean subtraction, Kaiming fan-out "
             "convs, PyTorch's default linear init). Reference: `python benchmarks/reference.py --depth D "
             "--seed S --out benchmarks/results/fidelity/reference-resnetD-sS.json` (torchvision's CIFAR10 "
             "and PIL transforms, a DataLoader, torch.optim.SGD with MultiStepLR, its own LambdaLayer "
             "ResNet; its defaults: per-channel mean and std, Kaiming fan-in convs and linear layer, as "
             "akamaster/pytorch_resnet_cifar10). Training error: the running error of the augmented training "
             "batches over the iterations named; test error: at that iteration.", "",
             "## 2,000 iterations", ""]
    rows = []
    for depth in (20, 56):
        for side in ("engine", "reference"):
            found = side_runs(depth, side, full=True)
            record["full"][f"resnet{depth}-{side}"] = found
            if found:
                rows.append([f"ResNet-{depth}", side, ", ".join(map(str, found))]
                            + [mean_std([m[c] for m in found.values() if c in m]) for c in COLUMNS])
    lines += table(["network", "side", "seeds", *COLUMNS.values()], rows)
    lines += ["", "## ResNet-56, the first 500 iterations, more seeds", "",
              "The same runs where they got past iteration 500, and 500-iteration runs of further seeds "
              "(`--iterations 500 --milestones 1000 1500`: the same first 500 iterations).", ""]
    rows = []
    for side in ("engine", "reference"):
        found = side_runs(56, side, full=False)
        record["first_500"][side] = found
        for seed, m in found.items():
            rows.append([side, str(seed)] + [f"{m[c]:.2f}" for c in list(COLUMNS)[:3]])
        if found:
            rows.append([f"**{side}, mean ± std**", ", ".join(map(str, found))]
                        + [mean_std([m[c] for m in found.values()]) for c in list(COLUMNS)[:3]])
    lines += table(["side", "seed", *list(COLUMNS.values())[:3]], rows)
    lines += ["", "## One change at a time (ResNet-56, the first 500 iterations)", "",
              "Each reference row changes its defaults by the switches named; each engine row changes the "
              "config as named. `pixel` is the engine's input (per-pixel mean on [0, 1], no division: "
              "tests/test_fidelity.py checks they are equal); `pixel255` the same on [0, 255], the scale of "
              "the paper's Caffe inputs, which a BN after the first conv makes the same network function.",
              ""]
    rows = []
    seeds_only = {f"{side}-s{s}" for side in ("engine", "reference") for s in range(8)}  # in the table above
    for path in sorted(CHANGES.glob("*.json")) + sorted(CHANGES.glob("*/summary.json")):
        if (path.stem if path.name != "summary.json" else path.parent.name) in seeds_only:
            continue
        if path.suffix == ".json" and path.name != "summary.json":
            data = json.loads(path.read_text())
            cfg, run_rows, name = data["config"], data["rows"], path.stem
            what = "reference " + " ".join(f"--{k.replace('_', '-')} {cfg[k]}"
                                           for k in ("norm", "conv_init", "linear_init"))
            seed = cfg["seed"]
        else:
            config = json.loads((path.parent / "config.json").read_text())["config"]
            run_rows, name, seed = engine_rows(path.parent), path.parent.name, config["seed"]
            what = f"engine, normalization={config['normalization']}"
        if not run_rows or run_rows[-1]["iteration"] < 500:
            continue
        m = measures(run_rows, full=False)
        record["changes"][name] = {"what": what, "seed": seed, **m}
        rows.append([name, what, str(seed)] + [f"{m[c]:.2f}" for c in list(COLUMNS)[:3]])
    lines += [""] if not rows else []
    lines += table(["run", "what differs", "seed", *list(COLUMNS.values())[:3]], rows)
    (REPO / "benchmarks" / "results" / "fidelity.md").write_text("\n".join(lines) + "\n")
    (REPO / "benchmarks" / "results" / "fidelity.json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

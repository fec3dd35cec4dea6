"""The cost table the time-limited planner reads (resnet.plan.Costs), from measurements already made, until a
slice's speed probe (benchmarks/probe.py) writes one of its own.

    python benchmarks/costs.py          # benchmarks/results/costs.json from grouped.json and results/runs

Its rows are benchmarks/results/grouped.md's grouped networks (ms per network and iteration, seeds of one
network as one group, on the GPU that measured them); its overhead, the wall time of the committed
full-schedule runs trained in a group over their training time (their evaluations, checkpoints and the
runs beside them on the GPU: the median over those runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resnet import cli, models  # noqa: E402
from resnet.records import RESULTS_DIR, write_json  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def rows_from_grouped(record: dict) -> list[dict]:
    """grouped_speed.py's rows as cost rows: {depth, k, members, work, ms_per_network, ms}."""
    rows = []
    for row in record["rows"]:
        depth, k = models.arch_depth(row["arch"]), row["k"]
        rows.append({"depth": depth, "k": k, "members": [f"{row['arch']}-A"] * k, "work": float(depth * k),
                     "ms_per_network": row["grouped_ms"], "ms": round(row["grouped_ms"] * k, 3)})
    return rows


def grouped_overhead(runs: Path) -> tuple[float, list[str]]:
    """The median wall time over training time of the finished runs in ``runs`` that trained in a group,
    and their names."""
    ratios, names = [], []
    for folder in sorted(p for p in runs.iterdir() if (p / "summary.json").is_file()):
        summary = json.loads((folder / "summary.json").read_text())
        execution = json.loads((folder / "config.json").read_text())["run"]
        if summary["status"] == "finished" and execution.get("group") and summary.get("train_time_s"):
            ratios.append(summary["wall_time_s"] / summary["train_time_s"])
            names.append(folder.name)
    return (round(statistics.median(ratios), 3) if ratios else 1.0), names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grouped", type=Path, default=RESULTS / "grouped.json")
    ap.add_argument("--runs", type=Path, default=RESULTS_DIR / "runs")
    ap.add_argument("--out", type=Path, default=RESULTS / "costs.json")
    args = ap.parse_args(argv)
    record = json.loads(args.grouped.read_text())
    overhead, runs = grouped_overhead(args.runs)
    write_json(args.out, {"device": record["device"], "torch_version": record["torch_version"],
                          "git_commit": record["git_commit"], "command": "python benchmarks/costs.py",
                          "rows_from": f"{args.grouped.name}: {record['command']}",
                          "overhead": overhead, "overhead_from": runs, "rows": rows_from_grouped(record)})
    print(f"{args.out}: {len(record['rows'])} rows ({record['device']}), overhead {overhead} "
          f"(median over {len(runs)} grouped runs)")
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

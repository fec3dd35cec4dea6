"""The benchmark scripts run end to end (on the CPU, tiny schedules) and write their records.

Speeds themselves are never asserted: the machines are shared and noisy, so speed lives in benchmarks/,
printed as ratios against a reference measured in the same run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_speed_harness_writes_its_record(cifar_root, tmp_path):
    out = tmp_path / "speed"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--device", "cpu",
                          "--archs", "resnet20", "--iterations", "2", "--warmup", "1", "--concurrent", "2",
                          "--set-archs", "resnet20", "plain20", "--set-iterations", "3",
                          "--data-dir", str(cifar_root),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    (net,) = record["networks"]
    assert net["arch"] == "resnet20" and net["eager_ms"] > 0 and net["graph_ms"] is None  # no graph on a CPU
    assert net["graph_replay_ms"] is None and net["batch_ms"] is None
    assert set(net["concurrent_ms"]) == {"2"} and net["concurrent_ms"]["2"] > 0
    assert net["full_schedule_gpu_s"] == round(net["concurrent_ms"]["2"] * 64_000 / 1000, 1)
    assert net["target_s"] == 60
    mixed = record["set_in_turn"]
    assert mixed["archs"] == ["resnet20", "plain20"] and set(mixed["alone_ms"]) == {"resnet20", "plain20"}
    assert mixed["alone_ms"]["resnet20"] == net["eager_ms"]  # measured once, reused for the set
    assert mixed["together_ms"] > 0 and mixed["together_replay_ms"] is None
    the_set = record["figure6_set"]
    assert set(the_set["test_errors"]) == {"resnet20", "plain20"} and the_set["extrapolated"]
    # evaluated at every one of the 3 iterations: the steady pace is measured, the opening counted once
    steady = the_set["steady_ms_per_iteration"] / 1000
    assert the_set["full_schedule_s"] == pytest.approx(the_set["wall_s"] + (64_000 - 3) * steady,
                                                       abs=1)  # the record's roundings
    md = out.with_suffix(".md").read_text()
    assert "resnet20" in md and "extrapolated from 3 iterations" in md and record["command"] in md
    assert "one network after another" in md and "its opening counted once" in md


def test_the_steady_pace_leaves_out_the_opening():
    """A set that spent 30 s opening its runs and then 0.01 s per iteration: 0.01, not 30 s / 1,000."""
    spec = importlib.util.spec_from_file_location("gpu_speed", REPO / "benchmarks" / "gpu_speed.py")
    gpu_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_speed)
    log = pd.DataFrame({"iteration": [250, 500, 750, 1000], "elapsed_s": [32.5, 35.0, 37.5, 40.0]})
    slower = log.assign(elapsed_s=[33.0, 36.0, 39.0, 42.0])
    assert gpu_speed.steady_paces([log, slower]) == pytest.approx([0.01, 0.012])
    assert gpu_speed.steady_paces([log, log.iloc[:1]]) is None  # one evaluation: no pace to measure


@pytest.mark.slow
def test_gpu_speed_stopped_midway_keeps_what_it_measured(cifar_root, tmp_path):
    """A slice's command limit may stop the benchmark (experiments/gpu_slice.sh runs it under timeout):
    each network's row is on disk as soon as it is measured."""
    out = tmp_path / "speed"
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--device", "cpu",
                             "--archs", "resnet20", "--iterations", "1", "--warmup", "1", "--concurrent", "1",
                             "--set-archs", "resnet20", "--set-iterations", "100000",
                             "--data-dir", str(cifar_root), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not out.with_suffix(".md").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    record = json.loads(out.with_suffix(".json").read_text())
    assert [n["arch"] for n in record["networks"]] == ["resnet20"] and record["figure6_set"] is None
    assert "Figure 6 set: not measured" in out.with_suffix(".md").read_text()


def test_gpu_speed_without_data_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--device", "cpu",
                          "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "nowhere" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_grouped_speed_harness_writes_its_record(cifar_root, tmp_path):
    out = tmp_path / "grouped"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "grouped_speed.py"), "--device", "cpu",
                          "--archs", "resnet20", "--groups", "2", "--iterations", "2", "--warmup", "1",
                          "--data-dir", str(cifar_root), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    (row,) = record["rows"]
    assert row["arch"] == "resnet20" and row["k"] == 2 and row["streams_ms"] > 0 and row["grouped_ms"] > 0
    assert row["streams_replay_ms"] is None and row["grouped_replay_ms"] is None  # no graphs on a CPU
    md = out.with_suffix(".md").read_text()
    assert "| resnet20 | 2 |" in md and record["command"] in md
    assert f"{row['streams_ms'] / row['grouped_ms']:.2f}x |" in md


def test_the_committed_cost_table_is_made_from_measured_records(tmp_path):
    """benchmarks/costs.py turns grouped_speed.py's rows into the planner's table, with the median wall
    over training time of the committed grouped runs."""
    out = tmp_path / "costs.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "costs.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    made = json.loads(out.read_text())
    grouped = json.loads((REPO / "benchmarks" / "results" / "grouped.json").read_text())["rows"]
    assert [(r["k"], r["ms_per_network"]) for r in made["rows"]] == \
        [(g["k"], g["grouped_ms"]) for g in grouped]
    assert made["overhead_from"] and all(n.startswith(("plain", "resnet")) for n in made["overhead_from"])
    from resnet.plan import Costs
    costs = Costs.load(out)
    assert costs.overhead == made["overhead"] > 1 and costs.per_work > 0

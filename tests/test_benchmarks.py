"""The benchmark scripts run end to end (on the CPU, tiny schedules) and write their records.

Speeds themselves are never asserted: the machines are shared and noisy, so speed lives in benchmarks/,
printed as ratios against a reference measured in the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_gpu_speed_harness_writes_its_record(cifar_root, tmp_path):
    out = tmp_path / "speed"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--device", "cpu",
                          "--archs", "resnet20", "--iterations", "4", "--warmup", "1", "--concurrent", "2",
                          "--set-archs", "resnet20", "plain20", "--set-iterations", "4",
                          "--data-dir", str(cifar_root),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    (net,) = record["networks"]
    assert net["arch"] == "resnet20" and net["eager_ms"] > 0 and net["graph_ms"] is None  # no graph on a CPU
    assert set(net["concurrent_ms"]) == {"2"} and net["concurrent_ms"]["2"] > 0
    assert net["full_schedule_gpu_s"] == round(net["concurrent_ms"]["2"] * 64_000 / 1000, 1)
    assert net["target_s"] == 60
    the_set = record["figure6_set"]
    assert set(the_set["test_errors"]) == {"resnet20", "plain20"} and the_set["extrapolated"]
    # 4 -> 64k iterations; wall_s is rounded to 0.1 s, so the two agree within 0.05 s x 16,000
    assert the_set["full_schedule_s"] == pytest.approx(the_set["wall_s"] * 16_000, abs=0.05 * 16_000 + 1)
    md = out.with_suffix(".md").read_text()
    assert "resnet20" in md and "extrapolated from 4 iterations" in md and record["command"] in md


def test_gpu_speed_stopped_midway_keeps_what_it_measured(cifar_root, tmp_path):
    """A slice's command limit may stop the benchmark (experiments/gpu_slice.sh runs it under timeout):
    each network's row is on disk as soon as it is measured."""
    out = tmp_path / "speed"
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--device", "cpu",
                             "--archs", "resnet20", "--iterations", "4", "--warmup", "1", "--concurrent", "2",
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

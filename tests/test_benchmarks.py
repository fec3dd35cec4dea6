"""The benchmark scripts run end to end (on the CPU, tiny schedules) and write their records.

Speeds themselves are never asserted: the machines are shared and noisy, so speed lives in benchmarks/,
printed as ratios against a reference measured in the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_speed_harness_writes_its_record(cifar_root, tmp_path):
    out = tmp_path / "speed"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--device", "cpu",
                          "--archs", "resnet20", "plain20", "--iterations", "4", "--reference-iterations", "2",
                          "--workers", "1", "--data-dir", str(cifar_root), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    assert [n["arch"] for n in record["networks"]] == ["resnet20", "plain20"]
    for n in record["networks"]:
        assert n["images_per_s"] > 0 and n["reference_images_per_s"] > 0 and n["extrapolated"]
        assert n["ratio"] == round(n["images_per_s"] / n["reference_images_per_s"], 2)
        assert n["full_schedule_s"] > n["run_wall_s"]  # 4 iterations extrapolated to 64k
    assert record["networks"][0]["target_s"] == 60 and record["networks"][1]["target_s"] is None
    md = out.with_suffix(".md").read_text()
    assert "resnet20" in md and "extrapolated" in md and record["command"] in md


def test_gpu_speed_without_data_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--device", "cpu",
                          "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "nowhere" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.json").exists()

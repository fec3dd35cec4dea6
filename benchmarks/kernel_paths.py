"""The room each threshold test leaves to another CPU's rounding: the tests marked ``margins`` run on each of
the CPU's kernel paths, and every value they check is tabulated beside its threshold.

    python benchmarks/kernel_paths.py            # writes benchmarks/results/kernel_margins.md (and .json)

A float32 result depends on which kernels computed it: PyTorch picks ATen's vectorised kernels by the CPU's
instruction set (``ATEN_CPU_CAPABILITY``: avx512, avx2 or default) and oneDNN its convolutions likewise
(``ONEDNN_MAX_CPU_ISA``). A test whose verdict holds on one CPU can fail on another; this runs the tests on
three paths of this CPU (its own, AVX2 with oneDNN capped at AVX2, and ATen's default kernels) so that the
machines CI meets are covered. Each test records what it checks through the ``margin`` fixture
(tests/conftest.py); the table shows each value on each path and the smallest room left, as a share of the
threshold. It exits non-zero when a test fails on any path.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resnet.records import atomic_write_bytes, git_commit, write_json  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
MARGINS_ENV = "RESNET_TEST_MARGINS"  # as tests/conftest.py reads it
PATHS = {  # name: the environment that selects it
    "own": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
}


def run_path(name: str, env_vars: dict[str, str], pytest_args: list[str]) -> tuple[int, str, list[dict]]:
    """The margins tests on one kernel path: pytest's exit code, the capability torch used, the records."""
    with tempfile.TemporaryDirectory(prefix=f"margins_{name}_") as tmp:
        record = Path(tmp) / "margins.jsonl"
        env = {**{k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")},
               **env_vars, MARGINS_ENV: str(record)}
        capability = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu."
                                     "get_cpu_capability())"], env=env, capture_output=True, text=True,
                                    cwd=REPO).stdout.strip() or "unknown"
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "margins", "-p", "no:xdist", "-p",
                               "no:cacheprovider", "-q", *pytest_args], env=env, cwd=REPO,
                              capture_output=True, text=True)
        print(f"{name} ({capability}): " + ((done.stdout + done.stderr).strip().splitlines() or [""])[-1],
              file=sys.stderr, flush=True)
        rows = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return done.returncode, capability, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=RESULTS / "kernel_margins.json")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (for example -k learns)")
    args = ap.parse_args(argv)
    results, labels, failed = {}, {}, []
    for name, env_vars in PATHS.items():
        code, capability, rows = run_path(name, env_vars, args.pytest_args)
        labels[name] = f"{name} ({capability})" if name == "own" else f"{capability}" + (
            ", oneDNN AVX2" if "ONEDNN_MAX_CPU_ISA" in env_vars else "")
        if code != 0:
            failed.append(name)
        for row in rows:
            key = (row["test"], row["quantity"], row["op"], row["threshold"])
            results.setdefault(key, {})[name] = row["value"]

    def room(value: float, op: str, threshold: float) -> float:
        gap = threshold - value if op == "<" else value - threshold
        return gap / abs(threshold) if threshold else gap

    lines = ["| test | quantity | check | " + " | ".join(labels[n] for n in PATHS) + " | least room |",
             "|---|---|---|" + "---:|" * len(PATHS) + "---:|"]
    record_rows = []
    for (test, quantity, op, threshold), values in results.items():
        least = min(room(v, op, threshold) for v in values.values())
        cells = " | ".join(f"{values[n]:.4g}" if n in values else "not run" for n in PATHS)
        lines.append(f"| `{test.split('::')[-1]}` | {quantity} | {op} {threshold:g} | {cells} | {least:.0%} |")
        record_rows.append({"test": test, "quantity": quantity, "check": f"{op} {threshold:g}",
                            "values": values, "least_room": round(least, 4)})
    command = shlex.join(["python", "benchmarks/kernel_paths.py", *(sys.argv[1:] if argv is None else argv)])
    caption = (f"Each value as the test measured it on each kernel path; least room: the smallest distance to "
               f"the threshold over the paths, as a share of the threshold. Code {git_commit()[:7]}, "
               f"`{command}`" + (f"; FAILED on: {', '.join(failed)}" if failed else "") + ".")
    table = "\n".join(lines)
    print(f"{table}\n\n{caption}")
    write_json(args.output, {"benchmark": "kernel_margins", "paths": {n: {"env": PATHS[n], "label": labels[n]}
                                                                      for n in PATHS},
                             "rows": record_rows, "failed": failed, "git_commit": git_commit(),
                             "command": command, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    atomic_write_bytes(args.output.with_suffix(".md"), f"{table}\n\n{caption}\n".encode())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

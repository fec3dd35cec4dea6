"""Full-schedule speed of the Figure 6 networks on one GPU, against the per-sample reference pipeline.

    python benchmarks/gpu_speed.py                          # all nine networks, 64k iterations each, on cuda
    python benchmarks/gpu_speed.py --jobs 3 --compile       # several networks at once on the one GPU
    python benchmarks/gpu_speed.py --results results        # keep the runs as the replication's records
    python benchmarks/gpu_speed.py --device cpu --archs resnet20 --iterations 20 --reference-iterations 4

Targets (one H100, batch 128, the paper's 64k iterations, evaluation every 500 included): ResNet-20 at most
60 s, ResNet-56 at most 180 s, ResNet-110 at most 360 s, and the whole set (plain-20/32/44/56,
ResNet-20/32/44/56/110) at most 15 minutes of wall time.

Ours: the real training runs (resnet.train.run_sweep over the paper's configs, `--jobs` at once), timed
end to end; a network's seconds are its run's wall time (evaluation and checkpoints included), its
images/s those of its training steps. With `--iterations` below 64k the full-schedule seconds are
extrapolated linearly and marked so. Reference: benchmarks/train_throughput.py's per-sample
torchvision pipeline feeding a float32 copy of the same network, timed in the same process first, so the
ratio ours/reference compares the two on the same machine at the same moment.

Writes <out>.json and <out>.md (default benchmarks/results/gpu on CUDA, benchmarks/results/cpu_smoke on
the CPU) atomically, with the device, torch version and the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from train_throughput import Reference, timed  # noqa: E402  (the one reference pipeline of benchmarks/)

from resnet import cli, models  # noqa: E402
from resnet import data as cifar  # noqa: E402
from resnet import train as engine  # noqa: E402

FIGURE6 = ("plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
TARGET_S = {"resnet20": 60, "resnet56": 180, "resnet110": 360}
TARGET_SET_S = 15 * 60
FULL = engine.RunConfig().iterations


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_args(ap)
    ap.add_argument("--archs", nargs="+", default=list(FIGURE6), choices=models.CIFAR_ARCHS, metavar="ARCH")
    ap.add_argument("--iterations", type=cli.positive_int, default=FULL, help="iterations per network")
    ap.add_argument("--jobs", type=cli.positive_int, default=1, help="networks trained at once")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models")
    ap.add_argument("--reference-iterations", type=cli.positive_int, default=200)
    ap.add_argument("--workers", type=cli.positive_int, default=8, help="reference DataLoader workers")
    ap.add_argument("--results", type=Path, default=None,
                    help="results folder for the runs (default: a temporary folder, deleted afterwards)")
    ap.add_argument("--out", type=Path, default=None, help="record path without suffix")
    args = ap.parse_args()

    device = engine.resolve_device(args.device)
    data = cifar.load_cifar10(cifar.resolve_data_dir(args.data_dir), download=args.download)
    out = args.out or REPO / "benchmarks" / "results" / ("gpu" if device.type == "cuda" else "cpu_smoke")

    reference = {}
    for arch in dict.fromkeys(args.archs):
        ref = Reference(arch, data, device, seed=0, workers=args.workers)
        reference[arch] = timed(ref, warmup=min(20, args.reference_iterations), iterations=args.reference_iterations)
        print(f"reference {arch}: {reference[arch]:.0f} images/s", flush=True)
        del ref

    scale = args.iterations / FULL
    configs = [engine.paper_config(a, iterations=args.iterations,
                                   milestones=tuple(max(1, int(m * scale)) for m in engine.RunConfig().milestones),
                                   eval_every=min(engine.RunConfig().eval_every, args.iterations))
               for a in args.archs]
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.results or Path(tmp)) / "runs"
        jobs = [engine.Job(c, engine.default_run_dir(c, root=root)) for c in configs]
        fresh = [j for j in jobs if not engine.run_finished(j.out, j.config)]
        if len(fresh) != len(jobs):
            raise engine.ConfigError(f"{root} already holds finished runs of these configs; a speed measurement "
                                     f"needs fresh runs: choose another --results")
        t0 = time.perf_counter()
        summaries = engine.run_sweep(jobs, n_jobs=args.jobs, data=data, data_dir=args.data_dir, device=str(device),
                                     compile=args.compile, progress=args.jobs == 1)
        total = time.perf_counter() - t0

    rows = []
    for cfg, s in zip(configs, summaries):
        if s.get("status") != "finished":
            raise engine.Diverged(f"{cfg.arch} did not finish: {s.get('status')}: {s.get('message')}")
        full_s = s["wall_time_s"] / scale
        rows.append({"arch": cfg.arch, "images_per_s": s["images_per_s"], "run_wall_s": s["wall_time_s"],
                     "full_schedule_s": round(full_s, 1), "extrapolated": args.iterations != FULL,
                     "reference_images_per_s": round(reference[cfg.arch], 1),
                     "ratio": round(s["images_per_s"] / reference[cfg.arch], 2),
                     "final_test_error": s["final_test_error"],
                     "target_s": TARGET_S.get(cfg.arch),
                     "meets_target": None if cfg.arch not in TARGET_S else full_s <= TARGET_S[cfg.arch]})
    record = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else summaries[0]["device"],
        "torch_version": torch.__version__, "git_commit": engine.git_commit(), "data": cifar.describe(data)["name"],
        "data_fingerprint": data.fingerprint, "iterations": args.iterations, "jobs": args.jobs,
        "compile": args.compile, "set_wall_s": round(total, 1), "set_full_schedule_s": round(total / scale, 1),
        "set_target_s": TARGET_SET_S, "networks": rows,
        "command": shlex.join(["python", "benchmarks/gpu_speed.py", *sys.argv[1:]]),
    }
    engine.write_json(out.with_suffix(".json"), record)
    engine.atomic_write_bytes(out.with_suffix(".md"), _markdown(record).encode())
    print(_markdown(record))
    return 0


def _markdown(r: dict) -> str:
    ext = " (extrapolated from {:,} iterations)".format(r["iterations"]) if r["iterations"] != FULL else ""
    lines = [f"# Full-schedule training speed: {r['device']}", "",
             f"torch {r['torch_version']}, commit {r['git_commit']}, {r['data']} ({r['data_fingerprint']}), "
             f"{r['jobs']} network(s) at once, compile={r['compile']}. Command: `{r['command']}`", "",
             f"| network | images/s | full schedule (s){ext} | target (s) | reference images/s | ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for n in r["networks"]:
        target = "–" if n["target_s"] is None else f"{n['target_s']} ({'met' if n['meets_target'] else 'missed'})"
        lines.append(f"| {n['arch']} | {n['images_per_s']:,.0f} | {n['full_schedule_s']:,.1f} | {target} | "
                     f"{n['reference_images_per_s']:,.0f} | {n['ratio']:.2f}x |")
    met = "met" if r["set_full_schedule_s"] <= r["set_target_s"] else "missed"
    lines += ["", f"Whole set: {r['set_full_schedule_s']:,.1f} s{ext} against a target of {r['set_target_s']} s "
                  f"({met})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    cli.main_guard(main)

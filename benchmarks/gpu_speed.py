"""Training speed on one GPU, in one run: the eager step, the CUDA-graph step, and graph-captured runs
several at once, for ResNet-20/56/110; then the full-schedule time of the Figure 6 set.

    python benchmarks/gpu_speed.py                                  # on cuda; writes benchmarks/results/gpu.*
    python benchmarks/gpu_speed.py --compile                        # torch.compile under the graph
    python benchmarks/gpu_speed.py --device cpu --archs resnet20 --iterations 4 --set-iterations 4 \\
        --concurrent 2 --set-archs resnet20 plain20                  # the harness itself, on a CPU

Part 1, per training iteration (batch 128, the runs' own Run.advance, after untimed warm-up iterations
that include the graph capture): one run with the eager step (the reference, measured in the same run),
one run with the CUDA-graph step, and K graph runs advanced in turn, each on its own CUDA stream (wall
time over all runs' iterations). Where the time goes, on the graph path: the same runs replaying their
graphs alone, on the batch they hold (the GPU's own pace: what the loop reaches when the host keeps up),
and the host's batch preparation alone. Part 2: the nine Figure 6 networks (plain-20/32/44/56,
ResNet-20/32/44/56/110) trained at once by resnet.sweep for ``--set-iterations`` iterations each on the
paper's schedule scaled to that length, evaluation every 500 included; when shorter than 64k iterations
the full schedule is extrapolated from the set's steady pace between its first and last evaluation, the
opening of the runs (graph capture included) counted once (marked so). The same nine advanced in turn
without evaluations, and replaying their graphs alone, show whether mixed depths overlap on the GPU.

Targets on one H100 (64k iterations at batch 128): ResNet-20 at most 60 s of GPU time per network within
a sweep, ResNet-56 at most 180 s, ResNet-110 at most 360 s (per-iteration time of the concurrent runs x
64k), the Figure 6 set at most 15 minutes of wall time. Writes <out>.json and <out>.md atomically (default
benchmarks/results/gpu on CUDA, benchmarks/results/cpu_smoke on the CPU) with the device and the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resnet import cli, models  # noqa: E402
from resnet.cifar10 import CIFAR10, load_data  # noqa: E402
from resnet.config import FIGURE6_ARCHS, Execution, RunConfig, paper_config, resolve_device, scaled_schedule  # noqa: E402
from resnet.records import atomic_write_bytes, code_version, write_json  # noqa: E402
from resnet.records import Job  # noqa: E402
from resnet.sweep import allow_concurrent_streams, run_sweep  # noqa: E402
from resnet.train import Run  # noqa: E402

TARGET_S = {"resnet20": 60, "resnet56": 180, "resnet110": 360}
TARGET_SET_S = 15 * 60
FULL = RunConfig().iterations


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_iteration_ms(device: torch.device, body: Callable[[], int]) -> float:
    """Wall milliseconds per iteration of ``body`` (which returns how many iterations it trained), the
    device's queued work waited for before and after."""
    _sync(device)
    t0 = time.perf_counter()
    done = body()
    _sync(device)
    return round(1000 * (time.perf_counter() - t0) / done, 3)


def time_runs(archs: list[str], data, device: torch.device, *, graph: bool, compile: bool, warmup: int,
              iterations: int, tmp: Path) -> dict[str, float | None]:
    """Wall milliseconds per training iteration of one run per entry of ``archs`` (seeds 0, 1, ...),
    advanced in turn, all runs' iterations counted, after ``warmup`` untimed iterations each ("ms"). On
    the graph path also: the same runs only replaying their graphs on the batch each holds ("replay_ms",
    the GPU's pace without the host's per-iteration work), and the host making the batches alone
    ("batch_ms")."""
    # the timed iterations fall before the first evaluation (every 500); the steady state, so without
    # ResNet-110's warm-up, whose training-error check every 20 iterations waits for the GPU
    execution = Execution(device=str(device), graph=graph, compile=compile)
    folder = Path(tempfile.mkdtemp(dir=tmp))  # each measurement's own: the same runs may be timed twice
    active = [Run(paper_config(arch, warmup_lr=None, seed=s), data=data, out=folder / f"{arch}-s{s}",
                  execution=execution)
              for s, arch in enumerate(archs)]

    def timed(work) -> float:  # ms per iteration of ``work(run, n)`` over every run, in turns of 25
        return per_iteration_ms(device, lambda: sum(work(run, min(25, iterations))
                                                    for _ in range(0, iterations, 25) for run in active))

    def replay(run: Run, n: int) -> int:
        with torch.cuda.stream(run.stream):
            for _ in range(n):
                run.step.graph.replay()  # captured during the warm-up; the inputs stay the last batch's
        return n

    def batches(run: Run, n: int) -> int:
        with torch.cuda.stream(run.stream):
            for _ in range(n):
                next(run.batches)
        return n

    try:
        for run in active:
            run.advance(warmup)
        times = {"ms": timed(lambda run, n: run.advance(n))}
        times["replay_ms"] = timed(replay) if graph else None
        times["batch_ms"] = timed(batches) if graph else None
        return times
    finally:
        for run in active:
            run.end("unfinished", message="a benchmark's timed iterations")


def figure6_set(archs, data, device: torch.device, *, iterations: int, compile: bool, tmp: Path,
                data_dir: str | None) -> dict:
    """The set trained at once by the sweep, on the schedule scaled to ``iterations``; wall seconds, and
    the full schedule's: measured, or extrapolated from the steady pace between the set's first and last
    evaluation (every run's log.csv: the seconds since it opened at each evaluation), the rest of the wall
    time (opening the runs, capturing their graphs, the first evaluation interval) counted once."""
    eval_every = min(500, max(1, iterations // 3))  # the paper's 500 from 1,500 iterations on
    configs = [paper_config(a, **scaled_schedule(iterations), eval_every=eval_every) for a in archs]
    jobs = [Job(c, tmp / "set" / c.arch) for c in configs]
    t0 = time.perf_counter()
    # all at once on the GPU; on the CPU (the harness's own check) one after another, without processes
    at_once = len(jobs) if device.type == "cuda" else None
    execution = Execution(device=str(device), at_once=at_once, compile=compile, progress=False)
    summaries = run_sweep(jobs, execution, data=data, data_dir=data_dir)
    wall = time.perf_counter() - t0
    bad = [s for s in summaries if s.status != "finished"]
    if bad:
        raise RuntimeError(f"the Figure 6 set did not finish: {bad[0].status}: {bad[0].message}")
    from resnet.results import load_log  # pandas: imported here, not by every benchmark that imports this one

    paces = steady_paces([load_log(job.out) for job in jobs])
    # at once on a GPU the set ends with its slowest run; one after another (a CPU) it takes them all
    steady = None if paces is None else (max(paces) if at_once else sum(paces))
    full = wall if iterations == FULL else (wall * FULL / iterations if steady is None
                                            else wall + (FULL - iterations) * steady)
    return {"iterations": iterations, "wall_s": round(wall, 1), "full_schedule_s": round(full, 1),
            "steady_ms_per_iteration": None if steady is None else round(1000 * steady, 2),
            "extrapolated": iterations != FULL, "target_s": TARGET_SET_S,
            "test_errors": {s.arch: s.final_test_error for s in summaries}}


def set_in_turn(archs: list[str], timed: Callable[[list[str]], dict], alone: dict[str, dict]) -> dict:
    """The set's networks timed one at a time (``alone`` holds those measured already) and all advanced in
    turn in one process, without evaluations: whether mixed depths overlap on the GPU."""
    for arch in archs:
        if arch not in alone:
            alone[arch] = timed([arch])
    mixed = timed(archs)
    return {"archs": archs, "alone_ms": {a: alone[a]["ms"] for a in archs},
            "alone_replay_ms": {a: alone[a]["replay_ms"] for a in archs},
            "together_ms": mixed["ms"], "together_replay_ms": mixed["replay_ms"]}


def steady_paces(logs: list) -> list[float] | None:
    """Each run's wall seconds per iteration from its log (pandas, as in log.csv): the seconds between its
    first and last evaluation over the iterations between them, so without its opening and first
    interval. None when a log has fewer than two evaluations."""
    if any(len(log) < 2 for log in logs):
        return None
    return [(log["elapsed_s"].iloc[-1] - log["elapsed_s"].iloc[0])
            / (log["iteration"].iloc[-1] - log["iteration"].iloc[0]) for log in logs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_args(ap)
    ap.add_argument("--archs", nargs="+", default=["resnet20", "resnet56", "resnet110"],
                    choices=models.CIFAR_ARCHS)
    ap.add_argument("--iterations", type=cli.positive_int, default=150,
                    help="timed iterations per measurement")
    ap.add_argument("--warmup", type=cli.positive_int, default=20,
                    help="untimed iterations first (capture too)")
    ap.add_argument("--concurrent", type=cli.positive_int, nargs="+", default=[4, 8],
                    help="runs at once to time")
    ap.add_argument("--set-archs", nargs="+", default=list(FIGURE6_ARCHS), choices=models.CIFAR_ARCHS)
    ap.add_argument("--set-iterations", type=cli.positive_int, default=1500,
                    help="iterations per network of the Figure 6 set (64000: the full schedule, "
                         "no extrapolation)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the networks (under the graph)")
    ap.add_argument("--out", type=Path, default=None, help="record path without suffix")
    args = ap.parse_args(argv)
    device, data, opening = setup(args, "gpu_speed.py")
    graph = device.type == "cuda"
    rows = []
    record = {**opening, "compile": args.compile, "warmup": args.warmup,
              "iterations": args.iterations, "networks": rows, "set_in_turn": None, "figure6_set": None}
    out = args.out or REPO / "benchmarks" / "results" / ("gpu" if graph else "cpu_smoke")
    with tempfile.TemporaryDirectory(prefix="gpu_speed_") as tmp:
        def timed(archs: list[str], g: bool) -> dict[str, float | None]:
            return time_runs(archs, data, device, graph=g, compile=args.compile, warmup=args.warmup,
                             iterations=args.iterations, tmp=Path(tmp))

        alone = {}  # each network's one graph run (the eager one on a CPU), reused by the set
        for arch in args.archs:
            eager = timed([arch], False)
            alone[arch] = timed([arch], True) if graph else eager
            together = {k: timed([arch] * k, graph) for k in args.concurrent}
            row = {"arch": arch, "eager_ms": eager["ms"], "graph_ms": alone[arch]["ms"] if graph else None,
                   "graph_replay_ms": alone[arch]["replay_ms"], "batch_ms": alone[arch]["batch_ms"],
                   "concurrent_ms": {k: t["ms"] for k, t in together.items()},
                   "concurrent_replay_ms": {k: t["replay_ms"] for k, t in together.items()}}
            best = min(row["concurrent_ms"].values())
            row.update(full_schedule_gpu_s=round(best * FULL / 1000, 1), target_s=TARGET_S.get(arch))
            print(row, flush=True)
            rows.append(row)
            save(record, out)  # what is measured is kept if the command is stopped before the end
        record["set_in_turn"] = set_in_turn(list(args.set_archs), lambda archs: timed(archs, graph), alone)
        print(record["set_in_turn"], flush=True)
        save(record, out)
        record["figure6_set"] = figure6_set(args.set_archs, data, device, iterations=args.set_iterations,
                                            compile=args.compile, tmp=Path(tmp), data_dir=args.data_dir)
    save(record, out)
    print(markdown(record))
    return 0


def setup(args: argparse.Namespace, script: str) -> tuple[torch.device, CIFAR10, dict]:
    """A GPU benchmark's device and data (from ``args``: cli.add_data_args), with several streams allowed
    to run at once, and what its record opens with: the device, torch, the code and data versions, and
    the command (``script``: the benchmark's file name) that made it."""
    allow_concurrent_streams()
    device = resolve_device(args.device)
    data = load_data(args.data_dir, download=args.download)
    return device, data, {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_version": torch.__version__, **code_version(), "data": data.name,
        "data_fingerprint": data.fingerprint,
        "command": shlex.join(["python", f"benchmarks/{script}", *sys.argv[1:]])}


def save(record: dict, out: Path, render: Callable[[dict], str] | None = None) -> None:
    """``record`` as <out>.json and, rendered by ``render`` (default: this benchmark's markdown), <out>.md."""
    write_json(out.with_suffix(".json"), record)
    atomic_write_bytes(out.with_suffix(".md"), (render or markdown)(record).encode())


def markdown(r: dict) -> str:
    def verdict(value: float, target: float | None) -> str:
        return "–" if target is None else f"{target} ({'met' if value <= target else 'missed'})"

    def ms(value: float | None, replay: float | None = None) -> str:
        return "–" if value is None else f"{value:.2f}" + ("" if replay is None else f" ({replay:.2f})")

    ks = sorted({k for n in r["networks"] for k in n["concurrent_ms"]})
    lines = [f"# Training speed on one GPU: {r['device']}", "",
             f"torch {r['torch_version']}, commit {r['git_commit']}, {r['data']} ({r['data_fingerprint']}), "
             f"compile={r['compile']}, batch 128, {r['iterations']} timed iterations after "
             f"{r['warmup']} untimed. "
             f"Command: `{r['command']}`", "",
             "Milliseconds per training iteration (for K runs at once: wall time over all runs' "
             "iterations). In brackets, the same runs replaying their graphs alone, without the host's "
             "per-iteration work (the GPU's own pace); batches: the host making one run's batch alone.", "",
             "| network | eager (reference) | CUDA graph | batches | "
             + " | ".join(f"{k} at once" for k in ks)
             + " | 64k iterations at the best rate (s) | target (s) |",
             "| --- " * (6 + len(ks)) + "|"]
    for n in r["networks"]:
        graph = ("–" if n["graph_ms"] is None else f"{ms(n['graph_ms'], n.get('graph_replay_ms'))}, "
                 f"{n['eager_ms'] / n['graph_ms']:.1f}x")
        replays = n.get("concurrent_replay_ms") or {}
        lines.append(f"| {n['arch']} | {n['eager_ms']:.2f} | {graph} | {ms(n.get('batch_ms'))} | "
                     + " | ".join(ms(n["concurrent_ms"][k], replays.get(k)) for k in ks)
                     + f" | {n['full_schedule_gpu_s']:,.1f} | "
                       f"{verdict(n['full_schedule_gpu_s'], n['target_s'])} |")
    mixed = r.get("set_in_turn")
    if mixed is not None:
        k = len(mixed["archs"])
        alone = sum(mixed["alone_ms"].values())
        replays = mixed["alone_replay_ms"]
        alone_replay = None if None in replays.values() else sum(replays.values())
        together_replay = None if mixed["together_replay_ms"] is None else k * mixed["together_replay_ms"]
        lines += ["", f"The {k} networks of the Figure 6 set ({', '.join(mixed['archs'])}), one iteration "
                      f"each, without evaluations: {ms(alone, alone_replay)} ms one network after another, "
                      f"{ms(k * mixed['together_ms'], together_replay)} ms advanced in turn in one process "
                      f"(overlap {alone / (k * mixed['together_ms']):.2f}x)."]
    s = r["figure6_set"]
    if s is None:
        return "\n".join(lines + ["", "Figure 6 set: not measured (the command ended before it)."]) + "\n"
    if not s["extrapolated"]:
        how = "measured"
    elif s.get("steady_ms_per_iteration") is not None:
        how = (f"extrapolated from {s['iterations']:,} iterations per network at the set's steady "
               f"{s['steady_ms_per_iteration']:.2f} ms per iteration, its opening counted once")
    else:
        how = f"extrapolated from {s['iterations']:,} iterations per network"
    lines += ["", f"Figure 6 set ({', '.join(s['test_errors'])}), trained at once: {s['wall_s']:,.1f} s for "
                  f"{s['iterations']:,} iterations each; 64k iterations: "
                  f"{s['full_schedule_s']:,.1f} s ({how}); "
                  f"target {verdict(s['full_schedule_s'], s['target_s'])}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    cli.main_guard(main)

"""How fast one full-schedule run trains on a CPU, execution by execution: the choices that change how a run is
executed and not what it computes, each timed as a ratio against today's default in the same run.

    python benchmarks/cpu_speed.py [--arch resnet56] [--rounds 3] [--iterations 10] [--data-dir DIR]

Every variant is resnet.train.Run.advance on the real training set, the paper's recipe in float32 (the
CPU's precision), batch 128, its iterations before the first evaluation:

  default      one process, torch's threads (one per core), channels_last, eager: what
               `experiments/train.py --device cpu` runs out of the box (the reference of the ratios);
  1 thread     the same at one torch thread;
  contiguous   the same network and batches in the NCHW layout instead of channels_last;
  compile      the step under torch.compile (Inductor's C++ kernels; its compilation is timed apart), in
               channels_last and in NCHW;
  2 x 1 thread two gloo processes of one thread each, each training half of every batch (data parallel,
               experiments/train.py under torchrun). Not the same computation: batch norm then normalises
               over each process's 64 images, not over the 128 of the batch, so it is measured, never chosen;
  evaluation   one test-set evaluation (10,000 images, what the recipe measures every 500 iterations), as
               seconds and as a share of 500 default iterations.

Rounds alternate the order of the variants (forwards, then backwards, ...), and each figure is the median
over the rounds, so a drift in the machine's load favours none. The table, a line of JSON, and the same
record written atomically to benchmarks/results/cpu_speed.json (and .md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from resnet import cifar10, cli, models  # noqa: E402
from resnet.config import Execution, paper_config  # noqa: E402
from resnet.distributed import Dist  # noqa: E402
from resnet.inference import evaluate  # noqa: E402
from resnet.records import atomic_write_bytes, git_commit, write_json  # noqa: E402
from resnet.train import Run, cpu_name  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


class Contiguous(nn.Module):
    """A network that runs in the NCHW layout: its weights converted, each batch made contiguous first."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous())


class Variant:
    """One way of executing the run, built once and timed in every round."""

    def __init__(self, name: str, arch: str, data: cifar10.CIFAR10, out: Path, *, threads: int,
                 compile: bool = False, contiguous: bool = False, dist: Dist | None = None) -> None:
        self.name, self.threads = name, threads
        torch.set_num_threads(threads)
        config = paper_config(arch, precision="fp32")  # the lr stays 0.1; no evaluation falls in the timing
        self.run = Run(config, data=data, out=out, dist=dist,
                       execution=Execution(device="cpu", compile=compile, progress=False))
        if contiguous:
            self.run.step.net = Contiguous(self.run.step.net)
        t0 = time.perf_counter()
        self.run.advance(1)  # the first step: Inductor compiles here
        self.first_step_s = time.perf_counter() - t0

    def time(self, *, warmup: int, iterations: int) -> float:
        """Milliseconds per iteration over ``iterations``, after ``warmup`` untimed ones."""
        torch.set_num_threads(self.threads)
        self.run.advance(warmup)
        t0 = time.perf_counter()
        self.run.advance(iterations)
        return 1000 * (time.perf_counter() - t0) / iterations

    def close(self) -> None:
        self.run.end("unfinished", message="a benchmark's timed iterations")


def evaluation_seconds(variant: Variant) -> float:
    """One evaluation of the test set by the run's network, as the training loop measures it."""
    torch.set_num_threads(variant.threads)
    data = variant.run.data
    t0 = time.perf_counter()
    evaluate(variant.run.state.model, *data.test, mean=data.mean, std=data.std, precision="fp32")
    return time.perf_counter() - t0


def data_parallel(args: argparse.Namespace) -> dict[str, float]:
    """The 2 x 1 thread variant: this script under torchrun, each process one thread; rank 0's timings."""
    with tempfile.TemporaryDirectory(prefix="cpu_speed_ddp_") as tmp:
        record = Path(tmp) / "ddp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   str(Path(__file__).resolve()), "--ddp-worker", str(record), "--arch", args.arch,
                   "--iterations", str(args.iterations), "--warmup", str(args.warmup),
                   *(["--data-dir", args.data_dir] if args.data_dir else [])]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the data-parallel variant failed: {done.stderr[-2000:]}")
        return json.loads(record.read_text())


def ddp_worker(args: argparse.Namespace) -> int:
    dist = Dist.from_env()
    data = cifar10.load_data(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="cpu_speed_rank_") as tmp:
        variant = Variant("2 x 1 thread", args.arch, data, Path(tmp) / "run", threads=1, dist=dist)
        ms = variant.time(warmup=args.warmup, iterations=args.iterations)
        variant.close()
    if dist.is_writer:
        write_json(Path(args.ddp_worker), {"ms": ms, "first_step_s": variant.first_step_s})
    dist.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="folder holding the CIFAR-10 batches "
                                                     "(default: $CIFAR10_ROOT, else data/)")
    ap.add_argument("--arch", default="resnet56", choices=models.CIFAR_ARCHS)
    ap.add_argument("--rounds", type=cli.positive_int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--iterations", type=cli.positive_int, default=10,
                    help="timed iterations per variant and round (default 10)")
    ap.add_argument("--warmup", type=cli.positive_int, default=2,
                    help="untimed iterations before each timed stretch (default 2)")
    ap.add_argument("--no-ddp", action="store_true", help="leave out the two-process variant")
    ap.add_argument("--output", type=Path, default=RESULTS / "cpu_speed.json")
    ap.add_argument("--ddp-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args)

    threads = torch.get_num_threads()
    data = cifar10.load_data(args.data_dir)  # DataError: one paragraph, exit 2
    print(f"data: {data.name} ({len(data.train_labels):,} training images, fingerprint {data.fingerprint})")
    print(f"cpu: {cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, {threads} torch threads; "
          f"{args.arch}, batch 128, float32; {args.rounds} rounds of {args.warmup} untimed + "
          f"{args.iterations} timed iterations per variant", flush=True)
    ms: dict[str, list[float]] = {}
    first: dict[str, float] = {}
    evals: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cpu_speed_") as tmp:
        variants = [Variant("default", args.arch, data, Path(tmp) / "default", threads=threads),
                    Variant("1 thread", args.arch, data, Path(tmp) / "one", threads=1),
                    Variant("contiguous", args.arch, data, Path(tmp) / "nchw", threads=threads, contiguous=True),
                    Variant("compile", args.arch, data, Path(tmp) / "compiled", threads=threads, compile=True),
                    Variant("compile, contiguous", args.arch, data, Path(tmp) / "compiled_nchw", threads=threads,
                            compile=True, contiguous=True)]
        first = {v.name: round(v.first_step_s, 2) for v in variants}
        try:
            for r in range(args.rounds):
                order = variants if r % 2 == 0 else variants[::-1]
                for v in order:
                    ms.setdefault(v.name, []).append(v.time(warmup=args.warmup, iterations=args.iterations))
                evals.append(evaluation_seconds(variants[0]))
                if not args.no_ddp:
                    ddp = data_parallel(args)
                    ms.setdefault("2 x 1 thread", []).append(ddp["ms"])
                print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.0f} ms" for k, v in ms.items())
                      + f"; evaluation {evals[-1]:.1f} s", file=sys.stderr, flush=True)
        finally:
            for v in variants:
                v.close()
    median = {k: statistics.median(v) for k, v in ms.items()}
    reference = median["default"]
    evaluation = statistics.median(evals)
    rows = [{"variant": k, "ms_per_iteration": round(v, 1), "speed_vs_default": round(reference / v, 3),
             "per_round_ms": [round(x, 1) for x in ms[k]], "first_step_s": first.get(k),
             "exact": k != "2 x 1 thread"} for k, v in median.items()]
    share = evaluation / (500 * reference / 1000)
    lines = ["| execution | ms per iteration | speed against the default | the same computation |",
             "|---|---:|---:|---|"]
    lines += [f"| {r['variant']} | {r['ms_per_iteration']:,.1f} | {r['speed_vs_default']:.2f}x | "
              f"{'yes' if r['exact'] else 'no: batch norm over 64 images'} |" for r in rows]
    command = shlex.join(["python", "benchmarks/cpu_speed.py", *(sys.argv[1:] if argv is None else argv)])
    caption = (f"{args.arch}, batch 128, float32, on {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}, "
               f"{threads} threads), medians of {args.rounds} alternating rounds of {args.iterations} "
               f"iterations; one test-set evaluation {evaluation:.1f} s, {share:.1%} of 500 default "
               f"iterations; the compiled step's first iteration {first['compile']:.0f} s (compilation). "
               f"Code {git_commit()[:7]}, torch {torch.__version__}, `{command}`.")
    table = "\n".join(lines)
    print(f"\n{table}\n\n{caption}")
    record = {"benchmark": "cpu_speed", "arch": args.arch, "cpu": cpu_name(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads,
              "rounds": args.rounds, "iterations": args.iterations, "warmup": args.warmup,
              "statistic": "median over rounds", "variants": rows, "evaluation_s": round(evaluation, 2),
              "evaluation_share_of_500_iterations": round(share, 4), "torch": torch.__version__,
              "git_commit": git_commit(), "data_fingerprint": data.fingerprint, "command": command,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(json.dumps(record))
    write_json(args.output, record)
    atomic_write_bytes(args.output.with_suffix(".md"),
                       f"# One full-schedule run on a CPU: how to execute it\n\n{table}\n\n{caption}\n".encode())
    print(f"written: {args.output} and {args.output.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.main_guard(main)

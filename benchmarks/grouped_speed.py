"""K networks of one architecture trained as one grouped network, against K CUDA-graph runs on streams.

The first GPU measurement (benchmarks/results/gpu.md) found several graph-captured runs at once on one
GPU overlapping well for ResNet-20 (eight at once: 1.9x one run's throughput) and little for the deeper
networks (ResNet-110: 1.17x): their kernels are small, hundreds per iteration, and side-by-side streams
fill the GPU only so far. Issue 12 names the other way: several same-shape networks as one network, each
convolution a grouped convolution (``groups=K``), each BN over K times the channels, so that one
iteration of K networks is the same number of kernels as one network's, each K times larger. Its first
run (benchmarks/results/grouped.md, commit a2dee63) found it 1.2 to 2.4 times the runs on streams, and
the engine now trains a sweep's seeds of one network that way (resnet.group); this benchmark times the
engine's grouped step (resnet.group.GroupStep with GroupSGD).

    python benchmarks/grouped_speed.py                      # on cuda: ResNet-20/56/110, K = 4 and 8
    python benchmarks/grouped_speed.py --device cpu --archs resnet20 --groups 2 --iterations 2 --warmup 1

Per architecture and K, milliseconds per training iteration of one network (batch 128 each, bf16
autocast, channels_last, the learning rates as device tensors, everything captured in one CUDA graph on
CUDA): the reference, measured in the same run, is the engine's K runs advanced in turn on their own
streams (benchmarks/gpu_speed.py's timing, the loop and its graphs replayed alone); then the grouped
network replaying its graph alone, and in a loop that makes each network's batch from its own
TrainLoader as the engine does. Writes <out>.json and <out>.md (default benchmarks/results/grouped on
CUDA, benchmarks/results/grouped_cpu_smoke on the CPU). tests/test_group.py checks in float64 that the
grouped network is exactly its K networks.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# gpu_speed.py lies beside this file: the engine's timing, shared
from gpu_speed import per_iteration_ms, save, setup, time_runs  # noqa: E402
from resnet import cli, models  # noqa: E402
from resnet.config import paper_config  # noqa: E402
from resnet.group import KINDS, GroupSGD, GroupStep, grouped, kind  # noqa: E402
from resnet.loader import GroupedBatches, TrainLoader, normalization_stats  # noqa: E402
from resnet.step import CudaGraphStep, compiled  # noqa: E402


# --------------------------------------------------------------------------------------------------
# Timing

def time_grouped(members: list[tuple[str, str]], data, device: torch.device, *, warmup: int,
                 iterations: int, compile: bool = False, batch_size: int = 128,
                 precision: str = "bf16") -> dict:
    """ms per iteration of one network when ``members`` (arch, shortcut), of one depth, train as one
    grouped network (ordered as resnet.group.KINDS): in a loop making every network's batch with one
    gather, as the engine does ("ms"), and on CUDA its step, captured by the engine's own
    resnet.step.CudaGraphStep, replayed alone on the last batch ("replay_ms"; None on a CPU, as for
    gpu_speed.time_runs). ``compile``: the grouped network torch.compile'd under the graph; "compile_s"
    is then the wall time of the first calls, which compile it. ``batch_size``: each network's (a
    rehearsal's may be smaller than the paper's 128). ``precision``: the runs' ("fp32": the float32
    control's, TF32 off)."""
    cuda = device.type == "cuda"
    configs = sorted((paper_config(arch, shortcut=shortcut, seed=seed, batch_size=batch_size)
                      for seed, (arch, shortcut) in enumerate(members)), key=lambda c: KINDS.index(kind(c)))
    nets = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)
        nets.append(models.build_model(cfg.arch, shortcut=cfg.shortcut))
    k, cfg = len(nets), configs[0]
    net = grouped(nets).to(device, memory_format=torch.channels_last)
    opt = GroupSGD(net, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    for i in range(k):
        opt.set_rate(i, cfg.lr)
    stats = torch.zeros(k, 2, 3, dtype=torch.float64, device=device)
    train_step = GroupStep(compiled(net) if compile else net, opt, stats, device=device, precision=precision)
    images, labels, _, _ = data.on(device)
    mean, std = normalization_stats(images)
    batches = GroupedBatches([TrainLoader(images, labels, batch_size=c.batch_size, seed=c.seed, mean=mean,
                                          std=std) for c in configs])
    side = torch.cuda.Stream(device) if cuda else None
    step = CudaGraphStep(train_step, side) if cuda else train_step
    if side is not None:
        side.wait_stream(torch.cuda.current_stream(device))  # the weights and statistics were made there
    with torch.cuda.stream(side) if cuda else contextlib.nullcontext():
        t0 = time.perf_counter()
        for _ in range(max(warmup, CudaGraphStep.WARMUP + 1) if cuda else warmup):  # capture, untimed
            step(*next(batches))
        if cuda:
            torch.cuda.synchronize(device)
        opening_s = time.perf_counter() - t0

        def loop(n: int, with_batches: bool) -> int:
            for _ in range(n):
                if with_batches:
                    step(*next(batches))
                else:
                    step.graph.replay()
            return n * k

        return {"ms": per_iteration_ms(device, lambda: loop(iterations, True)),
                "replay_ms": per_iteration_ms(device, lambda: loop(iterations, False)) if cuda else None,
                "compile_s": round(opening_s, 1) if compile else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_args(ap)
    ap.add_argument("--archs", nargs="+", default=["resnet20", "resnet56", "resnet110"],
                    choices=models.CIFAR_ARCHS)
    ap.add_argument("--groups", type=cli.positive_int, nargs="+", default=[4, 8], help="networks as one")
    ap.add_argument("--iterations", type=cli.positive_int, default=100, help="timed iterations")
    ap.add_argument("--warmup", type=cli.positive_int, default=10, help="untimed iterations first")
    ap.add_argument("--out", type=Path, default=None, help="record path without suffix")
    args = ap.parse_args(argv)
    device, data, opening = setup(args, "grouped_speed.py")
    cuda = device.type == "cuda"
    rows: list[dict] = []
    record = {**opening, "iterations": args.iterations,
              "warmup": args.warmup, "rows": rows}
    out = args.out or REPO / "benchmarks" / "results" / ("grouped" if cuda else "grouped_cpu_smoke")
    with tempfile.TemporaryDirectory(prefix="grouped_speed_") as tmp:
        for arch in args.archs:
            for k in args.groups:
                streams = time_runs([arch] * k, data, device, graph=cuda, compile=False,
                                    warmup=args.warmup, iterations=args.iterations, tmp=Path(tmp))
                group = time_grouped([(arch, "A")] * k, data, device, warmup=args.warmup,
                                     iterations=args.iterations)
                row = {"arch": arch, "k": k, "streams_ms": streams["ms"],
                       "streams_replay_ms": streams["replay_ms"],
                       "grouped_ms": group["ms"], "grouped_replay_ms": group["replay_ms"]}
                print(row, flush=True)
                rows.append(row)
                save(record, out, markdown)
    print(markdown(record))
    return 0


def markdown(r: dict) -> str:
    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    lines = [f"# K networks as one grouped network, on {r['device']}", "",
             f"torch {r['torch_version']}, commit {r['git_commit']}, {r['data']} ({r['data_fingerprint']}), "
             f"batch 128 per network, bf16, {r['iterations']} timed iterations after {r['warmup']} untimed. "
             f"Command: `{r['command']}`", "",
             "Milliseconds per training iteration of one network. Reference: the engine's K runs advanced in "
             "turn on their own streams (and their graphs replayed alone); grouped: one network of K, in a "
             "loop making each network's batch (and its graph replayed alone).", "",
             "| network | K | K runs on streams | replayed alone | grouped | replayed alone "
             "| streams / grouped |",
             "| --- " * 7 + "|"]
    for row in r["rows"]:
        ratio = row["streams_ms"] / row["grouped_ms"]
        lines.append(f"| {row['arch']} | {row['k']} | {ms(row['streams_ms'])} | "
                     f"{ms(row['streams_replay_ms'])} | {ms(row['grouped_ms'])} | "
                     f"{ms(row['grouped_replay_ms'])} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    cli.main_guard(main)

"""The speed probe a lent GPU's slice runs first: what its train commands should use, measured on the same
machine in about two and a half minutes, and the cost table the time-limited planner reads.

    python benchmarks/probe.py --out $OUT                  # on a GPU (experiments/gpu_slice.sh probe SECONDS)
    python benchmarks/probe.py --rehearse --out /tmp/p     # the same steps at tiny sizes, on the CPU

Steps, most useful first, each skipped with a note once the budget (--budget seconds) is spent:
  1. costs: ms per training iteration of one network inside a group (the engine's loop: every network's
     batch by one gather, the step replayed from its CUDA graph, cudnn.benchmark on as training runs):
     ResNet-20 at K = 8, 12, 16; ResNet-56 at K = 8, 12, all option A and a mixed group {2 plain, 3 A, 3 B,
     3 C}; ResNet-110 at K = 5. They are the rows of costs.json (resnet.plan.Costs), with the overhead of
     the periodic evaluation and checkpoint; a row that fails is noted and the others kept;
  2. fp32: a lone ResNet-20 in float32 (TF32 off, the control run) against bf16: the table's fp32_factor;
  3. cudnn.benchmark off against on (ResNet-56, K = 8);
  4. two groups of K on their own streams against one group of 2K (ResNet-20, K = 8);
  5. where the time of a grouped ResNet-56 step goes, by kernel category (torch.profiler): convolution
     forward, data gradient, weight gradient, BN, elementwise, casts, optimizer, other;
  6. torch.compile of a ResNet-20 group of 8 under the graph: its compile time, kept only where it is at
     least 10% faster (its Inductor cache is where TORCHINDUCTOR_CACHE_DIR says: experiments/gpu_slice.sh
     keeps it on the machine, outside $OUT, for the slice's train commands).

Writes <out>/speed.json and speed.md, costs.json and decisions.env after every step (and every cost row),
so that a probe stopped by its time-out leaves what it measured: decisions.env holds the flags the
slice's train commands then take (--cudnn-benchmark, --compile, --group) and the reserve for packing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpu_speed import setup  # noqa: E402
from grouped_speed import time_grouped  # noqa: E402
from resnet import cli, models  # noqa: E402
from resnet.config import GPU_GROUP, paper_config  # noqa: E402
from resnet.group import evaluate_grouped, grouped  # noqa: E402
from resnet.plan import group_work  # noqa: E402
from resnet.records import atomic_write_bytes, write_json  # noqa: E402
from resnet.step import CudaGraphStep  # noqa: E402

KEEP_COMPILE = 0.9  # torch.compile is kept where a step takes at most this share of the eager one's
EVAL_EVERY = 500  # the paper recipe's (resnet.config.RunConfig)
clock = time.perf_counter  # what the budget is counted on (a test gives a fake one)


def sizes(rehearse: bool) -> dict:
    """The groups each step measures: the GPU's, or tiny ones for a rehearsal on the CPU."""
    mixed = [("plain", "A")] * 2 + [("resnet", "A")] * 3 + [("resnet", "B")] * 3 + [("resnet", "C")] * 3
    if rehearse:
        one_each = [("plain", "A"), ("resnet", "A"), ("resnet", "B"), ("resnet", "C")]
        return {"costs": [(20, [("resnet", "A")] * 2), (20, one_each), (32, [("resnet", "A")] * 2)],
                "fp32": 20, "cudnn": (20, 2), "streams": (20, 2), "profile": (20, 2), "compile": None,
                "iterations": 2, "warmup": 1, "batch_size": 16}
    return {"costs": [(20, [("resnet", "A")] * k) for k in (8, 12, 16)]
            + [(56, [("resnet", "A")] * k) for k in (8, 12)] + [(56, mixed), (110, [("resnet", "A")] * 5)],
            "fp32": 20, "cudnn": (56, 8), "streams": (20, 8), "profile": (56, 8), "compile": (20, 8),
            "iterations": 60, "warmup": 10, "batch_size": 128}


def members_of(depth: int, spec: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(f"{kind}{depth}", shortcut) for kind, shortcut in spec]


def cost_row(depth: int, members: list[tuple[str, str]], ms_per_network: float) -> dict:
    configs = [paper_config(arch, shortcut=shortcut) for arch, shortcut in members]
    return {"depth": depth, "k": len(members), "members": [f"{a}-{s}" for a, s in members],
            "work": group_work(configs), "ms_per_network": ms_per_network,
            "ms": round(ms_per_network * len(members), 3)}


def overhead(depth: int, k: int, group_ms: float, data, device: torch.device) -> dict:
    """What the periodic evaluation (every network's test error, one grouped forward pass) and checkpoint
    (every network's weights and momentum, written to disk) add to EVAL_EVERY iterations of a group."""
    nets = [models.build_model(f"resnet{depth}").to(device) for _ in range(k)]
    net = grouped(nets).to(device, memory_format=torch.channels_last)
    _, _, images, labels = data.on(device)
    mean = torch.zeros(3, 32, 32, device=device)
    std = torch.ones(1, 1, 1, device=device)
    evaluate_grouped(net, images, labels, mean=mean, std=std)  # its kernels chosen, untimed
    t0 = time.perf_counter()
    evaluate_grouped(net, images, labels, mean=mean, std=std)
    eval_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i, n in enumerate(nets):  # weights and momentum: twice the weights
            torch.save({"model": n.state_dict(), "momentum": n.state_dict()}, Path(tmp) / f"{i}.pt")
        save_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with tarfile.open(Path(tmp) / "pack.tar", "w") as tar:
            for i in range(k):
                tar.add(Path(tmp) / f"{i}.pt", arcname=f"{i}.pt")
        pack_s = time.perf_counter() - t0
    train_s = EVAL_EVERY * group_ms / 1000
    return {"depth": depth, "k": k, "eval_s": round(eval_s, 3), "checkpoint_s": round(save_s, 3),
            "pack_s": round(pack_s, 3), "overhead": round(1 + (eval_s + save_s) / train_s, 3)}


def profile(depth: int, k: int, timed: dict) -> dict[str, float]:
    """Milliseconds per group iteration by kernel category, from torch.profiler's device (or CPU) times."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    device, iterations = timed["device"], timed["iterations"]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profiler(activities=activities) as prof:
        time_grouped([(f"resnet{depth}", "A")] * k, **{**timed, "warmup": 1})
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        us = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if us > 0:
            category = kernel_category(event.key)
            totals[category] = totals.get(category, 0.0) + us
    cuda = device.type == "cuda"  # time_grouped: its warm-up (the capture), the loop, and on CUDA the replays
    per_iteration = (max(1, CudaGraphStep.WARMUP + 1) + 2 * iterations) if cuda else 1 + iterations
    return {c: round(us / 1000 / per_iteration, 3) for c, us in sorted(totals.items(), key=lambda kv: -kv[1])}


def kernel_category(name: str) -> str:
    """A kernel's (or operator's) category, by its name."""
    n = name.lower()
    rules = [("convolution weight gradient", ("wgrad", "weight_backward", "convolution_backward_weight")),
             ("convolution data gradient", ("dgrad", "convolution_backward_input", "input_backward")),
             ("convolution gradients (on the CPU, one operator)", ("convolution_backward",)),
             ("convolution forward", ("fprop", "conv", "implicit_gemm", "cudnn_convolution", "winograd")),
             ("batch norm", ("batch_norm", "batchnorm", "bn_fw", "bn_bw", "welford")),
             ("optimizer", ("foreach", "multi_tensor", "addcmul")),
             ("casts", ("copy_", "to_copy", "cast", "bfloat16", "convert")),
             ("elementwise", ("elementwise", "relu", "threshold", "add", "mul", "vectorized"))]
    return next((category for category, keys in rules if any(k in n for k in keys)), "other")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_args(ap)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/probe")),
                    help="folder for speed.json, speed.md, costs.json and decisions.env (default $OUT)")
    ap.add_argument("--budget", type=cli.positive_seconds, default=150, metavar="SECONDS",
                    help="no step starts after this many seconds (default 150)")
    ap.add_argument("--rehearse", action="store_true", help="tiny sizes, for a rehearsal on the CPU")
    args = ap.parse_args(argv)
    start = clock()
    args.out.mkdir(parents=True, exist_ok=True)
    device, data, opening = setup(args, "probe.py")
    size = sizes(args.rehearse)
    # the compile cache: torch's default unless the caller keeps one (gpu_slice.sh: on the machine, outside
    # $OUT, whose files come back and which every command empties)
    record: dict = {**opening, "budget_s": args.budget, "rehearsal": args.rehearse,
                    "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"), "steps": {}, "decisions": {}}
    timed = dict(data=data, device=device, warmup=size["warmup"], iterations=size["iterations"],
                 batch_size=size["batch_size"])
    rows: list[dict] = []

    def keep() -> None:  # what a time-out (gpu_slice.sh's `timeout`) would leave: all measured so far
        decide(record, rows)
        save(record, args.out)

    def step(name: str, work: Callable[[], object]) -> None:
        if clock() - start > args.budget:
            record["steps"][name] = {"skipped": f"the budget of {args.budget:.0f} s was spent"}
        else:
            t0 = clock()
            try:
                result = work()  # the costs step records its rows in record as it goes
                record["steps"][name] = {**record["steps"].get(name, {}), "result": result,
                                         "seconds": round(clock() - t0, 1)}
            except Exception as e:  # one step's failure (out of memory, a compile error) is recorded
                record["steps"][name] = {"failed": f"{type(e).__name__}: {e}"}
        print(f"probe: {name}: {record['steps'][name]}", file=sys.stderr, flush=True)
        keep()

    def costs() -> list[dict]:
        failed: list[dict] = []
        record["steps"]["costs"] = {"result": rows, "failed_rows": failed}  # filled in as the rows come
        for depth, spec in size["costs"]:
            if clock() - start > args.budget / 2:
                break  # the cheapest rows come first; the other steps need their share
            members = members_of(depth, spec)
            try:
                with cudnn_benchmark_on():  # as the train commands run (resnet.config.Execution)
                    rows.append(cost_row(depth, members, time_grouped(members, **timed)["ms"]))
            except Exception as e:  # out of memory at a large K, say: the other rows stand
                failed.append({"depth": depth, "members": [f"{a}-{s}" for a, s in members],
                               "failed": f"{type(e).__name__}: {e}"})
            keep()
        return rows

    step("costs", costs)
    step("fp32", lambda: fp32_factor(size["fp32"], timed))
    depth, k = size["cudnn"]
    measured = {(r["depth"], r["k"]): r["ms"] for r in rows}
    step("overhead", lambda: overhead(depth, k, measured.get((depth, k), rows[0]["ms"] if rows else 1.0),
                                      data, device))
    step("cudnn_benchmark", lambda: cudnn_benchmark(*size["cudnn"], timed))
    step("streams_vs_group", lambda: streams_vs_group(*size["streams"], timed))
    step("profile", lambda: profile(*size["profile"], timed))
    if size["compile"] is not None and device.type == "cuda":
        step("compile", lambda: compile_step(*size["compile"], timed))
    else:
        record["steps"]["compile"] = {"skipped": "torch.compile is measured on a GPU only"}
    keep()
    print(markdown(record))
    return 0


@contextlib.contextmanager
def cudnn_benchmark_on() -> Iterator[None]:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def fp32_factor(depth: int, timed: dict) -> dict:
    """ms per iteration of a lone network in float32 (TF32 off) and in bf16, and their ratio: what the
    planner prices the float32 control at (resnet.plan.Costs.fp32)."""
    members = [(f"resnet{depth}", "A")]
    with cudnn_benchmark_on():
        ms = {p: time_grouped(members, precision=p, **timed)["ms"] for p in ("bf16", "fp32")}
    return {"bf16_ms": ms["bf16"], "fp32_ms": ms["fp32"], "factor": round(ms["fp32"] / ms["bf16"], 3)}


def cudnn_benchmark(depth: int, k: int, timed: dict) -> dict:
    members = [(f"resnet{depth}", "A")] * k
    ms = {}
    for on in (False, True):
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = on
        try:
            ms["on" if on else "off"] = time_grouped(members, **timed)["ms"]
        finally:
            torch.backends.cudnn.benchmark = before
    return ms


def streams_vs_group(depth: int, k: int, timed: dict) -> dict:
    """ms per network: one group of 2K against two groups of K advanced in turn on their own streams (the
    two measured one after the other in this process: their sum of per-network times, halved, is what
    two groups on streams cost at best without overlap; the sweep's loop overlaps them)."""
    one = time_grouped([(f"resnet{depth}", "A")] * (2 * k), **timed)["ms"]
    half = time_grouped([(f"resnet{depth}", "A")] * k, **timed)["ms"]
    return {"one_group_of_2k": one, "group_of_k": half}


def compile_step(depth: int, k: int, timed: dict) -> dict:
    members = [(f"resnet{depth}", "A")] * k
    eager = time_grouped(members, **timed)["ms"]
    compiled = time_grouped(members, compile=True, **timed)
    return {"eager_ms": eager, "compiled_ms": compiled["ms"], "compile_s": compiled["compile_s"]}


def decide(record: dict, rows: list[dict]) -> None:
    """What the slice's train commands take from the measurements (decisions.env beside speed.json)."""
    steps, decisions = record["steps"], record["decisions"]
    cudnn = steps.get("cudnn_benchmark", {}).get("result")
    decisions["cudnn_benchmark"] = "off" if cudnn and cudnn["off"] < cudnn["on"] else "on"
    compiled = steps.get("compile", {}).get("result")
    decisions["compile"] = bool(compiled and compiled["compiled_ms"] <= KEEP_COMPILE * compiled["eager_ms"])
    by_k = {r["k"]: r["ms_per_network"] for r in rows if r["depth"] == 20 and len(set(r["members"])) == 1}
    decisions["group"] = min(by_k, key=by_k.get) if by_k else GPU_GROUP  # the K fastest per network
    # the reserve for the last checkpoints and the pack: what a group of GPU_GROUP took here, twice, and 10 s
    # for the packing command's start
    measured = steps.get("overhead", {}).get("result") or {}
    per_network = (measured.get("pack_s", 0.0) + measured.get("checkpoint_s", 0.0)) / measured.get("k", 1)
    pack_s = per_network * GPU_GROUP
    decisions["pack_reserve_s"] = int(10 + 2 * pack_s) if measured else None
    decisions["overhead"] = measured.get("overhead", 1.0)
    # checkpoints as often as the evaluations, or at a multiple of them where one costs more than 2% of
    # the training between them (a unit that finishes needs them only to survive a failure)
    where = (measured.get("depth"), measured.get("k"))
    group_ms = next((r["ms"] for r in rows if (r["depth"], r["k"]) == where), None)
    every = EVAL_EVERY
    while (measured and group_ms and every < 8 * EVAL_EVERY
           and measured["checkpoint_s"] > 0.02 * every * group_ms / 1000):
        every += EVAL_EVERY
    decisions["checkpoint_every"] = every


def save(record: dict, out: Path) -> None:
    """speed.json and speed.md; costs.json (the planner's table) and decisions.env once there are rows."""
    write_json(out / "speed.json", record)
    atomic_write_bytes(out / "speed.md", markdown(record).encode())
    rows = (record["steps"].get("costs") or {}).get("result") or []
    if rows:
        overhead = (record["steps"].get("overhead") or {}).get("result") or {}
        fp32 = (record["steps"].get("fp32") or {}).get("result") or {}
        write_json(out / "costs.json", {"device": record["device"], "torch_version": record["torch_version"],
                                        "git_commit": record["git_commit"], "command": record["command"],
                                        "cudnn_benchmark": True, "overhead": overhead.get("overhead", 1.0),
                                        "fp32_factor": fp32.get("factor"), "rows": rows})
    if record["decisions"]:
        d = record["decisions"]
        flags = [f"--cudnn-benchmark {d['cudnn_benchmark']}", f"--group {d['group']}",
                 f"--checkpoint-every {d['checkpoint_every']}"]
        flags += ["--compile"] if d["compile"] else []
        reserve = f"PACK_RESERVE={d['pack_reserve_s']}\n" if d["pack_reserve_s"] else ""
        atomic_write_bytes(out / "decisions.env", (f"PROBE_FLAGS={shlex.quote(' '.join(flags))}\n"
                                                   + reserve).encode())


def markdown(r: dict) -> str:
    lines = [f"# Speed probe on {r['device']}", "",
             f"torch {r['torch_version']}, commit {r['git_commit']}, {r['data']} ({r['data_fingerprint']}), "
             f"bf16, batch 128 per network{' (a rehearsal at tiny sizes)' if r['rehearsal'] else ''}. "
             f"Command: `{r['command']}`", ""]
    for name, step in r["steps"].items():
        if "result" not in step:
            lines.append(f"- {name}: {step.get('skipped') or step.get('failed')}")
            continue
        result = step["result"]
        if name == "costs":
            lines += ["", "| depth | K | members | ms per network and iteration | ms per group iteration |",
                      "| --- | --- | --- | --- | --- |"]
            lines += [f"| {x['depth']} | {x['k']} | {', '.join(sorted(set(x['members'])))} | "
                      f"{x['ms_per_network']:.3f} | {x['ms']:.2f} |" for x in result]
            lines += [f"- not measured: depth {x['depth']}, {', '.join(sorted(set(x['members'])))}: "
                      f"{x['failed']}" for x in step.get("failed_rows", [])]
            lines.append("" if "seconds" in step else "- (still measuring)")
        else:
            lines.append(f"- {name} ({step.get('seconds', '?')} s): {result}")
    if r["decisions"]:
        lines += ["", f"Decisions for the train commands: {r['decisions']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    cli.main_guard(main)

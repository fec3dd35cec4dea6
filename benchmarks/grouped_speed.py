"""K networks of one architecture trained as one grouped network, against K CUDA-graph runs on streams.

The first GPU measurement (benchmarks/results/gpu.md) found several graph-captured runs at once on one
GPU overlapping well for ResNet-20 (eight at once: 1.9x one run's throughput) and little for the deeper
networks (ResNet-110: 1.18x): their kernels are small, hundreds per iteration, and side-by-side streams
fill the GPU only so far. Issue 12 names the other way: several same-shape networks as one network, each
convolution a grouped convolution (``groups=K``), each BN over K times the channels, so that one
iteration of K networks is the same number of kernels as one network's, each K times larger. This
benchmark measures that before the engine is changed for it.

    python benchmarks/grouped_speed.py                      # on cuda: ResNet-20/56/110, K = 4 and 8
    python benchmarks/grouped_speed.py --device cpu --archs resnet20 --groups 2 --iterations 2 --warmup 1

Per architecture and K, milliseconds per training iteration of one network (batch 128 each, bf16
autocast, channels_last, the fused SGD update with the learning rate as a device tensor, everything
captured in one CUDA graph on CUDA): the reference, measured in the same run, is the engine's K runs
advanced in turn on their own streams (benchmarks/gpu_speed.py's timing, the loop and its graphs
replayed alone); then the grouped network replaying its graph alone, and in a loop that makes each
network's batch from its own TrainLoader as the engine does. Writes <out>.json and <out>.md (default
benchmarks/results/grouped on CUDA, benchmarks/results/grouped_cpu_smoke on the CPU).

The grouped network is exactly the K networks: network k's weights, BN statistics, momentum and weight
decay are slices of the grouped ones (SGD is elementwise), and the summed loss gives each slice its own
network's gradient. tests/test_benchmarks.py checks this in float64 against K separate networks.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# gpu_speed.py lies beside this file: the engine's timing, shared
from gpu_speed import allow_concurrent_streams, header, per_iteration_ms, save, time_runs  # noqa: E402
from resnet import cli, inference, models  # noqa: E402
from resnet.cifar10 import load_data  # noqa: E402
from resnet.config import paper_config, resolve_device  # noqa: E402
from resnet.loader import TrainLoader, normalization_stats  # noqa: E402
from resnet.step import CudaGraphStep, on_device  # noqa: E402


# --------------------------------------------------------------------------------------------------
# K networks as one

class GroupedPad(nn.Module):
    """Option A's shortcut for K networks side by side in the channels: each network's channels padded
    as models.PadShortcut pads them."""

    def __init__(self, pad: models.PadShortcut, groups: int) -> None:
        super().__init__()
        self.pad, self.groups = pad, groups

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        per = x.reshape(b * self.groups, -1, h, w)  # [B*K, c, H, W]: each network's channels on their own
        out = self.pad(per)
        return out.reshape(b, -1, *out.shape[2:])


class GroupedLinear(nn.Module):
    """K linear layers: [B, K*i] -> [B, K, o], network k's output from its own i features."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([lin.weight.detach() for lin in linears]))  # [K, o, i]
        self.bias = nn.Parameter(torch.stack([lin.bias.detach() for lin in linears]))  # [K, o]

    def forward(self, x: Tensor) -> Tensor:
        k, _, i = self.weight.shape
        return torch.einsum("bki,koi->bko", x.reshape(x.shape[0], k, i), self.weight) + self.bias


def grouped(nets: Sequence[nn.Module]) -> nn.Module:
    """One network that computes ``nets`` (same architecture) side by side: input [B, K*3, H, W] (network
    k's batch in channels 3k..3k+2), output [B, K, classes]. Built from the networks' own weights and BN
    statistics, so it starts where they are."""
    k = len(nets)

    def merge(mods: list[nn.Module]) -> nn.Module:
        first = mods[0]
        if isinstance(first, nn.Conv2d):
            conv = nn.Conv2d(k * first.in_channels, k * first.out_channels, first.kernel_size,
                             stride=first.stride, padding=first.padding, groups=k, bias=False,
                             dtype=first.weight.dtype, device=first.weight.device)
            conv.weight.data.copy_(torch.cat([m.weight.detach() for m in mods]))
            return conv
        if isinstance(first, nn.BatchNorm2d):
            bn = nn.BatchNorm2d(k * first.num_features, eps=first.eps, momentum=first.momentum,
                                dtype=first.weight.dtype, device=first.weight.device)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).data.copy_(torch.cat([getattr(m, name).detach() for m in mods]))
            return bn
        if isinstance(first, nn.Linear):
            return GroupedLinear(mods)
        if isinstance(first, models.PadShortcut):
            return GroupedPad(copy.deepcopy(first), k)
        if any(isinstance(p, (nn.Parameter, Tensor)) for p in first.parameters(recurse=False)):
            raise TypeError(f"cannot group {type(first).__name__}")
        out = copy.copy(first)  # a container or a parameter-free module: its children merged in turn
        out._modules = {name: None if child is None else merge([m._modules[name] for m in mods])
                        for name, child in first._modules.items()}
        return out

    return merge(list(nets))


def network(group: nn.Module, nets: Sequence[nn.Module], k: int) -> dict[str, Tensor]:
    """Network k's state_dict, read back from the grouped network (``nets``: K networks of the shape)."""
    names = dict(nets[0].named_modules())
    out = {}
    for name, module in group.named_modules():
        own = names.get(name)
        if isinstance(module, GroupedLinear):
            out[f"{name}.weight"], out[f"{name}.bias"] = module.weight[k], module.bias[k]
        elif isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            for key, value in module.state_dict().items():
                if key == "num_batches_tracked":
                    out[f"{name}.{key}"] = value
                else:
                    size = own.state_dict()[key].shape[0]
                    out[f"{name}.{key}"] = value[k * size:(k + 1) * size]
    return out


def grouped_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The K networks' cross-entropies summed: logits [B, K, C], labels [B, K]; each network's slice of
    the gradient is its own loss's."""
    b, k, c = logits.shape
    return F.cross_entropy(logits.reshape(b * k, c), labels.reshape(b * k), reduction="sum") / b


# --------------------------------------------------------------------------------------------------
# Timing

def time_grouped(arch: str, k: int, data, device: torch.device, *, warmup: int, iterations: int) -> dict:
    """ms per iteration of one network when ``k`` train as one grouped network: in a loop making each
    network's batch ("ms"), and its captured step replayed alone on the last batch ("replay_ms"). On
    CUDA the step is captured by the engine's own resnet.step.CudaGraphStep."""
    cuda = device.type == "cuda"
    cfg = paper_config(arch)
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(models.build_model(arch))
    net = grouped(nets).to(device, memory_format=torch.channels_last)
    fused = {"fused": True, "lr": torch.tensor(cfg.lr, device=device)} if cuda else {"lr": cfg.lr}
    opt = torch.optim.SGD(net.parameters(), momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    images, labels, _, _ = on_device(data, device)
    mean, std = normalization_stats(images)
    loaders = [TrainLoader(images, labels, batch_size=cfg.batch_size, seed=s, mean=mean, std=std)
               for s in range(k)]
    epochs = [(batch for e in itertools.count() for batch in ld.epoch(e)) for ld in loaders]

    def batch() -> tuple[Tensor, Tensor]:  # network k's batch in channels 3k..3k+2, its labels in column k
        batches = [next(e) for e in epochs]
        return torch.cat([b[0] for b in batches], 1), torch.stack([b[1] for b in batches], 1)

    def train_step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        with inference.autocast(device, "bf16"):
            loss = grouped_loss(net(x.contiguous(memory_format=torch.channels_last)), y)
        loss.backward()
        opt.step()

    side = torch.cuda.Stream(device) if cuda else None
    step = CudaGraphStep(train_step, side) if cuda else train_step
    if side is not None:
        side.wait_stream(torch.cuda.current_stream(device))  # the weights and statistics were made there
    with torch.cuda.stream(side) if cuda else contextlib.nullcontext():
        for _ in range(max(warmup, CudaGraphStep.WARMUP + 1)):  # the capture happens here, untimed
            step(*batch())
        x, y = batch()
        replay = step.graph.replay if cuda else lambda: train_step(x, y)

        def loop(n: int, with_batches: bool) -> int:
            for _ in range(n):
                if with_batches:
                    step(*batch())
                else:
                    replay()
            return n * k

        return {"ms": per_iteration_ms(device, lambda: loop(iterations, True)),
                "replay_ms": per_iteration_ms(device, lambda: loop(iterations, False))}


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
    allow_concurrent_streams()
    device = resolve_device(args.device)
    data = load_data(args.data_dir, download=args.download)
    cuda = device.type == "cuda"
    rows: list[dict] = []
    record = {**header("grouped_speed.py", device, data), "iterations": args.iterations,
              "warmup": args.warmup, "rows": rows}
    out = args.out or REPO / "benchmarks" / "results" / ("grouped" if cuda else "grouped_cpu_smoke")
    with tempfile.TemporaryDirectory(prefix="grouped_speed_") as tmp:
        for arch in args.archs:
            for k in args.groups:
                streams = time_runs([arch] * k, data, device, graph=cuda, compile=False,
                                    warmup=args.warmup, iterations=args.iterations, tmp=Path(tmp))
                group = time_grouped(arch, k, data, device, warmup=args.warmup, iterations=args.iterations)
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

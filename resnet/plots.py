"""Every figure of the project; figures are drawn from run records only.

The one figure that needs images rather than records, the augmentation examples, is drawn by code
that has the data at hand (`augmentation_figure`), never by `make figures`.

Safe anywhere, with or without a display: nothing here uses pyplot or touches the backend, so there
is no global figure state and no plt.show(). Every plotting function builds and returns a
matplotlib Figure (a notebook shows it with `display(fig)` under `%matplotlib inline`); `save_figure` writes
a PNG at 150 dpi, atomically (a temporary file, then os.replace), so a figure on disk is never half-written.
"""

from __future__ import annotations

import functools
import os
import textwrap
import pathlib
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from resnet import cifar10
from resnet.loader import crop_flip, random_crop_flip
from resnet import models

__all__ = ["STYLE", "augmentation_figure", "plot_augmentation", "plot_confusion", "plot_degradation",
           "plot_layer_responses", "plot_shortcut_options", "plot_shortcuts", "plot_training_curves",
           "save_figure", "styled"]

DPI = 150

#: The project's figure style, applied by @styled to everything a plotting function draws.
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.interpolation": "nearest",
}


def styled(fn):
    """Draw everything `fn` creates under STYLE (rcParams are read when artists are created)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def save_figure(fig: Figure, path: str | os.PathLike, *, caption: str | None = None) -> pathlib.Path:
    """Write `fig` to `path` as a PNG at 150 dpi, atomically; create the folder if needed. ``caption``: a
    small grey line at the foot of the figure (where it came from: the code that made its records)."""
    path = pathlib.Path(path)
    if caption:
        fig.text(0.005, 0.003, caption, fontsize=6.5, color="0.45", ha="left", va="bottom")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).cpu().numpy()


@styled
def plot_augmentation(images: torch.Tensor, classes_or_titles: Sequence[str], *, padding: int = 4,
                      seed: int = 0, num_random: int = 3,
                      dataset: str = "CIFAR-10") -> Figure:
    """The paper's training augmentation (section 4.2) on a few images: one row per image (uint8
    [K, 3, H, W], labelled by `classes_or_titles`), columns original, flipped, a random crop of the
    image zero-padded by `padding`, the same crop flipped, and `num_random` draws of
    random_crop_flip. All views go through resnet.loader's crop_flip / random_crop_flip, the code the
    training loader runs. `dataset` names the data in the title.
    """
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images [K, C, H, W], got {images.dtype} {tuple(images.shape)}")
    k = images.shape[0]
    if len(classes_or_titles) != k:
        raise ValueError(f"{k} images but {len(classes_or_titles)} titles")
    p = padding
    g = torch.Generator().manual_seed(seed)

    # A visible crop: offsets drawn among those that move the window by at least `padding` pixels.
    offsets = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
               if abs(dy - p) + abs(dx - p) >= p]
    pick = torch.randint(len(offsets), (k,), generator=g)
    dy = torch.tensor([offsets[i][0] for i in pick.tolist()], dtype=torch.int64)
    dx = torch.tensor([offsets[i][1] for i in pick.tolist()], dtype=torch.int64)
    centre = torch.full((k,), p, dtype=torch.int64)
    no, yes = torch.zeros(k, dtype=torch.bool), torch.ones(k, dtype=torch.bool)
    columns = [
        ("original", images, None),
        ("flipped", crop_flip(images, centre, centre, yes, padding=p), None),
        (f"crop (pad {p})", crop_flip(images, dy, dx, no, padding=p), (dy, dx)),
        ("crop + flip", crop_flip(images, dy, dx, yes, padding=p), (dy, dx)),
    ]
    columns += [(f"random {i + 1}", random_crop_flip(images, padding=p, generator=g), None)
                for i in range(num_random)]

    ncols = len(columns)
    fig = Figure(figsize=(1.25 * ncols, 1.3 * k + 0.5), layout="constrained")
    axes = fig.subplots(k, ncols, squeeze=False)
    for col, (name, views, shift) in enumerate(columns):
        for row in range(k):
            ax = axes[row, col]
            ax.imshow(_hwc(views[row]))
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            label = name if row == 0 else ""
            if shift is not None:
                moved = f"shift {int(shift[0][row]) - p:+d},{int(shift[1][row]) - p:+d}"
                label = f"{label}\n{moved}" if label else moved
            ax.set_title(label, fontsize=7.5 if row else None)
            if col == 0:
                ax.set_ylabel(classes_or_titles[row])
    fig.suptitle(f"{dataset}: pad {p}, random 32x32 crop, random horizontal flip (He et al. 2016, sec. 4.2)")
    return fig


def augmentation_figure(data: cifar10.CIFAR10, path: str | os.PathLike | None = None, *, num_classes: int = 5,
                        padding: int = 4, seed: int = 0) -> Figure:
    """plot_augmentation for the first training image of each of the first `num_classes` classes of
    `data`, titled with the data's name (CIFAR10.name); saved to `path` when given. For code
    that has the data (experiments), e.g. augmentation_figure(data, "figures/augmentation.png")."""
    labels = data.train_labels
    rows = [int(torch.nonzero(labels == c)[0]) for c in range(num_classes) if bool((labels == c).any())]
    fig = plot_augmentation(data.train_images[rows], [data.classes[int(labels[i])] for i in rows],
                            padding=padding, seed=seed, dataset=data.name)
    if path is not None:
        save_figure(fig, path)
    return fig


# --------------------------------------------------------------------------------------------------
# The paper's figures, from run records

#: One colour per depth, shared by every figure so that "56 layers" looks the same everywhere.
DEPTH_COLORS = {20: "#1f77b4", 32: "#2ca02c", 44: "#ff7f0e", 56: "#d62728", 110: "#9467bd", 1202: "#8c564b"}


def _wrap(title: str, fig: Figure) -> str:
    """``title`` with each line wrapped to the figure's width, so no part of a long title is cut off."""
    chars = int(fig.get_figwidth() * 13)
    return "\n".join(textwrap.fill(line, chars) for line in title.splitlines())


def _mean_curve(logs: Sequence, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Iterations and the mean of ``column`` (in %) over the seeds' logs, on their common iterations."""
    common = functools.reduce(np.intersect1d, [np.asarray(log["iteration"]) for log in logs])
    values = [np.asarray(log.set_index("iteration").loc[common, column], dtype=float) for log in logs]
    return common, 100 * np.mean(values, axis=0)


def _draw_curves(ax, curves: dict, colors: dict) -> float:
    """Training error (thin dashed) and test error (bold) of each entry of ``curves`` (label -> the logs of
    its seeds, averaged) on ``ax``; returns the highest error after the first quarter, for the y range."""
    ymax = 0.0
    for name, logs in curves.items():
        it, train = _mean_curve(logs, "train_error")
        _, test = _mean_curve(logs, "test_error")
        seeds = f" ({len(logs)} seeds)" if len(logs) > 1 else ""
        ax.plot(it, train, "--", lw=0.9, color=colors[name])
        ax.plot(it, test, "-", lw=2.0, color=colors[name], label=f"{name}{seeds}")
        ymax = max(ymax, float(np.nanmax(train[len(train) // 4:])), float(np.nanmax(test[len(test) // 4:])))
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="best", title="bold: test, dashed: train")
    return ymax


@styled
def plot_degradation(curves: dict, *, title: str = "") -> Figure:
    """Paper Figure 6: training error (thin dashed) and test error (bold) against iterations; plain
    networks on the left, ResNets on the right, on the same axes. ``curves`` maps an arch name
    ("plain20", "resnet56", ...) to the list of its seeds' log tables (pandas, as in log.csv);
    several seeds are averaged."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    ymax = 0.0
    for ax, residual, name in ((axes[0], False, "plain"), (axes[1], True, "ResNet")):
        archs = sorted((a for a in curves if models.is_residual(a) == residual), key=models.arch_depth)
        named = {f"{name}-{models.arch_depth(a)}": curves[a] for a in archs}
        colors = {f"{name}-{models.arch_depth(a)}": DEPTH_COLORS.get(models.arch_depth(a), "black")
                  for a in archs}
        ymax = max(ymax, _draw_curves(ax, named, colors))
        ax.set_title(f"{name} networks" if archs else f"{name} networks (no runs)")
    axes[0].set_ylabel("error (%)")
    axes[0].set_ylim(0, min(100, 1.15 * ymax) if ymax > 0 else 100)
    if title:
        fig.suptitle(_wrap(title, fig))
    return fig


@styled
def plot_training_curves(curves: dict, *, title: str = "") -> Figure:
    """Training error (dashed) and test error (bold) against iterations on one panel; ``curves`` maps a
    label to the list of its seeds' log tables (e.g. {"option A": [log], "option B": [log]})."""
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.subplots()
    palette = matplotlib.colormaps["tab10"]
    ymax = _draw_curves(ax, curves, {name: palette(i) for i, name in enumerate(curves)})
    ax.set_ylabel("error (%)")
    ax.set_ylim(0, min(100, 1.15 * ymax) if ymax > 0 else 100)
    if title:
        ax.set_title(_wrap(title, fig))
    return fig


@styled
def plot_shortcuts(table, *, title: str = "") -> Figure:
    """Final test error against depth, one line per shortcut option (A, B, C); error bars are the
    standard deviation over seeds where there are several. ``table`` is results.seed_table's output."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    styles = {"A": ("o", "-"), "B": ("s", "--"), "C": ("^", ":")}
    for option in ("A", "B", "C"):
        rows = table[table["shortcut"] == option].sort_values("depth")
        if rows.empty:
            continue
        marker, line = styles[option]
        err = rows["test_std"].fillna(0).to_numpy()
        ax.errorbar(rows["depth"], rows["test_mean"], yerr=err if err.any() else None, marker=marker,
                    linestyle=line, capsize=3, label=f"option {option}")
    ax.set_xticks(sorted(set(table["depth"])))
    ax.set_xlabel("layers")
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3)
    ax.legend(title="shortcut")
    if title:
        ax.set_title(_wrap(title, fig))
    return fig


@styled
def plot_confusion(matrix, classes: Sequence[str], *, title: str = "") -> Figure:
    """The confusion matrix as a seaborn heatmap (rows: true class, columns: predicted), with counts,
    and each class's accuracy beside its row label."""
    import seaborn as sns

    matrix = np.asarray(matrix)
    acc = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    fig = Figure(figsize=(7.5, 6.2), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, square=True, ax=ax,
                xticklabels=list(classes), yticklabels=[f"{c} ({a:.0%})" for c, a in zip(classes, acc)],
                annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (per-class accuracy)")
    ax.tick_params(axis="x", rotation=45)
    if title:
        ax.set_title(_wrap(title, fig))
    return fig


@styled
def plot_layer_responses(stds: dict, *, title: str = "") -> Figure:
    """Paper Figure 7: the standard deviation of each 3x3 layer's response (after BN, before the
    addition and the ReLU); top: in layer order, bottom: sorted by magnitude. ``stds`` maps an
    arch name to its list of per-layer standard deviations. The y axis is logarithmic, so that a few
    large responses (the first layers of a briefly trained plain-56) do not flatten the rest of the
    figure; the layers are counted from 1, on integer ticks."""
    from matplotlib import ticker

    fig = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1)
    most = 1
    for arch in sorted(stds, key=lambda a: (models.is_residual(a), models.arch_depth(a))):
        values = np.asarray(stds[arch], dtype=float)
        depth = models.arch_depth(arch)
        name = f"{'plain' if arch.startswith('plain') else 'ResNet'}-{depth}"
        style = dict(color=DEPTH_COLORS.get(depth, "black"), lw=1.3,
                     ls="--" if arch.startswith("plain") else "-")
        layers = np.arange(1, len(values) + 1)
        most = max(most, len(values))
        top.plot(layers, values, label=name, **style)
        bottom.plot(layers, np.sort(values)[::-1], label=name, **style)
    top.set_xlabel("layer index (original order, input side on the left)")
    bottom.set_xlabel("layer index (sorted by magnitude, largest first)")
    every = np.concatenate([np.asarray(v, dtype=float).ravel() for v in stds.values()] or [np.ones(1)])
    every = every[every > 0]  # a log axis leaves out a zero
    # labelled ticks: 1-2-3-5-7 per decade, denser where the responses span less than one decade
    narrow = every.size == 0 or every.max() < 10 * every.min()
    subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0) if narrow else (1.0, 2.0, 3.0, 5.0, 7.0)
    for ax in (top, bottom):
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlim(0.5, most + 0.5)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.set_ylabel("std (log scale)")
        ax.grid(alpha=0.3, which="major")
        ax.legend(ncols=2)
    if title:
        fig.suptitle(_wrap(title, fig))
    return fig


_SHORTCUT_TEXT = {
    "A": "identity, subsampled /2\n+ 16 zero channels\n(no parameters)",
    "B": "projection: 1x1 conv,\n32 filters, /2, + BN\n(512 + 64 parameters)",
    "C": "projection: 1x1 conv,\n32 filters, /2, + BN\n(and a 1x1 projection on\nevery other block too)",
}


def _box(ax, x: float, y: float, text: str, color: str) -> None:
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5,
            bbox=dict(boxstyle="round,pad=0.35", facecolor=color, edgecolor="0.3", lw=0.8))


def _arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", lw=0.9, color="0.25",
                                                          shrinkA=9, shrinkB=9))


@styled
def plot_shortcut_options() -> Figure:
    """The block where stage 2 begins (16 -> 32 filters, 32x32 -> 16x16 maps) with each shortcut option of
    section 3.3, and what each option costs a ResNet-20 (counted from the models)."""
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    for ax, option in zip(fig.subplots(1, 3), models.SHORTCUTS):
        net = models.resnet20(shortcut=option)
        projections = sum(isinstance(m.shortcut, torch.nn.Sequential) for m in net.modules()
                          if isinstance(m, models.BasicBlock))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
        ax.set_title(f"option {option}: ResNet-20 has {models.count_parameters(net):,} parameters,\n"
                     f"{projections} of 9 shortcuts are projections")
        _box(ax, 0.5, 0.94, "x: 16 channels, 32x32", "0.92")
        steps = [(0.82, "3x3 conv, 32 filters, /2"), (0.68, "BN, ReLU"), (0.54, "3x3 conv, 32 filters"),
                 (0.40, "BN")]
        for (y, text), (y_prev, _) in zip(steps, [(0.94, ""), *steps]):
            _box(ax, 0.3, y, text, "#dbe9f6")
            _arrow(ax, (0.3 if y_prev != 0.94 else 0.45, y_prev), (0.3, y))
        _box(ax, 0.76, 0.62, _SHORTCUT_TEXT[option], "#fde2c8" if option != "A" else "#e4f2dc")
        _arrow(ax, (0.55, 0.94), (0.76, 0.665))  # to the box's top edge and from its bottom edge
        ax.text(0.5, 0.24, "+", ha="center", va="center", fontsize=13,
                bbox=dict(boxstyle="circle,pad=0.15", facecolor="white", edgecolor="0.3"))
        _arrow(ax, (0.3, 0.40), (0.5, 0.24))
        _arrow(ax, (0.76, 0.575), (0.5, 0.24))
        _box(ax, 0.5, 0.08, "ReLU: 32 channels, 16x16", "0.92")
        _arrow(ax, (0.5, 0.24), (0.5, 0.08))
        ax.text(0.3, 0.31, "F(x)", ha="center", fontsize=8, style="italic")
        ax.text(0.78, 0.31, "shortcut", ha="center", fontsize=8, style="italic")
    fig.suptitle("Where the shape changes: the shortcut options of section 3.3 "
                 "(paper Eq. 2: y = F(x) + W_s x)")
    return fig

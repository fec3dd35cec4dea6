"""Shared fixtures. Tests are CPU-only, need no network and touch no files outside the repository
and pytest's temporary folders.

Data fixtures (written once per session by tests/cifar_fixture.py, in the official CIFAR-10 python
layout, with learnable synthetic images: class-dependent colour and stripes plus noise):

    cifar_root       root folder holding cifar-10-batches-py/: 1000 training images (5 batches of 200)
                     and 200 test images, classes balanced; pass it to resnet.cifar10.load_cifar10 or as
                     --data-dir / CIFAR10_ROOT to a script. Shared: do not modify its files (write your
                     own copy with cifar_fixture.write_cifar10(tmp_path) for that).
    tiny_cifar_root  the same with 100 training and 20 test images, for the quickest checks.
    cifar_data       load_cifar10(cifar_root), the resnet.cifar10.CIFAR10 object.

tests/ is not a package: test modules import the helper as `from cifar_fixture import write_cifar10`.
"""

from __future__ import annotations

import os

import pytest

from cifar_fixture import write_cifar10


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs ``-n auto``: one worker per core) each worker gets its share of
    the cores, for torch here and, through OMP_NUM_THREADS, for the scripts and notebook kernels it
    starts: two workers on two cores with two threads each would only take turns."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)  # the cores this process may use, as `-n auto` counts them
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(items):
    """The tests marked slow first, each group in its usual order: handed out one at a time
    (``--maxschedchunk 1``), the long tests start early and the short ones fill the workers' ends."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory):
    """A small learnable CIFAR-10 (1000 train / 200 test) in the official layout; read-only."""
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_train_per_batch=200, n_test=200, seed=0)


@pytest.fixture(scope="session")
def tiny_cifar_root(tmp_path_factory):
    """A tiny CIFAR-10 (100 train / 20 test) in the official layout; read-only."""
    return write_cifar10(tmp_path_factory.mktemp("tiny_cifar"), n_train_per_batch=20, n_test=20, seed=1)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny runs: tiny batches gain nothing from more, and on a CPU shared
    with other jobs a team of threads stalls whenever one of them is descheduled. Use it with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cifar_data(cifar_root):
    """`cifar_root` loaded: a resnet.cifar10.CIFAR10 (uint8 images [N, 3, 32, 32], int64 labels)."""
    from resnet.cifar10 import load_cifar10

    return load_cifar10(cifar_root)


def tiny(arch: str = "resnet20", **overrides):
    """The tests' run: the paper's recipe at a few iterations (8, the rate divided at 4, evaluated at 4
    and 8) and batch 8, tested on 64 images: a fraction of a second an iteration on one CPU thread, where
    the paper's batch of 128 takes over half a second (float64, as the equivalence tests run, five times
    that). What the tests assert (schedules, checkpoints, equalities) does not depend on the batch. Test
    modules import it: ``from conftest import tiny``."""
    from resnet.config import paper_config

    base = dict(iterations=8, milestones=(4,), eval_every=4, batch_size=8, test_subset=64)
    return paper_config(arch, **{**base, **overrides})


#: Where ``margin`` records what it measured (one JSON line per check), when set: benchmarks/kernel_paths.py
#: sets it to tabulate every threshold's margin on each of the CPU's kernel paths.
MARGINS_ENV = "RESNET_TEST_MARGINS"


@pytest.fixture
def margin(request):
    """margin(quantity, value, "<" or ">", threshold): assert that a trained (or float32-rounded) quantity
    is on the right side of its threshold, and record it for benchmarks/kernel_paths.py, which runs the
    tests marked ``margins`` on every kernel path of the CPU and tabulates each value beside its threshold:
    the room a check leaves to another CPU's rounding stays visible."""
    import json
    import operator

    ops = {"<": operator.lt, ">": operator.gt}

    def check(quantity: str, value: float, op: str, threshold: float) -> None:
        path = os.environ.get(MARGINS_ENV)
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": request.node.nodeid, "quantity": quantity, "value": float(value),
                                    "op": op, "threshold": float(threshold)}) + "\n")
        assert ops[op](value, threshold), f"{quantity}: {value:.6g} is not {op} {threshold:.6g}"

    return check


class FakeClock:
    """A clock for the time limit that moves only when a training step tells it to (see ``slow_steps``):
    deadlines, a run's seconds per iteration and a sweep's pace all read it, so that what a test of
    time-dependent behaviour sees is the same on every machine, however fast or loaded."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def deadline(self, seconds: float):
        """A resnet.config.Deadline ``seconds`` from now on this clock."""
        from resnet.config import Deadline

        return Deadline(self.now + seconds, clock=self)


@pytest.fixture
def slow_steps(monkeypatch):
    """slow_steps(seconds) -> FakeClock: every training step takes ``seconds`` per network on the returned
    clock (a run's step, resnet.step.TrainStep; a group's, resnet.group.GroupStep, ``seconds`` for each of its
    networks), and nothing else takes any time on it."""
    from resnet import group, step

    def make(seconds: float) -> FakeClock:
        clock = FakeClock()
        for cls in (step.TrainStep, group.GroupStep):
            monkeypatch.setattr(cls, "__call__", _timed(cls.__call__, clock, seconds))
        return clock

    return make


@pytest.fixture
def opened_units(monkeypatch):
    """The units a sweep opens, in order, each as its runs' folder names (resnet.sweep._open_run recorded,
    then called)."""
    from resnet import sweep

    opened: list[list[str]] = []
    open_run = sweep._open_run

    def recorded(unit, *args):
        opened.append([job.out.name for job in unit])
        return open_run(unit, *args)

    monkeypatch.setattr(sweep, "_open_run", recorded)
    return opened


def _timed(real, clock: FakeClock, seconds: float):
    def timed(self, x, y):
        real(self, x, y)
        clock.now += seconds * (self.stats.shape[0] if self.stats.dim() == 3 else 1)
    return timed


class ScriptResult:
    """What a command-line run of an experiment script left: exit code, stdout and stderr."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def message(self) -> str:
        """stderr as one paragraph (messages are wrapped to 100 columns)."""
        return " ".join(self.err.split())


def run_main(root, script: str, *args) -> ScriptResult:
    """``python3 experiments/<script>.py ARGS`` from the tree at ``root``, in this process, without paying for
    a new Python: the script's main() under resnet.cli.main_guard exactly as its command line runs it, with
    sys.argv as that command's (the scripts print it as the command that continues), and sys.argv and
    sys.path (which the script puts its tree first on) as they were afterwards."""
    import contextlib
    import io
    import runpy
    import sys
    from pathlib import Path

    from resnet import cli

    argv, path = list(sys.argv), list(sys.path)
    sys.argv = [f"experiments/{script}.py", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    try:
        namespace = runpy.run_path(str(Path(root) / sys.argv[0]), run_name="experiment")
        with pytest.raises(SystemExit) as stopped, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            cli.main_guard(lambda: namespace["main"](sys.argv[1:]))
    finally:
        sys.argv, sys.path[:] = argv, path
    code = stopped.value.code
    return ScriptResult(0 if code is None else int(code), out.getvalue(), err.getvalue())


@pytest.fixture
def run_script():
    """run_script("train", "--arch", "resnet20", ...) -> ScriptResult: this checkout's script, run_main."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    return lambda script, *args: run_main(repo, script, *args)

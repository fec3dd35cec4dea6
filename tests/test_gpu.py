"""The CUDA paths: the graph-captured step against the eager one, resume on the GPU, several runs at once on
one GPU (on streams, and as one grouped network). Skipped on machines without a GPU (CI has none; a GPU
session runs them: `python -m pytest tests/test_gpu.py`).

cuDNN is put in deterministic mode here, so that two paths that launch the same kernels give the same
numbers; what is left between them is bf16 rounding where the kernels differ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resnet import train as engine
from resnet.config import Execution, paper_config, scaled_schedule
from resnet.records import RunFolder
from resnet.results import load_log
from resnet.records import Job
from resnet.sweep import run_sweep

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU = Execution(progress=False, cudnn_benchmark=False)  # CUDA where there is a GPU; the CUDA-graph step
# by default; cudnn.benchmark off, as the fixture below sets it: the comparisons choose their kernels alike
EAGER = GPU.replace(graph=False)
GRAPH = GPU.replace(graph=True) if torch.cuda.is_available() else None  # a graph needs CUDA


@pytest.fixture(autouse=True)
def deterministic():
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def config(arch="resnet20", **overrides):
    return paper_config(arch, **{**scaled_schedule(120), "eval_every": 20, **overrides})


def curve(out: Path, column: str) -> torch.Tensor:
    return torch.tensor(load_log(out)[column].to_numpy(dtype=float))


def assert_same_curve(a: Path, b: Path) -> None:
    """Training loss within 2% per row, test error within 2 points: bf16 rounding, not a different run."""
    torch.testing.assert_close(curve(a, "train_loss"), curve(b, "train_loss"), rtol=0.02, atol=0.0)
    torch.testing.assert_close(curve(a, "test_error"), curve(b, "test_error"), rtol=0.0, atol=0.02)


def test_graph_step_matches_eager_step(cifar_data, tmp_path):
    eager = engine.train(config(), data=cifar_data, out=tmp_path / "eager", execution=EAGER)
    graph = engine.train(config(), data=cifar_data, out=tmp_path / "graph", execution=GRAPH)
    assert graph.graph is True and eager.graph is False and graph.precision == "bf16-autocast"
    assert_same_curve(tmp_path / "eager", tmp_path / "graph")


def test_warmup_on_the_device_path(cifar_data, tmp_path):
    """ResNet-110's warm-up, decided at the periodic checks, ends in the graph path as in the eager one."""
    cfg = config(warmup_lr=0.01, warmup_check_every=10, warmup_until_train_error=0.9)
    a = engine.train(cfg, data=cifar_data, out=tmp_path / "eager", execution=EAGER)
    b = engine.train(cfg, data=cifar_data, out=tmp_path / "graph", execution=GRAPH)
    assert a.warmup_end is not None and abs(a.warmup_end - b.warmup_end) <= 10


def test_graph_run_resumed_mid_run_ends_where_the_uninterrupted_run_ends(cifar_data, tmp_path):
    engine.train(config(), data=cifar_data, out=tmp_path / "ref", execution=GPU)
    with engine.Run(config(), data=cifar_data, out=tmp_path / "paused", execution=GPU) as run:
        run.advance(37)
        run.pause()
    engine.train(config(), data=cifar_data, out=tmp_path / "paused", resume=True, execution=GPU)
    assert_same_curve(tmp_path / "ref", tmp_path / "paused")


def test_runs_at_once_on_one_gpu_match_runs_alone(cifar_data, tmp_path):
    jobs = [Job(config(seed=s), tmp_path / "together" / f"s{s}") for s in range(3)]
    summaries = run_sweep(jobs, GPU.replace(at_once=3, group=1), data=cifar_data)  # on streams
    assert [s.status for s in summaries] == ["finished"] * 3
    engine.train(config(seed=2), data=cifar_data, out=tmp_path / "alone", execution=GPU)
    assert_same_curve(tmp_path / "together" / "s2", tmp_path / "alone")


def test_runs_trained_as_one_group_on_the_gpu(cifar_data, tmp_path):
    """Three seeds as one grouped network (ResNet-110's warm-up on): captured in one CUDA graph, each run's
    curve is the eager group's (the same kernels); against each run alone (other kernels, so rounding
    grows apart over the iterations, as with a change of thread count on a CPU) the first evaluation's
    training loss agrees, the warm-up ends at the same check and both learn the data."""
    cfg = config(warmup_lr=0.01, warmup_check_every=10, warmup_until_train_error=0.9)

    def group(name, execution):
        jobs = [Job(cfg.replace(seed=s), tmp_path / name / f"s{s}") for s in range(3)]
        return run_sweep(jobs, execution, data=cifar_data)  # on CUDA seeds group by default

    graph, eager = group("graph", GPU), group("eager", EAGER)
    assert all(s.status == "finished" and s.graph for s in graph) and not any(s.graph for s in eager)
    for seed in range(3):
        assert_same_curve(tmp_path / "graph" / f"s{seed}", tmp_path / "eager" / f"s{seed}")
    alone = engine.train(cfg.replace(seed=1), data=cifar_data, out=tmp_path / "alone", execution=GPU)
    assert abs(alone.warmup_end - graph[1].warmup_end) <= cfg.warmup_check_every
    first = [load_log(out).iloc[0] for out in (tmp_path / "alone", tmp_path / "graph" / "s1")]
    assert first[1]["train_loss"] == pytest.approx(first[0]["train_loss"], rel=0.05)
    assert abs(alone.final_test_error - graph[1].final_test_error) <= 0.05


def test_a_mixed_group_on_the_gpu(cifar_data, tmp_path):
    """Plain-20 and ResNet-20 with options A, B and C as one grouped network, captured in one CUDA graph:
    each run's curve is the eager group's, and each learns as it does alone (first training loss within
    5%, final test error within 5 points)."""
    configs = [config(arch="plain20"), config(), config(shortcut="B"), config(shortcut="C")]

    def group(name, execution):
        jobs = [Job(c, tmp_path / name / f"{c.arch}-{c.shortcut}") for c in configs]
        return run_sweep(jobs, execution, data=cifar_data)

    graph, eager = group("graph", GPU), group("eager", EAGER)
    assert all(s.status == "finished" and s.graph for s in graph) and not any(s.graph for s in eager)
    for c in configs:
        name = f"{c.arch}-{c.shortcut}"
        assert_same_curve(tmp_path / "graph" / name, tmp_path / "eager" / name)
    for c, together in zip(configs, graph):
        out = tmp_path / "alone" / f"{c.arch}-{c.shortcut}"
        alone = engine.train(c, data=cifar_data, out=out, execution=GPU)
        first = [load_log(o).iloc[0] for o in (out, tmp_path / "graph" / f"{c.arch}-{c.shortcut}")]
        assert first[1]["train_loss"] == pytest.approx(first[0]["train_loss"], rel=0.05)
        assert abs(alone.final_test_error - together.final_test_error) <= 0.05


def test_a_paused_group_resumes_where_it_stopped(cifar_data, tmp_path):
    """A grouped graph run paused at iteration 37: each member's checkpoint holds exactly its weights at
    37 (the pause waits for the group's stream), the group resumed ends where the uninterrupted group
    ends, and a member resumed alone goes on from there."""
    from resnet.group import GroupRun

    def jobs(name):
        return [Job(config(seed=s), tmp_path / name / f"s{s}") for s in range(2)]

    run_sweep(jobs("whole"), GPU, data=cifar_data)
    group = GroupRun(jobs("paused"), data=cifar_data, execution=GPU, stream=torch.cuda.Stream())
    group.advance(37)
    group.stream.synchronize()
    weights = [{k: v.cpu().clone() for k, v in run.state.model.state_dict().items()} for run in group.members]
    group.pause()
    for job, expected in zip(jobs("paused"), weights):
        saved = RunFolder(job.out).read_checkpoint(job.config, "cpu")
        assert saved["iteration"] == 37
        assert all(torch.equal(saved["model"][k], v) for k, v in expected.items())
    run_sweep(jobs("paused"), GPU, data=cifar_data)
    for whole, paused in zip(jobs("whole"), jobs("paused")):
        assert_same_curve(whole.out, paused.out)


def test_a_paused_graph_runs_checkpoint_holds_exactly_that_iterations_weights(cifar_data, tmp_path):
    """The host runs many iterations ahead of the run's stream: a checkpoint must wait for them, or it mixes
    weights, momentum and BN statistics of different iterations under one iteration number."""
    with engine.Run(config(), data=cifar_data, out=tmp_path / "paused", execution=GPU) as run:
        run.advance(37)
        run.pause()
    # read as a resume on another machine would (the checkpoint holds CUDA tensors: map them to the CPU)
    saved = RunFolder(tmp_path / "paused").read_checkpoint(config(), "cpu")
    with engine.Run(config(), data=cifar_data, out=tmp_path / "straight",
                    execution=GPU.replace(checkpoint_every=10_000)) as run:
        run.advance(37)
        run.wait()
        weights = {k: v.cpu() for k, v in run.state.model.state_dict().items()}
    assert saved["iteration"] == 37
    for name, value in weights.items():
        assert torch.equal(saved["model"][name], value), name


def test_a_cpu_checkpoint_resumes_into_a_graph_run(cifar_data, tmp_path):
    """A run checkpointed on the CPU and resumed on CUDA gets CUDA's fused, capturable update back."""
    cpu = GPU.replace(device="cpu")
    with engine.Run(config(), data=cifar_data, out=tmp_path / "run", execution=cpu) as run:
        run.advance(10)
        run.pause()
    summary = engine.train(config(), data=cifar_data, out=tmp_path / "run", resume=True, execution=GRAPH)
    assert summary.status == "finished" and summary.graph is True


def test_the_float32_control_runs_without_tf32(cifar_data, tmp_path):
    summary = engine.train(config(precision="fp32"), data=cifar_data, out=tmp_path / "fp32", execution=GPU)
    assert summary.precision == "float32 (TF32 off)" and torch.backends.cudnn.allow_tf32


def test_the_float32_controls_backward_runs_without_tf32_on_the_gpu():
    """On the GPU itself (tests/test_step.py checks it with a fake CUDA device): TF32 is off while the
    float32 step's forward, weight gradient and update run, and restored after."""
    from resnet import models
    from resnet.step import TrainStep

    torch.manual_seed(0)
    net = models.build_model("resnet20").cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    seen = {}

    def record(part):
        seen.setdefault(part, torch.backends.cudnn.allow_tf32)

    net.conv1.register_forward_hook(lambda *_: record("forward"))
    net.conv1.weight.register_hook(lambda grad: record("weight gradient"))
    stats = torch.zeros(2, 3, dtype=torch.float64, device="cuda")
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        TrainStep(net, opt, stats, device=torch.device("cuda"), precision="fp32")(
            torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 10, (8,), device="cuda"))
        torch.cuda.synchronize()
        assert seen == {"forward": False, "weight gradient": False} and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32 = before

"""resnet.config: the paper's recipe and the tutorial's, the schedules (full, short, quick), the learning
rate at its edges, the config's validation, and how runs execute (Execution, Deadline)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from resnet import config as config_module
from resnet.config import (RECIPES, SHORT, ConfigError, Deadline, Execution, RunConfig,
                           checks_without_improvement, describe_schedule, evaluates_after, learning_rate,
                           on_schedule, paper_config, quick, scaled_schedule, schedule_of, tutorial_config)

REPO = Path(__file__).resolve().parent.parent


def test_paper_defaults():
    cfg = RunConfig()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) \
        == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert (cfg.iterations, cfg.milestones, cfg.eval_every, cfg.val_size) \
        == (64_000, (32_000, 48_000), 500, 0)
    assert (cfg.precision, cfg.depth) == ("bf16", 20)
    assert paper_config("resnet56").warmup_lr is None
    assert paper_config("resnet110").warmup_lr == 0.01
    assert paper_config("resnet1202").warmup_lr == 0.01


@pytest.mark.parametrize("it, lr", [(0, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01), (48_000, 0.001),
                                    (63_999, 0.001), (64_000, 0.001)])
def test_schedule_edges(it, lr):
    assert learning_rate(it, RunConfig()) == pytest.approx(lr)


def test_warmup_edges():
    cfg = paper_config("resnet110")
    assert learning_rate(0, cfg) == 0.01 and learning_rate(5000, cfg) == 0.01  # training error not yet < 80%
    assert learning_rate(399, cfg, warmup_end=400) == 0.01
    assert learning_rate(400, cfg, warmup_end=400) == pytest.approx(0.1)  # back to 0.1, then the schedule
    assert learning_rate(32_000, cfg, warmup_end=400) == pytest.approx(0.01)
    assert learning_rate(48_000, cfg, warmup_end=400) == pytest.approx(0.001)


def test_scaled_short_and_quick_schedules():
    assert scaled_schedule(64_000) == {"iterations": 64_000, "milestones": (32_000, 48_000)}
    assert scaled_schedule(200)["milestones"] == (100, 150)
    q = quick(paper_config("resnet56"))
    assert (q.iterations, q.milestones, q.train_subset) == (200, (100, 150), 10_000)
    assert quick(tutorial_config("resnet20")).val_size == 1_000
    short = on_schedule(paper_config("resnet56"), "short")
    assert (short.iterations, short.milestones, short.eval_every, short.train_subset, short.test_subset) == \
        (2_000, (1_000, 1_500), 250, None, None)
    assert SHORT["iterations"] * 32 == RunConfig().iterations
    # the tutorial recipe is short already: it runs in full on the short schedule
    assert on_schedule(tutorial_config("resnet20"), "short") == tutorial_config("resnet20")
    assert [schedule_of(c) for c in (paper_config("resnet20"), short, q, tutorial_config("resnet20"))] == \
        ["full", "short", "quick", "full"]
    assert describe_schedule(short).startswith("2,000 iterations (1/32 of the paper's schedule), batch 128, "
                                               "all training images")
    # the tutorial recipe's length is its early stop's, and its training images exclude the validation split
    assert describe_schedule(tutorial_config("resnet20")) == (
        "early stopping on validation, at most 17,550 iterations, batch 128, all training images less 5,000 "
        "held out for validation")
    with pytest.raises(ConfigError):
        scaled_schedule(0)
    assert [c.schedule for c in (short, q)] == ["short", "quick"]
    assert RECIPES["paper"].shortened(2_000) == {"iterations": 2_000, "milestones": (1_000, 1_500)}
    assert RECIPES["tutorial"].shortened(600) == {"iterations": 600}  # its own rule ends it, unscaled


def test_every_committed_record_loads_on_the_schedule_of_its_folder():
    """Records written before RunConfig.schedule existed load with the schedule they were classed on."""
    found = 0
    for path in sorted(REPO.glob("results/**/runs/*/config.json")):
        config = RunConfig.from_dict(json.loads(path.read_text())["config"])
        folder = path.parents[2].name
        assert config.schedule == {"results": "full"}.get(folder, folder), path
        found += 1
    assert found >= 39  # the committed records of the three schedules


def test_a_hand_made_length_is_a_schedule_of_its_own():
    """experiments/train.py --iterations 2000 is not the short schedule: its records go to results/custom/."""
    import runpy
    train = runpy.run_path(str(REPO / "experiments" / "train.py"), run_name="train")
    args = train["parse_args"](["--arch", "resnet20", "--iterations", "2000"])
    config = train["build_config"](args)
    assert config.schedule == "custom" and config.milestones == (1_000, 1_500)
    assert train["build_config"](train["parse_args"](["--arch", "resnet20", "--short"])).schedule == "short"
    assert train["build_config"](train["parse_args"](["--arch", "resnet20"])).schedule == "full"
    with pytest.raises(ConfigError, match="schedule"):
        on_schedule(RunConfig(), "long")


def test_tutorial_recipe():
    cfg = tutorial_config("resnet20")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.val_size, cfg.eval_every, cfg.eval_in_epoch,
            cfg.stop_rule, cfg.patience, cfg.max_epochs) == \
        ("adam", 1e-3, 1e-4, 5000, 50, True, "previous", 5, 50)
    assert learning_rate(10_000, cfg) == 1e-3


def test_tutorial_checks_after_every_50th_batch_of_each_epoch():
    cfg = tutorial_config("resnet20")
    checks = [i for i in range(1, 2 * 351 + 1) if evaluates_after(i, cfg, batches_per_epoch=351)]
    # batches 50..350 of the first epoch, then the count starts again: 351 + 50, ..., 351 + 350
    assert checks == [50 * k for k in range(1, 8)] + [351 + 50 * k for k in range(1, 8)]
    paper = paper_config("resnet20")  # the paper's recipe counts the run's iterations, across epochs
    assert [i for i in range(1, 1200) if evaluates_after(i, paper, batches_per_epoch=390)] == [500, 1000]


@pytest.mark.parametrize("errors, previous, best", [
    ([], 0, 0),
    ([0.5], 0, 0),                      # the first check always improves
    ([0.5, 0.5], 1, 1),                 # a tie does not improve ("lower than or equal to")
    ([0.5, 0.4, 0.45, 0.44], 0, 2),     # 0.44 beats the check before it, not the best
    ([0.3, 0.4, 0.4, 0.5, 0.5, 0.6, 0.6], 6, 6),  # six in a row: more than the tutorial's 5, it stops
    ([0.3, 0.4, 0.4, 0.5, 0.5, 0.6], 5, 5),       # five in a row: not more than 5, it goes on
    ([0.3, 0.4, 0.4, 0.35, 0.5], 1, 4),           # a reset by the previous-check rule only
])
def test_checks_without_improvement(errors, previous, best):
    assert checks_without_improvement(errors, "previous") == previous
    assert checks_without_improvement(errors, "best") == best


def test_early_stopping_names_its_rule():
    with pytest.raises(ConfigError, match="stop_rule"):
        paper_config("resnet20", val_size=100, patience=3)
    with pytest.raises(ConfigError, match="stop_rule must be one of"):
        tutorial_config("resnet20", stop_rule="never")
    with pytest.raises(ConfigError, match="validation split"):
        paper_config("resnet20", stop_rule="previous", patience=3)  # it would select on the test set
    # a record of the code before stop_rule existed had one rule, counted from the best check
    old = {k: v for k, v in tutorial_config("resnet20").to_dict().items()
           if k not in ("stop_rule", "eval_in_epoch", "test_every")}
    assert RunConfig.from_dict(old).stop_rule == "best"


def test_config_is_frozen_and_validated():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    with pytest.raises(ConfigError, match="unknown config keys: lrr"):
        cfg.replace(lrr=0.2)
    with pytest.raises(ConfigError, match="iterations"):
        cfg.replace(iterations=-5)
    with pytest.raises(ConfigError, match="unknown arch"):
        RunConfig(arch="resnet21")
    with pytest.raises(ConfigError, match="precision"):
        cfg.replace(precision="fp16")
    with pytest.raises(ConfigError, match="test_every"):
        cfg.replace(test_every=0)
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_deadline():
    assert Deadline.after(None).remaining() == float("inf")
    left = Deadline.after(100).remaining()
    assert left == pytest.approx(100 - config_module._process_age(), abs=1.0)  # from this process's start
    with pytest.raises(ConfigError, match="positive"):
        Deadline.after(0)


def test_execution_is_validated_once():
    assert Execution(device="cpu").torch_device == torch.device("cpu")
    for bad, needle in [(dict(device="tpu"), "device must be"),
                        (dict(device="cpu", graph=True), "CUDA device"),
                        (dict(at_once=0), "at_once"), (dict(threads=-1), "threads"),
                        (dict(checkpoint_every=0), "checkpoint_every")]:
        with pytest.raises(ConfigError, match=needle):
            Execution(**bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            Execution(device="cuda")
    cpu = Execution(device="cpu")
    assert cpu.uses_graph(torch.device("cpu"), distributed=False) is False
    assert Execution(device="cpu", graph=False).uses_graph(torch.device("cuda"), distributed=False) is False
    assert cpu.uses_graph(torch.device("cuda"), distributed=False) is True  # on by default on CUDA
    assert cpu.uses_graph(torch.device("cuda"), distributed=True) is False  # but not with torchrun
    assert cpu.benchmarks_cudnn(torch.device("cuda")) is True
    assert cpu.benchmarks_cudnn(torch.device("cpu")) is False
    assert cpu.replace(cudnn_benchmark=False).benchmarks_cudnn(torch.device("cuda")) is False

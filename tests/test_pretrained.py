"""Trained networks that load by name: a published file round-trips, damage and mismatch are clear errors,
and the widely used option-A reproduction's checkpoint format loads (a small one written here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from resnet import analysis, models, pretrained
from resnet import train as engine
from resnet.config import Execution, on_schedule, paper_config
from resnet.notebook import Notebook
from resnet.records import Job, standing_run

QUIET = Execution(device="cpu", progress=False)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cifar_data):
    out = tmp_path_factory.mktemp("run") / "resnet20-A-paper-s0"
    engine.train(paper_config("resnet20", iterations=2, milestones=(1,), eval_every=2, batch_size=32,
                              test_subset=32), data=cifar_data, out=out, execution=QUIET)
    return out


def test_publish_and_load_by_name(finished_run, cifar_data, tmp_path):
    path = pretrained.publish(finished_run, dest=tmp_path)
    assert path.name.startswith("resnet20-A-paper-s0-") and path.suffix == ".pt"
    assert pretrained.published(tmp_path) == ("resnet20-A-paper-s0",)
    model, norm = pretrained.load("resnet20", folder=tmp_path)
    reference, reference_norm = pretrained.load_file(finished_run / "model.pt")
    assert not model.training
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values()):
        assert got.dtype == want.dtype, name  # back in float32 for inference
        torch.testing.assert_close(got, want.half().to(want.dtype) if want.is_floating_point() else want)
    torch.testing.assert_close(norm.mean, reference_norm.mean)
    images = cifar_data.test_images[:16]
    with torch.no_grad():
        got, want = model(norm(images)), reference(norm(images))
    torch.testing.assert_close(got, want, rtol=0.02, atol=0.02)  # half-precision weights
    # publishing again replaces the file, and the manifest keeps one entry per run
    assert pretrained.publish(finished_run, dest=tmp_path) == path and len(list(tmp_path.glob("*.pt"))) == 1


def test_damaged_missing_and_unknown_weights_are_clear_errors(finished_run, tmp_path):
    path = pretrained.publish(finished_run, dest=tmp_path)
    with pytest.raises(pretrained.WeightsError,
                       match="no published weights for resnet56-A-paper-s0.*resnet20-A"):
        pretrained.load("resnet56", folder=tmp_path)
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(pretrained.WeightsError, match="does not match the SHA-256"):
        pretrained.load("resnet20", folder=tmp_path)
    path.unlink()
    with pytest.raises(pretrained.WeightsError, match="listed in MANIFEST.json but missing"):
        pretrained.load("resnet20", folder=tmp_path)
    with pytest.raises(pretrained.WeightsError, match="cannot read"):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        pretrained.load_file(tmp_path / "junk.pt")


def test_a_float32_run_stands_for_its_network_until_its_bf16_run_finishes(finished_run, cifar_data, tmp_path):
    """A network trained only in float32 (a CPU's run, named <run>-fp32) is the one Figure 7, the confusion
    matrices and the published weights use, and loads by the network's name; once the network's bf16 run
    has finished, that one is."""
    runs, weights = tmp_path / "runs", tmp_path / "weights"
    bf16, twin = runs / "resnet20-A-paper-s0", runs / "resnet20-A-paper-s0-fp32"
    assert standing_run(bf16) == bf16  # neither run is here
    engine.train(paper_config("resnet20", iterations=2, milestones=(1,), eval_every=2, batch_size=32,
                              test_subset=32, precision="fp32"), data=cifar_data, out=twin, execution=QUIET)
    assert standing_run(bf16) == twin and standing_run(runs / "plain20-paper-s0") == runs / "plain20-paper-s0"
    [(job, _, _, how)] = analysis.trained_networks([Job(paper_config("resnet20"), bf16)], purpose="none")
    assert (job.out, job.config.precision, how) == (twin, "fp32", "the run's model.pt")

    def loads_as(run: Path) -> None:
        got, _ = pretrained.load("resnet20", folder=weights)
        want, _ = pretrained.load_file(run / "model.pt")
        for (name, g), w in zip(got.state_dict().items(), want.state_dict().values()):
            torch.testing.assert_close(g, w.half().to(w.dtype) if w.is_floating_point() else w, msg=name)

    def notebook() -> Notebook:  # what notebooks 05 and 06 name each network's run by
        return Notebook(repo=tmp_path, records=tmp_path, figures=tmp_path, schedule="full", data=None,
                        weights=pretrained.published(weights))

    pretrained.publish(standing_run(bf16), dest=weights)
    assert pretrained.published(weights) == ("resnet20-A-paper-s0-fp32",)
    loads_as(twin)
    nb = notebook()
    assert nb.standing(bf16.name) == twin.name and nb.has_weights(nb.standing(bf16.name))
    assert nb.standing("resnet56-A-paper-s0") == "resnet56-A-paper-s0"  # neither published: its own name
    shutil.copytree(finished_run, bf16)  # the bf16 run has finished: it stands, and loads first
    assert standing_run(bf16) == bf16
    pretrained.publish(standing_run(bf16), dest=weights)
    loads_as(bf16)
    assert notebook().standing(bf16.name) == bf16.name


@pytest.mark.parametrize("schedule", ["quick", "short"])
def test_quick_and_short_runs_publish_nothing(finished_run, tmp_path, schedule):
    saved = torch.load(finished_run / "model.pt", weights_only=False)
    saved["config"] = on_schedule(paper_config("resnet20"), schedule).to_dict()
    run = tmp_path / f"{schedule}-run"
    run.mkdir()
    torch.save(saved, run / "model.pt")
    with pytest.raises(pretrained.WeightsError, match=f"a {schedule}-schedule run"):
        pretrained.publish(run, dest=tmp_path / "weights")


def test_reference_option_a_checkpoint_loads(tmp_path):
    """The option-A reproduction publishes {'state_dict': {'module.<name>': ...}}; our option-A networks
    match its layout position by position."""
    torch.manual_seed(0)
    theirs = models.resnet20()
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}, "best_prec1": 91.7},
               tmp_path / "resnet20.th")
    model, norm = pretrained.load_file(tmp_path / "resnet20.th", arch="resnet20")
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(norm(x)), theirs.eval()(norm(x)))
    torch.testing.assert_close(norm.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    with pytest.raises(pretrained.WeightsError, match="does not fit a resnet32"):
        pretrained.load_file(tmp_path / "resnet20.th", arch="resnet32")
    with pytest.raises(pretrained.WeightsError, match="arch="):
        pretrained.load_file(tmp_path / "resnet20.th")


def test_torch_hub_entry_points():
    model = torch.hub.load(str(REPO), "resnet56", source="local", pretrained=False)
    assert models.count_parameters(model) == 853_018
    if "resnet20-A-paper-s0" not in pretrained.published():
        with pytest.raises(pretrained.WeightsError, match="no published weights"):
            torch.hub.load(str(REPO), "resnet20", source="local", pretrained=True)

"""The six teaching notebooks: committed executed, calling the package rather than re-implementing it,
and executing top to bottom without error.

Each notebook is executed in the notebooks folder (so relative paths resolve as they do in Jupyter) on the
synthetic CIFAR-10 of the `cifar_root` fixture (passed through $CIFAR10_ROOT), with the source of its
"parameters"-tagged cell replaced by the SMOKE values below, so that every quick training run is a few
iterations on a few hundred images. The executed copy stays in memory: the committed notebooks, executed
on the real data with their default parameters, are never overwritten.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = [
    "01_data_and_augmentation.ipynb",
    "02_residual_blocks_and_shortcuts.ipynb",
    "03_degradation.ipynb",
    "04_shortcut_ablation.ipynb",
    "05_confusion_matrix.ipynb",
    "06_layer_responses.ipynb",
]

#: Smoke values for every knob a parameters cell may define. A knob missing here fails the test, so that no
#: notebook can run its default (minutes-long) quick mode inside the test suite.
SMOKE = {
    "ITERATIONS": 4,
    "EVAL_EVERY": 2,
    "TRAIN_SUBSET": 256,  # of the fixture's 1000 training images
    "VAL_SIZE": 200,
    "TEST_SUBSET": 64,  # of the fixture's 200 test images
    "BATCH_SIZE": 8,
    "PROBE_ITERATIONS": 2,
}

# A cell trains when it calls the training engine.
TRAINS = re.compile(r"\b(train|run_sweep|Trainer)\(")
# Notebooks call the package; they do not define functions or classes of their own.
DEFINES = re.compile(r"^\s*(async\s+def|def|class)\s", re.MULTILINE)


def _ids(path: Path) -> str:
    return path.stem


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _parameters_cell(nb):
    tagged = [c for c in _code_cells(nb) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) <= 1, "more than one cell is tagged 'parameters'"
    return tagged[0] if tagged else None


def _smoke_source(source: str) -> str:
    """The parameters cell with every assignment replaced by its SMOKE value."""
    lines = []
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        assert isinstance(target, ast.Name), f"parameters: plain assignments only, got {ast.unparse(node)}"
        name = target.id
        assert name in SMOKE, f"parameter {name} has no smoke value in tests/test_notebooks.py SMOKE"
        lines.append(f"{name} = {SMOKE[name]!r}")
    return "\n".join(lines)


def test_the_six_notebooks():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_executed(path):
    """Committed with outputs: every code cell ran, in order, and none of them failed."""
    nb = nbformat.read(path, as_version=4)
    cells = _code_cells(nb)
    counts = [c.execution_count for c in cells]
    assert all(n is not None for n in counts), f"{path.name}: not every code cell was executed"
    assert counts == sorted(counts), f"{path.name}: cells were not executed top to bottom"
    assert any(c.outputs for c in cells), f"{path.name}: no outputs"
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: committed with an error: {errors[0].ename}: {errors[0].evalue}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_calls_the_package(path):
    """No function or class definitions in code cells; training notebooks have a parameters cell."""
    nb = nbformat.read(path, as_version=4)
    for cell in _code_cells(nb):
        found = DEFINES.search(cell.source)
        assert found is None, f"{path.name}: a code cell has {found.group(0).strip()!r}; import from resnet"
    trains = any(TRAINS.search(c.source) for c in _code_cells(nb))
    assert not trains or _parameters_cell(nb) is not None, f"{path.name} trains but has no 'parameters' cell"
    imports = re.compile(r"^\s*(from|import) resnet\b", re.MULTILINE)
    assert any(imports.search(c.source) for c in _code_cells(nb)), f"{path.name} does not import the package"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_ends_with_exercises_and_worked_answers(path):
    """A notebook a teacher can hand out as a lab: it ends with two or three numbered exercises, then their
    worked answers, and an exercise that trains says how long it took on a CPU in the records."""
    nb = nbformat.read(path, as_version=4)
    heads = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Exercises" in c.source]
    assert len(heads) == 1, f"{path.name}: one '## Exercises' cell, not {len(heads)}"
    exercises = nb.cells[heads[0]].source
    assert "## Worked answers" in exercises or any(
        "## Worked answers" in c.source for c in nb.cells[heads[0]:] if c.cell_type == "markdown"), path.name
    numbered = re.findall(r"^(\d)\. \*\*", exercises.split("## Worked answers")[0], re.MULTILINE)
    assert numbered in (["1", "2"], ["1", "2", "3"]), f"{path.name}: exercises numbered {numbered}"
    for item in re.split(r"^\d\. ", exercises.split("## Worked answers")[0], flags=re.MULTILINE)[1:]:
        item = " ".join(item.split())
        if "(trains" in item:
            assert "wall time" in item and re.search(r"\d+ s\b", item), (
                f"{path.name}: an exercise that trains says how long its record took: {item[:60]!r}")
    answers = "".join(c.source for c in nb.cells[heads[0]:] if c.cell_type == "markdown")
    assert all(f"**{n}.**" in answers for n in numbered), f"{path.name}: an exercise without a worked answer"


def _execute(path: Path, cifar_root: Path, monkeypatch) -> list:
    """Run the notebook top to bottom on the synthetic CIFAR-10 with the smoke parameters; its outputs."""
    nb = nbformat.read(path, as_version=4)
    params = _parameters_cell(nb)
    if params is not None:
        params.source = _smoke_source(params.source)
    monkeypatch.setenv("CIFAR10_ROOT", str(cifar_root))  # the kernel inherits this process's environment
    # the kernel finds this checkout's package whether or not it is installed (a second environment)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(NOTEBOOKS_DIR.parent),
                                                                   os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugger warning of ipykernel
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    client.execute()  # raises CellExecutionError, naming the cell and the traceback, on any error
    outputs = [o for c in _code_cells(nb) for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def _text(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_executes(path, cifar_root, monkeypatch):
    """Top to bottom on the synthetic CIFAR-10, with the smoke parameters; any error fails."""
    text = _text(_execute(path, cifar_root, monkeypatch))
    assert "data: no CIFAR-10 here" not in text, "the kernel did not see CIFAR10_ROOT"


@pytest.mark.slow
def test_05_and_06_use_published_networks_without_training(cifar_root, cifar_data, tmp_path, monkeypatch):
    """With weights published (here: of tiny runs), notebooks 05 and 06 show the trained networks and
    train nothing; ResNet-56's from its float32 twin (<run>-fp32), as a CPU's run is published."""
    import torch

    from resnet import pretrained
    from resnet.config import RECIPES, Execution
    from resnet.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in pretrained.PUBLISHED:
            arch, recipe = name.split("-")[0], name.split("-")[-2]
            cpu = name == "resnet56-A-paper-s0"  # trained only in float32, under its own name
            cfg = RECIPES[recipe](arch, iterations=2, eval_every=2, batch_size=8, test_subset=32,
                                  **({"val_size": 100} if recipe == "tutorial" else {"milestones": (1,)}),
                                  **({"precision": "fp32"} if cpu else {}))
            out = tmp_path / "runs" / (name + ("-fp32" if cpu else ""))
            train(cfg, data=cifar_data, out=out, execution=Execution(device="cpu", progress=False))
            pretrained.publish(out, dest=tmp_path / "weights")
    finally:
        torch.set_num_threads(threads)
    assert "resnet56-A-paper-s0-fp32" in pretrained.published(tmp_path / "weights")
    monkeypatch.setenv("RESNET_WEIGHTS_DIR", str(tmp_path / "weights"))
    for notebook, shown in (("05_confusion_matrix", "published resnet56 (paper recipe): test error"),
                            ("06_layer_responses", "published resnet110: mean std")):
        outputs = _execute(NOTEBOOKS_DIR / f"{notebook}.ipynb", cifar_root, monkeypatch)
        text = _text(outputs)
        assert shown in text and "skipped: the published networks are shown above" in text
        assert "needs the data" not in text and "This notebook's quick run" not in text

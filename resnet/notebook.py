"""The set-up every notebook starts with, in one call:

    from resnet.notebook import setup
    nb = setup()           # figures inline, tables wide; which records to read; CIFAR-10 if it is here

``nb.records`` is the best records there are: results/ with finished full-schedule runs, else
results/short/, else results/quick/ (``nb.schedule`` says which, and so does the first line printed);
``nb.data`` is CIFAR-10 from $CIFAR10_ROOT or the repository's data/ (None when absent: the cells that
need images then print a note and skip); ``nb.weights`` lists the published
trained networks (resnet.pretrained), which notebooks 05 and 06 use instead of training when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from resnet import cifar10
from resnet import pretrained, results
from resnet.records import REPO_ROOT
from resnet.cifar10 import load_data

__all__ = ["Notebook", "setup"]


@dataclass
class Notebook:
    """What a notebook reads: the repository, the records, the figures drawn from them, and the data."""

    repo: Path
    records: Path
    figures: Path
    schedule: str  # what the records are, in words (resnet.results.schedule_name)
    data: cifar10.CIFAR10 | None
    weights: tuple[str, ...]

    def runs(self) -> pd.DataFrame:
        """Every run under ``records`` (resnet.results.load_runs)."""
        return results.load_runs(self.records)

    def has_weights(self, *names: str) -> bool:
        """True when every named run (e.g. "resnet56-A-paper-s0") has published weights."""
        return all(name in self.weights for name in names)

    def standing(self, name: str) -> str:
        """The run that stands for the run named ``name`` (e.g. "resnet56-A-paper-s0") where its published
        network is shown: ``name``, or its float32 twin ``<name>-fp32`` (a CPU's run) where only that one is
        published, as pretrained.load picks; ``name`` when neither is."""
        return pretrained.published_for(name, self.weights) or name


def setup(*, data: bool = True, showing: str = "degradation") -> Notebook:
    """Figures inline and wide tables; the records (the best there are for what the notebook is
    ``showing``: see resnet.results.records_root), figures, data and published weights, one line each."""
    try:
        from IPython import get_ipython
        shell = get_ipython()
        if shell is not None:
            shell.run_line_magic("matplotlib", "inline")
    except ImportError:  # plain Python: nothing to configure
        pass
    pd.set_option("display.width", 120)
    records = results.records_root(showing=showing)
    nb = Notebook(repo=REPO_ROOT, records=records, figures=results.figures_dir_for(records),
                  schedule=results.schedule_name(records), data=_load_data() if data else None,
                  weights=pretrained.published())
    print(f"records: {records.relative_to(REPO_ROOT)} ({nb.schedule}); "
          f"figures: {nb.figures.relative_to(REPO_ROOT)}")
    if data:
        print(f"data: {nb.data.name}, {len(nb.data.train_labels):,} training and "
              f"{len(nb.data.test_labels):,} test images, "
              f"fingerprint {nb.data.fingerprint}" if nb.data is not None
              else "data: no CIFAR-10 here, so the cells that need images print a note and skip")
    print(f"published weights: {', '.join(nb.weights) or 'none yet'}")
    return nb


def _load_data() -> cifar10.CIFAR10 | None:
    try:
        return load_data()  # the loader every script uses: --data-dir's default, read and verified once
    except cifar10.DataError:
        return None

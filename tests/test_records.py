"""resnet.records: the folder-name rule, a run folder's statuses, the summary as a typed object, the lock,
and the code's fingerprint, which names the code of a tree copied without .git."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resnet import records
from resnet.config import paper_config, tutorial_config
from resnet.records import RunFolder, RunFolderError, Summary

REPO = Path(__file__).resolve().parent.parent


def test_run_folder_names():
    root = Path("r")
    assert records.default_run_dir(paper_config("resnet20"), root=root) == root / "resnet20-A-paper-s0"
    assert records.default_run_dir(paper_config("plain56", seed=2), root=root) == root / "plain56-paper-s2"
    assert records.default_run_dir(paper_config("resnet20", precision="fp32"), root=root) == \
        root / "resnet20-A-paper-s0-fp32"
    assert records.default_run_dir(tutorial_config("resnet20"), root=root).name == "resnet20-A-tutorial-s0"
    assert records.run_name("resnet56", "B", "paper", 1) == "resnet56-B-paper-s1"


def test_a_run_folders_status_config_and_summary(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.status == "missing" and not folder.holds_a_run() and folder.config() is None
    cfg = paper_config("resnet20")
    folder.write_config(cfg, {"device": "cpu"})
    folder.write_checkpoint(cfg, {"iteration": 3})
    assert folder.status == "unfinished" and folder.holds_a_run()  # killed before it wrote a summary
    assert folder.read_checkpoint(cfg, "cpu") == {"iteration": 3} and folder.config() == cfg
    with pytest.raises(RunFolderError, match="another config"):
        folder.read_checkpoint(cfg.replace(seed=1), "cpu")
    folder.write_summary(Summary("finished", arch="resnet20", final_test_error=0.0875,
                                 iterations_done=64_000))
    assert folder.finished() and folder.finished(cfg) and not folder.finished(cfg.replace(seed=1))
    summary = folder.summary()
    assert isinstance(summary, Summary) and summary.final_test_error == 0.0875
    # a summary written by another version of the code: unknown keys are left out, missing ones default
    records.write_json(folder.path / "summary.json", {"status": "diverged", "extra": 1})
    assert folder.report() == Summary("diverged")
    with pytest.raises(RunFolderError, match="--resume"):
        folder.claim(resume=False)


def test_a_run_held_by_another_process_says_which(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.write_checkpoint(paper_config("resnet20"), {"iteration": 3})
    with records.RunLock(tmp_path / "run"):
        with pytest.raises(RunFolderError, match=f"process {os.getpid()}"):
            RunFolder(tmp_path / "run").claim(resume=True)
        # another sweep's last lines say who trains it, not "killed?"
        assert folder.report().message.startswith(f"being trained by process {os.getpid()} on ")
    assert "killed?" in folder.report().message  # released with the first holder
    RunFolder(tmp_path / "run").claim(resume=True)


def test_the_code_fingerprint_names_a_copied_tree_and_its_commit(tmp_path):
    """The fingerprint of the sources is the same in a copied tree (no .git) as in the commit they came
    from, and it changes when a source changes."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    copy = tmp_path / "copy"
    for name in ("resnet", "experiments", "benchmarks"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy2(REPO / "hubconf.py", copy / "hubconf.py")
    files = {p.relative_to(copy).as_posix(): p.read_bytes()
             for pattern in records.CODE_FILES for p in copy.glob(pattern)}
    assert records.code_fingerprint(files) == records.code_fingerprint()  # the copy names this code
    git = lambda *a: subprocess.run(["git", *a], cwd=copy, capture_output=True, check=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy")
    assert records.code_fingerprint(records.git_files("HEAD", repo=copy)) == records.code_fingerprint(files)
    files["resnet/models.py"] += b"\n# changed\n"
    assert records.code_fingerprint(files) != records.code_fingerprint()

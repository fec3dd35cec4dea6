"""resnet.records: the folder-name rule, a run folder's statuses, the summary as a typed object, the lock,
the code's fingerprint, which names the code of a tree copied without .git, and the one reader of a run's
records, which names a damaged folder and why (every kind of damage, each leaving every file as it was)
and reads every committed record whole."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import tiny
from resnet import records
from resnet import train as engine
from resnet.config import Execution, describe_schedule, paper_config, tutorial_config
from resnet.records import DamagedRecords, Job, RunFolder, RunFolderError, Summary
from resnet.sweep import run_sweep

REPO = Path(__file__).resolve().parent.parent
QUIET = Execution(device="cpu", progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")


def write_run(path, config=None, status="finished", *, done=None, planned=None, **summary):
    """A run folder written by hand as the engine writes one: its config, a log row at every evaluation
    (and at the end of a finished run) and a summary that agrees with them; ``summary`` overrides its
    fields."""
    config = config or tiny()
    planned = config.iterations if planned is None else planned
    done = planned if done is None else done
    at = [*range(config.eval_every, done + 1, config.eval_every)]
    at += [done] if status == "finished" and done not in at else []
    rows = [{"iteration": i, "epoch": i / 10, "lr": 0.1, "train_loss": 1.5,
             "train_error": round(0.8 - i / 1e5, 6), "val_error": None, "test_loss": 1.6,
             "test_error": round(0.9 - i / 1e5, 6), "elapsed_s": i / 100}
            for i in at]
    folder = RunFolder(path)
    folder.write_config(config, {"device": "cpu"})
    folder.write_log(rows)
    last = rows[-1] if rows else {}
    folder.write_summary({**Summary(
        status, arch=config.arch, shortcut=config.shortcut, recipe=config.recipe, seed=config.seed,
        final_test_error=last.get("test_error"), final_train_error=last.get("train_error"),
        iterations_done=done, iterations_planned=planned, data="CIFAR-10", data_fingerprint="f0c3600b38d2",
        schedule=describe_schedule(config), segments=[{"from_iteration": 0, "to_iteration": done}]).to_dict(),
        **summary})
    return folder


def files_of(root) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes: what a check that nothing changed compares."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


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
    write_run(folder.path, cfg)  # its log's last row: test error 0.26 at iteration 64,000
    assert folder.finished() and folder.finished(cfg) and not folder.finished(cfg.replace(seed=1))
    summary = folder.summary()
    assert isinstance(summary, Summary) and summary.final_test_error == 0.26
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


# ------------------------------------------------------------------------------ one reader of run records
def cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def rewrite_summary(path: Path, **changes) -> None:
    summary = records.read_json(path / "summary.json")
    records.write_json(path / "summary.json", {**summary, **changes})


def drop_last_row(path: Path) -> None:
    lines = (path / "log.csv").read_text().splitlines(keepends=True)
    (path / "log.csv").write_text("".join(lines[:-1]))


#: Each kind of damage a copy, a pack or a commit cut short can leave, and what the message says of it
DAMAGE = {
    "truncated summary": (lambda p: cut(p / "summary.json", 30), "summary.json does not parse"),
    "truncated log": (lambda p: cut(p / "log.csv", len(",".join(records.LOG_FIELDS)) + 12),
                      "log.csv line 2 has 4 of its 9 fields (cut short?)"),
    "log cut after a row": (lambda p: cut(p / "log.csv", len((p / "log.csv").read_bytes()) - 3),
                            "log.csv ends in the middle of a line (cut short?)"),
    "finished with a short log": (drop_last_row,
                                  "the run finished at iteration 12, but log.csv ends at iteration 8"),
    "summary against its log": (lambda p: rewrite_summary(p, final_test_error=0.5),
                                "summary.json's final_test_error is 0.5, but log.csv's row at iteration 12 "
                                "says 0.89988"),
    "missing config": (lambda p: (p / "config.json").unlink(), "config.json is missing"),
    "another run's summary": (lambda p: rewrite_summary(p, seed=1),
                              "summary.json says seed 1, config.json 0"),
    "a gap between segments": (lambda p: rewrite_summary(p, segments=[
        {"from_iteration": 0, "to_iteration": 4}, {"from_iteration": 8, "to_iteration": 12}]),
        "summary.json's segment 2 runs from iteration 8 to 12, where the run stood at 4"),
    "an unknown status": (lambda p: rewrite_summary(p, status="done"), "summary.json's status is 'done'"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_run_is_named_with_why_and_nothing_changes(kind, tmp_path, capsys):
    """Every reader refuses a damaged folder with its name and reason, and leaves its files as they were:
    it is neither finished nor missing, a resume refuses it, and a sweep skips it rather than train over
    it."""
    config = tiny(iterations=12, milestones=(8,))
    folder = write_run(tmp_path / "run", config)
    damage, reason = DAMAGE[kind]
    damage(folder.path)
    before = files_of(tmp_path)
    with pytest.raises(DamagedRecords) as raised:
        folder.read()
    message = " ".join(str(raised.value).split())
    assert f"damaged run records: {folder.path}: " in message and reason in message, message
    assert "git checkout --" in message and "nothing was changed" in message
    assert raised.value.folders == {folder.path: raised.value.folders[folder.path]}
    report = folder.report()
    assert report.status == "damaged" and reason in report.message and not folder.finished()
    assert records.damage([folder, RunFolder(tmp_path / "none")]) == raised.value.folders
    with pytest.raises(DamagedRecords):
        folder.claim(resume=True)
    (summary,) = run_sweep([Job(config, folder.path)], QUIET)  # nothing to train: no data is read
    assert summary.status == "damaged"
    assert f"sweep: run: damaged, skipped ({report.message})" in capsys.readouterr().err
    assert files_of(tmp_path) == before


def test_the_records_a_run_leaves_at_every_stage_read_whole(cifar_data, tmp_path):
    """Real runs' records at every stage are whole: paused between evaluations (iterations done beyond its
    log's last row), resumed and stopped without a summary (rows beyond the summary's: its checkpoint
    continues it), and finished in two segments."""
    config = tiny(iterations=12, milestones=(8,))
    folder = RunFolder(tmp_path / "run")
    with engine.Run(config, data=cifar_data, out=folder.path, execution=QUIET) as run:
        run.advance(6)
        run.pause()
    record = folder.read()
    assert (record.summary.status, record.summary.iterations_done, record.log[-1]["iteration"]) == \
        ("unfinished", 6, 4)
    assert record.config == config and record.summary.final_test_error == record.log[-1]["test_error"]
    with engine.Run(config, data=cifar_data, out=folder.path, execution=QUIET, resume=True) as run:
        run.advance(4)  # to 10, its row at 8 written; then the process ends without its summary
    assert folder.read().summary.iterations_done == 6 and folder.status == "unfinished"
    summary = engine.train(config, data=cifar_data, out=folder.path, execution=QUIET, resume=True)
    record = folder.read()
    assert record.summary == summary and summary.status == "finished" and record.log[-1]["iteration"] == 12
    assert [(s["from_iteration"], s["to_iteration"]) for s in summary.segments] == [(0, 6), (6, 8), (8, 12)]


def test_the_states_a_run_can_be_in_are_not_damage(tmp_path):
    """A finished run that early stopping ended before its planned iterations, a run paused before its
    first evaluation, a run that failed before it had a config or a log, a summary of older code without
    the fields it did not write, and a folder that holds no summary yet: none of them is damaged."""
    tutorial = tutorial_config("resnet20", iterations=40, eval_every=10)
    assert write_run(tmp_path / "stopped", tutorial, done=30).read().summary.iterations_done == 30
    paused = write_run(tmp_path / "paused", tiny(), "unfinished", done=3)  # no log row yet
    assert paused.read().summary.final_test_error is None and paused.status == "unfinished"
    RunFolder(tmp_path / "failed").path.mkdir()
    RunFolder(tmp_path / "failed").write_summary(Summary("failed", "RuntimeError: out of memory",
                                                         arch="resnet20"))
    assert RunFolder(tmp_path / "failed").read().config is None
    old = write_run(tmp_path / "old")
    summary = records.read_json(old.path / "summary.json")
    for key in ("segments", "best_val_iteration", "best_val_error", "best_val_test_error", "warmup_end"):
        del summary[key]
    records.write_json(old.path / "summary.json", summary)
    assert old.read().summary.segments is None and old.status == "finished"
    nothing = RunFolder(tmp_path / "nothing")
    nothing.write_config(tiny(), {"device": "cpu"})
    assert nothing.read() is None and nothing.status == "missing"
    # a finished run's log must reach its planned iterations when its config has no early stopping
    with pytest.raises(DamagedRecords, match="finished at iteration 4 of 8 planned, and its config stops "
                                             "only at the end"):
        write_run(tmp_path / "short", tiny(), planned=8, done=4).read()


def test_a_run_being_trained_is_not_read_while_its_files_are_written(tmp_path):
    folder = write_run(tmp_path / "run", status="unfinished", done=4)
    drop_last_row(folder.path)  # as a resumed run's log is rewritten from its checkpoint
    with records.RunLock(folder.path):
        assert folder.read() is None and folder.status == "unfinished"
    assert folder.status == "damaged"


def test_every_committed_record_reads_whole():
    """Every run folder under results/ (the full schedule, results/short and results/quick, records of
    older code among them, and runs trained in segments) passes the reader's checks."""
    folders = sorted(p.parent for p in (REPO / "results").rglob("runs/*/summary.json"))
    assert len(folders) >= 40
    damaged = records.damage(RunFolder(f) for f in folders)
    assert damaged == {}, DamagedRecords(damaged)
    assert all(RunFolder(f).status in records.STATUSES for f in folders)

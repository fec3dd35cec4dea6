"""resnet.transfer: packs of runs stay under the per-file limit (split when they would not), carry the
checkpoints of the most advanced unfinished runs within a budget and the published networks' weights,
and unpack without ever losing a finished run, taking another plan's run, or writing outside a run folder.
A damaged run folder is never packed, a damaged run in an archive is refused, and a damaged run here is
left as it is. No training here: the run folders are written by hand, as a sweep leaves them."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from resnet import transfer
from resnet.config import describe_schedule, paper_config
from resnet.records import RunFolder, RunFolderError, Summary, default_run_dir
from resnet.records import Job


def plan(root, n=4):
    configs = [paper_config("resnet20", seed=s) for s in range(n)]
    return [Job(c, default_run_dir(c, root=root / "runs")) for c in configs]


def leave(job, status, done, checkpoint_mb=0.0):
    """A run folder as a sweep leaves it: config, log, summary (that agree) and (unfinished) a checkpoint."""
    folder = RunFolder(job.out)
    folder.write_config(job.config, {"device": "cpu"})
    folder.write_log([{"iteration": done, "train_error": 0.5, "test_error": 0.25}])
    folder.write_summary(Summary(status, arch="resnet20", seed=job.config.seed, iterations_done=done,
                                 iterations_planned=64_000, final_train_error=0.5, final_test_error=0.25,
                                 data="CIFAR-10", data_fingerprint="f0c3600b38d2",
                                 schedule=describe_schedule(job.config)))
    if checkpoint_mb:
        folder.checkpoint_path.write_bytes(os.urandom(int(checkpoint_mb * 2**20)))
    if status == "finished":
        folder.model_path.write_bytes(b"weights")


def test_packs_split_under_the_limit_and_carry_the_most_advanced_checkpoints(tmp_path):
    jobs = plan(tmp_path / "a")
    for job, done in zip(jobs, (100, 400, 300, 200)):
        leave(job, "unfinished", done, checkpoint_mb=6)
    archives = transfer.pack(jobs, tmp_path / "out" / "slice.tar", archive_mb=15, checkpoint_mb=13)
    assert [a.name for a in archives] == ["slice.tar"]
    names = tarfile.open(archives[0]).getnames()
    # a budget of 13 MB takes two 6-MB checkpoints: those of the runs that got furthest (400 and 300)
    assert {n.split("/")[0] for n in names if n.endswith("checkpoint.pt")} == \
        {jobs[1].out.name, jobs[2].out.name}
    assert all(f"{j.out.name}/summary.json" in names for j in jobs)
    archives = transfer.pack(jobs, tmp_path / "out" / "all.tar", archive_mb=15, checkpoint_mb=64)
    assert [a.name for a in archives] == ["all.tar", "all.part2.tar"]
    assert all(a.stat().st_size <= 15 * 2**20 for a in archives)
    fresh = plan(tmp_path / "b")
    done = transfer.unpack(archives, fresh)
    assert sorted(d.action for d in done) == ["added"] * 4
    assert all(j.folder.checkpoint_path.stat().st_size == 6 * 2**20 for j in fresh)


def test_unpacking_never_loses_a_finished_run_nor_takes_another_plans(tmp_path):
    here, there = plan(tmp_path / "here", 3), plan(tmp_path / "there", 3)
    leave(here[0], "finished", 64_000)
    leave(here[1], "unfinished", 500, checkpoint_mb=0.01)
    leave(there[0], "unfinished", 900, checkpoint_mb=0.01)  # behind the finished run here
    leave(there[1], "finished", 64_000)  # ahead of the unfinished one here
    leave(there[2], "unfinished", 100, checkpoint_mb=0.01)
    archives = transfer.pack(there, tmp_path / "there.tar", archive_mb=15, published=(there[1].out.name,))
    done = {d.run: d for d in transfer.unpack(archives, here)}
    assert done[here[0].out.name].action == "kept" and here[0].folder.status == "finished"
    assert done[here[1].out.name].action == "replaced" and here[1].folder.status == "finished"
    assert not here[1].folder.checkpoint_path.exists()  # the stale checkpoint went with the old run
    assert here[1].folder.model_path.read_bytes() == b"weights"  # a published network's weights came too
    assert done[here[2].out.name].action == "added"
    assert transfer.unpack(archives, plan(tmp_path / "other", 1))[1].action == "rejected"  # not in the plan
    other = [Job(paper_config("resnet20", lr=0.05, seed=s), j.out) for s, j in enumerate(here)]
    assert {d.action for d in transfer.unpack(archives, other)} == {"rejected"}  # the plan's config only


@pytest.mark.parametrize("member", ["../escape.json", "run/../../x", "/abs/summary.json", "run/evil.sh"])
def test_an_archive_with_anything_else_is_refused_whole(tmp_path, member):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(member)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(RunFolderError, match="no pack writes"):
        transfer.unpack([path], plan(tmp_path / "r", 1))
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "r").exists()


def test_a_damaged_run_is_neither_packed_nor_unpacked_and_the_copy_here_stays(tmp_path):
    there, here = plan(tmp_path / "there", 3), plan(tmp_path / "here", 3)
    for job in there:
        leave(job, "finished", 64_000)
    (there[0].out / "summary.json").write_bytes(b'{"status": "finished", "arch": ')  # cut short
    archives = transfer.pack(there, tmp_path / "there.tar", archive_mb=15)
    names = tarfile.open(archives[0]).getnames()
    assert f"{there[1].out.name}/summary.json" in names and f"{there[2].out.name}/log.csv" in names
    assert not any(n.startswith(there[0].out.name + "/") for n in names)  # the damaged folder stays out
    leave(here[1], "unfinished", 500, checkpoint_mb=0.01)
    leave(here[2], "unfinished", 500, checkpoint_mb=0.01)
    (here[2].out / "config.json").unlink()  # damaged here
    before = {p: p.read_bytes() for p in sorted((tmp_path / "here").rglob("*")) if p.is_file()}
    # an archive whose copy of a run is damaged (a transfer cut short) is refused: the run here stays
    log = there[1].out / "log.csv"
    log.write_bytes(log.read_bytes()[:-4])
    with tarfile.open(tmp_path / "damaged.tar", "w") as tar:
        for f in sorted(there[1].out.iterdir()):
            tar.add(f, arcname=f"{there[1].out.name}/{f.name}")
    (refused,) = transfer.unpack([tmp_path / "damaged.tar"], here)
    assert (refused.run, refused.action) == (here[1].out.name, "rejected")
    assert refused.reason == "damaged in the archive: log.csv line 2 has 8 of its 9 fields (cut short?)"
    # a damaged run here is kept as it is, for its owner to restore, whatever the archive holds
    kept = {d.run: d for d in transfer.unpack(archives, here[2:])}[here[2].out.name]
    assert kept.action == "kept"
    assert kept.reason.startswith("the run here is damaged (config.json is missing)")
    assert {p: p.read_bytes() for p in sorted((tmp_path / "here").rglob("*")) if p.is_file()} == before

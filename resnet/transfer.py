"""Moving runs between machines: pack a results folder's runs into archives of a size the caller bounds, and
unpack such archives into another results folder without ever losing a finished run.

    pack(jobs, "slice.tar", archive_mb=15)   # slice.tar (and slice.part2.tar, ... when one would be larger)
    unpack(["slice.tar"], jobs)          # merges them into the jobs' run folders; returns what it did

An archive holds, for every run of ``jobs`` that has records: config.json, log.csv and summary.json; the
model.pt of a finished run whose weights are published (resnet.pretrained.PUBLISHED); and, within a size
budget, the checkpoint.pt of unfinished runs, the most advanced first, so that another machine continues
them. A damaged run folder (resnet.records.RunFolder.read) is never packed: records.damage names those
left out. Unpacking takes a run only when its records are whole (records.check_record) and its config is
the one the plan (``jobs``) asks for in that folder, never replaces a finished run nor a damaged one (it
stays as it is, for its owner to restore), and replaces an unfinished one only by a run that got further.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet.records import RECORDS, RunFolder, RunFolderError, atomic_write_bytes, check_record, code_version

__all__ = ["RECORDS", "pack", "unpack", "Unpacked"]

MANIFEST = "MANIFEST.json"
_TAR_OVERHEAD = 2048  # a member's header and padding, and the end-of-archive blocks, bounded


@dataclass(frozen=True)
class Unpacked:
    """What unpack did with one run of an archive: 'added', 'replaced' (an unfinished run by one that got
    further) or 'kept' (what was here is finished or further), 'rejected' (not the plan's run, or being
    trained here), with a reason."""

    run: str
    action: str
    reason: str


def _members(job: Any, published: Sequence[str], with_checkpoint: bool) -> list[Path]:
    names = list(RECORDS)
    if job.out.name in published:
        names.append("model.pt")
    if with_checkpoint:
        names.append("checkpoint.pt")
    return [job.out / n for n in names if (job.out / n).is_file()]


def pack(jobs: Sequence[Any], dest: str | Path, *, archive_mb: float, published: Sequence[str] = (),
         checkpoint_mb: float = 64) -> list[Path]:
    """Write the runs of ``jobs`` into ``dest`` (a .tar), split into several archives of at most
    ``archive_mb`` MiB when needed (what a transfer carries per file); return the archives written.
    ``checkpoint_mb`` bounds the total size of the unfinished runs' checkpoints taken. Damaged run folders
    are left out (records.damage names them)."""
    dest, limit = Path(dest), int(archive_mb * 2**20)
    held = [job for job in jobs if job.folder.status != "damaged"
            and ((job.out / "summary.json").is_file() or (job.out / "config.json").is_file())]
    unfinished = sorted((j for j in held
                         if j.folder.status != "finished" and j.folder.checkpoint_path.is_file()),
                        key=lambda j: -j.folder.report().iterations_done)
    budget, with_checkpoint = checkpoint_mb * 2**20, set()
    for job in unfinished:
        size = (job.out / "checkpoint.pt").stat().st_size
        if size <= budget:
            with_checkpoint.add(job.out)
            budget -= size
    groups: list[list[Path]] = [[]]
    used = 0
    for job in held:
        files = _members(job, published, job.out in with_checkpoint)
        size = sum(f.stat().st_size + _TAR_OVERHEAD for f in files)
        if size > limit - 64 * 1024:
            raise RunFolderError(f"{job.out.name}'s files take {size / 2**20:.1f} MB, more than one archive "
                                 f"may hold ({archive_mb:g} MB); pack it with a smaller "
                                 f"--checkpoint-mb")
        if used + size > limit - 64 * 1024 and groups[-1]:
            groups.append([])
            used = 0
        groups[-1].extend(files)
        used += size
    written = []
    for i, files in enumerate(groups, 1):
        path = dest if i == 1 else dest.with_name(f"{dest.stem}.part{i}{dest.suffix}")
        manifest = {"format": "resnet-runs/1", "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    **code_version(), "part": i, "parts": len(groups),
                    "runs": sorted({f.parent.name for f in files})}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            _add_bytes(tar, MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
            for f in files:
                tar.add(f, arcname=f"{f.parent.name}/{f.name}", recursive=False)
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    return written


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(payload), int(time.time())
    tar.addfile(info, io.BytesIO(payload))


def _read_runs(archive: Path) -> dict[str, dict[str, bytes]]:
    """{run folder name: {file name: bytes}} of an archive, refusing anything but the files pack writes."""
    allowed = {*RECORDS, "model.pt", "checkpoint.pt"}
    runs: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar.getmembers():
                if member.name == MANIFEST:
                    continue
                run, _, name = member.name.partition("/")
                if not member.isfile() or name not in allowed or "/" in name or run in ("", ".", ".."):
                    raise RunFolderError(f"{archive} holds {member.name!r}, which no pack writes; it was not "
                                         f"unpacked")
                runs.setdefault(run, {})[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as e:
        raise RunFolderError(f"cannot read {archive} as a pack of runs ({e}); nothing was unpacked") from None
    return runs


def unpack(archives: Sequence[str | Path], jobs: Sequence[Any]) -> list[Unpacked]:
    """Merge ``archives`` into the run folders of ``jobs`` (the plan); see the module docstring."""
    plan = {job.out.name: job for job in jobs}
    done: list[Unpacked] = []
    for archive in archives:
        for name, files in sorted(_read_runs(Path(archive)).items()):
            done.append(_merge(name, files, plan.get(name)))
    return done


def _merge(name: str, files: dict[str, bytes], job: Any) -> Unpacked:
    if job is None:
        return Unpacked(name, "rejected", "not a run of this plan (check --quick, --short and --results)")
    record, problems = check_record(files) if "summary.json" in files else (None, [])
    if problems:
        return Unpacked(name, "rejected", "damaged in the archive: " + "; ".join(problems))
    try:
        config = json.loads(files["config.json"])["config"]
    except (KeyError, ValueError, TypeError):
        return Unpacked(name, "rejected", "its config.json is missing or unreadable")
    if config != job.config.to_dict():
        return Unpacked(name, "rejected", "its config differs from the plan's for this run")
    finished = record is not None and record.summary.status == "finished"
    got = record.summary.iterations_done if record is not None else 0
    if not finished and "checkpoint.pt" not in files:
        return Unpacked(name, "rejected", "unfinished and packed without its checkpoint: nothing to continue")
    folder = RunFolder(job.out)
    here = folder.report()
    if here.status == "damaged":
        return Unpacked(name, "kept", f"the run here is damaged ({here.message}): restore it or move it "
                                      f"away, then unpack again")
    further = here.status != "missing" and not finished and here.iterations_done >= got
    if here.status == "finished" or further:
        return Unpacked(name, "kept", f"the run here is {here.status} at iteration {here.iterations_done:,}")
    try:
        folder.lock.acquire()
    except RunFolderError as e:
        return Unpacked(name, "rejected", str(e))
    try:
        for stale in ("checkpoint.pt", "model.pt", *RECORDS):
            if stale not in files:
                (job.out / stale).unlink(missing_ok=True)
        for file_name in sorted(files, key=lambda n: n == "summary.json"):  # the summary last
            atomic_write_bytes(job.out / file_name, files[file_name])
    finally:
        folder.lock.release()
    action = "added" if here.status == "missing" else "replaced"
    state = "finished" if finished else f"unfinished at iteration {got:,}"
    return Unpacked(name, action, state if action == "added" else f"{state}, was {here.status}")

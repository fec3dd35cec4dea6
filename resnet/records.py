"""A run's records on disk: written atomically, named after the code and data that made them, and locked
while a process trains the run.

Every run has its own folder:

    config.json    the config (the recipe) and how the run was executed (device, graph, compile, ...)
    log.csv        one row per evaluation: iteration, lr, train loss/error, val/test error, elapsed seconds
    summary.json   status (finished | diverged | unfinished), final errors, speed, versions, data
    checkpoint.pt  the run's state (resnet.train.RunState) for resuming; never committed
    model.pt       the reported weights (final iteration, or the validation-chosen ones), for analysis
    run.lock       held (flock) by the process that trains the run; names that process

All files are written atomically (a temporary file, then a rename): a crash leaves the old file or the
new one, never half of one.
"""

from __future__ import annotations

import csv
import fcntl
import fnmatch
import hashlib
import io
import json
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from resnet.config import RunConfig

__all__ = ["REPO_ROOT", "RESULTS_DIR", "LOG_FIELDS", "RunFolderError", "atomic_write_bytes", "write_json",
           "read_json", "write_log", "read_log_rows", "atomic_torch_save", "git_commit",
           "code_fingerprint", "git_files", "code_version", "default_run_dir",
           "holds_a_run", "run_finished", "summary_of", "RunLock"]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"

LOG_FIELDS = ("iteration", "epoch", "lr", "train_loss", "train_error", "val_error", "test_loss", "test_error",
              "elapsed_s")


class RunFolderError(RuntimeError):
    """The run folder holds another run, a run that cannot be resumed with this config, or a run that
    another process is training."""


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def write_log(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_FIELDS})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_log_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def git_commit() -> str:
    """The code version: the commit hash, with '+dirty' when tracked files other than the outputs
    (results/, figures/, notebooks/) differ from it."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", ":!figures",
                    ":!notebooks").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


#: The source files whose content names the code that made a record (with the commit, when there is one).
CODE_FILES = ("resnet/*.py", "experiments/*.py", "benchmarks/*.py", "hubconf.py")


def code_fingerprint(files: dict[str, bytes] | None = None) -> str:
    """12 hex digits of SHA-256 over the package's and the scripts' source files (path and content, in path
    order). A tree copied without .git (a GPU machine, a cluster node) still names its code exactly, and
    the fingerprint of a commit's files (``git_files(commit)``) says which commit that was."""
    if files is None:
        files = {p.relative_to(REPO_ROOT).as_posix(): p.read_bytes()
                 for pattern in CODE_FILES for p in REPO_ROOT.glob(pattern)}
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path] + b"\0")
    return h.hexdigest()[:12]


def git_files(commit: str = "HEAD") -> dict[str, bytes]:
    """The CODE_FILES of ``commit``, read from git: ``code_fingerprint(git_files(c))`` is commit c's."""
    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, check=True).stdout

    paths = git("ls-tree", "-r", "--name-only", commit).decode().splitlines()
    wanted = [p for p in paths if any(fnmatch.fnmatchcase(p, pattern) for pattern in CODE_FILES)]
    return {p: git("show", f"{commit}:{p}") for p in wanted}


def code_version() -> dict[str, str]:
    """What a record says of the code that made it: the git commit ('unknown' outside a clone) and the
    source fingerprint."""
    return {"git_commit": git_commit(), "code_fingerprint": code_fingerprint()}


def default_run_dir(config: RunConfig, *, root: Path | None = None) -> Path:
    """``results/runs/<arch>-<shortcut>-<recipe>-s<seed>`` (plain nets have no shortcut in the name; a
    float32 control run ends in ``-fp32``)."""
    root = Path(root) if root is not None else RESULTS_DIR / "runs"
    parts = [config.arch] if config.arch.startswith("plain") else [config.arch, config.shortcut]
    parts += [config.recipe, f"s{config.seed}"] + (["fp32"] if config.precision == "fp32" else [])
    return root / "-".join(parts)


def holds_a_run(out: Path) -> bool:
    """True when ``out`` holds a run, finished or not: one that a new run must not overwrite, and that a
    sweep resumes."""
    return (Path(out) / "summary.json").exists() or (Path(out) / "checkpoint.pt").exists()


def run_finished(out: Path, config: RunConfig | None = None) -> bool:
    """True when ``out`` holds a finished run (of ``config``, when given)."""
    try:
        summary = read_json(Path(out) / "summary.json")
        saved = read_json(Path(out) / "config.json")["config"]
    except (OSError, ValueError, KeyError):
        return False
    return summary.get("status") == "finished" and (config is None or saved == config.to_dict())


def summary_of(out: Path) -> dict[str, Any]:
    """The run's summary.json; for a run killed before it wrote one, 'unfinished' when it left a
    checkpoint, else 'missing'."""
    try:
        return read_json(Path(out) / "summary.json")
    except (OSError, ValueError):
        if (Path(out) / "checkpoint.pt").is_file():
            return {"status": "unfinished", "out": str(out),
                    "message": "stopped without a summary (killed?); its checkpoint continues it"}
        return {"status": "missing", "out": str(out)}


class RunLock:
    """An exclusive lock on a run folder, held while one process trains the run.

    ``flock`` on ``run.lock``: the kernel releases it when the process ends, even by ``kill -9``, so a
    stale lock never blocks a resume. The file names the holder (pid, host, start time), which is what a
    second process that finds the run taken tells its user.
    """

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / "run.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise RunFolderError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(f"{self.path.parent} is being trained by {holder}; it was left alone. Wait "
                                 f"for that process to end (or stop it), then run this command "
                                 "again.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
                     .encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

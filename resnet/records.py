"""A run's records on disk: written atomically, named after the code and data that made them, and locked
while a process trains the run. :class:`RunFolder` is the one place that knows a run folder's files.

Every run has its own folder, ``<arch>-<shortcut>-<recipe>-s<seed>`` (:func:`run_name`):

    config.json    the config (the recipe) and how the run was executed (device, graph, compile, ...)
    log.csv        one row per evaluation: iteration, lr, train loss/error, val/test error, elapsed seconds
    summary.json   :class:`Summary`: status (finished | unfinished | diverged | failed), final errors, speed,
                   versions, data
    checkpoint.pt  the run's state (resnet.state.RunState) for resuming; never committed
    model.pt       the reported weights (final iteration, or the validation-chosen ones), for analysis
    run.lock       held (flock) by the process that trains the run; names that process

All files are written atomically (a temporary file, then a rename): a crash leaves the old file or the
new one, never half of one. A copy can still be cut short (a pack, a commit, a sync), so every reader of a
run's records goes through :func:`check_record` (:meth:`RunFolder.read`): a folder whose files do not
parse or do not agree is *damaged*, named with what is wrong (:class:`DamagedRecords`), never read in part.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import fnmatch
import hashlib
import io
import json
import math
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnet.config import RunConfig

__all__ = ["REPO_ROOT", "RESULTS_DIR", "LOG_FIELDS", "RECORDS", "STATUSES", "RunFolderError",
           "DamagedRecords", "Record", "check_record", "damage", "display_path", "RunFolder", "Summary",
           "RunLock", "atomic_write_bytes", "write_json", "read_json", "write_log", "atomic_torch_save",
           "git_commit",
           "code_fingerprint", "git_files", "code_version", "run_name", "FLOAT32", "standing_run",
           "default_run_dir"]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"

LOG_FIELDS = ("iteration", "epoch", "lr", "train_loss", "train_error", "val_error", "test_loss", "test_error",
              "elapsed_s")
#: A run's records: what is committed and packed (checkpoint.pt and model.pt are its state and weights)
RECORDS = ("config.json", "log.csv", "summary.json")
#: What summary.json's status may say ("missing" and "damaged" are what RunFolder.report says of a folder)
STATUSES = ("finished", "unfinished", "diverged", "failed")


class RunFolderError(RuntimeError):
    """The run folder holds another run, a run that cannot be resumed with this config, or a run that
    another process is training."""


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it is inside it (for messages), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


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


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(compact(obj), buf)
    atomic_write_bytes(path, buf.getvalue())


def compact(obj: Any) -> Any:
    """``obj`` with every tensor that is a view into a larger storage copied out: torch.save writes a
    tensor's whole storage, and a run trained in a group (resnet.group) holds its weights as slices of the
    group's. Dicts, lists and tuples are walked; everything else is kept as it is."""
    if isinstance(obj, torch.Tensor):
        whole = obj.untyped_storage().nbytes()
        return obj.clone() if whole > obj.numel() * obj.element_size() else obj
    if isinstance(obj, dict):
        out = type(obj)((k, compact(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state_dict's module versions, which load_state_dict reads
            out._metadata = obj._metadata
        return out
    if type(obj) in (list, tuple):
        return type(obj)(compact(v) for v in obj)
    return obj


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


def git_files(commit: str = "HEAD", *, repo: Path = REPO_ROOT) -> dict[str, bytes]:
    """The CODE_FILES of ``commit``, read from git: ``code_fingerprint(git_files(c))`` is commit c's."""
    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, check=True).stdout

    paths = git("ls-tree", "-r", "--name-only", commit).decode().splitlines()
    wanted = [p for p in paths if any(fnmatch.fnmatchcase(p, pattern) for pattern in CODE_FILES)]
    return {p: git("show", f"{commit}:{p}") for p in wanted}


def code_version() -> dict[str, str]:
    """What a record says of the code that made it: the git commit ('unknown' outside a clone) and the
    source fingerprint."""
    return {"git_commit": git_commit(), "code_fingerprint": code_fingerprint()}


def run_name(arch: str, shortcut: str = "A", recipe: str = "paper", seed: int = 0, *,
             precision: str = "bf16") -> str:
    """The folder name of a run: ``resnet56-A-paper-s0``; plain nets have no shortcut in the name, and a
    float32 control run ends in ``-fp32``. The one place of this rule."""
    parts = [arch] if arch.startswith("plain") else [arch, shortcut]
    name = "-".join([*parts, recipe, f"s{seed}"])
    return name + FLOAT32 if precision == "fp32" else name


#: What a float32 run's name adds to its network's and seed's (run_name).
FLOAT32 = "-fp32"


def standing_run(out: str | Path) -> Path:
    """The folder that stands for a network and seed where one network is shown or published (Figure 7, a
    confusion matrix, the published weights): ``out`` (its bf16 run) once finished; else its float32 twin
    (``<name>-fp32``) where that has finished, as a CPU's run is, float32 being what a CPU computes in;
    else ``out``. Tables choose the same way (results._finished_paper_runs)."""
    out = Path(out)
    twin = out.with_name(out.name + FLOAT32)
    if out.name.endswith(FLOAT32) or RunFolder(out).finished() or not RunFolder(twin).finished():
        return out
    return twin


def default_run_dir(config: RunConfig, *, root: Path | None = None) -> Path:
    """``results/runs/<run_name>`` (or ``<root>/<run_name>``)."""
    root = Path(root) if root is not None else RESULTS_DIR / "runs"
    return root / run_name(config.arch, config.shortcut, config.recipe, config.seed,
                           precision=config.precision)


@dataclass(frozen=True)
class Summary:
    """What summary.json says: the reported errors (the final iteration's, or the validation-chosen
    model's: never chosen on the test set), how far the run got, how fast, on what, and with what code."""

    status: str  # "finished" | "unfinished" | "diverged" | "failed"
    message: str | None = None
    arch: str = ""
    shortcut: str = "A"
    recipe: str = "paper"
    seed: int = 0
    final_test_error: float | None = None
    final_train_error: float | None = None
    final_val_error: float | None = None
    selected_iteration: int | None = None
    selection: str | None = None  # "final iteration" ("validation" in records of older code)
    best_val_iteration: int | None = None  # with a validation split: the lowest validation error's weights,
    best_val_error: float | None = None  # chosen on validation, and their test error (a second number,
    best_val_test_error: float | None = None  # never the reported one)
    iterations_done: int = 0
    iterations_planned: int = 0
    warmup_end: int | None = None
    parameters: int | None = None
    wall_time_s: float | None = None
    train_time_s: float | None = None
    images_per_s: float | None = None
    ms_per_iteration: float | None = None
    device: str | None = None
    precision: str | None = None
    graph: bool | None = None
    world_size: int = 1
    torch_version: str | None = None
    git_commit: str | None = None
    code_fingerprint: str | None = None
    data: str | None = None
    data_fingerprint: str | None = None
    schedule: str | None = None
    finished_at: str | None = None
    # the sessions that trained it (resnet.train.Run: one per segment of a run trained in several): from and
    # to which iteration, seconds, code commit, device (a CPU's model, instruction set, threads)
    segments: list[dict[str, Any]] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        """A summary from summary.json; keys of other versions of this code are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DamagedRecords(RunFolderError):
    """Run folders whose records do not parse or do not agree with each other: ``folders`` maps each to
    what is wrong. The message names them all, then says what to do: ``then``, in which {it} is "it" or
    "them" and {paths} the folders (by default: restore them, or move them away)."""

    RESTORE = ("Restore {it} from where {it} came (git checkout -- {paths}, or the pack {it} came in), or "
               "move {it} away to train the run afresh; nothing was changed.")

    def __init__(self, folders: dict[Path, list[str]], then: str = RESTORE) -> None:
        self.folders = {Path(f): list(problems) for f, problems in folders.items()}
        named = "; ".join(f"{display_path(f)}: {'; '.join(p)}" for f, p in self.folders.items())
        head = "damaged run records" if len(self.folders) == 1 else f"{len(self.folders)} damaged run records"
        then = then.format(it="it" if len(self.folders) == 1 else "them",
                           paths=" ".join(display_path(f) for f in self.folders))
        super().__init__(f"{head}: {named}. {then}")


@dataclass(frozen=True)
class Record:
    """A run's records read whole and checked against each other (check_record): its summary, its config
    (None only for a run that failed before it trained) and its log, one dict per row of LOG_FIELDS."""

    summary: Summary
    config: RunConfig | None
    log: list[dict[str, float | None]]


#: The log's columns that the summary's final errors are (the log's other columns are for the plots)
_FINAL = {"final_test_error": "test_error", "final_train_error": "train_error",
          "final_val_error": "val_error"}


def check_record(files: dict[str, bytes]) -> tuple[Record | None, list[str]]:
    """Read a run's records (``files``: RECORDS' names -> their bytes, as on disk or in a pack) and check
    them: (the record, []) when whole, else (None, what is wrong, file by file). Whole means: each file
    parses; a run that trained (or says it finished) has its config and its log; the summary names the
    config's network, recipe and seed, and its data, data fingerprint and schedule; its final errors are
    those of the log's last row at or before its iterations done (a paused run's log may end before them,
    and a run resumed since and stopped without a summary may have rows after them: its checkpoint continues
    it); a finished run's log ends at its iterations done, which are the planned ones unless its config stops
    early, and it has a final test and training error; the sessions that trained it (segments) run from
    iteration 0 to its iterations done without a gap."""
    problems: list[str] = []
    raw = _parse_json(files, "summary.json", problems)
    summary = _summary_of(raw, problems) if raw is not None else None
    trained = summary is not None and (summary.iterations_done > 0 or summary.status == "finished")
    config = _config_in(files, problems, required=trained)
    log = _log_in(files, problems, required=trained)
    if summary is None or problems:
        return None, problems
    if config is not None:  # the keys a summary of older code lacks are not a disagreement
        problems += [f"summary.json says {key} {raw[key]!r}, config.json {getattr(config, key)!r}"
                     for key in ("arch", "shortcut", "recipe", "seed")
                     if key in raw and raw[key] != getattr(config, key)]
    if trained:
        problems += [f"summary.json names no {key.replace('_', ' ')}"
                     for key in ("data", "data_fingerprint", "schedule") if not raw.get(key)]
    problems += _against_log(summary, config, log or [])
    problems += _segment_gaps(raw.get("segments"), summary.iterations_done)
    return (None if problems else Record(summary, config, log or [])), problems


def _parse_json(files: dict[str, bytes], name: str, problems: list[str]) -> Any:
    if name not in files:
        problems.append(f"{name} is missing")
        return None
    try:
        return json.loads(files[name].decode())
    except UnicodeDecodeError:
        problems.append(f"{name} is not text")
    except json.JSONDecodeError as e:
        problems.append(f"{name} does not parse: {e.msg} (line {e.lineno}, column {e.colno}; cut short?)")
    return None


def _summary_of(raw: Any, problems: list[str]) -> Summary | None:
    if not isinstance(raw, dict):
        problems.append("summary.json holds no summary (a JSON object)")
        return None
    before = len(problems)
    if raw.get("status") not in STATUSES:
        problems.append(f"summary.json's status is {raw.get('status')!r}, none of {', '.join(STATUSES)}")
    for key in ("iterations_done", "iterations_planned"):
        if not _is_int(raw.get(key, 0)) or raw.get(key, 0) < 0:
            problems.append(f"summary.json's {key} is {raw.get(key)!r}, not a count of iterations")
    for key in _FINAL:
        if raw.get(key) is not None and not _is_number(raw[key]):
            problems.append(f"summary.json's {key} is {raw[key]!r}, not a number")
    return Summary.from_dict(raw) if len(problems) == before else None


def _config_in(files: dict[str, bytes], problems: list[str], *, required: bool) -> RunConfig | None:
    if "config.json" not in files:
        if required:
            problems.append("config.json is missing")
        return None
    saved = _parse_json(files, "config.json", problems)
    if saved is None:
        return None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        problems.append("config.json holds no \"config\"")
        return None
    try:
        return RunConfig.from_dict(saved["config"])
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        problems.append(f"config.json's config is not a run's ({e})")
        return None


def _log_in(files: dict[str, bytes], problems: list[str], *,
            required: bool) -> list[dict[str, float | None]] | None:
    if "log.csv" not in files:
        if required:
            problems.append("log.csv is missing")
        return None
    try:
        text = files["log.csv"].decode()
        lines = list(csv.reader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error):
        problems.append("log.csv is not text in CSV")
        return None
    if not lines:
        problems.append("log.csv is empty (not even its header)")
        return None
    header, rows = lines[0], []
    lacking = [f for f in ("iteration", *_FINAL.values()) if f not in header]
    if lacking:
        problems.append(f"log.csv's header lacks {', '.join(lacking)}")
        return None
    for number, cells in enumerate(lines[1:], 2):
        where = f"log.csv line {number}"
        if len(cells) != len(header):
            problems.append(f"{where} has {len(cells)} of its {len(header)} fields (cut short?)")
            return None
        try:
            row = {k: None if v == "" else float(v) for k, v in zip(header, cells)}
        except ValueError:
            problems.append(f"{where} holds something other than numbers")
            return None
        iteration = row["iteration"]
        whole = iteration is not None and math.isfinite(iteration) and iteration == int(iteration)
        if not whole or (rows and iteration <= rows[-1]["iteration"]):
            problems.append(f"{where}: iteration {cells[header.index('iteration')]!r} does not follow "
                            f"{int(rows[-1]['iteration']) if rows else 0:,}")
            return None
        rows.append({**row, "iteration": int(iteration)})
    if not text.endswith("\n"):
        problems.append("log.csv ends in the middle of a line (cut short?)")
        return None
    return rows


def _against_log(summary: Summary, config: RunConfig | None, log: list[dict[str, float | None]]) -> list[str]:
    """Where the summary and its log disagree (see check_record)."""
    done, planned, problems = summary.iterations_done, summary.iterations_planned, []
    if summary.status == "finished":
        if not log or log[-1]["iteration"] != done:
            end = f"ends at iteration {log[-1]['iteration']:,}" if log else "has no rows"
            problems.append(f"the run finished at iteration {done:,}, but log.csv {end} (cut short?)")
        stops_early = config is not None and config.patience is not None
        if done != planned and not (stops_early and 0 < done < planned):
            problems.append(f"summary.json says finished at iteration {done:,} of {planned:,} planned"
                            + ("" if stops_early else ", and its config stops only at the end"))
        problems += [f"summary.json says finished without a {key.replace('_', ' ')}"
                     for key in ("final_test_error", "final_train_error") if getattr(summary, key) is None]
    upto = [row for row in log if row["iteration"] <= done]
    last = upto[-1] if upto else {}
    says = (f"log.csv's row at iteration {last['iteration']:,} says" if last else
            f"log.csv has no row at or before iteration {done:,}, so")
    return problems + [f"summary.json's {key} is {getattr(summary, key)}, but {says} {last.get(column)}"
                       for key, column in _FINAL.items()
                       if not _same(getattr(summary, key), last.get(column))]


def _segment_gaps(segments: Any, done: int) -> list[str]:
    """Where the sessions that trained a run (summary.json's segments, when it has them) leave a gap."""
    if segments is None:
        return []
    if not isinstance(segments, list) or not all(
            isinstance(s, dict) and _is_int(s.get("from_iteration")) and _is_int(s.get("to_iteration"))
            for s in segments):
        return ["summary.json's segments are not a list of sessions from and to an iteration"]
    end = 0
    for number, segment in enumerate(segments, 1):
        if segment["from_iteration"] != end or segment["to_iteration"] < end:
            return [f"summary.json's segment {number} runs from iteration {segment['from_iteration']:,} to "
                    f"{segment['to_iteration']:,}, where the run stood at {end:,}"]
        end = segment["to_iteration"]
    return [] if end == done or not segments else \
        [f"summary.json's segments end at iteration {end:,}, its iterations done are {done:,}"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _same(a: float | None, b: float | None) -> bool:
    return (a is None) == (b is None) and (a is None or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))


def damage(folders: Iterable[RunFolder]) -> dict[Path, list[str]]:
    """The damaged ones of ``folders``: {path: what is wrong} (RunFolder.read)."""
    found = {}
    for folder in folders:
        try:
            folder.read()
        except DamagedRecords as e:
            found.update(e.folders)
    return found


class RunFolder:
    """One run's folder: its status, config, summary, log, checkpoint and trained model, read and written
    here only. ``status`` is "missing" (nothing there), "unfinished" (a checkpoint; a summary saying so, or
    none when the process was killed), "finished", "diverged", "failed" or "damaged" (its records do not
    parse or do not agree: :meth:`read` says why)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock = RunLock(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_path(self) -> Path:
        """model.pt: the reported weights of a finished run (resnet.pretrained.load_file reads it)."""
        return self.path / "model.pt"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    # -- reading ---------------------------------------------------------------------------------------
    def summary(self) -> Summary | None:
        """summary.json as it is, unchecked (what a sweep plans with); :meth:`read` checks it."""
        try:
            return Summary.from_dict(read_json(self.path / "summary.json"))
        except (OSError, ValueError, TypeError):
            return None

    def read(self) -> Record | None:
        """The run's records, read whole and checked against each other (check_record); None when there
        is no record (no summary.json: nothing there, or a run stopped before it wrote one) or while a
        process trains the run (its files are being written). DamagedRecords names what is wrong."""
        if self.lock.holder() is not None or not (self.path / "summary.json").exists():
            return None
        files, problems = {}, []
        for name in RECORDS:
            try:
                files[name] = (self.path / name).read_bytes()
            except FileNotFoundError:
                pass
            except OSError as e:
                problems.append(f"{name} cannot be read ({e.strerror})")
        record, found = check_record(files)
        if problems or found:
            raise DamagedRecords({self.path: problems + found})
        return record

    def report(self) -> Summary:
        """The summary (checked: read); for a run without one, a Summary that says 'unfinished' (a process
        trains it now, or it left a checkpoint: killed), 'missing' or, when its records are damaged,
        'damaged' with what is wrong."""
        holder = self.lock.holder()
        if holder is None:
            try:
                record = self.read()
            except DamagedRecords as e:
                return Summary("damaged", "; ".join(e.folders[self.path]))
            if record is not None:
                return record.summary
        else:
            summary = self.summary()  # its records are being written: what its last session said
            return summary or Summary("unfinished", f"being trained by {holder}")
        if self.checkpoint_path.is_file():
            return Summary("unfinished", "stopped without a summary (killed?); its checkpoint continues it")
        return Summary("missing")

    @property
    def status(self) -> str:
        return self.report().status

    def holds_a_run(self) -> bool:
        """A run, finished or not, that a new run must not overwrite and that a sweep resumes."""
        return (self.path / "summary.json").exists() or self.checkpoint_path.exists()

    def config(self) -> RunConfig | None:
        """The run's config (config.json), or None when there is none readable."""
        try:
            return _config_of(read_json(self.path / "config.json")["config"])
        except (OSError, ValueError, KeyError):
            return None

    def finished(self, config: RunConfig | None = None) -> bool:
        """A finished run (of ``config``, when given)."""
        return self.status == "finished" and (config is None or self.config() == config)

    def read_checkpoint(self, config: RunConfig, device: Any) -> dict[str, Any]:
        """The saved state of ``config``'s run; RunFolderError when unreadable or another run's."""
        path = self.checkpoint_path
        try:
            checkpoint = torch.load(path, map_location=device, weights_only=False)
        except Exception as e:  # a checkpoint that cannot be read is a user-facing problem, not a traceback
            raise RunFolderError(f"cannot read the checkpoint {path} ({type(e).__name__}: {e}); move it away "
                                 f"to start the run afresh") from None
        if _config_of(checkpoint.get("config")) != config:  # read as config.json is: older records load
            raise RunFolderError(f"{path} belongs to a run with another config; choose another folder or "
                                 f"rerun with the config in {self.path / 'config.json'}")
        return checkpoint["state"]

    # -- writing ---------------------------------------------------------------------------------------
    def claim(self, *, resume: bool, lock: bool = True) -> None:
        """Before training here: refuse a folder that holds a run unless resuming, then take the lock
        (``lock``: this process writes the records). RunFolderError says what to do."""
        if not resume and self.holds_a_run():
            raise RunFolderError(f"{self.path} already holds a run. Pass --resume to continue it (a finished "
                                 f"run is left as it is), or choose another --out; nothing was changed.")
        if resume:
            self.read()  # a damaged run is not trained over: DamagedRecords says what to do
        if lock:
            self.lock.acquire()

    def write_config(self, config: RunConfig, execution: dict[str, Any]) -> None:
        write_json(self.path / "config.json", {"config": config.to_dict(), "run": execution})

    def write_log(self, rows: Sequence[dict[str, Any]]) -> None:
        write_log(self.path / "log.csv", rows)

    def write_checkpoint(self, config: RunConfig, state: dict[str, Any]) -> None:
        atomic_torch_save({"config": config.to_dict(), "state": state}, self.checkpoint_path)

    def write_model(self, weights: dict[str, Any]) -> None:
        atomic_torch_save(weights, self.model_path)

    def write_summary(self, summary: Summary | dict[str, Any]) -> None:
        write_json(self.path / "summary.json", summary.to_dict() if isinstance(summary, Summary) else summary)


@dataclass(frozen=True)
class Job:
    """A run to train: its config and its folder (what a plan lists and a sweep opens)."""

    config: RunConfig
    out: Path

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.out)


def _config_of(saved: Any) -> RunConfig | None:
    """A config as a record saved it (RunConfig.from_dict fills what older code did not write), or None."""
    try:
        return RunConfig.from_dict(saved)
    except (ValueError, TypeError, AttributeError):
        return None


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
            holder = self._named_in(fd)
            os.close(fd)
            raise RunFolderError(f"{self.path.parent} is being trained by {holder}; it was left alone. Wait "
                                 f"for that process to end (or stop it), then run this command "
                                 "again.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
                     .encode())
        self._fd = fd

    def holder(self) -> str | None:
        """Who holds the lock now (the holder its file names), or None when no process does."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when fd closes
            return None
        except BlockingIOError:
            return self._named_in(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _named_in(fd: int) -> str:
        """The holder a lock file names (written by acquire)."""
        return os.read(fd, 4096).decode(errors="replace").strip() or "another process"

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

"""CIFAR-10 on disk: finding it, downloading it, reading both official layouts (python pickles and binary
records), and naming it by its content.

Where: `resolve_data_dir` takes --data-dir, else $CIFAR10_ROOT, else the repository's data/ folder. That
folder may hold cifar-10-batches-py/ or cifar-10-batches-bin/, or be one of them; both load to identical
tensors. What: every batch is hashed once in the binary release's record format and compared with the
published SHA-1s (OFFICIAL_SHA1); when all six match the data is "CIFAR-10", otherwise "CIFAR-10 (modified
copy <fingerprint>)", so no result is ever reported under the official name for other data.

    data = load_data()                       # the default folder, read and verified once per process
    data.train_images                        # uint8 [50000, 3, 32, 32]; data.name == "CIFAR-10"

The device loader (augmentation, normalisation, batches) is resnet.loader.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["ARCHIVE_FILENAME", "ARCHIVE_MD5", "ARCHIVE_URL", "BATCHES_DIR", "BIN_BATCHES_DIR", "CIFAR10",
           "CLASSES_FALLBACK", "DataError", "OFFICIAL_SHA1", "load_cifar10", "load_data", "resolve_data_dir",
           "train_val_split"]

# The official release (https://www.cs.toronto.edu/~kriz/cifar.html). --download fetches the python
# version's archive; the binary version is read as well when a copy of it is at hand.
DATASET_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_FILENAME = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES_DIR = "cifar-10-batches-py"
BIN_BATCHES_DIR = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
BATCH_NAMES = (*TRAIN_FILES, TEST_FILE)  # the batches' names in both layouts (".bin" added in one)
META_FILE = "batches.meta"
BIN_SUFFIX = ".bin"
BIN_META_FILE = "batches.meta.txt"
ENV_VAR = "CIFAR10_ROOT"
#: The data folder when neither --data-dir nor $CIFAR10_ROOT names one: the repository's data/, so a
#: script finds the same data whatever directory it is started from.
DEFAULT_DIR = pathlib.Path(__file__).resolve().parent.parent / "data"

#: The official class names, label order 0..9: for code that has no data at hand (figures drawn from
#: run records), and for a binary-layout copy without batches.meta.txt.
CLASSES_FALLBACK: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

#: SHA-1 of each batch of the official binary version's files (data_batch_1.bin ...), as Apache MXNet's
#: gluon.data.vision.CIFAR10 lists them. load_cifar10 hashes every batch in that record format (per
#: image: 1 label byte, then 3,072 pixel bytes), so a python-layout copy is checked against them too.
OFFICIAL_SHA1: Mapping[str, str] = {
    "data_batch_1": "aadd24acce27caa71bf4b10992e9e7b2d74c2540",
    "data_batch_2": "c0ba65cce70568cd57b4e03e9ac8d2a5367c1795",
    "data_batch_3": "1dd00a74ab1d17a6e7d73e185b69dbf31242f295",
    "data_batch_4": "aab85764eb3584312d3c7f65fd2fd016e36a258e",
    "data_batch_5": "26e2849e66a845b7f1e4614ae70f4889ae604628",
    "test_batch": "67eb016db431130d61cd03c7ad570b013799c88c",
}
OFFICIAL_NAME = "CIFAR-10"

_IMAGE_SHAPE = (3, 32, 32)
_ROW_LEN = 3 * 32 * 32
_RECORD_LEN = 1 + _ROW_LEN  # one record of the binary layout: the label byte, then the pixels
_PY_FILES = (*BATCH_NAMES, META_FILE)
_BIN_FILES = (*(n + BIN_SUFFIX for n in BATCH_NAMES), BIN_META_FILE)

Batch = tuple[np.ndarray, np.ndarray]  # (uint8 rows [n, 3072], int64 labels [n])


class DataError(Exception):
    """A user-facing, one-paragraph explanation of what is wrong with the data and how to fix it."""


@dataclass(frozen=True, eq=False)
class CIFAR10:
    """CIFAR-10 in memory. Images are uint8 [N, 3, 32, 32] (channels R, G, B), labels int64 [N]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    fingerprint: str  # 12 hex chars of blake2b over the four arrays: identifies the exact contents
    root: str  # the folder the batches were read from (a cifar-10-batches-py or -bin folder)
    name: str  # "CIFAR-10" when verified, else "CIFAR-10 (modified copy <fingerprint>)"
    verified: bool  # every batch has the official release's SHA-1 (checked once, by load_cifar10)
    copies: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict, repr=False)  # see on()

    def on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(train images, train labels, test images, test labels) on ``device``, uploaded once and kept
        here: the runs of a sweep that share this object share one copy on their GPU, not one each."""
        if str(device) not in self.copies:
            tensors = (self.train_images, self.train_labels, self.test_images, self.test_labels)
            self.copies[str(device)] = tuple(t.to(device) for t in tensors)
        return self.copies[str(device)]

    def __repr__(self) -> str:
        return (f"CIFAR10({self.name!r}, train={len(self.train_labels)}, test={len(self.test_labels)}, "
                f"fingerprint={self.fingerprint!r}, root={self.root!r})")


# --------------------------------------------------------------------------------------------------
# Locating and downloading the data


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The data folder: the --data-dir flag's value if given, else $CIFAR10_ROOT if set, else the
    repository's data/ folder (DEFAULT_DIR), independent of the current directory."""
    if data_dir is not None and str(data_dir) != "":
        return pathlib.Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return pathlib.Path(env).expanduser()
    return DEFAULT_DIR


def _is_batches_folder(folder: pathlib.Path, dirname: str, files: Sequence[str]) -> bool:
    # A folder named like the official one, or holding any of its files (a renamed copy), is taken as
    # that layout, so that a missing batch is reported by name rather than as "not found".
    return folder.is_dir() and (folder.name == dirname or any((folder / f).exists() for f in files))


def _find_batches(root: pathlib.Path) -> tuple[pathlib.Path, str] | None:
    """(folder, "py" or "bin"): root/cifar-10-batches-py, root/cifar-10-batches-bin, or root itself when
    it is one of those folders; None when there is neither. The python layout wins when both are there:
    it is what --download fetches (both give identical data, so this only fixes CIFAR10.root)."""
    for dirname, layout in ((BATCHES_DIR, "py"), (BIN_BATCHES_DIR, "bin")):
        if (root / dirname).is_dir():
            return root / dirname, layout
    if _is_batches_folder(root, BATCHES_DIR, _PY_FILES):
        return root, "py"
    if _is_batches_folder(root, BIN_BATCHES_DIR, _BIN_FILES):
        return root, "bin"
    return None


def _missing_message(root: pathlib.Path) -> str:
    return (f"CIFAR-10 not found: {root.absolute()} holds neither {BATCHES_DIR}/ nor {BIN_BATCHES_DIR}/. "
            f"Pass --download (download=True in Python) to fetch the official archive there, or point "
            f"--data-dir or ${ENV_VAR} at a folder holding either layout.")


def _download(root: pathlib.Path) -> None:
    # torchvision is imported here only: reading the data needs nothing but numpy and torch.
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(ARCHIVE_URL, download_root=str(root), filename=ARCHIVE_FILENAME,
                                     md5=ARCHIVE_MD5)
    except Exception as exc:  # network errors, HTTP errors, a failed md5 check, a broken archive
        raise DataError(
            f"Downloading CIFAR-10 from {ARCHIVE_URL} into {root.absolute()} failed ({type(exc).__name__}: "
            f"{exc}). Retry when the network is back, or get either layout from {DATASET_PAGE} and point "
            f"--data-dir or ${ENV_VAR} at the folder holding {BATCHES_DIR}/ or {BIN_BATCHES_DIR}/.") from exc


def _locate(root: pathlib.Path, download: bool) -> tuple[pathlib.Path, str]:
    """The batches folder and its layout under `root`, downloading the python archive first when
    asked to and nothing is there. Data already present is never replaced."""
    found = _find_batches(root)
    if found is not None:
        return found
    if not download:
        raise DataError(_missing_message(root))
    # Pointed at a batches folder that does not exist yet: the archive extracts beside it.
    target = root.parent if root.name in (BATCHES_DIR, BIN_BATCHES_DIR) else root
    _download(target)
    found = _find_batches(target)
    if found is None:
        raise DataError(f"The downloaded archive did not produce {target / BATCHES_DIR}. "
                        + _missing_message(root))
    return found


# --------------------------------------------------------------------------------------------------
# Reading the batches (shared checks, then one reader per layout)


def _missing_file(path: pathlib.Path, expected: Sequence[str]) -> DataError:
    return DataError(
        f"CIFAR-10 file missing: {path} (the folder must hold {', '.join(expected)}). Complete the copy, "
        f"or point --data-dir or ${ENV_VAR} at a complete one.")


def _invalid(path: pathlib.Path, what: str) -> DataError:
    return DataError(f"The CIFAR-10 file {path} is not valid: {what}. Replace it with the official file, "
                     f"or point --data-dir or ${ENV_VAR} at an intact copy.")


def _check_labels(path: pathlib.Path, labels: np.ndarray, n_images: int) -> None:
    # Labels index the 10 classes: anything else would fail much later, far from the file at fault.
    if len(labels) != n_images:
        raise _invalid(path, f"{len(labels)} labels for {n_images} images")
    if n_images == 0:
        raise _invalid(path, "it holds no images")
    if labels.min() < 0 or labels.max() > 9:
        raise _invalid(path, f"labels must lie in 0..9, found {labels.min()}..{labels.max()}")


# Only what a CIFAR-10 batch (numpy arrays, lists, str/bytes, ints) needs: a batch file is data, and
# a pickle that asks for anything else is not one (and must not get to run arbitrary code).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the pickle")


def _read_pickle(path: pathlib.Path) -> dict[str, object]:
    """One batch file as a dict with str keys. Official files are Python 2 pickles: with
    encoding='bytes' their keys and strings come back as bytes; files written by Python 3 may have
    str keys. Both are accepted."""
    if not path.is_file():
        raise _missing_file(path, _PY_FILES)
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # EOFError (also for an empty file), UnpicklingError, ... from a bad file
        raise _invalid(path, f"it cannot be read as a python batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise _invalid(path, f"it holds a {type(obj).__name__}, not the dict of an official batch")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _read_batch(path: pathlib.Path) -> Batch:
    """One python-layout batch: 'data' uint8 [n, 3072] and 'labels' n ints in 0..9."""
    d = _read_pickle(path)
    for key in ("data", "labels"):
        if key not in d:
            raise _invalid(path, f"it has no '{key}' entry (keys: {sorted(d)})")
    data = d["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _ROW_LEN):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise _invalid(path, f"'data' must be a uint8 array of shape [n, {_ROW_LEN}], got shape {shape} "
                         f"and dtype {dtype}")
    try:
        labels = np.asarray(d["labels"])
    except Exception as exc:
        raise _invalid(path, f"'labels' cannot be read as integers ({exc})") from exc
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise _invalid(path, f"'labels' must be a list of integers, got shape {labels.shape} and dtype "
                         f"{labels.dtype}")
    _check_labels(path, labels, len(data))
    return data, labels.astype(np.int64)


def _read_classes(path: pathlib.Path) -> tuple[str, ...]:
    d = _read_pickle(path)
    names = d.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != 10:
        raise _invalid(path, f"'label_names' must list the 10 class names, got {names!r}")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)


def _read_py(folder: pathlib.Path) -> tuple[tuple[str, ...], dict[str, Batch]]:
    """The python layout: batches.meta, then data_batch_1..5 and test_batch (pickles)."""
    classes = _read_classes(folder / META_FILE)
    return classes, {name: _read_batch(folder / name) for name in BATCH_NAMES}


def _read_bin_batch(path: pathlib.Path) -> Batch:
    """One binary-layout batch: records of 1 label byte + 3,072 pixel bytes, the pixels in the python
    rows' order (1024 red, 1024 green, 1024 blue values, each row-major)."""
    if not path.is_file():
        raise _missing_file(path, _BIN_FILES[:-1])
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise _invalid(path, f"it cannot be read ({type(exc).__name__}: {exc})") from exc
    if raw.size == 0:
        raise _invalid(path, "it is empty (0 bytes)")
    if raw.size % _RECORD_LEN:
        # The size is all a binary batch has to check its framing by: a short file would misalign every
        # later record (a label read as a pixel), so nothing but whole records is accepted.
        raise _invalid(path, f"its size, {raw.size:,} bytes, is not a whole number of {_RECORD_LEN:,}-byte "
                         f"records (1 label byte + {_ROW_LEN:,} pixel bytes; an official batch is 10,000 "
                         f"records, {10_000 * _RECORD_LEN:,} bytes), so it is truncated or not a batch")
    records = raw.reshape(-1, _RECORD_LEN)
    labels = records[:, 0].astype(np.int64)
    _check_labels(path, labels, len(records))
    return np.ascontiguousarray(records[:, 1:]), labels


def _read_bin_classes(path: pathlib.Path) -> tuple[str, ...]:
    """Class names from batches.meta.txt (one a line, blank lines ignored); the official names when the
    file is absent, as it is from some copies of the binary layout."""
    if not path.exists():
        return CLASSES_FALLBACK
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid(path, f"it cannot be read as text ({type(exc).__name__}: {exc})") from exc
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 10:
        raise _invalid(path, f"it must list the 10 class names, one a line, found {len(names)}: {names!r}")
    return names


def _read_bin(folder: pathlib.Path) -> tuple[tuple[str, ...], dict[str, Batch]]:
    """The binary layout: data_batch_1..5.bin and test_batch.bin, names from batches.meta.txt."""
    classes = _read_bin_classes(folder / BIN_META_FILE)
    return classes, {name: _read_bin_batch(folder / (name + BIN_SUFFIX)) for name in BATCH_NAMES}


# --------------------------------------------------------------------------------------------------
# Identifying the data, and loading it


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=6)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _record_sha1(data: np.ndarray, labels: np.ndarray) -> str:
    """SHA-1 of a batch written as the official binary file (per image: the label byte, then the 3,072
    pixel bytes). Built from the arrays, so a python-layout copy is checked against the same hashes."""
    records = np.concatenate([labels[:, None].astype(np.uint8), data], axis=1)
    return hashlib.sha1(records).hexdigest()  # hashlib reads the contiguous array's buffer, no copy


def _is_official(batches: Mapping[str, Batch], official_sha1: Mapping[str, str]) -> bool:
    """Whether every batch has its expected SHA-1; stops hashing at the first mismatch."""
    return all(str(official_sha1.get(name, "")).lower() == _record_sha1(*batches[name])
               for name in BATCH_NAMES)


def _data_name(verified: bool, fingerprint: str) -> str:
    # Results on anything but the official release must never carry its bare name; the fingerprint
    # says which copy they came from.
    return OFFICIAL_NAME if verified else f"{OFFICIAL_NAME} (modified copy {fingerprint})"


def load_cifar10(root: str | os.PathLike, *, download: bool = False,
                 official_sha1: Mapping[str, str] = OFFICIAL_SHA1) -> CIFAR10:
    """Read CIFAR-10 from `root`/cifar-10-batches-py or `root`/cifar-10-batches-bin (or from `root`
    when it is one of those folders; the python layout when both are there).

    Any copy with the official layout loads, smaller batches included (whole records, labels in 0..9,
    10 class names); any problem raises DataError naming the file. Every batch is then hashed once in
    the binary record format and compared with `official_sha1` (the published SHA-1s by default; tests
    pass their own): all match, and the data is named "CIFAR-10" and `verified`; otherwise it is
    "CIFAR-10 (modified copy <fingerprint>)".
    With download=True and no data under `root`, the official python archive is fetched, verified by
    its md5 and extracted there; data already present is used as it is. A failed load changes nothing
    on disk.
    """
    folder, layout = _locate(pathlib.Path(root).expanduser(), download)
    classes, batches = (_read_py if layout == "py" else _read_bin)(folder)
    train_x = np.concatenate([batches[name][0] for name in TRAIN_FILES])
    train_y = np.concatenate([batches[name][1] for name in TRAIN_FILES])
    test_x, test_y = batches[TEST_FILE]
    fingerprint = _fingerprint(train_x, train_y, test_x, test_y)
    verified = _is_official(batches, official_sha1)
    return CIFAR10(
        # [n, 3072] -> [n, 3, 32, 32] is a view: the official rows are channel-major, then row-major.
        train_images=torch.from_numpy(train_x).view(-1, *_IMAGE_SHAPE),
        train_labels=torch.from_numpy(train_y),
        test_images=torch.from_numpy(test_x).view(-1, *_IMAGE_SHAPE),
        test_labels=torch.from_numpy(test_y),
        classes=classes, fingerprint=fingerprint, root=str(folder.absolute()),
        name=_data_name(verified, fingerprint), verified=verified,
    )


def train_val_split(num_train: int, *, val_size: int = 5000,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx): a seeded random split of range(num_train), both sorted int64, disjoint.

    The defaults give the paper's 45k/5k split of the 50k training images, on which the schedule was
    chosen (section 4.2); the reported models train on all 50k, so the split is used only when asked.
    """
    if not 0 < val_size < num_train:
        raise ValueError(f"val_size must lie in 1..{num_train - 1} for {num_train} images, got {val_size}")
    perm = torch.randperm(num_train, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


_CACHE: dict[str, CIFAR10] = {}


def load_data(data_dir: str | os.PathLike | None = None, *, download: bool = False) -> CIFAR10:
    """CIFAR-10 from ``data_dir`` (else $CIFAR10_ROOT, else the repository's data/), read and verified once
    per process."""
    root = str(resolve_data_dir(data_dir))
    if root not in _CACHE:
        _CACHE[root] = load_cifar10(root, download=download)
    return _CACHE[root]

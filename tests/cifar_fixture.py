"""Write a small CIFAR-10 in either official layout, for tests (no network, no real data).

    root = write_cifar10(tmp_path)                  # -> tmp_path, holding cifar-10-batches-py/
    root = write_cifar10_bin(tmp_path)              # -> tmp_path, holding cifar-10-batches-bin/
    data = resnet.cifar10.load_cifar10(root)
    data = resnet.cifar10.load_cifar10(root, official_sha1=batch_sha1(root))   # a fixture "verified"

Both writers take the same arguments and, for the same seed (or images/labels), write the same data.
batch_sha1 computes each batch's SHA-1 in the binary release's record format, independently of
resnet.cifar10, so a test can pass a fixture's own hashes as the expected ones.

The files are what the official archive holds: data_batch_1..5, test_batch and batches.meta, each a
pickled dict ('data': uint8 [n, 3072] with 1024 red, 1024 green, 1024 blue values, each row-major;
'labels': list of ints; 'batch_label'; 'filenames'; batches.meta: 'label_names', ...).
key_style picks how the dicts are written:
  "bytes": bytes keys and strings (b'data'), what pickle.load(..., encoding='bytes') gives for the
           official Python 2 files;
  "str":   str keys and strings ('data'), protocol 2, as a Python 3 writer would produce;
  "py2":   opcode-for-opcode the official Python 2 format (str written as Python 2 strings, the
           array through numpy.core.multiarray._reconstruct), like /work/shared/data/make_cifar10.py.
The binary layout (cifar-10-batches-bin/) holds data_batch_1.bin .. data_batch_5.bin and
test_batch.bin, each a sequence of 3,073-byte records (the label byte, then the row's 3,072 pixel
bytes), and batches.meta.txt with one class name a line.

The synthetic images are learnable: each class has its own colour and stripe pattern (direction and
period), plus per-image brightness jitter and pixel noise, so a small network trained for a few dozen
steps shows its loss falling, and the pattern survives random crops and flips.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np

BATCHES_DIR = "cifar-10-batches-py"
BIN_BATCHES_DIR = "cifar-10-batches-bin"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
BATCH_NAMES = [*TRAIN_FILES, "test_batch"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# One colour per class, far apart from each other.
_PALETTE = np.array([
    [220, 40, 40], [40, 200, 40], [40, 60, 220], [230, 220, 40], [200, 40, 200],
    [40, 210, 210], [240, 140, 30], [120, 60, 20], [150, 150, 150], [20, 20, 20],
], dtype=np.float32)


def synthetic_images(labels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """uint8 [n, 3, 32, 32] images whose colour and stripes depend on their label (0..9)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    out = np.empty((n, 3, 32, 32), dtype=np.float32)
    for c in range(10):
        sel = labels == c
        k = int(sel.sum())
        if not k:
            continue
        period = 4 + (c // 3) * 3  # 4, 7, 10 or 13 pixels
        coord = (yy, xx, yy + xx)[c % 3]  # horizontal, vertical or diagonal stripes
        phase = rng.uniform(0, period, size=(k, 1, 1))
        stripes = (np.sin(2 * np.pi * (coord[None] + phase) / period) > 0).astype(np.float32)  # [k,32,32]
        colour = _PALETTE[c][None, :, None, None] * rng.uniform(0.75, 1.1, size=(k, 1, 1, 1))
        out[sel] = colour * (0.55 + 0.45 * stripes[:, None])
    out += rng.normal(0, 18, size=out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# -- the Python 2 pickle writer (the official files' format) ---------------------------------------

def _py2_str(s: str) -> bytes:
    b = s.encode("latin1")
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)


def _py2_int(i: int) -> bytes:
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)
    return b"J" + struct.pack("<i", i)


def _py2_value(v) -> bytes:
    if isinstance(v, str):
        return _py2_str(v)
    if isinstance(v, (int, np.integer)):
        return _py2_int(int(v))
    if isinstance(v, list):
        return b"](" + b"".join(_py2_value(x) for x in v) + b"e"
    if isinstance(v, np.ndarray):
        assert v.dtype == np.uint8 and v.ndim == 2
        a = np.ascontiguousarray(v)
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0) + b"\x85"
                + _py2_str("b") + b"\x87R(" + _py2_int(1) + _py2_int(a.shape[0]) + _py2_int(a.shape[1])
                + b"\x86cnumpy\ndtype\n" + _py2_str("u1") + _py2_int(0) + _py2_int(1) + b"\x87R("
                + _py2_int(3) + _py2_str("|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0)
                + b"tb\x89T" + struct.pack("<I", a.nbytes) + a.tobytes() + b"tb")
    raise TypeError(type(v))


def _py2_pickle(d: dict) -> bytes:
    return b"\x80\x02}(" + b"".join(_py2_str(k) + _py2_value(v) for k, v in d.items()) + b"u."


def _encode(d: dict, key_style: str) -> bytes:
    if key_style == "py2":
        return _py2_pickle(d)

    def conv(v):
        if key_style == "bytes" and isinstance(v, str):
            return v.encode("latin1")
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    return pickle.dumps({conv(k): conv(v) for k, v in d.items()}, protocol=2)


def _write(path: Path, d: dict, key_style: str) -> None:
    path.write_bytes(_encode(d, key_style))


def write_batch(path: str | os.PathLike, data: np.ndarray, labels, *, key_style: str = "bytes",
                batch_label: str = "training batch") -> Path:
    """Write one batch file (data: uint8 [n, 3072]; any array is written as given, for broken files)."""
    path = Path(path)
    names = [f"img_{i:05d}.png" for i in range(len(data))]
    _write(path, {"batch_label": batch_label, "labels": [int(v) for v in labels], "data": data,
                  "filenames": names}, key_style)
    return path


def _fixture_arrays(n_train_per_batch: int, n_test: int, seed: int, images,
                    labels) -> tuple[np.ndarray, np.ndarray]:
    """(rows uint8 [n, 3072], labels int64 [n]) of a fixture: the given arrays, or the synthetic set."""
    total = 5 * n_train_per_batch + n_test
    rng = np.random.default_rng(seed)
    if labels is None:  # balanced within the training set and within the test set
        n_train = 5 * n_train_per_batch
        labels = np.concatenate([rng.permutation(np.arange(n_train) % 10),
                                 rng.permutation(np.arange(n_test) % 10)])
    labels = np.asarray(labels, dtype=np.int64)
    if images is None:
        images = synthetic_images(labels, seed=seed + 1)
    images = np.asarray(images, dtype=np.uint8)
    if len(images) != total or len(labels) != total:
        raise ValueError(f"expected {total} images and labels, got {len(images)} and {len(labels)}")
    return images.reshape(total, 3072), labels


def _batch_slices(n_train_per_batch: int, n_test: int) -> dict[str, slice]:
    """Which rows go to which batch: the training batches in order, then the test batch."""
    n = n_train_per_batch
    out = {name: slice(i * n, (i + 1) * n) for i, name in enumerate(TRAIN_FILES)}
    out["test_batch"] = slice(5 * n_train_per_batch, 5 * n_train_per_batch + n_test)
    return out


def write_cifar10(root: str | os.PathLike, *, n_train_per_batch: int = 20, n_test: int = 20,
                  key_style: str = "bytes", seed: int = 0, images=None, labels=None) -> Path:
    """Write root/cifar-10-batches-py/ with 5 training batches of `n_train_per_batch` images, a test
    batch of `n_test` and batches.meta; return `root` (what load_cifar10 takes).

    images/labels, if given (numpy or torch), replace the synthetic set: training images first, then
    the test images, 5 * n_train_per_batch + n_test in all; images as uint8 [n, 3, 32, 32] or as
    official rows [n, 3072]. Labels default to a seeded shuffle of 0..9 repeated, balanced in each split.
    """
    if key_style not in ("bytes", "str", "py2"):
        raise ValueError(f"key_style must be 'bytes', 'str' or 'py2', got {key_style!r}")
    rows, labels = _fixture_arrays(n_train_per_batch, n_test, seed, images, labels)
    root = Path(root)
    folder = root / BATCHES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, sl) in enumerate(_batch_slices(n_train_per_batch, n_test).items()):
        label = f"training batch {i + 1} of 5" if i < 5 else "testing batch 1 of 1"
        write_batch(folder / name, rows[sl], labels[sl], key_style=key_style, batch_label=label)
    _write(folder / "batches.meta", {"num_cases_per_batch": n_train_per_batch,
                                     "label_names": list(CLASSES), "num_vis": 3072}, key_style)
    return root


def bin_records(data: np.ndarray, labels) -> bytes:
    """A batch in the binary layout: per image its label byte, then its 3,072 pixel bytes."""
    data = np.asarray(data, dtype=np.uint8).reshape(len(data), 3072)
    labels = np.asarray(labels, dtype=np.int64)
    return np.concatenate([labels[:, None].astype(np.uint8), data], axis=1).tobytes()


def write_bin_batch(path: str | os.PathLike, data: np.ndarray, labels) -> Path:
    """Write one binary batch file (data: uint8 [n, 3072] or [n, 3, 32, 32]; labels 0..255)."""
    path = Path(path)
    path.write_bytes(bin_records(data, labels))
    return path


def write_cifar10_bin(root: str | os.PathLike, *, n_train_per_batch: int = 20, n_test: int = 20,
                      seed: int = 0, images=None, labels=None, meta: bool = True) -> Path:
    """write_cifar10 in the binary layout: root/cifar-10-batches-bin/ with data_batch_1..5.bin,
    test_batch.bin and (when `meta`) batches.meta.txt, the official file ending in a blank line.
    The same arguments give the same images and labels as write_cifar10; returns `root`."""
    rows, labels = _fixture_arrays(n_train_per_batch, n_test, seed, images, labels)
    folder = Path(root) / BIN_BATCHES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, sl in _batch_slices(n_train_per_batch, n_test).items():
        write_bin_batch(folder / f"{name}.bin", rows[sl], labels[sl])
    if meta:
        (folder / "batches.meta.txt").write_text("".join(f"{c}\n" for c in CLASSES) + "\n")
    return Path(root)


def _read_py_batch(path: Path) -> tuple[np.ndarray, list]:
    # The fixture's own files (trusted): a plain pickle.load, not resnet.cifar10's reader.
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    return d["data"], d["labels"]


def batch_sha1(root: str | os.PathLike) -> dict[str, str]:
    """{batch name: SHA-1 of the batch in the binary record format}, the form of resnet.cifar10's
    OFFICIAL_SHA1, for the fixture under `root` (cifar-10-batches-py/ if present, else -bin/). In the
    binary layout that is the SHA-1 of each file; in the python layout the records are built from the
    pickles. Pass the result as load_cifar10(..., official_sha1=...) to have the fixture verified."""
    py, binary = Path(root) / BATCHES_DIR, Path(root) / BIN_BATCHES_DIR
    if py.is_dir():
        return {n: hashlib.sha1(bin_records(*_read_py_batch(py / n))).hexdigest() for n in BATCH_NAMES}
    return {n: hashlib.sha1((binary / f"{n}.bin").read_bytes()).hexdigest() for n in BATCH_NAMES}

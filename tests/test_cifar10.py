"""resnet.cifar10: the readers of both layouts, the verification of the official release by its SHA-1s, the
error messages (each names the file, and a failed load changes nothing on disk), the download, the data
folder's precedence and the 45k/5k split; and a bad file through the command line."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_fixture import (BATCHES_DIR, BIN_BATCHES_DIR, CLASSES, batch_sha1, write_batch, write_bin_batch,
                           write_cifar10, write_cifar10_bin)
from resnet import cifar10
from resnet.cifar10 import CIFAR10, DataError, load_cifar10, resolve_data_dir, train_val_split

WRITERS = {"py": write_cifar10, "bin": write_cifar10_bin}
LAYOUT_DIRS = {"py": BATCHES_DIR, "bin": BIN_BATCHES_DIR}


# -- reading ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key_style", ["bytes", "str", "py2"])
def test_reads_every_key_style(tmp_path, key_style):
    labels = np.arange(5 * 4 + 6) % 10
    images = np.random.default_rng(0).integers(0, 256, (26, 3, 32, 32), dtype=np.uint8)
    root = write_cifar10(tmp_path, n_train_per_batch=4, n_test=6, key_style=key_style, images=images,
                         labels=labels)
    d = load_cifar10(root)
    assert isinstance(d, CIFAR10)
    assert d.train_images.dtype == torch.uint8 and d.train_images.shape == (20, 3, 32, 32)
    assert d.test_images.dtype == torch.uint8 and d.test_images.shape == (6, 3, 32, 32)
    assert d.train_labels.dtype == torch.int64 and d.test_labels.dtype == torch.int64
    assert torch.equal(d.train_images, torch.from_numpy(images[:20]))
    assert torch.equal(d.test_images, torch.from_numpy(images[20:]))
    assert d.train_labels.tolist() == labels[:20].tolist() and d.test_labels.tolist() == labels[20:].tolist()
    assert d.classes == CLASSES
    assert all(c in "0123456789abcdef" for c in d.fingerprint) and len(d.fingerprint) == 12  # 6 bytes, hex
    assert Path(d.root) == (tmp_path / BATCHES_DIR).absolute()
    # the same contents give the same fingerprint, whatever the pickle style
    other = write_cifar10(tmp_path / "other", n_train_per_batch=4, n_test=6, images=images, labels=labels,
                          key_style="str" if key_style != "str" else "bytes")
    assert load_cifar10(other).fingerprint == d.fingerprint


def test_pixel_layout_follows_the_official_rows(tmp_path):
    # The official row: 1024 red values, then 1024 green, then 1024 blue, each image row-major.
    red = np.repeat(np.arange(32), 32)  # = row index of each of the 1024 positions
    green = np.tile(np.arange(32), 32)  # = column index
    blue = np.full(1024, 200)
    row = np.concatenate([red, green, blue]).astype(np.uint8)
    rows = np.tile(row, (5 + 1, 1))
    root = write_cifar10(tmp_path, n_train_per_batch=1, n_test=1, images=rows, labels=np.arange(6))
    img = load_cifar10(root).train_images[0]
    assert img.shape == (3, 32, 32)
    ii, jj = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    assert torch.equal(img[0].long(), ii) and torch.equal(img[1].long(), jj)
    assert (img[2] == 200).all()


def test_root_may_be_the_batches_folder_itself(tiny_cifar_root):
    a = load_cifar10(tiny_cifar_root)
    b = load_cifar10(Path(tiny_cifar_root) / BATCHES_DIR)
    assert a.fingerprint == b.fingerprint and a.root == b.root


def test_fingerprint_sees_one_pixel_and_one_label(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(12) % 10
    fp = load_cifar10(write_cifar10(tmp_path / "a", n_train_per_batch=2, n_test=2, images=images,
                                    labels=labels)).fingerprint
    images2 = images.copy()
    images2[11, 2, 31, 31] ^= 1
    labels2 = labels.copy()
    labels2[0] = 9
    for im, lb, name in [(images2, labels, "b"), (images, labels2, "c")]:
        root = write_cifar10(tmp_path / name, n_train_per_batch=2, n_test=2, images=im, labels=lb)
        assert load_cifar10(root).fingerprint != fp


# -- the two layouts --------------------------------------------------------------------------------

def _random_set(n_per_batch: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n = 5 * n_per_batch + n_test
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)


def test_python_and_binary_layouts_load_to_identical_data(tmp_path):
    images, labels = _random_set(3, 4)
    py = load_cifar10(write_cifar10(tmp_path / "a", n_train_per_batch=3, n_test=4, images=images,
                                    labels=labels, key_style="py2"))
    bn = load_cifar10(write_cifar10_bin(tmp_path / "b", n_train_per_batch=3, n_test=4, images=images,
                                        labels=labels))
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        a, b = getattr(py, field), getattr(bn, field)
        assert torch.equal(a, b) and a.dtype == b.dtype and a.shape == b.shape, field
    assert torch.equal(bn.train_images, torch.from_numpy(images[:15]))
    assert bn.classes == py.classes == CLASSES
    assert bn.fingerprint == py.fingerprint and bn.name == py.name and bn.verified is py.verified is False
    assert Path(py.root) == (tmp_path / "a" / BATCHES_DIR).absolute()
    assert Path(bn.root) == (tmp_path / "b" / BIN_BATCHES_DIR).absolute()
    # the fixture's hashes agree too: the records built from the pickles are the binary files' bytes
    assert batch_sha1(tmp_path / "a") == batch_sha1(tmp_path / "b")


def test_binary_root_may_be_the_folder_itself_or_a_renamed_copy(tmp_path):
    root = write_cifar10_bin(tmp_path, n_train_per_batch=2, n_test=2)
    a = load_cifar10(root)
    b = load_cifar10(root / BIN_BATCHES_DIR)
    renamed = (root / BIN_BATCHES_DIR).rename(tmp_path / "my_copy")
    c = load_cifar10(renamed)
    assert a.fingerprint == b.fingerprint == c.fingerprint and a.root == b.root
    assert Path(c.root) == renamed.absolute()


def test_binary_class_names_from_meta_txt_or_the_official_names(tmp_path):
    root = write_cifar10_bin(tmp_path / "none", n_train_per_batch=1, n_test=1, meta=False)
    assert load_cifar10(root).classes == cifar10.CLASSES_FALLBACK == CLASSES
    root = write_cifar10_bin(tmp_path / "own", n_train_per_batch=1, n_test=1)
    names = [f"class {i}" for i in range(10)]
    (root / BIN_BATCHES_DIR / "batches.meta.txt").write_text("\n\n".join(names) + "\n\n\n")
    assert load_cifar10(root).classes == tuple(names)  # blank lines ignored, spaces inside kept


def test_python_layout_wins_when_both_are_present(tmp_path):
    write_cifar10_bin(tmp_path, n_train_per_batch=2, n_test=2, seed=1)
    write_cifar10(tmp_path, n_train_per_batch=2, n_test=2, seed=2)
    d = load_cifar10(tmp_path)
    assert Path(d.root) == (tmp_path / BATCHES_DIR).absolute()
    assert d.fingerprint == load_cifar10(tmp_path / BATCHES_DIR).fingerprint
    assert d.fingerprint != load_cifar10(tmp_path / BIN_BATCHES_DIR).fingerprint


# -- naming the data: the official release is recognised by its content ------------------------------

def test_official_sha1_is_the_published_list():
    # The binary version's SHA-1s as Apache MXNet's gluon.data.vision.CIFAR10 lists them: no test can
    # reproduce them without the real data, so a typo would only show as real data never verified.
    assert dict(cifar10.OFFICIAL_SHA1) == {
        "data_batch_1": "aadd24acce27caa71bf4b10992e9e7b2d74c2540",
        "data_batch_2": "c0ba65cce70568cd57b4e03e9ac8d2a5367c1795",
        "data_batch_3": "1dd00a74ab1d17a6e7d73e185b69dbf31242f295",
        "data_batch_4": "aab85764eb3584312d3c7f65fd2fd016e36a258e",
        "data_batch_5": "26e2849e66a845b7f1e4614ae70f4889ae604628",
        "test_batch": "67eb016db431130d61cd03c7ad570b013799c88c",
    }


@pytest.mark.parametrize("layout", ["py", "bin"])
def test_matching_hashes_name_the_data_cifar10(tmp_path, layout):
    root = WRITERS[layout](tmp_path, n_train_per_batch=3, n_test=3)
    d = load_cifar10(root, official_sha1=batch_sha1(root))
    assert d.verified is True and d.name == "CIFAR-10"


@pytest.mark.parametrize("layout", ["py", "bin"])
@pytest.mark.parametrize("change", ["pixel", "label"])
def test_one_pixel_or_one_label_changed_is_a_modified_copy(tmp_path, layout, change):
    images, labels = _random_set(2, 2)
    original = WRITERS[layout](tmp_path / "a", n_train_per_batch=2, n_test=2, images=images, labels=labels)
    expected = batch_sha1(original)
    base = load_cifar10(original, official_sha1=expected)
    assert base.verified
    images, labels = images.copy(), labels.copy()
    if change == "pixel":
        images[11, 2, 31, 31] ^= 1  # the last pixel of the test batch's last image
    else:
        labels[0] = (labels[0] + 1) % 10  # the first label of data_batch_1
    d = load_cifar10(WRITERS[layout](tmp_path / "b", n_train_per_batch=2, n_test=2, images=images,
                                     labels=labels), official_sha1=expected)
    assert d.verified is False and d.fingerprint != base.fingerprint
    assert d.name == f"CIFAR-10 (modified copy {d.fingerprint})"


def test_fixture_data_is_not_the_official_release(tiny_cifar_root):
    d = load_cifar10(tiny_cifar_root)  # the default: the published hashes
    assert d.verified is False and d.name == f"CIFAR-10 (modified copy {d.fingerprint})"
    assert len(d.train_labels) == 100 and len(d.test_labels) == 20 and d.classes == tuple(CLASSES)


# -- errors: each names the file, and a failed load leaves the disk as it was ------------------------

def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _break_missing_file(folder: Path) -> str:
    (folder / "data_batch_3").unlink()
    return "data_batch_3"


def _break_truncated(folder: Path) -> str:
    b = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(b[: len(b) // 2])
    return "test_batch"


def _break_shape(folder: Path) -> str:
    write_batch(folder / "data_batch_2", np.zeros((5, 3071), np.uint8), [0] * 5)
    return "data_batch_2"


def _break_dtype(folder: Path) -> str:
    write_batch(folder / "data_batch_4", np.zeros((5, 3072), np.float32), [0] * 5, key_style="str")
    return "data_batch_4"


def _break_label_range(folder: Path) -> str:
    write_batch(folder / "data_batch_5", np.zeros((5, 3072), np.uint8), [0, 1, 2, 3, 10])
    return "data_batch_5"


def _break_label_count(folder: Path) -> str:
    write_batch(folder / "data_batch_1", np.zeros((5, 3072), np.uint8), [0, 1, 2])
    return "data_batch_1"


def _break_meta(folder: Path) -> str:
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog"]}, protocol=2))
    return "batches.meta"


def _break_not_a_batch(folder: Path) -> str:
    (folder / "data_batch_1").write_bytes(pickle.dumps(os.system, protocol=2))  # must not be resolved
    return "data_batch_1"


def _break_empty(folder: Path) -> str:
    (folder / "data_batch_2").write_bytes(b"")
    return "data_batch_2"


def _break_no_images(folder: Path) -> str:
    write_batch(folder / "test_batch", np.zeros((0, 3072), np.uint8), [])
    return "test_batch"


@pytest.mark.parametrize("breaker", [_break_missing_file, _break_truncated, _break_shape, _break_dtype,
                                     _break_label_range, _break_label_count, _break_meta, _break_not_a_batch,
                                     _break_empty, _break_no_images])
def test_broken_data_raises_data_error_naming_the_file(tmp_path, breaker):
    root = write_cifar10(tmp_path, n_train_per_batch=5, n_test=5)
    name = breaker(root / BATCHES_DIR)
    before = _snapshot(tmp_path)
    with pytest.raises(DataError) as info:
        load_cifar10(root)
    assert str(root / BATCHES_DIR / name) in str(info.value)
    assert _snapshot(tmp_path) == before
    with pytest.raises(DataError):  # download=True does not touch data that is present
        load_cifar10(root, download=True)
    assert _snapshot(tmp_path) == before


# The binary layout's breakers: (file broken, what the message must say).

def _bin_truncated(folder: Path) -> tuple[str, str]:
    b = (folder / "test_batch.bin").read_bytes()
    (folder / "test_batch.bin").write_bytes(b[:-1])
    return "test_batch.bin", "not a whole number of 3,073-byte records"


def _bin_wrong_size(folder: Path) -> tuple[str, str]:
    with open(folder / "data_batch_3.bin", "ab") as f:
        f.write(b"\0" * 100)
    return "data_batch_3.bin", f"{5 * 3073 + 100:,} bytes"


def _bin_missing(folder: Path) -> tuple[str, str]:
    (folder / "data_batch_4.bin").unlink()
    return "data_batch_4.bin", "missing"


def _bin_label_10(folder: Path) -> tuple[str, str]:
    write_bin_batch(folder / "data_batch_1.bin", np.zeros((3, 3072), np.uint8), [0, 10, 2])
    return "data_batch_1.bin", "labels must lie in 0..9, found 0..10"


def _bin_label_255(folder: Path) -> tuple[str, str]:
    raw = bytearray((folder / "data_batch_5.bin").read_bytes())
    raw[3073] = 255  # the second record's label byte
    (folder / "data_batch_5.bin").write_bytes(bytes(raw))
    return "data_batch_5.bin", "labels must lie in 0..9, found 0..255"


def _bin_empty(folder: Path) -> tuple[str, str]:
    (folder / "data_batch_2.bin").write_bytes(b"")
    return "data_batch_2.bin", "empty"


def _bin_meta(folder: Path) -> tuple[str, str]:
    (folder / "batches.meta.txt").write_text("cat\ndog\n")
    return "batches.meta.txt", "10 class names"


@pytest.mark.parametrize("breaker", [_bin_truncated, _bin_wrong_size, _bin_missing, _bin_label_10,
                                     _bin_label_255, _bin_empty, _bin_meta])
def test_broken_binary_data_raises_data_error_naming_the_file(tmp_path, breaker):
    labels = np.arange(5 * 5 + 5) % 5  # every batch holds 0..4: the range found is predictable
    root = write_cifar10_bin(tmp_path, n_train_per_batch=5, n_test=5, labels=labels)
    name, what = breaker(root / BIN_BATCHES_DIR)
    before = _snapshot(tmp_path)
    with pytest.raises(DataError) as info:
        load_cifar10(root)
    msg = str(info.value)
    assert str(root / BIN_BATCHES_DIR / name) in msg and what in msg
    assert "\n" not in msg  # one paragraph
    assert _snapshot(tmp_path) == before
    with pytest.raises(DataError):  # download=True does not touch data that is present
        load_cifar10(root, download=True)
    assert _snapshot(tmp_path) == before


def test_missing_folder_explains_both_ways_to_get_the_data(tmp_path):
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path / "nowhere")
    msg = str(info.value)
    assert str((tmp_path / "nowhere").absolute()) in msg
    assert "--download" in msg and "download=True" in msg and "CIFAR10_ROOT" in msg and "--data-dir" in msg
    assert BATCHES_DIR in msg and BIN_BATCHES_DIR in msg  # either layout works
    assert not (tmp_path / "nowhere").exists()


class _FakeDownload:
    def __init__(self, fail: bool = False):
        self.calls, self.fail = [], fail

    def __call__(self, url, download_root, filename=None, md5=None, **kw):
        self.calls.append((url, download_root, filename, md5))
        if self.fail:
            raise urllib.error.URLError("no route to host")
        write_cifar10(download_root, n_train_per_batch=2, n_test=2)


def test_download_fetches_the_official_archive_once(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    fake = _FakeDownload()
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    d = load_cifar10(tmp_path / "data", download=True)
    assert len(d.train_labels) == 10
    assert fake.calls == [(cifar10.ARCHIVE_URL, str(tmp_path / "data"), "cifar-10-python.tar.gz",
                           "c58f30108f718f92721af3b95e74349a")]
    load_cifar10(tmp_path / "data", download=True)  # present now: no second download
    assert len(fake.calls) == 1


def test_download_failure_is_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", _FakeDownload(fail=True))
    with pytest.raises(DataError, match="Downloading CIFAR-10 from .* failed") as info:
        load_cifar10(tmp_path / "data", download=True)
    msg = str(info.value)
    assert "no route to host" in msg and "CIFAR10_ROOT" in msg and "--data-dir" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and cifar10.ARCHIVE_URL in msg
    assert BATCHES_DIR in msg and BIN_BATCHES_DIR in msg  # any copy in either layout will do
    assert "\n" not in msg and not (tmp_path / "data" / BATCHES_DIR).exists()


def test_download_into_a_named_batches_folder_extracts_beside_it(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    fake = _FakeDownload()
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    d = load_cifar10(tmp_path / BIN_BATCHES_DIR, download=True)
    assert fake.calls[0][1] == str(tmp_path)
    assert Path(d.root) == (tmp_path / BATCHES_DIR).absolute()


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    repo_data = Path(__file__).resolve().parents[1] / "data"
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # the default is the repository's data/, not the current directory's
    assert resolve_data_dir() == repo_data and resolve_data_dir().is_absolute()
    assert resolve_data_dir(None) == repo_data and resolve_data_dir("") == repo_data
    monkeypatch.setenv("CIFAR10_ROOT", "")
    assert resolve_data_dir() == repo_data
    monkeypatch.setenv("CIFAR10_ROOT", "/from/env")
    assert resolve_data_dir() == Path("/from/env")
    assert resolve_data_dir("/from/flag") == Path("/from/flag")
    assert resolve_data_dir(Path("rel/flag")) == Path("rel/flag")


# -- split -----------------------------------------------------------------------------------------

def test_train_val_split():
    tr, va = train_val_split(50_000)
    assert tr.dtype == va.dtype == torch.int64
    assert len(tr) == 45_000 and len(va) == 5_000
    assert torch.equal(torch.cat([tr, va]).sort().values, torch.arange(50_000))
    tr2, va2 = train_val_split(50_000)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert not torch.equal(train_val_split(50_000, seed=1)[1], va)
    tr3, va3 = train_val_split(1000, val_size=100, seed=3)
    assert len(tr3) == 900 and len(va3) == 100 and not set(tr3.tolist()) & set(va3.tolist())
    with pytest.raises(ValueError):
        train_val_split(1000)  # 5000 validation images out of 1000


def test_benchmark_reports_missing_data_without_a_traceback(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "data_throughput.py"
    res = subprocess.run([sys.executable, str(script), "--data-dir", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith("error: CIFAR-10 not found") and "Traceback" not in res.stderr


# -- through the command line: what a run records, and what a bad file does to a command --------------

def _train(run_script, root: Path, out: Path):
    return run_script("train", "--arch", "resnet20", "--iterations", 1, "--eval-every", 1, "--data-dir", root,
                      "--out", out, "--device", "cpu", "--no-progress", "--test-subset", 10, "--threads", 1)


def test_a_run_records_verified_data_by_name_in_either_layout(run_script, tmp_path, monkeypatch):
    """With the fixture's own hashes as the official ones, a run on it records "CIFAR-10"; the binary copy
    of the same data gives the same name and fingerprint."""
    images, labels = _random_set(26, 4)  # 130 training images: one batch of 128
    py = write_cifar10(tmp_path / "py", n_train_per_batch=26, n_test=4, images=images, labels=labels)
    binary = write_cifar10_bin(tmp_path / "bin", n_train_per_batch=26, n_test=4, images=images, labels=labels)
    for name, sha1 in batch_sha1(py).items():
        monkeypatch.setitem(cifar10.OFFICIAL_SHA1, name, sha1)
    summaries = []
    for root in (py, binary):
        result = _train(run_script, root, tmp_path / f"run-{root.name}")
        assert result.code == 0, result.err
        summaries.append(json.loads((tmp_path / f"run-{root.name}" / "summary.json").read_text()))
    assert [s["data"] for s in summaries] == ["CIFAR-10", "CIFAR-10"]
    assert summaries[0]["data_fingerprint"] == summaries[1]["data_fingerprint"]


@pytest.mark.parametrize("layout, breaker", [("py", _break_truncated), ("py", _break_label_range),
                                             ("py", _break_missing_file), *[("bin", b) for b in (
                                                 _bin_truncated, _bin_wrong_size, _bin_missing, _bin_label_10,
                                                 _bin_empty)]], ids=lambda v: getattr(v, "__name__", v))
def test_bad_data_through_the_command_line(run_script, tmp_path, layout, breaker):
    write = write_cifar10 if layout == "py" else write_cifar10_bin
    root = write(tmp_path / "data", n_train_per_batch=5, n_test=5, labels=np.arange(30) % 5)
    broken = breaker(root / (BATCHES_DIR if layout == "py" else BIN_BATCHES_DIR))
    name = broken if isinstance(broken, str) else broken[0]
    result = _train(run_script, root, tmp_path / "run")
    assert result.code == 2 and "Traceback" not in result.err
    assert result.message.startswith("error: ") and name in result.message
    assert not (tmp_path / "run").exists()

"""Data integrity (issue 14, finding 9): checksums of local files, token caches checked, errors that name the fix.

The real files in ../shared/data are never modified: every test copies what it changes to tmp_path,
and the verification stamps go to a cache folder under tmp_path (XDG_CACHE_HOME).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from whylearn.data import integrity
from whylearn.data.idx import ChecksumError, CorruptDataError, FashionMNISTDataModule, MNISTDataModule

SAMPLE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 20


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Verification stamps and token caches of these tests live under tmp_path."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def _copy_family(shared_data: Path, folder: str, dest: Path) -> Path:
    raw = dest / folder / "raw"
    raw.mkdir(parents=True)
    for f in (shared_data / folder / "raw").iterdir():
        shutil.copy(f, raw / f.name)
        os.chmod(raw / f.name, 0o644)  # the shared copies are read-only
    return raw


def _rewrite_gz(path: Path, change) -> None:
    data = bytearray(gzip.decompress(path.read_bytes()))
    change(data)
    path.write_bytes(gzip.compress(bytes(data)))


# -- MNIST family ---------------------------------------------------------------------------------
def test_mnist_labels_with_wrong_content_are_refused_before_training(shared_data, tmp_path, make_cfg):
    """The finding: a labels file with the wrong content trained to 0.8% test accuracy and reported 'completed'."""
    raw = _copy_family(shared_data, "MNIST", tmp_path / "data")
    labels = raw / "train-labels-idx1-ubyte.gz"
    _rewrite_gz(labels, lambda d: d.__setitem__(slice(8, None), bytes((b + 1) % 10 for b in d[8:])))  # every label shifted

    with pytest.raises(ChecksumError) as e:
        MNISTDataModule(data_dir=str(tmp_path / "data"), download=False).setup()
    msg = str(e.value)
    assert str(labels) in msg and "uncompressed content" in msg
    assert "a25bea736e30d166cdddb491f175f624" in msg  # the official digest
    assert "Delete it" in msg and "data.verify=false" in msg

    # through whylearn-train: the run fails at once and nothing is reported completed
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=mnist_mlp", f"paths.data_dir={tmp_path / 'data'}", "debug=fast_dev_run", "logger=csv"])
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte.gz"):
        run(cfg)
    summary = Path(cfg.paths.output_dir) / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["status"] != "completed"

    # data.verify=false reads a variant made on purpose: the shifted labels are what it trains on
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), download=False, verify=False, normalize=False, val_size=0)
    dm.setup()
    official = MNISTDataModule(data_dir=str(shared_data), download=False, normalize=False, val_size=0)
    official.setup()
    assert torch.equal(dm.train.y, (official.train.y + 1) % 10)


def test_fashion_mnist_is_verified_too(shared_data, tmp_path):
    raw = _copy_family(shared_data, "FashionMNIST", tmp_path)
    _rewrite_gz(raw / "t10k-images-idx3-ubyte.gz", lambda d: d.__setitem__(100, (d[100] + 1) % 256))  # one pixel
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz(.|\n)*8181f5470baa50b63fa0f6fddb340f0a"):
        FashionMNISTDataModule(data_dir=str(tmp_path), download=False).setup()
    assert FashionMNISTDataModule(data_dir=str(tmp_path), download=False, verify=False, val_size=0).load_splits()


def test_verification_is_remembered_until_the_file_changes(shared_data, tmp_path, private_cache):
    raw = _copy_family(shared_data, "MNIST", tmp_path)
    MNISTDataModule(data_dir=str(tmp_path), download=False).setup()
    stamps = [json.loads(p.read_text()) for p in (private_cache / "whylearn" / "verified").glob("*.json")]
    assert sorted(Path(s["path"]).name for s in stamps) == sorted(p.name for p in raw.iterdir())

    # a stamp is trusted while size, mtime and inode are unchanged: a file that passed is not digested again
    # (shown by stamping a wrong file as verified: it loads), and the next change of the file re-checks it
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    _rewrite_gz(labels, lambda d: d.__setitem__(8, (d[8] + 1) % 10))
    integrity.remember_verified(labels, MNISTDataModule.files["t10k-labels-idx1-ubyte"])
    MNISTDataModule(data_dir=str(tmp_path), download=False).setup()
    st = labels.stat()
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz"):
        MNISTDataModule(data_dir=str(tmp_path), download=False).setup()


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_a_damaged_gz_names_the_file_and_the_fix(shared_data, tmp_path, damage):
    """The finding: a corrupt .gz gave EOFError / BadGzipFile without the file's name."""
    raw = _copy_family(shared_data, "MNIST", tmp_path)
    bad = raw / "train-labels-idx1-ubyte.gz"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x1f\x8cnot a gzip stream" + data[20:])
    with pytest.raises(CorruptDataError) as e:
        MNISTDataModule(data_dir=str(tmp_path), download=False).setup()
    assert str(bad) in str(e.value) and "delete it" in str(e.value)
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte.gz"):  # verify=false reads it: same error
        MNISTDataModule(data_dir=str(tmp_path), download=False, verify=False).setup()


def test_the_data_configs_offer_verify(make_cfg):
    for name in ("mnist", "fashion_mnist", "mnist_corrupted", "cifar10"):
        cfg = make_cfg([f"data={name}", "data.verify=false"])
        assert cfg.data.verify is False


# -- CIFAR-10 ---------------------------------------------------------------------------------------
def _write_cifar(root: Path) -> dict[str, str]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        d = {b"labels": rng.integers(0, 10, 10).tolist(), b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return md5


def test_cifar10_checksums_are_remembered_and_verify_false_reads_a_variant(tmp_path, monkeypatch):
    from whylearn.data import cifar

    md5 = _write_cifar(tmp_path)
    digests = []
    real = cifar.md5sum
    monkeypatch.setattr(cifar, "md5sum", lambda p, *a: digests.append(Path(p).name) or real(p, *a))
    cifar.load_cifar10(tmp_path, download=False, file_md5=md5)
    assert len(digests) == 6
    cifar.load_cifar10(tmp_path, download=False, file_md5=md5)
    assert len(digests) == 6  # remembered: nothing digested the second time

    variant = tmp_path / "cifar-10-batches-py" / "test_batch"
    d = pickle.loads(variant.read_bytes(), encoding="bytes")
    d[b"labels"] = [9 - y for y in d[b"labels"]]
    variant.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(cifar.ChecksumError) as e:
        cifar.load_cifar10(tmp_path, download=False, file_md5=md5)
    assert str(variant) in str(e.value) and "data.verify=false" in str(e.value)
    dm = cifar.CIFAR10DataModule(data_dir=str(tmp_path), download=False, file_md5=md5, verify=False, val_size=0)
    dm.setup()
    assert dm.test.y.tolist() == d[b"labels"]


# -- token caches and short texts -------------------------------------------------------------------
def _text_dm(path: Path, cache: Path, **kw):
    from whylearn.data import TextDataModule

    return TextDataModule(str(path), cache_dir=str(cache), **{"block_size": 8, **kw})


@pytest.mark.parametrize("damage", ["truncated", "edited", "old format", "no tokenizer"])
def test_a_stale_token_cache_is_rebuilt(tmp_path, caplog, damage):
    """The finding: token caches were read without checking them against their metadata."""
    text = tmp_path / "input.txt"
    text.write_text(SAMPLE)
    dm = _text_dm(text, tmp_path / "cache")
    dm.setup()
    good_train, good_val = dm.train_tokens.clone(), dm.val_tokens.clone()
    (cache,) = (tmp_path / "cache").iterdir()
    train_bin = cache / "train.bin"
    if damage == "truncated":  # a copy cut short
        train_bin.write_bytes(train_bin.read_bytes()[:-6])
    elif damage == "edited":  # same size, different ids
        b = bytearray(train_bin.read_bytes())
        b[0:2], b[2:4] = b[2:4], b[0:2]
        assert bytes(b) != train_bin.read_bytes()
        train_bin.write_bytes(bytes(b))
    elif damage == "old format":  # the meta.json an earlier whylearn wrote (no counts, no digests)
        meta = json.loads((cache / "meta.json").read_text())
        (cache / "meta.json").write_text(json.dumps({k: meta[k] for k in ("dtype", "vocab_size", "train_chars",
                                                                          "val_chars", "tokenizer")}))
    else:
        (cache / "tokenizer.json").unlink()
    with caplog.at_level(logging.WARNING, logger="whylearn.data.text"):
        dm2 = _text_dm(text, tmp_path / "cache")
        dm2.setup()
    assert torch.equal(dm2.train_tokens, good_train) and torch.equal(dm2.val_tokens, good_val)
    assert any("rebuilding the token cache" in r.getMessage() and str(cache) in r.getMessage() for r in caplog.records)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.name]  # rebuilt in place, no leftovers


def _min_chars(block_size: int, val_fraction: float) -> int:
    """Brute force: the fewest characters whose two parts (cut as TextDataModule cuts) hold block_size + 1 each."""
    n = 1
    while not (int(n * (1 - val_fraction)) >= block_size + 1 and n - int(n * (1 - val_fraction)) >= block_size + 1):
        n += 1
    return n


def test_an_empty_or_too_short_text_gets_the_minimum_length(tmp_path):
    """The finding: an empty text file gave 'cannot mmap an empty file'."""
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError) as e:
        _text_dm(empty, tmp_path / "cache", block_size=64).setup()
    assert str(empty) in str(e.value) and "empty" in str(e.value) and str(_min_chars(64, 0.1)) in str(e.value)

    need = _min_chars(8, 0.1)
    short = tmp_path / "short.txt"
    short.write_text(SAMPLE[: need - 1])
    with pytest.raises(ValueError, match=rf"too short for block_size=8(.|\n)*at least {need} characters"):
        _text_dm(short, tmp_path / "cache").prepare_data()
    assert not (tmp_path / "cache").exists()  # refused before anything was written
    ok = tmp_path / "ok.txt"
    ok.write_text(SAMPLE[:need])
    dm = _text_dm(ok, tmp_path / "cache")
    dm.setup()  # the minimum is enough: one window in each part
    assert len(dm.train) >= 1 and len(dm.val) == 1

    # a cache built for a small block_size, reused with a larger one, gets the same explanation
    with pytest.raises(ValueError, match=r"block_size=64(.|\n)*each needs at least block_size \+ 1 = 65"):
        _text_dm(ok, tmp_path / "cache", block_size=64).setup()

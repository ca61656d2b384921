"""Datamodules: MNIST-1D generation, the MNIST IDX reader and options, splits and label noise."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from whylearn.data import MNIST1DDataModule, MNISTDataModule, Split, apply_label_noise, make_mnist1d
from whylearn.data.base import ChunkLoader
from whylearn.data.idx import DataNotFoundError, parse_idx, read_idx


def test_mnist1d_matches_the_generator_and_is_deterministic():
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    s = make_mnist1d()
    assert s["train"].x.shape == (4000, 40) and s["test"].x.shape == (1000, 40)
    np.testing.assert_allclose(s["train"].x.numpy(), d["x"].astype(np.float32))
    np.testing.assert_array_equal(s["test"].y.numpy(), d["y_test"])
    assert torch.equal(make_mnist1d(num_samples=500, seed=3)["train"].x, make_mnist1d(num_samples=500, seed=3)["train"].x)


def test_mnist1d_rejects_unknown_generator_argument():
    with pytest.raises(ValueError, match="unknown MNIST-1D argument 'nosuch'.*allowed"):
        make_mnist1d(nosuch=1)


def test_label_noise_corrupts_round_p_n_labels_all_to_other_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (1001,), generator=g)
    noisy, idx = apply_label_noise(y, 0.15, 10, torch.Generator().manual_seed(1))
    assert idx.numel() == round(0.15 * 1001)
    changed = (noisy != y).nonzero().flatten()
    assert torch.equal(changed, idx)  # exactly the recorded indices changed, every one to another class
    assert noisy.min() >= 0 and noisy.max() < 10
    again, idx2 = apply_label_noise(y, 0.15, 10, torch.Generator().manual_seed(1))
    assert torch.equal(again, noisy) and torch.equal(idx, idx2)
    # the new labels are spread over the wrong classes (uniform: each of the 9 shifts appears)
    shifts = ((noisy[idx] - y[idx]) % 10).unique()
    assert set(shifts.tolist()) == set(range(1, 10))


def test_datamodule_split_subset_and_noise_are_seeded():
    dm = MNIST1DDataModule(num_samples=1000, val_size=0.2, train_size=500, label_noise=0.2, seed=5)
    dm.setup()
    assert len(dm.train) == 500 and len(dm.val) == 160 and len(dm.test) == 200
    assert dm.noisy_indices.numel() == 100
    assert (dm.train.y[dm.noisy_indices] != dm.clean_train_targets[dm.noisy_indices]).all()
    dm2 = MNIST1DDataModule(num_samples=1000, val_size=0.2, train_size=500, label_noise=0.2, seed=5)
    dm2.setup()
    assert torch.equal(dm.train.x, dm2.train.x) and torch.equal(dm.train.y, dm2.train.y)
    dm3 = MNIST1DDataModule(num_samples=1000, val_size=0.2, train_size=500, label_noise=0.2, seed=6)
    dm3.setup()
    assert not torch.equal(dm.train.y, dm3.train.y)
    # train and validation never share a sample
    rows = {tuple(r) for r in dm.val.x.numpy().round(5)}
    assert not any(tuple(r) in rows for r in dm.train.x.numpy().round(5))


def test_val_size_zero_validates_on_test_and_bad_values_are_named():
    dm = MNIST1DDataModule(num_samples=500, val_size=0)
    dm.setup()
    assert dm.val_is_test and dm.val is dm.test and len(dm.train) == 400
    with pytest.raises(ValueError, match="val_size must be"):
        MNIST1DDataModule(num_samples=500, val_size=400).setup()
    with pytest.raises(ValueError, match="label_noise must be a fraction"):
        MNIST1DDataModule(label_noise=1.5)
    with pytest.raises(ValueError, match="train_size must be in"):
        MNIST1DDataModule(num_samples=500, train_size=10_000).setup()


def test_chunk_loader_covers_each_sample_once_per_epoch_in_a_seeded_order():
    split = Split(torch.arange(250).float().unsqueeze(1), torch.arange(250))
    epoch = {"e": 0}
    loader = ChunkLoader(split, batch_size=32, steps_per_chunk=3, seed=1, epoch_fn=lambda: epoch["e"])
    chunks = list(loader)
    assert len(chunks) == len(loader) == 3  # 8 mini-batches (7 of 32, one of 26) in chunks of 3
    seen = torch.cat([torch.cat(list(c[1])) if isinstance(c[1], list) else c[1].flatten() for c in chunks])
    assert sorted(seen.tolist()) == list(range(250))
    assert chunks[0][0].shape == (3, 32, 1)
    again = torch.cat([c[1].flatten() if torch.is_tensor(c[1]) else torch.cat(c[1]) for c in loader])
    assert torch.equal(seen, again)
    epoch["e"] = 1
    other = torch.cat([c[1].flatten() if torch.is_tensor(c[1]) else torch.cat(c[1]) for c in loader])
    assert not torch.equal(seen, other)
    # two ranks split the same permutation without overlap
    r0 = ChunkLoader(split, 16, 1, 1, lambda: 0, rank=0, world_size=2)
    r1 = ChunkLoader(split, 16, 1, 1, lambda: 0, rank=1, world_size=2)
    a = torch.cat([c[1].flatten() if torch.is_tensor(c[1]) else torch.cat(c[1]) for c in r0])
    b = torch.cat([c[1].flatten() if torch.is_tensor(c[1]) else torch.cat(c[1]) for c in r1])
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) == len(b) == 125


def test_idx_parser_checks_header_and_size():
    payload = np.arange(6, dtype=np.uint8).tobytes()
    good = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + payload
    np.testing.assert_array_equal(parse_idx(good), np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04" + payload)
    with pytest.raises(ValueError, match="header says shape"):
        parse_idx(good[:-1])


def test_mnist_reads_gz_and_plain_files_and_applies_options(shared_data, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (shared_data / "MNIST" / "raw").iterdir():
        if "train-labels" in f.name or "t10k" in f.name:  # keep some gzipped, unzip others
            with gzip.open(f) as src, open(raw / f.name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy(f, raw / f.name)
    assert read_idx(raw / "t10k-labels-idx1-ubyte").shape == (10000,)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False, resize=20, binarize=True, classes=[4, 9],
                         normalize=False, flatten=True, val_size=0.1, train_size=1000, seed=0)
    dm.setup()
    assert dm.num_classes == 2 and dm.input_shape == (400,)
    assert len(dm.train) == 1000
    assert set(dm.train.x.unique().tolist()) == {0.0, 1.0}
    assert set(dm.test.y.unique().tolist()) == {0, 1}
    # 4 -> 0 and 9 -> 1: the test set holds 982 fours and 1009 nines
    assert int((dm.test.y == 0).sum()) == 982 and int((dm.test.y == 1).sum()) == 1009


def test_missing_mnist_names_every_path_searched(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataNotFoundError) as e:
        dm.setup()
    msg = str(e.value)
    for stem in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert str(tmp_path / "nowhere" / "MNIST" / "raw" / stem) in msg
    assert "data_dir" in msg


def test_mnist_download_failure_is_reported_with_urls(tmp_path, monkeypatch):
    import urllib.request

    def refuse(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DataNotFoundError, match="download failed:(.|\n)*network unreachable"):
        MNISTDataModule(data_dir=str(tmp_path), download=True).setup()
    assert not list((tmp_path / "MNIST" / "raw").glob("*"))  # no partial file left behind


def test_mnist_classes_are_validated():
    with pytest.raises(ValueError, match="classes must be"):
        MNISTDataModule(classes=[4, 4])
    with pytest.raises(ValueError, match="classes must be"):
        MNISTDataModule(classes=[3, 11])

"""CIFAR-10 (Krizhevsky 2009) from the official Python files, checksummed before anything is unpickled.

Layout read: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch}`` (what
``cifar-10-python.tar.gz`` unpacks to; torchvision leaves the same). Each file is a
pickled dict with ``b"data"`` (10000, 3072) uint8 (channel-major rows: 1024 red, 1024
green, 1024 blue, each a 32x32 image in row-major order) and ``b"labels"`` (10000,).

Safety: pickle can run code, so (1) every file's MD5 is checked against the official
value before it is opened by pickle (once: a pass is remembered until the file changes,
:mod:`whylearn.data.integrity`), (2) a downloaded archive's MD5 is checked before it
is unpacked, and (3) the unpickler admits only the few NumPy globals an array needs.
``verify=False`` (``data.verify=false``) skips (1) for a variant of the data set made on
purpose; (2) and (3) still hold.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import shutil
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from whylearn.data.augment import AugmentMixin
from whylearn.data.base import InMemoryDataModule, Split
from whylearn.data.corruptions import CorruptionMixin
from whylearn.data.idx import DataNotFoundError
from whylearn.data.integrity import ChecksumError, checksum_error, is_verified, md5sum, remember_verified

__all__ = ["CIFAR10DataModule", "ChecksumError", "DataNotFoundError", "download_cifar10", "load_cifar10", "md5sum",
           "read_batch", "verify_md5"]

log = logging.getLogger(__name__)

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def verify_md5(path: str | os.PathLike, expected: str, remember: bool = False) -> None:
    """Raises ChecksumError naming the file, both digests and the fix if ``path``'s MD5 is not ``expected``.

    ``remember``: skip the digest if a stamp says this file (same size, mtime, inode) passed before,
    and leave such a stamp after a pass.
    """
    if remember and is_verified(path, expected):
        return
    got = md5sum(path)
    if got != expected:
        raise checksum_error(path, got, expected, "CIFAR-10")
    if remember:
        remember_verified(path, expected)


class _ArrayUnpickler(pickle.Unpickler):
    """Admits plain containers and NumPy arrays, nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR file refers to {module}.{name}, which a CIFAR batch never does")


def read_batch(path: str | os.PathLike, md5: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file: images (n, 3, 32, 32) uint8 and labels (n,) int64, after checking its MD5.

    Raises:
        ChecksumError: MD5 mismatch (nothing was unpickled).
        ValueError: the file is not a CIFAR batch (no data/labels, wrong sizes).
    """
    if md5 is not None:
        verify_md5(path, md5)
    with open(path, "rb") as f:
        d = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"{path} is not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data = np.asarray(d[b"data"], dtype=np.uint8)
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: expected data (n, 3072) and labels (n,), got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def download_cifar10(data_dir: str | os.PathLike, url: str = URL, md5: str = ARCHIVE_MD5) -> Path:
    """Download the archive into ``data_dir``, check its MD5, then unpack ``cifar-10-batches-py/``.

    Raises:
        ChecksumError: the archive's MD5 is wrong (it is deleted, nothing unpacked).
        ValueError: the archive holds a path outside ``cifar-10-batches-py/``.
    """
    root = Path(data_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(url).name
    tmp = archive.with_name(archive.name + ".part")
    log.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f)
    got = md5sum(tmp)
    if got != md5:
        tmp.unlink()
        raise ChecksumError(f"checksum mismatch for the archive downloaded from {url}: md5 {got}, expected {md5}. "
                            f"It was deleted and nothing was unpacked; run again to retry the download, or unpack "
                            f"the official cifar-10-python.tar.gz into {root} yourself.")
    tmp.rename(archive)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            if not (m.isfile() or m.isdir()) or Path(m.name).parts[0] != FOLDER or ".." in Path(m.name).parts:
                raise ValueError(f"unexpected entry {m.name!r} in {archive}; refusing to unpack")
        tar.extractall(root, members=members)
    return root / FOLDER


def load_cifar10(data_dir: str | os.PathLike, download: bool = True, file_md5: dict[str, str] | None = None,
                 url: str = URL, archive_md5: str = ARCHIVE_MD5, verify: bool = True) -> dict[str, Split]:
    """Load CIFAR-10 as uint8 images (N, 3, 32, 32) and labels (N,): ``{"train": 50000, "test": 10000}``.

    Args:
        data_dir: folder holding ``cifar-10-batches-py/``.
        download: download and unpack the archive when files are missing.
        file_md5: expected MD5 per file name (default: the official files). ``{}`` skips the check.
        url, archive_md5: the archive and its MD5.
        verify: check every file's MD5 before unpickling any (a pass is remembered until the file changes);
            ``False`` for a variant of the data set made on purpose (the restricted unpickler still applies).

    Raises:
        DataNotFoundError: files missing and not downloadable (names the paths searched).
        ChecksumError: a file or the archive does not have the expected MD5.
    """
    file_md5 = FILE_MD5 if file_md5 is None else dict(file_md5)
    folder = Path(data_dir).expanduser() / FOLDER
    names = TRAIN_FILES + TEST_FILES
    missing = [n for n in names if not (folder / n).is_file()]
    error = ""
    if missing and download:
        try:
            download_cifar10(data_dir, url, archive_md5)
        except ChecksumError:
            raise
        except Exception as e:  # noqa: BLE001 - reported below with the paths searched
            error = f"\ndownload from {url} failed: {type(e).__name__}: {e}"
        missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataNotFoundError(
            "CIFAR-10 files not found. Searched:\n" + "\n".join(f"  {folder / n}" for n in missing) + error +
            f"\nProvide them by setting data.data_dir (or paths.data_dir) to a folder holding {FOLDER}/ "
            f"(unpack cifar-10-python.tar.gz there), or allow the download from {url}."
        )
    for n in names:  # every checksum first: nothing is unpickled unless all files are the expected ones
        if verify and file_md5.get(n) is not None:
            verify_md5(folder / n, file_md5[n], remember=True)
    parts = {n: read_batch(folder / n, None) for n in names}
    def cat(files):
        return Split(torch.from_numpy(np.concatenate([parts[n][0] for n in files])),
                                  torch.from_numpy(np.concatenate([parts[n][1] for n in files])))
    return {"train": cat(TRAIN_FILES), "test": cat(TEST_FILES)}


class CIFAR10DataModule(CorruptionMixin, AugmentMixin, InMemoryDataModule):
    """CIFAR-10: 50,000 training and 10,000 test colour images (B, 3, 32, 32), 10 classes.

    Args:
        data_dir: the folder holding ``cifar-10-batches-py/``.
        download: download (checksummed) when files are missing.
        verify: check local files against the official MD5s on first use (see :func:`load_cifar10`).
        normalize: per-channel standardization with the training images' mean and std.
        file_md5, url, archive_md5: see :func:`load_cifar10` (tests use their own files).
        corruption, corruption_prob: Zhang et al. 2017 corruptions (:mod:`whylearn.data.corruptions`).
        augment, crop_padding, hflip: on-device random crop and flip of training batches
            (:mod:`whylearn.data.augment`).
        **kwargs: :class:`~whylearn.data.base.InMemoryDataModule` options (``train_size``,
            ``label_noise``, ``val_size``, ``batch_size``, ``seed``, ``steps_per_chunk`` ...).
    """

    name = "cifar10"
    num_classes = 10

    def __init__(self, data_dir: str = "data", download: bool = True, normalize: bool = True,
                 file_md5: dict[str, str] | None = None, url: str = URL, archive_md5: str = ARCHIVE_MD5,
                 verify: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_dir, self.download, self.normalize, self.verify = data_dir, download, normalize, bool(verify)
        self.file_md5 = None if file_md5 is None else dict(file_md5)
        self.url, self.archive_md5 = url, archive_md5
        self.channel_mean: torch.Tensor | None = None
        self.channel_std: torch.Tensor | None = None

    def prepare_data(self) -> None:
        load_cifar10(self.data_dir, self.download, self.file_md5, self.url, self.archive_md5, self.verify)

    def load_splits(self) -> dict[str, Split]:
        raw = load_cifar10(self.data_dir, self.download, self.file_md5, self.url, self.archive_md5, self.verify)
        xtr = raw["train"].x.float().div_(255.0)
        xte = raw["test"].x.float().div_(255.0)
        if self.normalize:
            self.channel_mean = xtr.mean(dim=(0, 2, 3))
            self.channel_std = xtr.std(dim=(0, 2, 3))
            m, s = self.channel_mean.view(1, 3, 1, 1), self.channel_std.view(1, 3, 1, 1)
            xtr, xte = (xtr - m) / s, (xte - m) / s
        return {"train": Split(xtr.contiguous(), raw["train"].y), "test": Split(xte.contiguous(), raw["test"].y)}

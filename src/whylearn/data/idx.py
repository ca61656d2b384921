"""The MNIST family from IDX files: MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017).

Files are read from ``<data_dir>/<Name>/raw/`` (the layout torchvision leaves),
gzipped or not. When they are missing, they are downloaded there and checked
against the MD5 of their *uncompressed* content before use; when that fails,
the error names every path searched and how to provide the files.

Local files are checked the same way on first use (``verify=True``, the default): a file whose
uncompressed content does not have the official MD5 is refused with an error naming it, before
anything trains on it; a pass is remembered (:mod:`whylearn.data.integrity`), so later runs skip
the digest until the file changes. ``verify=False`` (``data.verify=false``) reads a variant of the
data set made on purpose. A damaged ``.gz`` gives an error naming the file and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from whylearn.data.base import InMemoryDataModule, Split
from whylearn.data.integrity import ChecksumError, CorruptDataError, verify

__all__ = ["ChecksumError", "CorruptDataError", "DataNotFoundError", "FashionMNISTDataModule", "IDXDataModule",
           "MNISTDataModule", "load_idx_dataset", "parse_idx", "read_idx"]

log = logging.getLogger(__name__)

# file stem -> MD5 of the uncompressed file (the official files)
_MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_FASHION_FILES = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
_MIRRORS = {
    "MNIST": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "FashionMNIST": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataNotFoundError(FileNotFoundError):
    """Data files are missing and could not be downloaded; the message says where we looked."""


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of a file, uncompressed if its name ends in ``.gz``.

    Raises:
        CorruptDataError: a damaged or truncated gzip file (the message names it and the fix).
    """
    path = Path(path)
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise CorruptDataError(
            f"{path} is not a complete gzip file ({type(e).__name__}: {e}). It was probably cut short by an "
            f"interrupted download or copy: delete it and run again to download it again, or replace it with the "
            f"official file."
        ) from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in ``.gz``) into an array.

    Raises:
        CorruptDataError: a damaged gzip file.
        ValueError: the header is not IDX or the payload size disagrees with it.
    """
    return parse_idx(read_bytes(path), str(path))


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{name} is not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(f"{name}: IDX header says shape {shape} ({expected} bytes) but the file holds {len(data) - offset}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


def _find(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(folder: str, raw: Path, files: dict[str, str]) -> list[str]:
    """Download the missing files into ``raw`` (gzipped), verifying MD5s; return the errors met."""
    errors: list[str] = []
    raw.mkdir(parents=True, exist_ok=True)
    for stem, md5 in files.items():
        if _find(raw, stem) is not None:
            continue
        for mirror in _MIRRORS[folder]:
            url = f"{mirror}{stem}.gz"
            tmp = raw / f".{stem}.gz.part"
            try:
                log.info("downloading %s", url)
                with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
                digest = hashlib.md5(gzip.decompress(tmp.read_bytes())).hexdigest()
                if digest != md5:
                    raise ValueError(f"checksum mismatch: md5 {digest}, expected {md5}")
                tmp.rename(raw / f"{stem}.gz")
                break
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                errors.append(f"{url}: {e}")
                tmp.unlink(missing_ok=True)
    return errors


def load_idx_dataset(folder: str, data_dir: str | os.PathLike, files: dict[str, str], download: bool = True,
                     verify_files: bool = True) -> dict[str, Split]:
    """Load ``<data_dir>/<folder>/raw/`` as uint8 images (N, 28, 28) and long labels (N,).

    Args:
        folder: ``MNIST`` or ``FashionMNIST``.
        data_dir: the folder holding ``<folder>/raw/``.
        files: file stem -> MD5 of the official uncompressed file.
        download: download missing files (checked against the same MD5s).
        verify_files: check each local file's uncompressed MD5 against ``files`` on first use (remembered).

    Raises:
        DataNotFoundError: files missing and not downloadable; names the paths searched.
        ChecksumError: a file is not the official one (``verify_files``); names it and the fix.
        CorruptDataError: a file cannot be read (damaged gzip, not IDX); names it and the fix.
    """
    raw = Path(data_dir).expanduser() / folder / "raw"
    missing = [s for s in files if _find(raw, s) is None]
    errors: list[str] = []
    if missing and download:
        errors = _download(folder, raw, files)
        missing = [s for s in files if _find(raw, s) is None]
    if missing:
        searched = "\n".join(f"  {raw / s}[.gz]" for s in missing)
        why = ("\ndownload failed:\n" + "\n".join(f"  {e}" for e in errors)) if errors else ""
        raise DataNotFoundError(
            f"{folder} files not found. Searched:\n{searched}{why}\n"
            f"Provide them by setting data.data_dir (or paths.data_dir) to a folder holding "
            f"{folder}/raw/<file>[.gz] (the torchvision layout), or allow the download from {_MIRRORS[folder][0]}."
        )
    arrays = {}
    for stem, md5 in files.items():
        path = _find(raw, stem)
        data = read_bytes(path)
        if verify_files:
            verify(path, md5, folder, content=data, of="uncompressed content" if path.suffix == ".gz" else "content")
        try:
            arrays[stem] = parse_idx(data, str(path))
        except ValueError as e:
            raise CorruptDataError(f"{e}. Delete the file and run again to download the official one, or replace "
                                   f"it with the official file.") from None
    def split(prefix):
        return Split(
            torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"].copy()),
            torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"].astype(np.int64)),
        )
    return {"train": split("train"), "test": split("t10k")}


class IDXDataModule(InMemoryDataModule):
    """An MNIST-family datamodule: images as float tensors (B, 1, H, W), or (B, H*W) with ``flatten``.

    Args:
        data_dir: the folder holding ``<Name>/raw/``.
        download: try to download missing files (checksummed).
        verify: check each local file against the official MD5 on first use (the pass is remembered until
            the file changes); ``False`` for a variant of the data set made on purpose.
        resize: side length to resize to (e.g. 20 for the 20x20 digits of the
            perceptron story); area interpolation when shrinking, bilinear when growing.
        binarize: threshold at 0.5 after scaling to [0, 1]: black-and-white pixels in {0, 1}.
        classes: keep only these classes, relabelled 0..len(classes)-1 in the order given
            (e.g. ``[4, 9]``: 4 -> 0, 9 -> 1).
        normalize: subtract the training mean and divide by its std (after the options above).
        flatten: return (B, H*W) instead of (B, 1, H, W).
        **kwargs: :class:`~whylearn.data.base.InMemoryDataModule` options (``train_size``,
            ``label_noise``, ``val_size``, ``batch_size``, ``seed``, ...).
    """

    folder = "MNIST"
    files = _MNIST_FILES

    def __init__(self, data_dir: str = "data", download: bool = True, resize: int | None = None,
                 binarize: bool = False, classes: list[int] | None = None, normalize: bool = True,
                 flatten: bool = False, verify: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_dir, self.download, self.verify = data_dir, download, bool(verify)
        self.resize, self.binarize, self.flatten, self.normalize = resize, binarize, flatten, normalize
        self.classes = list(classes) if classes is not None else None
        if self.classes is not None:
            bad = [c for c in self.classes if not 0 <= int(c) < 10]
            if bad or len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
                raise ValueError(f"classes must be at least 2 distinct labels in [0, 10), got {self.classes}")
        self.num_classes = len(self.classes) if self.classes is not None else 10

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.folder.lower()

    def _transform(self, s: Split, stats: tuple[float, float] | None) -> tuple[Split, tuple[float, float]]:
        y = s.y
        x = s.x
        if self.classes is not None:
            keep = torch.isin(y, torch.tensor(self.classes))
            x, y = x[keep], y[keep]
            remap = torch.full((10,), -1, dtype=torch.long)
            remap[torch.tensor(self.classes)] = torch.arange(len(self.classes))
            y = remap[y]
        x = x.float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28) in [0, 1]
        if self.resize is not None and self.resize != x.shape[-1]:
            mode = "area" if self.resize < x.shape[-1] else "bilinear"
            x = F.interpolate(x, size=(self.resize, self.resize), mode=mode)
        if self.binarize:
            x = (x >= 0.5).float()
        if self.normalize:
            if stats is None:
                stats = (x.mean().item(), x.std().item())
            x = (x - stats[0]) / stats[1]
        if self.flatten:
            x = x.flatten(1)
        return Split(x.contiguous(), y), stats

    def prepare_data(self) -> None:
        load_idx_dataset(self.folder, self.data_dir, self.files, self.download, self.verify)

    def load_splits(self) -> dict[str, Split]:
        raw = load_idx_dataset(self.folder, self.data_dir, self.files, self.download, self.verify)
        train, stats = self._transform(raw["train"], None)
        test, _ = self._transform(raw["test"], stats)
        return {"train": train, "test": test}


class MNISTDataModule(IDXDataModule):
    """MNIST: 60,000 training and 10,000 test digits, 28x28 (LeCun et al. 1998)."""

    folder = "MNIST"
    files = _MNIST_FILES


class FashionMNISTDataModule(IDXDataModule):
    """Fashion-MNIST: 60,000 + 10,000 clothing images, 28x28, 10 classes (Xiao, Rasul & Vollgraf 2017)."""

    folder = "FashionMNIST"
    files = _FASHION_FILES

"""The corruptions of Zhang, Bengio, Hardt, Recht & Vinyals 2017 ("Understanding deep learning
requires rethinking generalization", Sec. 2), for any in-memory image datamodule.

Modes (``corruption=``):

- ``true``: the data unchanged.
- ``partial``: each training label, independently with probability ``corruption_prob``,
  replaced by a class drawn uniformly from all C classes (Zhang et al.'s definition, so
  about p (C-1)/C of the labels end up wrong; the datamodules' ``label_noise=p`` is the
  other common protocol: exactly round(p n) labels, each moved to a *different* class).
- ``random``: every training label replaced by a uniform random class, drawn from the
  seed alone, so the labels are independent of the images.
- ``shuffled_pixels``: one random permutation of the pixel positions, the same for every
  image of every split (channels of a pixel move together).
- ``random_pixels``: a different random permutation for each image.
- ``gaussian``: each image replaced by Gaussian noise with the per-channel mean and std
  of the training images.

Label corruptions touch the training split only (validation and test keep their true
labels, so their accuracy measures generalization); input corruptions define a new data
set and are applied to every split. All draws are seeded by the datamodule's ``seed``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from whylearn.data.base import Split

CORRUPTIONS = ("true", "partial", "random", "shuffled_pixels", "random_pixels", "gaussian")
LABEL_CORRUPTIONS = ("partial", "random")
INPUT_CORRUPTIONS = ("shuffled_pixels", "random_pixels", "gaussian")


def check_corruption(mode: str, prob: float) -> None:
    """Raises ValueError for an unknown mode or a probability outside [0, 1]."""
    if mode not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {mode!r}; allowed: {list(CORRUPTIONS)}")
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"corruption_prob must be a probability in [0, 1], got {prob}")


def partial_labels(y: Tensor, prob: float, num_classes: int, generator: torch.Generator) -> Tensor:
    """Each label (n,) replaced with probability ``prob`` by a uniform class in [0, num_classes)."""
    hit = torch.rand(y.shape[0], generator=generator) < prob
    new = torch.randint(0, num_classes, (y.shape[0],), generator=generator)
    return torch.where(hit, new.to(y.dtype), y)


def random_labels(n: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """``n`` uniform random labels in [0, num_classes): a function of the generator only."""
    return torch.randint(0, num_classes, (n,), generator=generator)


def _pixels_last(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """(N, C, H, W) -> (N, C, H*W); (N, D) -> (N, 1, D); (N, H, W) -> (N, 1, H*W)."""
    if x.ndim == 4:
        return x.reshape(x.shape[0], x.shape[1], -1), x.shape
    if x.ndim in (2, 3):
        return x.reshape(x.shape[0], 1, -1), x.shape
    raise ValueError(f"pixel corruptions need inputs (N, C, H, W), (N, H, W) or (N, D); got shape {tuple(x.shape)}")


def shuffle_pixels(x: Tensor, perm: Tensor) -> Tensor:
    """Apply one permutation ``perm`` (P,) of the P pixel positions to every image of ``x``."""
    flat, shape = _pixels_last(x)
    if perm.shape != (flat.shape[-1],):
        raise ValueError(f"permutation of length {perm.shape} does not fit {flat.shape[-1]} pixels")
    return flat[:, :, perm.to(x.device)].reshape(shape)


def random_pixels(x: Tensor, generator: torch.Generator) -> Tensor:
    """Permute the pixel positions of each image with its own random permutation."""
    flat, shape = _pixels_last(x)
    n, c, p = flat.shape
    perms = torch.rand(n, p, generator=generator).argsort(dim=1).to(x.device)  # one permutation per image
    return flat.gather(2, perms[:, None, :].expand(n, c, p)).reshape(shape)


def gaussian_like(x: Tensor, mean: Tensor, std: Tensor, generator: torch.Generator) -> Tensor:
    """Gaussian images of x's shape with per-channel ``mean`` and ``std`` (C,)."""
    flat, shape = _pixels_last(x)
    noise = torch.randn(flat.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
    return (noise * std.view(1, -1, 1) + mean.view(1, -1, 1)).reshape(shape)


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (C,) of images x (N, C, ...) (one channel for (N, D) inputs)."""
    flat, _ = _pixels_last(x.float())
    return flat.mean(dim=(0, 2)), flat.std(dim=(0, 2))


def corrupt_splits(train: Split, others: dict[str, Split], mode: str, prob: float, num_classes: int,
                   seed: int) -> tuple[Split, dict[str, Split], dict]:
    """Apply corruption ``mode`` to the training split (labels and inputs) and the other splits (inputs only).

    Returns:
        (train, others, info) where info records what was done (``corruption``,
        ``corruption_prob``, ``corrupted_labels``: how many training labels changed,
        and ``pixel_permutation`` for ``shuffled_pixels``).

    Raises:
        ValueError: unknown mode or probability outside [0, 1].
    """
    check_corruption(mode, prob)
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    info: dict = {"corruption": mode, "corruption_prob": float(prob) if mode == "partial" else None}
    y = train.y
    if mode == "partial":
        y = partial_labels(train.y.cpu(), prob, num_classes, g).to(train.y.device)
    elif mode == "random":
        y = random_labels(len(train), num_classes, g).to(train.y.device, train.y.dtype)
    info["corrupted_labels"] = int((y != train.y).sum())
    if mode == "shuffled_pixels":
        flat, _ = _pixels_last(train.x)
        perm = torch.randperm(flat.shape[-1], generator=g)
        info["pixel_permutation"] = perm
        def fix(s):
            return Split(shuffle_pixels(s.x, perm), s.y)
    elif mode == "random_pixels":
        def fix(s):
            return Split(random_pixels(s.x, g), s.y)
    elif mode == "gaussian":
        mean, std = channel_stats(train.x)
        def fix(s):
            return Split(gaussian_like(s.x, mean, std, g), s.y)
    else:
        def fix(s):
            return s
    train = fix(Split(train.x, y))
    return train, {k: fix(s) for k, s in others.items()}, info


class CorruptionMixin:
    """Adds ``corruption`` and ``corruption_prob`` to an :class:`~whylearn.data.base.InMemoryDataModule`.

    Put it first among the bases (``class X(CorruptionMixin, SomeDataModule)``) or use
    :func:`with_corruption`. The corruption is applied after the base's setup (validation
    split, ``train_size`` subset and ``label_noise``); the clean training labels stay in
    ``clean_train_targets``.
    """

    def __init__(self, *args, corruption: str = "true", corruption_prob: float = 0.0, **kwargs) -> None:
        check_corruption(corruption, corruption_prob)
        super().__init__(*args, **kwargs)
        self.corruption, self.corruption_prob = corruption, float(corruption_prob)
        self.corruption_info: dict = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        super().setup(stage)
        if self.corruption == "true":
            self.corruption_info = {"corruption": "true", "corrupted_labels": 0}
            return
        others = {"val": self.val, "test": self.test}
        train, others, self.corruption_info = corrupt_splits(
            self.train, others, self.corruption, self.corruption_prob, self.num_classes, self.seed)
        # with val_size=0 validation *is* the test split: keep them one object
        self.train, self.val, self.test = train, (others["test"] if self.val_is_test else others["val"]), others["test"]

    def describe(self) -> dict:
        d = super().describe()
        info = {k: v for k, v in self.corruption_info.items() if k != "pixel_permutation"}
        d.update(info or {"corruption": self.corruption})
        return d


def with_corruption(cls: type) -> type:
    """A subclass of datamodule class ``cls`` with the ``corruption`` options of :class:`CorruptionMixin`."""
    return type(f"Corrupted{cls.__name__}", (CorruptionMixin, cls), {"__doc__": f"{cls.__name__} with Zhang et al. corruptions."})

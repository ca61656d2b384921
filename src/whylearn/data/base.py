"""In-memory classification data: tensors on the training device, batched by indexing.

Most whylearn experiments train small models on small data sets, where the
per-sample ``Dataset.__getitem__`` + collate path and Lightning's per-step
hooks cost more than the arithmetic (see ``docs/benchmarks.md``). So a
datamodule here holds its splits as tensors, moves them to the training device
once, and its training loader yields *chunks*: ``steps_per_chunk`` mini-batches
stacked along a leading axis, gathered with one index operation. The task runs
the optimizer steps of a chunk inside one Lightning ``training_step``.

Subclasses implement :meth:`InMemoryDataModule.load_splits`; everything else
(seeded train subset, seeded train/val split, label noise, loaders) is shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import lightning as L
import torch
from torch import Tensor


@dataclass
class Split:
    """Inputs ``x`` (N, ...) and integer targets ``y`` (N,) of one split."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"inputs and targets disagree on the number of samples: x {tuple(self.x.shape)}, y {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, index: Tensor) -> Split:
        return Split(self.x[index], self.y[index])


class Chunk(NamedTuple):
    """One Lightning training batch of a whylearn datamodule: K mini-batches for K optimizer steps.

    ``xs`` (K, B, ...) and ``ys`` (K, B, ...) stacked, or, for a ragged last chunk, lists of K
    per-step tensors; it unpacks as ``xs, ys = chunk``. Tasks tell a chunk from a plain ``(x, y)``
    batch by this type (:class:`whylearn.tasks.FastTask` treats a plain batch as one optimizer step).
    """

    xs: Any
    ys: Any

    @property
    def steps(self) -> int:
        """K, the number of mini-batches (optimizer steps) in the chunk."""
        return len(self.xs)


def apply_label_noise(y: Tensor, fraction: float, num_classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Replace ``round(fraction * n)`` labels by a uniformly random *other* class.

    Args:
        y: integer labels, shape (n,), values in [0, num_classes).
        fraction: in [0, 1].
        num_classes: C >= 2.
        generator: the seeded generator that fixes which labels and which classes.

    Returns:
        (noisy labels (n,), sorted indices of the corrupted labels (round(fraction*n),)).

    Raises:
        ValueError: fraction outside [0, 1] or fewer than 2 classes.

    As in the label-noise protocols of Zhang et al. 2017 (partial corruption) and
    Nakkiran et al. 2019 (deep double descent, Sec. 3): each corrupted label is
    drawn uniformly from the C - 1 wrong classes, so every corrupted label is wrong.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label_noise must be a fraction in [0, 1], got {fraction}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    n = y.shape[0]
    k = int(round(fraction * n))
    idx = torch.randperm(n, generator=generator)[:k].sort().values
    shift = torch.randint(1, num_classes, (k,), generator=generator)
    noisy = y.clone()
    noisy[idx] = (y[idx] + shift.to(y.dtype)) % num_classes
    return noisy, idx


class ChunkLoader:
    """Yields :class:`Chunk` s ``(xs, ys)`` of shape (K, B, ...) and (K, B) from in-memory tensors.

    One epoch is a seeded permutation of the training set (seed, epoch), cut into
    mini-batches of ``batch_size`` and grouped ``steps_per_chunk`` at a time; the
    last chunk (and, unless ``drop_last``, the last mini-batch) may be shorter, in
    which case the chunk is a tuple of per-step ``(x, y)`` lists instead of stacked
    tensors. Under data parallelism each rank takes every ``world_size``-th sample
    of the same permutation, so ``batch_size`` is per device.

    Stateful: ``state_dict`` records the epoch and how many chunks were served, so
    a run resumed mid-epoch continues with the same data order.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        steps_per_chunk: int,
        seed: int,
        epoch_fn: Callable[[], int],
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or steps_per_chunk < 1:
            raise ValueError(f"batch_size and steps_per_chunk must be >= 1, got {batch_size} and {steps_per_chunk}")
        self.split, self.batch_size, self.steps_per_chunk = split, batch_size, steps_per_chunk
        self.seed, self.epoch_fn, self.shuffle, self.drop_last = seed, epoch_fn, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self._served = 0
        self._resume_at = 0

    @property
    def samples_per_rank(self) -> int:
        return len(self.split) // self.world_size

    @property
    def num_batches(self) -> int:
        n = self.samples_per_rank
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.num_batches / self.steps_per_chunk)

    def epoch_order(self, epoch: int) -> Tensor:
        """Indices of this rank's samples in the order of ``epoch``'s mini-batches."""
        n = len(self.split)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            perm = torch.randperm(n, generator=g)
        else:
            perm = torch.arange(n)
        perm = perm[: self.samples_per_rank * self.world_size][self.rank :: self.world_size]
        if self.drop_last:
            perm = perm[: self.num_batches * self.batch_size]
        return perm.to(self.split.x.device)

    def __iter__(self) -> Iterator[Chunk]:
        order = self.epoch_order(self.epoch_fn())
        B, K = self.batch_size, self.steps_per_chunk
        full = order.shape[0] // B
        start, self._resume_at = self._resume_at, 0
        self._served = start
        x, y = self.split.x, self.split.y
        for c in range(start, len(self)):
            first, last = c * K, min((c + 1) * K, self.num_batches)
            if last <= full:  # all mini-batches of the chunk are full: one gather
                idx = order[first * B : last * B].view(last - first, B)
                chunk = Chunk(x[idx], y[idx])
            else:
                parts = [order[i * B : (i + 1) * B] for i in range(first, last)]
                chunk = Chunk([x[p] for p in parts], [y[p] for p in parts])
            self._served = c + 1
            yield chunk

    def state_dict(self) -> dict:
        return {"served": self._served}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = int(state.get("served", 0)) % max(len(self), 1)


class EvalLoader:
    """Yields ``(x, y)`` batches of an in-memory split in order, ``batch_size`` at a time."""

    def __init__(self, split: Split, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.split, self.batch_size = split, batch_size
        self.index = torch.arange(rank, len(split), world_size, device=split.x.device)

    def __len__(self) -> int:
        return math.ceil(self.index.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(0, self.index.shape[0], self.batch_size):
            idx = self.index[i : i + self.batch_size]
            yield self.split.x[idx], self.split.y[idx]


class TrainerPlacement:
    """Where a datamodule's tensors live and which epoch it serves, read from the attached trainer
    (CPU, rank 0 of 1 and epoch 0 when there is none). Shared by every in-memory datamodule."""

    def _placement(self) -> tuple[torch.device, int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return torch.device("cpu"), 0, 1
        return trainer.strategy.root_device, trainer.global_rank, trainer.world_size

    def _device(self) -> torch.device:
        return self._placement()[0]

    def _epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.current_epoch if trainer is not None else 0

    def _steps_per_batch(self, steps_per_chunk: int) -> int:
        """K for the training loader: ``steps_per_chunk``, or 1 when the task of the running fit asks for one
        mini-batch per Lightning batch (its ``single_step_batches``: the fit runs Lightning's own loop, see
        :mod:`whylearn.tasks.loop`) or under multi-process data parallelism. The epoch's mini-batches and
        their order are the same either way."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return steps_per_chunk
        if trainer.world_size > 1 or getattr(trainer.lightning_module, "single_step_batches", False):
            return 1
        return steps_per_chunk


class InMemoryDataModule(TrainerPlacement, L.LightningDataModule):
    """Base class of whylearn's classification datamodules.

    Args:
        batch_size: mini-batch size per device (training).
        eval_batch_size: batch size for validation, test and the measurement callbacks.
        val_size: the validation split carved from the training split, seeded: a
            fraction in (0, 1) or a count. ``0`` validates on the test split
            (the protocol of small-data papers with no validation set, e.g.
            Understanding Deep Learning's MNIST-1D notebooks).
        train_size: if set, a seeded subset of this many training samples (taken
            after the validation split).
        label_noise: fraction of *training* labels replaced by a uniformly random
            other class (seeded); the corrupted indices are kept in
            ``noisy_indices`` and the clean labels in ``clean_train_targets``.
        seed: seeds the subset, the split, the noise and the epoch order.
        steps_per_chunk: optimizer steps per Lightning training step (K); 1 gives
            a classic one-batch-per-step loop (Lightning's own). 1 also whenever the fit
            runs Lightning's own loop (:mod:`whylearn.tasks.loop`), e.g. under
            multi-process data parallelism; the epoch's mini-batches are the same.
        shuffle, drop_last: of the training batches.
    """

    name: str = "in_memory"

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int = 4096,
        val_size: float | int = 0.1,
        train_size: int | None = None,
        label_noise: float = 0.0,
        seed: int = 0,
        steps_per_chunk: int = 64,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.val_size, self.train_size = val_size, train_size
        self.label_noise, self.seed = float(label_noise), int(seed)
        self.steps_per_chunk, self.shuffle, self.drop_last = int(steps_per_chunk), shuffle, drop_last
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(f"label_noise must be a fraction in [0, 1], got {label_noise}")
        self.train: Split | None = None
        self.val: Split | None = None
        self.test: Split | None = None
        self.noisy_indices: Tensor | None = None
        self.clean_train_targets: Tensor | None = None
        self.val_is_test = False

    # -- what subclasses provide -------------------------------------------------
    num_classes: int = 0

    def load_splits(self) -> dict[str, Split]:
        """Return ``{"train": Split, "test": Split}`` (optionally ``"val"``), on the CPU."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        self.setup()
        return tuple(self.train.x.shape[1:])

    def _val_count(self, n: int) -> int:
        v = self.val_size
        if isinstance(v, float) and 0 < v < 1:
            return int(round(v * n))
        if v < 0 or v >= n or (isinstance(v, float) and v != int(v)):
            raise ValueError(f"val_size must be a fraction in (0, 1) or a count in [0, {n}), got {v}")
        return int(v)

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        splits = self.load_splits()
        train, test = splits["train"], splits["test"]
        g = torch.Generator().manual_seed(self.seed)
        if "val" in splits:
            val = splits["val"]
        else:
            n_val = self._val_count(len(train))
            if n_val == 0:
                val, self.val_is_test = test, True
            else:
                perm = torch.randperm(len(train), generator=g)
                val, train = train.subset(perm[:n_val].sort().values), train.subset(perm[n_val:].sort().values)
        if self.train_size is not None:
            if not 0 < self.train_size <= len(train):
                raise ValueError(f"train_size must be in [1, {len(train)}] for {self.name}, got {self.train_size}")
            keep = torch.randperm(len(train), generator=g)[: self.train_size].sort().values
            train = train.subset(keep)
        self.clean_train_targets = train.y.clone()
        if self.label_noise > 0:
            y, self.noisy_indices = apply_label_noise(train.y, self.label_noise, self.num_classes, g)
            train = Split(train.x, y)
        else:
            self.noisy_indices = torch.empty(0, dtype=torch.long)
        self.train, self.val, self.test = train, val, test

    def _to_device(self) -> None:
        device = self._device()
        if self.train.x.device != device:
            self.train, self.val, self.test = self.train.to(device), self.val.to(device), self.test.to(device)

    def train_dataloader(self) -> ChunkLoader:
        self.setup()
        self._to_device()
        _, rank, world = self._placement()
        k = self._steps_per_batch(self.steps_per_chunk)
        return ChunkLoader(self.train, self.batch_size, k, self.seed, self._epoch, self.shuffle, self.drop_last, rank, world)

    def _eval_loader(self, split: Split) -> EvalLoader:
        self.setup()
        self._to_device()
        _, rank, world = self._placement()
        return EvalLoader(split, self.eval_batch_size, rank, world)

    def val_dataloader(self) -> EvalLoader:
        return self._eval_loader(self.val)

    def test_dataloader(self) -> EvalLoader:
        return self._eval_loader(self.test)

    def describe(self) -> dict:
        """Sizes and shapes, for logs and ``summary.json``."""
        self.setup()
        return {
            "dataset": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "train_size": len(self.train),
            "val_size": 0 if self.val_is_test else len(self.val),
            "test_size": len(self.test),
            "val_is_test": self.val_is_test,
            "label_noise": self.label_noise,
            "noisy_labels": int(self.noisy_indices.numel()),
        }

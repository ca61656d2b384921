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


LABEL_NOISE_MODES = ("other", "uniform")


def apply_label_noise(y: Tensor, fraction: float, num_classes: int, generator: torch.Generator | int,
                      mode: str = "other") -> tuple[Tensor, Tensor]:
    """Corrupt a fraction of the labels ``y`` by one of two published rules.

    Args:
        y: integer labels, shape (n,), values in [0, num_classes).
        fraction: in [0, 1].
        num_classes: C >= 2.
        generator: the seeded source of the draws: a ``torch.Generator``, or an int seed.
        mode: ``other`` or ``uniform``:

            - ``other``: exactly ``round(fraction * n)`` labels, chosen at random, each replaced by
              a uniformly random *other* class, so every corrupted label is wrong (the partial
              corruption of Zhang et al. 2017; Nakkiran et al. 2019, Sec. 3). Draws from a
              ``torch.Generator`` (an int seeds one).
            - ``uniform``: each label independently, with probability ``fraction``, is replaced by
              a class drawn uniformly from all C (possibly the true one), so about
              ``fraction * (C - 1) / C`` of the labels end up wrong: the rule of Understanding Deep
              Learning's notebook 8.3 (``if random.random() < 0.15: y = int(random.random() * 10)``).
              Draws from Python's ``random.Random`` in the notebook's order: with the int seed 42,
              the state MNIST-1D's ``make_dataset`` leaves Python's RNG in (it calls
              ``random.seed(args.seed)``), the labels are the notebook's own. A ``torch.Generator``
              seeds the ``random.Random`` with one draw.

    Returns:
        (noisy labels (n,), sorted indices of the labels that were replaced (mode ``other``: all of
        them wrong; mode ``uniform``: the redrawn ones, some of which drew their true class)).

    Raises:
        ValueError: fraction outside [0, 1], fewer than 2 classes, or an unknown mode.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label_noise must be a fraction in [0, 1], got {fraction}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    if mode not in LABEL_NOISE_MODES:
        raise ValueError(f"unknown label_noise_mode {mode!r}; allowed: {list(LABEL_NOISE_MODES)}")
    n = y.shape[0]
    noisy = y.clone()
    if mode == "uniform":
        import random

        seed = int(generator) if not isinstance(generator, torch.Generator) else \
            int(torch.randint(2**62, (1,), generator=generator))
        rng = random.Random(seed)
        replaced, classes = [], []
        for i in range(n):  # the notebook's loop, draw for draw
            if rng.random() < fraction:
                replaced.append(i)
                classes.append(int(rng.random() * num_classes))
        idx = torch.tensor(replaced, dtype=torch.long)
        if replaced:
            noisy[idx] = torch.tensor(classes, dtype=y.dtype)
        return noisy, idx
    if not isinstance(generator, torch.Generator):
        generator = torch.Generator().manual_seed(int(generator))
    k = int(round(fraction * n))
    idx = torch.randperm(n, generator=generator)[:k].sort().values
    shift = torch.randint(1, num_classes, (k,), generator=generator)
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

    def epoch_order(self, epoch: int, seed: int | None = None) -> Tensor:
        """Indices of this rank's samples in the order of ``epoch``'s mini-batches (``seed``: the
        order stream, default this loader's)."""
        n = len(self.split)
        if self.shuffle:
            g = torch.Generator().manual_seed((self.seed if seed is None else int(seed)) * 100_003 + epoch)
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


class MemberChunkLoader(ChunkLoader):
    """A :class:`ChunkLoader` for an ensemble whose members see their own data order and/or labels.

    Args:
        order_seeds: one order stream per member (member i's epoch is the permutation a
            ``ChunkLoader`` with ``seed=order_seeds[i]`` serves), or None: the loader's own ``seed``
            for every member (one shared order).
        labels: (S, N) training labels per member (e.g. each its own label-noise draw), or None: the
            split's labels for every member.
        num_members: S.
        the rest: as for :class:`ChunkLoader`.

    Chunks: inputs (K, S, B, ...) when the orders differ, else (K, B, ...) shared by all members;
    targets (K, S, B) when the orders or the labels differ, else (K, B). A shorter last chunk is a
    tuple of per-step lists, as in :class:`ChunkLoader`.
    """

    def __init__(self, split: Split, batch_size: int, steps_per_chunk: int, seed: int, epoch_fn: Callable[[], int],
                 order_seeds: list[int] | None, labels: Tensor | None, num_members: int, shuffle: bool = True,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(split, batch_size, steps_per_chunk, seed, epoch_fn, shuffle, drop_last, rank, world_size)
        if order_seeds is not None and len(order_seeds) != num_members:
            raise ValueError(f"{len(order_seeds)} order seeds for {num_members} members")
        if labels is not None and tuple(labels.shape) != (num_members, len(split)):
            raise ValueError(f"member labels must have shape ({num_members}, {len(split)}), got {tuple(labels.shape)}")
        self.order_seeds = None if order_seeds is None else [int(s) for s in order_seeds]
        self.labels = None if labels is None else labels.to(split.x.device)
        self.num_members = int(num_members)

    def _take(self, order: Tensor, member_dim: int = 0) -> tuple[Tensor, Tensor]:
        """Inputs and targets of an index block. When the orders differ, ``order`` holds each
        member's own indices along ``member_dim``; else it is shared by all members, and targets that
        differ between members (own labels) get the member axis in front."""
        x = self.split.x[order]
        if self.labels is None:
            return x, self.split.y[order]
        if self.order_seeds is not None:
            shape = [1] * order.dim()
            shape[member_dim] = self.num_members
            return x, self.labels[torch.arange(self.num_members, device=order.device).view(shape), order]
        return x, self.labels[:, order]

    def __iter__(self) -> Iterator[Chunk]:
        epoch = self.epoch_fn()
        if self.order_seeds is None:
            order = self.epoch_order(epoch)  # (n,)
        else:
            order = torch.stack([self.epoch_order(epoch, s) for s in self.order_seeds])  # (S, n)
        per_member = self.order_seeds is not None
        B, K = self.batch_size, self.steps_per_chunk
        full = order.shape[-1] // B
        start, self._resume_at = self._resume_at, 0
        self._served = start
        for c in range(start, len(self)):
            first, last = c * K, min((c + 1) * K, self.num_batches)
            if last <= full:
                block = order[..., first * B : last * B]
                if per_member:  # (S, k*B) -> (k, S, B)
                    idx = block.reshape(self.num_members, last - first, B).transpose(0, 1)  # (k, S, B)
                    chunk = self._take(idx, member_dim=1)
                else:
                    x, y = self._take(block.view(last - first, B))  # x (k, B, ...), y (k, B) or (S, k, B)
                    chunk = (x, y if self.labels is None else y.transpose(0, 1))
            else:
                xs, ys = [], []
                for i in range(first, last):
                    x, y = self._take(order[..., i * B : (i + 1) * B])
                    xs.append(x)
                    ys.append(y)
                chunk = (xs, ys)
            self._served = c + 1
            yield Chunk(*chunk)


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
        label_noise: fraction of *training* labels corrupted (seeded); the corrupted indices
            are kept in ``noisy_indices`` and the clean labels in ``clean_train_targets``.
        label_noise_mode: ``other`` (default: exactly ``label_noise`` of the labels, each moved
            to a random other class) or ``uniform`` (each label redrawn from all classes with
            probability ``label_noise``: Understanding Deep Learning's notebook 8.3); see
            :func:`apply_label_noise`.
        label_noise_seed: seeds the label-noise draw on its own (null: drawn from the ``seed``
            stream, after the split).
        seed: seeds the subset, the split, the noise and the epoch order.
        order_seed: seeds the epoch order on its own (null: ``seed``).
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
        label_noise_mode: str = "other",
        label_noise_seed: int | None = None,
        order_seed: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.val_size, self.train_size = val_size, train_size
        self.label_noise, self.seed = float(label_noise), int(seed)
        self.steps_per_chunk, self.shuffle, self.drop_last = int(steps_per_chunk), shuffle, drop_last
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(f"label_noise must be a fraction in [0, 1], got {label_noise}")
        if label_noise_mode not in LABEL_NOISE_MODES:
            raise ValueError(f"unknown label_noise_mode {label_noise_mode!r}; allowed: {list(LABEL_NOISE_MODES)}")
        self.label_noise_mode = label_noise_mode
        self.label_noise_seed = None if label_noise_seed is None else int(label_noise_seed)
        self.order_seed = None if order_seed is None else int(order_seed)
        self.member_data: dict | None = None  # set by an ensemble task: {"order_seeds": [...] | None, "labels": (S, N) | None}
        self._noise_state: Tensor | None = None
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
        self._noise_state = g.get_state()
        y, self.noisy_indices = self.noisy_train_labels()
        train = Split(train.x, y)
        self.train, self.val, self.test = train, val, test

    def noisy_train_labels(self, **settings) -> tuple[Tensor, Tensor]:
        """The training labels (n,) and the replaced indices that a run with these label-noise
        settings trains on, drawn from the clean labels (call after ``setup``).

        ``settings``: any of ``label_noise``, ``label_noise_mode``, ``label_noise_seed`` (the
        datamodule's own value for each one left out), so an ensemble member with its own noise
        draw gets exactly the labels of the single run configured that way.

        Raises:
            ValueError: an unknown setting, or a value :func:`apply_label_noise` refuses.
        """
        allowed = ("label_noise", "label_noise_mode", "label_noise_seed")
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            raise ValueError(f"unknown label-noise settings {unknown}; allowed: {list(allowed)}")
        fraction = float(settings.get("label_noise", self.label_noise))
        mode = settings.get("label_noise_mode", self.label_noise_mode)
        seed = settings.get("label_noise_seed", self.label_noise_seed)
        clean = self.clean_train_targets
        if fraction == 0:
            return clean.clone(), torch.empty(0, dtype=torch.long)
        if seed is None:  # the seed stream, where the split left it
            generator = torch.Generator()
            generator.set_state(self._noise_state)
        else:
            generator = int(seed)
        return apply_label_noise(clean, fraction, self.num_classes, generator, mode)

    def _to_device(self) -> None:
        device = self._device()
        if self.train.x.device != device:
            self.train, self.val, self.test = self.train.to(device), self.val.to(device), self.test.to(device)

    def train_dataloader(self) -> ChunkLoader:
        self.setup()
        self._to_device()
        _, rank, world = self._placement()
        k = self._steps_per_batch(self.steps_per_chunk)
        seed = self.seed if self.order_seed is None else self.order_seed
        if self.member_data is not None:
            m = self.member_data
            return MemberChunkLoader(self.train, self.batch_size, k, seed, self._epoch, m.get("order_seeds"),
                                     m.get("labels"), m["num_members"], self.shuffle, self.drop_last, rank, world)
        return ChunkLoader(self.train, self.batch_size, k, seed, self._epoch, self.shuffle, self.drop_last, rank, world)

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
            "label_noise_mode": self.label_noise_mode,
            "noisy_labels": int(self.noisy_indices.numel()),
            "wrong_labels": int((self.train.y.cpu() != self.clean_train_targets.cpu()).sum()),
        }


def data_facts(dm) -> dict[str, Any]:
    """What a model may need to know about a datamodule ``dm``: ``input_shape`` (a list), ``input_size``
    (their product), ``num_classes``; ``in_channels`` and ``spatial_dims`` (2 for (C, H, W) images, 1 for
    (C, L) or (L,) sequences); ``vocab_size`` and ``block_size`` where ``dm`` has them. Training runs
    (:mod:`whylearn.build`) and studies (:mod:`whylearn.studies.common`) size models from these."""
    shape = tuple(dm.input_shape)
    facts = {"input_shape": list(shape), "input_size": math.prod(shape), "num_classes": dm.num_classes}
    if len(shape) == 3:  # images (C, H, W)
        facts["in_channels"], facts["spatial_dims"] = shape[0], 2
    elif len(shape) == 2:  # sequences with channels (C, L)
        facts["in_channels"], facts["spatial_dims"] = shape[0], 1
    elif len(shape) == 1:  # plain sequences (L,), e.g. MNIST-1D: one channel
        facts["in_channels"], facts["spatial_dims"] = 1, 1
    for key in ("vocab_size", "block_size"):
        if hasattr(dm, key):
            facts[key] = getattr(dm, key)
    return facts

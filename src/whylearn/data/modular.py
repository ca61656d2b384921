"""Modular arithmetic: the algorithmic data sets of grokking.

Every equation ``x op y = c (mod p)`` for x, y in [0, p) (y != 0 for division) is one
example; a seeded fraction of them is trained on and the rest is the held-out split
(Power et al. 2022, Sec. 2; Nanda et al. 2023, Sec. 3). Division is multiplication by
the modular inverse y^(p-2) mod p (Fermat), so p must be prime for ``/``.

Input sequences (token ids), the formats of the two reference set-ups:
  - ``nanda``: [x, y, =]         with "=" the token p; vocabulary p + 1; 3 positions.
  - ``power``: [x, op, y, =]     with "=" = p and the operation token p + 1; vocabulary p + 2; 4 positions.
The target is c in [0, p): a classification over p classes read at the last position.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from whylearn.data.base import Chunk, InMemoryDataModule, Split

OPERATIONS = ("+", "-", "*", "/")
FORMATS = ("nanda", "power")
SPLITS = ("seeded", "nanda")


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, math.isqrt(p) + 1))


def modular_table(p: int, op: str) -> tuple[Tensor, Tensor, Tensor]:
    """All operands and results: x (N,), y (N,), c = x op y mod p (N,), in row-major order of (x, y).

    N = p^2, or p (p - 1) for ``/`` (y = 0 left out).

    Raises:
        ValueError: unknown op, p < 2, or ``/`` with a p that is not prime.
    """
    if op not in OPERATIONS:
        raise ValueError(f"unknown op {op!r}; allowed: {list(OPERATIONS)}")
    if p < 2 or (op == "/" and not _is_prime(p)):
        raise ValueError(f"p must be >= 2 (and prime for division), got {p}")
    x, y = torch.cartesian_prod(torch.arange(p), torch.arange(p)).T
    if op == "/":
        keep = y != 0
        x, y = x[keep], y[keep]
    if op == "+":
        c = (x + y) % p
    elif op == "-":
        c = (x - y) % p
    elif op == "*":
        c = (x * y) % p
    else:
        inv = torch.tensor([pow(int(v), p - 2, p) for v in range(p)])
        c = (x * inv[y]) % p
    return x, y, c


class FullBatchLoader:
    """Full-batch training: each chunk is the whole training split K times, (K, N, ...) as a view."""

    def __init__(self, split: Split, steps_per_chunk: int, chunks: int) -> None:
        self.split, self.K, self.chunks = split, steps_per_chunk, chunks

    def __len__(self) -> int:
        return self.chunks

    def __iter__(self) -> Iterator[Chunk]:
        x, y = self.split.x, self.split.y
        for _ in range(self.chunks):
            yield Chunk(x.expand(self.K, *x.shape), y.expand(self.K, *y.shape))


class ModularArithmeticDataModule(InMemoryDataModule):
    """``x op y mod p`` as sequence classification: inputs (B, 3) or (B, 4) token ids, p classes.

    Args:
        p: the modulus (113 in Nanda et al., 97 in Power et al.).
        op: ``+`` | ``-`` | ``*`` | ``/``.
        train_fraction: the seeded fraction of all equations trained on; the rest is held out
            (the test split, also used for validation: ``val_size=0``).
        split: ``seeded`` (a torch permutation seeded by ``seed``, round(fraction x N) pairs) or
            ``nanda`` (Nanda et al. 2023's ``gen_train_test``: Python's ``random.seed(seed)`` then
            ``random.shuffle`` of the (x, y) pairs in row-major order, the first int(fraction x N)
            trained on; with seed 0 the same 3,830 pairs as their runs).
        format: ``nanda`` or ``power`` (see the module docstring).
        batch_size: an int, or ``full`` for full-batch gradient descent.
        chunks_per_epoch: for full batch, Lightning epochs hold ``chunks_per_epoch x steps_per_chunk``
            optimizer steps (validation runs once per epoch).
        **kwargs: the options of :class:`~whylearn.data.base.InMemoryDataModule` (seed,
            steps_per_chunk, eval_batch_size, val_size ...).

    Attributes: ``vocab_size``, ``block_size`` (sequence length), ``num_classes`` = p.
    """

    name = "modular"

    def __init__(self, p: int = 113, op: str = "+", train_fraction: float = 0.3, format: str = "nanda",
                 batch_size: int | str = "full", chunks_per_epoch: int = 1, val_size: float | int = 0,
                 split: str = "seeded", **kwargs) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; allowed: {list(FORMATS)}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {list(SPLITS)}")
        if op not in OPERATIONS:
            raise ValueError(f"unknown op {op!r}; allowed: {list(OPERATIONS)}")
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        self.full_batch = batch_size == "full"
        if not self.full_batch and not isinstance(batch_size, int):
            raise ValueError(f"batch_size must be an int or 'full', got {batch_size!r}")
        super().__init__(batch_size=1 if self.full_batch else batch_size, val_size=val_size, **kwargs)
        self.p, self.op, self.train_fraction, self.format = int(p), op, float(train_fraction), format
        self.split = split
        self.chunks_per_epoch = int(chunks_per_epoch)
        self.num_classes = self.p
        self.vocab_size = self.p + (1 if format == "nanda" else 2)
        self.block_size = 3 if format == "nanda" else 4
        self.equals_token, self.op_token = self.p, self.p + 1

    def sequences(self, x: Tensor, y: Tensor) -> Tensor:
        """Token ids (N, block_size) of the equations with operands x, y (N,)."""
        eq = torch.full_like(x, self.equals_token)
        if self.format == "nanda":
            return torch.stack([x, y, eq], dim=1)
        return torch.stack([x, torch.full_like(x, self.op_token), y, eq], dim=1)

    def load_splits(self) -> dict[str, Split]:
        x, y, c = modular_table(self.p, self.op)
        seqs = self.sequences(x, y)
        n = c.shape[0]
        if self.split == "nanda":
            import random

            order = list(range(n))
            random.Random(self.seed).shuffle(order)  # = random.seed(seed); random.shuffle(pairs), without global state
            perm, n_train = torch.tensor(order), int(self.train_fraction * n)
        else:
            n_train = int(round(self.train_fraction * n))
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        tr, te = perm[:n_train].sort().values, perm[n_train:].sort().values
        return {"train": Split(seqs[tr], c[tr]), "test": Split(seqs[te], c[te])}

    def train_dataloader(self):
        if not self.full_batch:
            return super().train_dataloader()
        self.setup()
        self._to_device()
        k = self._steps_per_batch(self.steps_per_chunk)  # one step per batch: as many batches, same epoch
        return FullBatchLoader(self.train, k, self.chunks_per_epoch * self.steps_per_chunk // k)

    def describe(self) -> dict:
        d = super().describe()
        d.update({"p": self.p, "op": self.op, "format": self.format, "train_fraction": self.train_fraction,
                  "full_batch": self.full_batch, "split": self.split})
        return d

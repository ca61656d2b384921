"""Translation augmentation for sequences: each training sequence rolled by a random number of positions.

"Build the invariance in, or blast it with data": a CNN is translation equivariant by construction,
an MLP is not and must learn every shifted copy of a pattern from examples. Showing it more
shifted copies (augmentation) closes part of the gap (Greydanus 2020, MNIST-1D). The shift is
circular, like the MNIST-1D generator's own translation step (``mnist1d.transform.translate``,
which rolls the padded template before noise, shear and down-sampling).

The fixed permutation of positions of the same paper's "shuffled" benchmark needs no code here:
it is the generator's own ``shuffle_seq`` argument (``data.generator_args={shuffle_seq: true}``),
one permutation of the 40 positions drawn after all samples are made, applied to train and test.
"""

from __future__ import annotations

import torch
from torch import Tensor

from whylearn.data.base import Chunk
from whylearn.data.mnist1d import MNIST1DDataModule


def random_roll(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Roll each sequence of x (N, L) or (N, C, L) along its last axis by its own shift in [-max_shift, max_shift].

    Sequence n becomes ``torch.roll(x[n], s_n, -1)``. Returns a new tensor of x's shape.

    Raises:
        ValueError: max_shift < 0 or x with fewer than 2 or more than 3 axes.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if x.ndim not in (2, 3):
        raise ValueError(f"random_roll expects sequences (N, L) or (N, C, L), got shape {tuple(x.shape)}")
    if max_shift == 0:
        return x
    n, length = x.shape[0], x.shape[-1]
    shifts = torch.randint(-max_shift, max_shift + 1, (n,), device=x.device, generator=generator)
    index = (torch.arange(length, device=x.device) - shifts[:, None]) % length  # (N, L): out[j] = x[j - s]
    if x.ndim == 3:
        index = index[:, None, :].expand(-1, x.shape[1], -1)
    return torch.gather(x, -1, index)


class ShiftAugmentMixin:
    """Adds ``max_shift`` (random circular shifts of the training sequences) to an in-memory datamodule.

    The training chunks are shifted in Lightning's ``on_after_batch_transfer`` hook, on the training
    device, one independent shift per sequence and step; validation, test and the measurement
    callbacks see the sequences unchanged. ``max_shift=0`` switches it off. The generator is seeded
    with the datamodule's ``seed``.
    """

    def __init__(self, *args, max_shift: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if int(max_shift) != max_shift or max_shift < 0:
            raise ValueError(f"max_shift must be an integer >= 0, got {max_shift!r}")
        self.max_shift = int(max_shift)
        self._shift_generators: dict[torch.device, torch.Generator] = {}

    def _shift_generator(self, device: torch.device) -> torch.Generator:
        if device not in self._shift_generators:
            self._shift_generators[device] = torch.Generator(device=device).manual_seed(getattr(self, "seed", 0))
        return self._shift_generators[device]

    def shift(self, x: Tensor) -> Tensor:
        """Shift a batch (B, *sample) or a chunk (K, B, *sample) of sequences, sample = (L,) or (C, L)."""
        if self.max_shift == 0:
            return x
        sample_ndim = len(self.input_shape)
        flat = x.reshape(-1, *x.shape[x.ndim - sample_ndim:])
        return random_roll(flat, self.max_shift, self._shift_generator(x.device)).reshape(x.shape)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        trainer = getattr(self, "trainer", None)
        if self.max_shift == 0 or trainer is None or not trainer.training:
            return batch
        xs, ys = batch
        xs = [self.shift(x) for x in xs] if isinstance(xs, (list, tuple)) else self.shift(xs)
        # a Chunk stays a Chunk (K mini-batches): a plain tuple would be taken for one mini-batch
        return type(batch)(xs, ys) if isinstance(batch, Chunk) else (xs, ys)


class ShiftedMNIST1DDataModule(ShiftAugmentMixin, MNIST1DDataModule):
    """MNIST-1D with translation augmentation: each training sequence rolled by up to ``max_shift`` positions.

    Args:
        max_shift: the largest shift, in positions (0: none); every other argument is
            :class:`~whylearn.data.MNIST1DDataModule`'s.
    """

    name = "mnist1d_shift"

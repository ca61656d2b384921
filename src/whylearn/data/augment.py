"""Data augmentation as batched tensor operations on the training device (no PIL, no per-image Python).

The standard CIFAR augmentation of He et al. 2016 (Sec. 4.2): pad 4 pixels on each side
(zeros), take a random 32x32 crop, and flip horizontally with probability 1/2. Both act
on a whole batch (B, C, H, W), or a chunk (K, B, C, H, W), with one gather each.
"""

from __future__ import annotations

import torch
from torch import Tensor

from whylearn.data.base import Chunk


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad ``padding`` pixels on each side and crop each image at a random offset to its size.

    Args:
        x: images (B, C, H, W).
        padding: pixels of zero padding per side (>= 0).
        generator: on x's device, for reproducible offsets.

    Returns: (B, C, H, W); image b is ``pad(x)[b, :, i_b:i_b+H, j_b:j_b+W]`` with i_b, j_b uniform in [0, 2 padding].
    """
    if x.ndim != 4:
        raise ValueError(f"random_crop expects images (B, C, H, W), got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return x
    B, C, H, W = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    off = torch.randint(0, 2 * padding + 1, (2, B), device=x.device, generator=generator)
    rows = off[0, :, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = off[1, :, None] + torch.arange(W, device=x.device)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image of x (B, C, H, W) left-right with probability ``p``."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class Augment:
    """Random crop with padding and horizontal flip, switchable, for batches or chunks of images.

    Args:
        crop_padding: pixels of padding for the random crop (0: no crop).
        hflip: flip horizontally with probability 1/2.
        seed: seeds the generator (one per device, created on first use).

    Calling it on x of shape (B, C, H, W) or (K, B, C, H, W) returns the same shape.
    """

    def __init__(self, crop_padding: int = 4, hflip: bool = True, seed: int = 0) -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.crop_padding, self.hflip, self.seed = int(crop_padding), bool(hflip), int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip

    def _gen(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def __call__(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        lead = x.shape[:-3]
        imgs = x.reshape(-1, *x.shape[-3:])
        g = self._gen(x.device)
        if self.crop_padding:
            imgs = random_crop(imgs, self.crop_padding, g)
        if self.hflip:
            imgs = random_hflip(imgs, 0.5, g)
        return imgs.reshape(*lead, *x.shape[-3:])

    def chunk(self, chunk, step: int = 0):
        """Augment the inputs of a training chunk: a :class:`~whylearn.data.base.Chunk` (stacked (K, B, ...)
        or per-step lists) or a plain ``(x, y)`` batch; ``step`` is the number of optimizer steps taken
        before its first mini-batch (``trainer.global_step``).

        Mini-batch i draws from the generator seeded with (seed, step + i), so the augmentation does not
        depend on how mini-batches are grouped into chunks, and a resumed run draws what the uninterrupted
        run drew.
        """
        if not self.active:
            return chunk
        xs, ys = chunk
        stacked = not isinstance(xs, (list, tuple))
        if not isinstance(chunk, Chunk):
            xs, stacked = [xs], False
        out = []
        for i, x in enumerate(xs):
            self._gen(x.device).manual_seed(hash((self.seed, int(step) + i)) & 0x7FFF_FFFF_FFFF_FFFF)
            out.append(self(x))
        if not isinstance(chunk, Chunk):
            return out[0], ys
        return Chunk(torch.stack(out) if stacked else out, ys)


class AugmentMixin:
    """Adds switchable on-device augmentation to an in-memory image datamodule.

    Options ``augment`` (master switch), ``crop_padding`` and ``hflip``. The training
    chunks are augmented in Lightning's ``on_after_batch_transfer`` hook, i.e. after they
    are on the training device; validation, test and the measurement callbacks see the
    images unchanged.
    """

    def __init__(self, *args, augment: bool = False, crop_padding: int = 4, hflip: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.augment = bool(augment)
        self.augmenter = Augment(crop_padding, hflip, seed=getattr(self, "seed", 0))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = getattr(self, "trainer", None)
        if not (self.augment and self.augmenter.active and trainer is not None and trainer.training):
            return batch
        xs = batch[0][0] if isinstance(batch[0], (list, tuple)) else batch[0]
        if xs.ndim < 4:
            raise ValueError(f"augmentation needs image inputs (..., C, H, W), got batches of shape {tuple(xs.shape)}; "
                             f"set data.flatten=false or data.augment=false")
        return self.augmenter.chunk(batch, trainer.global_step)

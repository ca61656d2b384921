"""The MNIST family with the vision options: Zhang et al. 2017 corruptions and on-device augmentation.

Same data and options as :class:`~whylearn.data.MNISTDataModule` and
:class:`~whylearn.data.FashionMNISTDataModule`, plus ``corruption``/``corruption_prob``
(:mod:`whylearn.data.corruptions`) and ``augment``/``crop_padding``/``hflip``
(:mod:`whylearn.data.augment`). CIFAR-10 has them built in (:mod:`whylearn.data.cifar`).
For any other in-memory datamodule class use ``with_corruption(cls)``.
"""

from __future__ import annotations

from whylearn.data.augment import AugmentMixin
from whylearn.data.corruptions import CorruptionMixin
from whylearn.data.idx import FashionMNISTDataModule, MNISTDataModule


class CorruptedMNISTDataModule(CorruptionMixin, AugmentMixin, MNISTDataModule):
    """MNIST with ``corruption`` (true | partial | random | shuffled_pixels | random_pixels | gaussian) and augmentation."""


class CorruptedFashionMNISTDataModule(CorruptionMixin, AugmentMixin, FashionMNISTDataModule):
    """Fashion-MNIST with ``corruption`` and augmentation options."""

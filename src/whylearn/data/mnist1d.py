"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated, never downloaded.

The data set is made procedurally by ``mnist1d.data.make_dataset`` from ten
1D templates (translation, scaling, shear, correlated and i.i.d. noise), with the
package's published arguments by default: 5000 samples, 80/20 train/test
split, length 40, seed 42. Inputs are (N, 40) float32, labels in [0, 10).

Understanding Deep Learning's notebooks (e.g. 8.3, double descent) use other arguments:
``num_samples=8000, train_split=0.5, corr_noise_scale=0.25, iid_noise_scale=2e-2``
(4000 training and 4000 test examples; the two noise scales equal mnist1d 0.0.2's defaults).
"""

from __future__ import annotations

import numpy as np
import torch

from whylearn.data.base import InMemoryDataModule, Split


def make_mnist1d(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42, **overrides) -> dict[str, Split]:
    """Generate MNIST-1D with ``mnist1d.data.make_dataset`` and return train/test splits.

    Args:
        num_samples: total samples (train + test), divided equally among the 10 classes.
        train_split: fraction used for training, in (0, 1).
        seed: the generator's seed (the published data set uses 42).
        overrides: any other argument of ``mnist1d.data.get_dataset_args`` (e.g. ``shuffle_seq``).

    Returns:
        ``{"train": Split(x (n_train, 40), y), "test": Split(x (n_test, 40), y)}``.

    Raises:
        ValueError: an argument the generator does not know.

    The generator reseeds NumPy's and Python's global RNGs (``random.seed`` and
    ``np.random.seed`` with ``seed``); both states are restored afterwards.
    """
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    known = set(vars(args))
    for key, value in {"num_samples": num_samples, "train_split": train_split, "seed": seed, **overrides}.items():
        if key not in known:
            raise ValueError(f"unknown MNIST-1D argument {key!r}; allowed: {sorted(known - {'url'})}")
        setattr(args, key, value)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    def as_x(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32)
    def as_y(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.long)
    return {"train": Split(as_x(d["x"]), as_y(d["y"])), "test": Split(as_x(d["x_test"]), as_y(d["y_test"]))}


class MNIST1DDataModule(InMemoryDataModule):
    """MNIST-1D as an in-memory datamodule: inputs (B, 40), 10 classes.

    Args:
        num_samples, train_split, data_seed: passed to the generator (``data_seed``
            is its ``seed``; the published set uses 42).
        generator_args: other ``make_dataset`` arguments (dict).
        **kwargs: the options of :class:`~whylearn.data.base.InMemoryDataModule`.
    """

    name = "mnist1d"
    num_classes = 10

    def __init__(self, num_samples: int = 5000, train_split: float = 0.8, data_seed: int = 42,
                 generator_args: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_samples, self.train_split, self.data_seed = num_samples, train_split, data_seed
        self.generator_args = dict(generator_args or {})

    def load_splits(self) -> dict[str, Split]:
        return make_mnist1d(self.num_samples, self.train_split, self.data_seed, **self.generator_args)

"""A one-sample placeholder datamodule for runs whose science is a measurement, not a training loop.

``whylearn-train`` always builds a datamodule, a model and a task; an analysis run
(:class:`~whylearn.tasks.analysis.AnalysisTask`) loads or generates its own data, so its
datamodule is this: one zero input of shape (1,), one class, one training chunk.
"""

from __future__ import annotations

import torch

from whylearn.data.base import InMemoryDataModule, Split


class NoDataModule(InMemoryDataModule):
    """One zero sample (inputs (1, 1), label 0, ``num_classes`` 1) in every split."""

    name = "none"
    num_classes = 1

    def __init__(self, seed: int = 0, **kwargs) -> None:
        kwargs.setdefault("batch_size", 1)
        kwargs.setdefault("steps_per_chunk", 1)
        kwargs.setdefault("val_size", 0)
        super().__init__(seed=seed, **kwargs)

    def load_splits(self) -> dict[str, Split]:
        def one():
            return Split(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
        return {"train": one(), "test": one()}

    def describe(self) -> dict:
        """Only the name: the sizes of the placeholder sample would mislead in an analysis's summary.json."""
        return {"dataset": self.name}

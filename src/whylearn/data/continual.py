"""Task sequences for continual learning, cut from one data set: permuted and split benchmarks.

- **Permuted** (Goodfellow et al. 2013; Kirkpatrick et al. 2017, Fig. 2): task t is the whole data
  set with its input features shuffled by a fixed random permutation pi_t, the same 10 labels.
  Every task is equally hard for a fully connected network, and they share nothing a network can
  reuse, so what one task writes into the weights overwrites the other's.
- **Split** (Zenke, Poole & Ganguli 2017; van de Ven & Tolias 2019): task t holds only the samples
  of a few classes (0/1, 2/3, ...). With ``scenario: task`` the network is told which task a sample
  is from and chooses among that task's classes only (task-incremental); with ``scenario: class``
  it chooses among all classes seen so far (class-incremental, much harder).

:class:`TaskSplitsDataModule` serves one task's splits as an ordinary in-memory datamodule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from whylearn.data.base import InMemoryDataModule, Split


@dataclass
class ContinualTask:
    """One task of a sequence: its name, training and test splits, and the classes it may answer
    with (None: all of them)."""

    name: str
    train: Split
    test: Split
    classes: list[int] | None = None


def permuted_tasks(train: Split, test: Split, num_tasks: int, seed: int = 0) -> list[ContinualTask]:
    """``num_tasks`` copies of (train, test), the features (N, D) of copy t permuted by its own fixed
    random permutation (drawn from ``seed``; the same permutation for train and test).

    Raises:
        ValueError: num_tasks < 1 or inputs that are not flat (N, D).
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    if train.x.ndim != 2 or test.x.ndim != 2:
        raise ValueError(f"permuted tasks need flat inputs (N, D); got {tuple(train.x.shape)} "
                         f"(for MNIST set data.flatten=true)")
    g = torch.Generator().manual_seed(int(seed))
    tasks = []
    for t in range(num_tasks):
        perm = torch.randperm(train.x.shape[1], generator=g)
        tasks.append(ContinualTask(f"perm{t}", Split(train.x[:, perm], train.y), Split(test.x[:, perm], test.y)))
    return tasks


def split_tasks(train: Split, test: Split, classes_per_task: int = 2, num_classes: int = 10,
                class_order: Sequence[int] | None = None) -> list[ContinualTask]:
    """Cut (train, test) into tasks of ``classes_per_task`` classes each, in ``class_order``
    (default 0, 1, ..., num_classes - 1): task t holds the samples of its classes, labels unchanged.

    Raises:
        ValueError: a class order that is not a permutation of range(num_classes), or num_classes
            not divisible by classes_per_task.
    """
    order = list(range(num_classes)) if class_order is None else [int(c) for c in class_order]
    if sorted(order) != list(range(num_classes)):
        raise ValueError(f"class_order must be a permutation of 0..{num_classes - 1}, got {order}")
    if classes_per_task < 1 or num_classes % classes_per_task:
        raise ValueError(f"classes_per_task must divide num_classes={num_classes}, got {classes_per_task}")
    tasks = []
    for t in range(num_classes // classes_per_task):
        cls = order[t * classes_per_task:(t + 1) * classes_per_task]
        keep_tr, keep_te = torch.isin(train.y, torch.tensor(cls)), torch.isin(test.y, torch.tensor(cls))
        tasks.append(ContinualTask("/".join(map(str, cls)), train.subset(keep_tr.nonzero()[:, 0]),
                                   test.subset(keep_te.nonzero()[:, 0]), cls))
    return tasks


class TaskSplitsDataModule(InMemoryDataModule):
    """One task's given splits as an in-memory datamodule (validation = its test split).

    Args:
        task: the :class:`ContinualTask`.
        num_classes: the network's number of outputs.
        **kwargs: :class:`~whylearn.data.base.InMemoryDataModule` options (batch_size, seed, ...).
    """

    name = "continual_task"

    def __init__(self, task: ContinualTask, num_classes: int, **kwargs) -> None:
        kwargs.setdefault("val_size", 0)
        super().__init__(**kwargs)
        self.task, self.num_classes = task, int(num_classes)

    def load_splits(self) -> dict[str, Split]:
        return {"train": self.task.train, "test": self.task.test}

"""The generalization gap: the same evaluation on training and validation data, side by side."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from whylearn.loggers import log_scalars


class GeneralizationGap(Callback):
    """After each validation, evaluate the model in eval mode on the training set and log the gap.

    Scalars: ``train_eval/loss``, ``train_eval/acc`` (eval mode, on the training set or a fixed
    seeded subset of ``train_subset_size`` samples, with the task's own ``evaluate``, the code
    path validation uses), ``gap/loss`` = val loss - train loss and ``gap/acc`` = train acc - val acc.

    Requires a task with ``evaluate(x, y)`` (e.g. :class:`~whylearn.tasks.ClassificationTask`) and a
    datamodule holding its training split as ``datamodule.train`` (every whylearn datamodule).
    The training labels are the ones trained on (with label noise, if any).
    """

    def __init__(self, train_subset_size: int | None = 10000, seed: int = 0) -> None:
        self.train_subset_size, self.seed = train_subset_size, seed
        self._index: torch.Tensor | None = None

    def _train_tensors(self, trainer: L.Trainer):
        dm = trainer.datamodule
        split = getattr(dm, "train", None)
        if split is None:
            raise RuntimeError("GeneralizationGap needs a datamodule with an in-memory `train` split (x, y)")
        n = len(split)
        if self._index is None or self._index.device != split.x.device:
            if self.train_subset_size is None or self.train_subset_size >= n:
                self._index = torch.arange(n, device=split.x.device)
            else:
                g = torch.Generator().manual_seed(self.seed)
                self._index = torch.randperm(n, generator=g)[: self.train_subset_size].sort().values.to(split.x.device)
        return split.x[self._index], split.y[self._index]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        x, y = self._train_tensors(trainer)
        train = pl_module.evaluate(x, y, batch_size=getattr(trainer.datamodule, "eval_batch_size", 4096))
        val_loss = float(trainer.callback_metrics["val/loss"])
        val_acc = float(trainer.callback_metrics["val/acc"])
        log_scalars(pl_module, {
            "train_eval/loss": train["loss"], "train_eval/acc": train["acc"],
            "gap/loss": val_loss - train["loss"], "gap/acc": train["acc"] - val_acc,
        })

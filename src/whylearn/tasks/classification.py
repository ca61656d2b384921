"""Classification: cross-entropy (or squared error on one-hot targets), accuracy, optimizer from config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchmetrics
from torch import Tensor, nn

from whylearn.analysis.losses import LOSSES, classification_loss  # noqa: F401  (re-exported: the tasks' losses)
from whylearn.tasks.base import FastTask, SplitEval, log_scalars


class ClassificationTask(SplitEval, FastTask):
    """Train ``model`` (any ``nn.Module`` mapping (B, ...) to logits (B, C)) to classify.

    Logs ``train/loss`` and ``train/acc`` (of that step's mini-batch) every ``log_every_n_steps``
    optimizer steps, ``train/loss_epoch``
    and ``train/acc_epoch`` (training mode, running over the epoch), ``val/loss``,
    ``val/acc``, ``test/loss`` and ``test/acc`` (eval mode, exact over the split).

    Args:
        model: the network.
        num_classes: C.
        loss: ``cross_entropy`` or ``mse``.
        optimizer, scheduler, scheduler_interval, log_every_n_steps, gradient_clip_val,
        gradient_clip_algorithm, compile: see :class:`~whylearn.tasks.base.FastTask`.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: str = "cross_entropy",
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
        log_every_n_steps: int = 50,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        compile: bool | str = False,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, log_every_n_steps, gradient_clip_val,
                         gradient_clip_algorithm, compile)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; allowed: {list(LOSSES)}")
        self.model, self.num_classes, self.loss_name = model, int(num_classes), loss
        def acc():
            return torchmetrics.classification.MulticlassAccuracy(self.num_classes, average="micro", validate_args=False)
        self.train_acc, self.val_acc, self.test_acc = acc(), acc(), acc()
        self.val_loss, self.test_loss = torchmetrics.MeanMetric(), torchmetrics.MeanMetric()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # -- training -----------------------------------------------------------------
    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        logits = self.model(x)
        return classification_loss(self.loss_name, logits, y), (logits.detach(), y)

    def step_scalars(self, kept: Any) -> dict[str, Any]:
        logits, y = kept
        return {"train/acc": (logits.argmax(-1) == y).float().mean()}

    def on_chunk_end(self, kept: list[Any]) -> None:
        logits = torch.cat([k[0] for k in kept])
        y = torch.cat([k[1] for k in kept])
        self.train_acc.update(logits, y)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self._epoch_steps:
            log_scalars(self, {"train/acc_epoch": self.train_acc.compute()})
        self.train_acc.reset()

    # -- evaluation: one code path for val, test and the measurement callbacks ------------
    @torch.no_grad()
    def eval_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Eval-mode logits (B, C) and per-sample losses (B,) of one batch."""
        logits = self.model(x)
        return logits, classification_loss(self.loss_name, logits, y, reduction="none")

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, batch_size: int = 4096) -> dict[str, float]:
        """Loss and accuracy of the model in eval mode on tensors x (N, ...), y (N,).

        The mode is restored afterwards. Used by the generalization-gap callback on
        the training set, with the same :meth:`eval_batch` as validation and test.
        """
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.long, device=x.device)
        for i in range(0, x.shape[0], batch_size):
            logits, per_sample = self.eval_batch(x[i : i + batch_size], y[i : i + batch_size])
            loss_sum += per_sample.double().sum()
            correct += (logits.argmax(-1) == y[i : i + batch_size]).sum()
        self.model.train(was_training)
        n = max(x.shape[0], 1)
        return {"loss": (loss_sum / n).item(), "acc": correct.item() / n}

    def _eval_step(self, split: str, batch) -> None:
        x, y = batch
        logits, per_sample = self.eval_batch(x, y)
        getattr(self, f"{split}_loss").update(per_sample)
        getattr(self, f"{split}_acc").update(logits, y)

    def _eval_end(self, split: str) -> None:
        loss, acc = getattr(self, f"{split}_loss"), getattr(self, f"{split}_acc")
        metrics = {f"{split}/loss": loss.compute(), f"{split}/acc": acc.compute()}
        loss.reset()
        acc.reset()
        log_scalars(self, metrics)

    def summary_metrics(self, datamodule) -> dict[str, float]:
        """Final eval-mode loss and accuracy on the whole training and validation splits, and the gaps."""
        bs = getattr(datamodule, "eval_batch_size", 4096)
        train = self.evaluate(datamodule.train.x, datamodule.train.y, bs)
        val = self.evaluate(datamodule.val.x, datamodule.val.y, bs)
        return {
            "train/loss": train["loss"], "train/acc": train["acc"], "val/loss": val["loss"], "val/acc": val["acc"],
            "gap/loss": val["loss"] - train["loss"], "gap/acc": train["acc"] - val["acc"],
            **getattr(self, "extra_summary", {}),  # end-of-fit measurements that callbacks add (sharpness, landscape)
        }


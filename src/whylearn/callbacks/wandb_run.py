"""Lightning hooks a W&B run needs from the trainer: continuing a resumed run, gradient histograms."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from whylearn.loggers import WandbRunLogger, get_history, write_row


class WandbRunSync(Callback):
    """At the start of training, tells every :class:`whylearn.loggers.WandbRunLogger` of the trainer the
    step training starts at, with the history restored from the checkpoint, so a resumed job neither
    sends again the rows its W&B run holds nor leaves out those it lacks
    (:meth:`~whylearn.loggers.WandbRunLogger.continue_from`). Rank 0 only, as W&B logging is.
    Added by :func:`whylearn.build.build_trainer` when a W&B logger is configured.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for lg in trainer.loggers:
            if isinstance(lg, WandbRunLogger):
                history = get_history(pl_module).state_dict() if trainer.global_step > 0 else None
                lg.continue_from(trainer.global_step, history)


class WandbWatch(Callback):
    """``logger.wandb.watch``: W&B histograms of every parameter's gradient and/or values, every
    ``log_freq`` optimizer steps, under W&B's own keys (``gradients/<name>``, ``parameters/<name>``,
    64 bins, as ``wandb.watch`` writes them).

    Measured in ``on_before_optimizer_step`` (the gradient the optimizer is about to use, after
    clipping) and logged at that step (``trainer/global_step`` before the update, as
    :class:`~whylearn.callbacks.GradNorms` does) through the same queue as the scalars. Not
    ``wandb.watch`` itself: its hooks add the histograms to whatever row W&B commits next, and with
    rows written from a background thread that is not the step they belong to (measured: every
    histogram of a 16-step run landed in the row of step 0, each replacing the previous one).

    Args:
        logger: the :class:`whylearn.loggers.WandbRunLogger` to log to.
        log: ``gradients``, ``parameters`` or ``all``.
        log_freq: optimizer steps between two histograms (>= 1).
    """

    def __init__(self, logger, log: str = "gradients", log_freq: int = 100) -> None:
        if log not in ("gradients", "parameters", "all"):
            raise ValueError(f"watch must be gradients, parameters or all, got {log!r}")
        if log_freq < 1:
            raise ValueError(f"log_freq must be >= 1, got {log_freq}")
        self.wandb_logger, self.kind, self.log_freq = logger, log, int(log_freq)  # (Lightning sets a callback's `log`)
        self._step = 0
        self._params: list[tuple[str, torch.nn.Parameter]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step = trainer.global_step
        self._params = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        step = self._step
        self._step = step + 1
        if step % self.log_freq or not trainer.is_global_zero:
            return
        import wandb

        row = {}
        for name, p in self._params:
            if self.kind in ("gradients", "all") and p.grad is not None:
                row[f"gradients/{name}"] = wandb.Histogram(p.grad.detach().float().cpu().numpy().ravel(), num_bins=64)
            if self.kind in ("parameters", "all"):
                row[f"parameters/{name}"] = wandb.Histogram(p.detach().float().cpu().numpy().ravel(), num_bins=64)
        if row:
            write_row(self.wandb_logger, row, step)

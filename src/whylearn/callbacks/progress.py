"""Plain periodic log lines for runs without a terminal (batch jobs, CI, SLURM logs)."""

from __future__ import annotations

import logging
import time

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("whylearn")

_KEYS = ("train/loss", "val/loss", "val/acc", "gap/acc")


class LogLines(Callback):
    """Every ``every_n_seconds`` (and at the end of fit), log one line: epoch, step, steps/s, latest scalars."""

    whylearn_batch_hooks = "per_chunk"  # a line at most every n seconds: once per chunk is as good (whylearn.tasks.loop)

    def __init__(self, every_n_seconds: float = 10.0) -> None:
        self.every_n_seconds = every_n_seconds
        self._t0 = self._last = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = self._last = time.perf_counter()

    def _line(self, trainer: L.Trainer) -> str:
        m = trainer.callback_metrics
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        parts = [f"epoch {trainer.current_epoch}", f"step {trainer.global_step}",
                 f"{trainer.global_step / elapsed:.0f} steps/s"]
        parts += [f"{k} {float(m[k]):.4f}" for k in _KEYS if k in m]
        return " | ".join(parts)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every_n_seconds:
            self._last = now
            log.info(self._line(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        log.info(self._line(trainer))

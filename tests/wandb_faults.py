"""Fault injection for the W&B resume tests (imported by a training subprocess through ``_target_``)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class KillWhenWandbHolds(Callback):
    """At the first chunk boundary at or after optimizer step ``step``: wait until the W&B offline run
    file holds the rows logged so far (up to the step before the current one), then ``kill -9`` this
    process (SIGKILL: no handler runs, nothing more is flushed or saved)."""

    whylearn_batch_hooks = "per_chunk"  # acts at chunk boundaries: the fit keeps whylearn's fast loop

    def __init__(self, step: int, timeout_s: float = 120.0) -> None:
        self.step, self.timeout_s = int(step), timeout_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from lightning.pytorch.loggers import WandbLogger

        from whylearn.loggers import drain, read_wandb_run

        if trainer.global_step < self.step:
            return
        wandb_logger = next(lg for lg in trainer.loggers if isinstance(lg, WandbLogger))
        drain(wandb_logger)
        run = wandb_logger.experiment
        path = Path(run.dir).parent / f"run-{run.id}.wandb"
        want = trainer.global_step - 1
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            steps = [r.get("trainer/global_step", -1) for r in read_wandb_run(path)["history"]]
            if steps and max(steps) >= want:
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)

"""Santurkar et al. 2018's landscape measures during training, and BatchNorm's train/eval-mode gap at the end.

The instruments are :mod:`whylearn.analysis.smoothness`; these callbacks only choose when and on what data.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback

from whylearn.analysis.smoothness import batchnorm_mode_gap, gradient_step_variation
from whylearn.callbacks.sharpness import add_summary, datamodule_split, fixed_subset, network, task_loss_fn
from whylearn.loggers import log_scalars


class GradientPredictiveness(Callback):
    """Every ``every_n_steps`` optimizer steps, move along the gradient and log how much loss and gradient change.

    On a fixed seeded batch of ``num_samples`` training samples, in training mode (Santurkar et al. 2018,
    Fig. 4; :func:`~whylearn.analysis.smoothness.gradient_step_variation`), with step sizes
    eta = ``step_multipliers`` x the current learning rate. Scalars: ``smooth/loss_range`` (variation of the
    loss over the steps), ``smooth/grad_change`` (largest l2 change of the gradient), ``smooth/beta``
    ("effective" beta-smoothness: gradient change per distance moved), ``smooth/grad_norm``. The summary gets
    the mean of each over the run (``smooth/<name>_mean``). Training is not perturbed: parameters, running
    statistics and the RNG stream are restored.

    Args:
        every_n_steps: interval in optimizer steps (also measured at the first step).
        num_samples: the batch (null: the whole training split).
        step_multipliers: eta / lr (the paper moves up to a few times the learning rate; this default,
            0.5x to 4x, is whylearn's choice).
        seed: picks the batch and seeds the noise of stochastic layers during the measurement.
    """

    whylearn_batch_hooks = "per_step"   # reads only trainer.global_step: the fast loop calls it at every step

    def __init__(self, every_n_steps: int = 100, num_samples: int | None = 128,
                 step_multipliers: Sequence[float] = (0.5, 1.0, 2.0, 3.0, 4.0), seed: int = 0) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if not step_multipliers or min(step_multipliers) <= 0:
            raise ValueError(f"step_multipliers must be numbers > 0, got {list(step_multipliers)}")
        self.every_n_steps, self.num_samples = int(every_n_steps), num_samples
        self.step_multipliers, self.seed = [float(m) for m in step_multipliers], int(seed)
        self._last = -1
        self._sums: dict[str, float] = {}
        self._count = 0

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        x, y = fixed_subset(datamodule_split(trainer, "train"), self.num_samples, self.seed)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        r = gradient_step_variation(network(pl_module), x, y, [m * lr for m in self.step_multipliers],
                                    loss_fn=task_loss_fn(pl_module), train_mode=True, seed=self.seed)
        return {f"smooth/{k}": r[k] for k in ("loss_range", "grad_change", "beta", "grad_norm")}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bucket = trainer.global_step // self.every_n_steps
        if bucket != self._last:
            self._last = bucket
            m = self.measure(trainer, pl_module)
            for k, v in m.items():
                self._sums[k] = self._sums.get(k, 0.0) + v
            self._count += 1
            log_scalars(pl_module, m)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._count:
            add_summary(pl_module, {f"{k}_mean": v / self._count for k, v in self._sums.items()})


class BatchNormModeGap(Callback):
    """At the end of fit: test accuracy with batch statistics against running averages, into summary.json.

    :func:`~whylearn.analysis.smoothness.batchnorm_mode_gap` on the test split in batches of
    ``batch_size`` (null: the training batch size). Summary keys ``bn/eval_acc``, ``bn/batch_stats_acc`` and
    ``bn/mode_gap`` (= batch_stats_acc - eval_acc).
    """

    def __init__(self, batch_size: int | None = None, split: str = "test", seed: int = 0) -> None:
        self.batch_size, self.split, self.seed = batch_size, split, int(seed)

    def on_train_end(self, trainer, pl_module) -> None:
        split = datamodule_split(trainer, self.split)
        b = self.batch_size or int(getattr(trainer.datamodule, "batch_size", 128))
        r = batchnorm_mode_gap(network(pl_module), split.x, split.y, max(b, 2), seed=self.seed)
        add_summary(pl_module, {f"bn/{k}": v for k, v in r.items()})

"""Progress in optimizer steps: a rich bar for terminals, a tqdm bar, plain log lines for batch jobs.

whylearn's training loader yields *chunks* of ``steps_per_chunk`` mini-batches and the task takes
their optimizer steps inside one Lightning batch, so Lightning's own bars (which count batches of the
current epoch) show ``Epoch 17/2999 ... 0/1 ... 0.00it/s``. These count ``trainer.global_step``
(optimizer steps) against the steps the whole fit will take (:func:`planned_steps`), show the rate in
steps/s, and show ``train/loss``, ``val/loss`` and ``val/acc``, each with the step it was measured at
where it is older than the current step.
"""

from __future__ import annotations

import logging
import math
import time

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar

from whylearn.loggers import get_history

log = logging.getLogger("whylearn")

KEYS = ("train/loss", "val/loss", "val/acc")
LINE_KEYS = ("train/loss", "val/loss", "val/acc", "gap/acc")


def steps_per_epoch(trainer: L.Trainer) -> int | None:
    """Optimizer steps in one training epoch, estimated from the training loader.

    A whylearn chunk loader has ``num_batches`` mini-batches (= steps) grouped ``steps_per_chunk`` per
    Lightning batch; ``trainer.num_training_batches`` (chunks, after ``limit_train_batches``) caps them.
    Any other loader: one step per batch. None when unknown (an infinite loader).
    """
    chunks = trainer.num_training_batches
    if chunks is None or math.isinf(chunks):
        return None
    loader = trainer.train_dataloader
    k = int(getattr(loader, "steps_per_chunk", 1) or 1)
    steps = int(chunks) * k
    num_batches = getattr(loader, "num_batches", None)
    return min(int(num_batches), steps) if isinstance(num_batches, int) else steps


def planned_steps(trainer: L.Trainer, per_epoch: int | None = None) -> int | None:
    """The optimizer steps the fit will take: ``max_steps`` or ``max_epochs`` x steps per epoch, the smaller.

    ``per_epoch`` (e.g. measured over a whole epoch) overrides :func:`steps_per_epoch`'s estimate.
    None when neither bound is known.
    """
    per_epoch = per_epoch or steps_per_epoch(trainer)
    bounds = []
    if trainer.max_steps is not None and trainer.max_steps > 0:
        bounds.append(int(trainer.max_steps))
    if trainer.max_epochs is not None and trainer.max_epochs > 0 and per_epoch:
        bounds.append(int(trainer.max_epochs) * per_epoch)
    return min(bounds) if bounds else None


def latest(trainer: L.Trainer, pl_module: L.LightningModule, key: str) -> tuple[float, int | None] | None:
    """The newest value of ``key`` and the optimizer step it was logged at (None if never logged).

    Read from the task's history (every value whylearn logs, with its step); a value only in
    ``trainer.callback_metrics`` comes without a step.
    """
    points = get_history(pl_module).data.get(key)
    if points:
        step, value = points[-1]
        return float(value), int(step)
    if key in trainer.callback_metrics:
        return float(trainer.callback_metrics[key]), None
    return None


def _value_text(value: float, step: int | None, now: int | None = None, sep: str = " @ step ") -> str:
    """``0.6100 @ step 4000``; without the step if it is unknown or equals ``now``."""
    text = f"{value:.4f}"
    return text if step is None or step == now else f"{text}{sep}{step}"


class _StepCounter:
    """What the two bars share: the measured steps per epoch and the steps of this segment."""

    def _start_counting(self, trainer: L.Trainer) -> None:
        self._per_epoch: int | None = None
        self._epoch_first_step: int | None = None
        self._t0, self._first_step = time.perf_counter(), trainer.global_step

    def _epoch_started(self, trainer: L.Trainer) -> None:
        self._epoch_first_step = trainer.global_step

    def _epoch_ended(self, trainer: L.Trainer) -> None:
        if self._epoch_first_step is not None and trainer.global_step > self._epoch_first_step:
            self._per_epoch = trainer.global_step - self._epoch_first_step  # measured over a whole epoch
        self._epoch_first_step = None

    def _total(self, trainer: L.Trainer) -> int | None:
        total = planned_steps(trainer, self._per_epoch)
        return None if total is None else max(total, trainer.global_step)

    def _description(self, trainer: L.Trainer) -> str:
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        by_steps = trainer.max_steps is not None and trainer.max_steps > 0
        per_epoch = self._per_epoch or steps_per_epoch(trainer)
        bounded_by_epochs = epochs and (not by_steps or not per_epoch or epochs * per_epoch <= trainer.max_steps)
        return f"Epoch {trainer.current_epoch}" + (f"/{epochs - 1}" if bounded_by_epochs else "")

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        out = {}
        for key in KEYS:
            got = latest(trainer, pl_module, key)
            if got is not None:
                out[key] = _value_text(got[0], got[1], trainer.global_step, sep=" @")
        return out


class StepProgressBar(_StepCounter, RichProgressBar):
    """Lightning's ``RichProgressBar`` counting optimizer steps over the whole fit.

    One training bar from the first to the last step (``<done>/<planned> steps``, elapsed and remaining
    time, ``<rate> steps/s`` over the last 30 s), described ``Epoch <e>/<max_epochs - 1>`` as
    Lightning does, with ``train/loss``, ``val/loss`` and ``val/acc`` (``@<step>`` when the value is older
    than the current step). Validation and test bars count their batches, as Lightning's do. A resumed
    run's bar starts at the checkpoint's step; the rate counts this segment's steps only.
    """

    def configure_columns(self, trainer: L.Trainer) -> list:
        from lightning.pytorch.callbacks.progress.rich_progress import CustomBarColumn, CustomTimeColumn
        from rich.progress import ProgressColumn, TextColumn
        from rich.text import Text

        bar = self

        class Count(ProgressColumn):
            def render(self, task) -> Text:
                total = "--" if task.total is None or math.isinf(task.total) else int(task.total)
                unit = " steps" if task.id == bar.train_progress_bar_id else ""
                return Text(f"{int(task.completed)}/{total}{unit}", style=bar.theme.batch_progress)

        class Speed(ProgressColumn):
            def render(self, task) -> Text:
                speed = task.speed
                if task.id == bar.train_progress_bar_id:
                    return Text(f"{speed:.0f} steps/s" if speed else "-- steps/s", style=bar.theme.processing_speed)
                return Text(f"{speed:.2f}it/s" if speed else "", style=bar.theme.processing_speed)

        return [
            TextColumn("[progress.description]{task.description}"),
            CustomBarColumn(complete_style=self.theme.progress_bar, finished_style=self.theme.progress_bar_finished,
                            pulse_style=self.theme.progress_bar_pulse),
            Count(),
            CustomTimeColumn(style=self.theme.time),
            Speed(),
        ]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_counting(trainer)
        super().on_train_start(trainer, pl_module)

    def _initialize_train_progress_bar_id(self) -> None:
        trainer = self.trainer
        self.train_progress_bar_id = self.progress.add_task(
            self._description(trainer), total=self._total(trainer), completed=trainer.global_step)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started(trainer)
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        else:
            self.progress.update(self.train_progress_bar_id, total=self._total(trainer),
                                 description=self._description(trainer), visible=True)
        self.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:  # resumed mid-epoch: no on_train_epoch_start
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_ended(trainer)
        if not self.is_disabled and self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, total=self._total(trainer))
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        return self._metrics(trainer, pl_module)


class StepTQDMProgressBar(_StepCounter, TQDMProgressBar):
    """Lightning's ``TQDMProgressBar`` counting optimizer steps over the whole fit (``progress=tqdm``).

    Same counts and values as :class:`StepProgressBar`, in tqdm's format (``<done>/<planned>
    [elapsed<remaining, <rate>step/s, train/loss=..., val/loss=... @<step>]``).
    """

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.unit = "step"
        return bar

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_counting(trainer)
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=self._total(trainer))
        bar.initial = bar.n = trainer.global_step

    def on_train_epoch_start(self, trainer: L.Trainer, *_) -> None:
        self._epoch_started(trainer)
        self.train_progress_bar.total = self._total(trainer)
        self.train_progress_bar.set_description(self._description(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.is_enabled and (batch_idx + 1) % self.refresh_rate == 0:
            bar = self.train_progress_bar
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_ended(trainer)
        self.train_progress_bar.total = self._total(trainer)
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        return self._metrics(trainer, pl_module)


class LogLines(Callback):
    """Every ``every_n_seconds`` (and at the end of fit), log one line for runs without a terminal
    (batch jobs, CI, SLURM logs)::

        epoch 3 | step 120/400 | 812 steps/s | train/loss 0.3100 @ step 120 | val/loss 0.4512 @ step 80 | ...

    Each value is the newest logged one, with the optimizer step it was measured at (validation runs
    every ``check_val_every_n_epoch`` epochs, so between two validations the line shows the previous
    one's numbers, and says so). The rate counts this segment's steps (a resumed run's
    steps before its checkpoint are not in it).
    """

    whylearn_batch_hooks = "per_chunk"  # a line at most every n seconds: once per chunk is as good (whylearn.tasks.loop)

    def __init__(self, every_n_seconds: float = 10.0) -> None:
        if not every_n_seconds >= 0:
            raise ValueError(f"every_n_seconds must be >= 0, got {every_n_seconds!r}")
        self.every_n_seconds = every_n_seconds
        self._t0 = self._last = 0.0
        self._first_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = self._last = time.perf_counter()
        self._first_step = trainer.global_step

    def _line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        now = trainer.global_step
        total = planned_steps(trainer)
        parts = [f"epoch {trainer.current_epoch}", f"step {now}" + (f"/{total}" if total else ""),
                 f"{(now - self._first_step) / elapsed:.0f} steps/s"]
        for key in LINE_KEYS:
            got = latest(trainer, pl_module, key)
            if got is not None:
                parts.append(f"{key} {_value_text(*got)}")
        return " | ".join(parts)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every_n_seconds:
            self._last = now
            log.info(self._line(trainer, pl_module))

    def on_train_end(self, trainer, pl_module) -> None:
        log.info(self._line(trainer, pl_module))

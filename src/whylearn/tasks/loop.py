"""The fast loop: K optimizer steps inside one Lightning training step, with every Lightning meaning kept.

A whylearn datamodule's training batch is a :class:`~whylearn.data.base.Chunk` of K mini-batches
(``data.steps_per_chunk``). In the *fast loop*, :class:`~whylearn.tasks.base.FastTask` runs their K
optimizer steps inside one ``training_step`` (Lightning's manual optimization), stepping the torch
optimizer directly: for the small models of most experiments Lightning's per-batch machinery costs
more than the arithmetic (``docs/benchmarks.md``). The rule is that chunking is invisible: a fit with
the default K and the same fit with K=1 give the same checkpoints at the same steps, the same logged
``(key, step, value)`` rows, the same hook calls per optimizer step and the same parameters
(``tests/tasks/test_lightning_conformance.py``).

Honoured natively in the fast loop, per optimizer step:

- ``trainer.global_step``, ``max_steps``, ``min_steps`` with ``should_stop``, and the step used by
  Lightning's loggers count optimizer steps;
- the hooks ``on_before_zero_grad``, ``on_before_backward``, ``on_after_backward`` and
  ``on_before_optimizer_step`` of callbacks *and* of the LightningModule, in Lightning's order
  (only those that override a hook are called, decided once when training starts);
- precision plugins: autocast (``bf16-mixed``, ``16-mixed``), ``64-true``/``16-true``, and a
  GradScaler (``16-mixed``): the loss is scaled for backward, the gradients are unscaled before
  ``on_before_optimizer_step`` and clipping, the step goes through the scaler (which skips steps
  with inf/NaN gradients) and the scale is updated, as Lightning's ``MixedPrecision`` does;
- gradient clipping after ``on_before_optimizer_step``: ``task.gradient_clip_val`` or Lightning's
  ``Trainer(gradient_clip_val=..., gradient_clip_algorithm=...)`` (mapped onto the task's clipping);
- step-interval LR schedulers after each step; the logged ``lr`` is the one used by that step;
- callbacks whose ``on_train_batch_start/end`` have a per-step meaning that whylearn knows
  (``LearningRateMonitor``, ``Timer``, ``DeviceStatsMonitor``, and callbacks that declare
  ``whylearn_batch_hooks = "per_step"``): called at every optimizer step with that step's
  mini-batch; callbacks for which one call per chunk means the same (``ModelCheckpoint`` without
  step or time triggers, progress bars, ``whylearn_batch_hooks = "per_chunk"``) once per chunk.

Where the fast loop cannot honour a feature, the task notices it when the fit starts and runs that
fit with Lightning's own loop (automatic optimization, one mini-batch per Lightning batch, i.e.
K=1), saying so in one log line that names the feature(s):

- ``ModelCheckpoint(every_n_train_steps=...)`` or ``ModelCheckpoint(train_time_interval=...)``;
- any other callback, or a task subclass, that overrides ``on_train_batch_start/end``;
- ``val_check_interval`` other than 1.0 (an int, a fraction or a time), ``limit_train_batches``
  other than 1.0, ``overfit_batches``, ``fast_dev_run`` (they count batches);
- ``accumulate_grad_batches`` other than 1;
- a strategy other than one device (DDP, FSDP, ...), a precision plugin other than the above;
- a task subclass that overrides ``optimizer_step``, ``optimizer_zero_grad``, ``backward``,
  ``configure_gradient_clipping`` or ``lr_scheduler_step``.

A plain ``DataLoader`` of ``(x, y)`` batches works too: each batch is one optimizer step.

What still differs from plain Lightning (in both loops):

- whylearn's own scalars (``log_scalars``) are logged at the number of optimizer steps taken
  *after* the step (1, 2, ...); Lightning's ``self.log`` and ``LearningRateMonitor`` rows use the
  number taken *before* it (0, 1, ...), as in any Lightning run.
- epoch-interval LR schedulers step in the task's ``on_train_epoch_end``, before checkpoint
  callbacks save (Lightning steps them after, so an epoch-end checkpoint would resume without
  that step).
- ``self.log`` inside the training step or in per-step hooks writes one row per chunk in the
  fast loop (a warning says so once); use :func:`whylearn.loggers.log_scalars`.
- the ``batch`` seen by per-chunk callbacks and by progress bars is the chunk, and progress
  bars count chunks.
- in the fast loop, ``trainer.callback_metrics["train/loss"]`` is updated at the end of each chunk.
- a fit that stops inside a chunk (``max_steps``, or ``should_stop`` set by a per-step callback)
  and is later resumed from that checkpoint continues at the next chunk (the rest of the stopped
  chunk is skipped; a warning says so at resume). Stops by signal (:class:`whylearn.runs.preemption.GracefulStop`)
  always happen at a chunk boundary and resume exactly.

:class:`LightningInternals` is the only place in whylearn that touches Lightning's (and
torchmetrics') private internals; ``tests/tasks/test_lightning_conformance.py`` checks every one of them
exists, so a Lightning upgrade that moves one fails loudly there.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from whylearn.data.base import Chunk
from whylearn.loggers import log_scalars

log = logging.getLogger("whylearn")

PER_STEP, PER_CHUNK = "per_step", "per_chunk"
STEP_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")
BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end")
# task methods with which a subclass takes over a part of Lightning's automatic step: honoured by Lightning's loop
MODULE_STEP_METHODS = ("optimizer_step", "optimizer_zero_grad", "backward", "configure_gradient_clipping",
                       "lr_scheduler_step", "on_train_batch_start", "on_train_batch_end")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stops, saved checkpoints are kept."""


# -- the adapter: every private internal in one place ------------------------------------------------
class LightningInternals:
    """Lightning's and torchmetrics' private internals that whylearn relies on, and nothing else.

    Lightning 2.6 has no public API for these; each is one line here so that a Lightning upgrade
    that moves one breaks one place, which :meth:`check` (run by the conformance tests) reports.

    - the manual-optimization step counter (``trainer.global_step`` counts its completed steps);
    - ``epoch_loop._batches_that_stepped``, the step Lightning's loggers and ``LearningRateMonitor`` use;
    - the epoch loop's and fit loop's stop and validation decisions, to choose where a stop saves;
    - the loop state in a checkpoint (``checkpoint["loops"]``), to mark an epoch as fully ended;
    - the logger connector, to write the epoch's ``self.log`` values before a stop at an epoch end,
      and to notice ``self.log`` calls during a chunk;
    - ``ModelCheckpoint``'s step and time triggers and the trainer's time-based ``val_check_interval``,
      to decide which loop a fit runs, and ``LightningModule._trainer`` (None when not attached);
    - torchmetrics' ``Metric._update_count`` and ``Metric._computed``, saved with a mid-epoch checkpoint.
    """

    def __init__(self, trainer: L.Trainer) -> None:
        self.trainer = trainer
        self.fit_loop = trainer.fit_loop
        self.epoch_loop = trainer.fit_loop.epoch_loop
        self.step_progress = self.epoch_loop.manual_optimization.optim_step_progress

    # progress counters
    def count_steps(self, n: int = 1) -> None:
        """Count ``n`` optimizer steps (``trainer.global_step`` grows by ``n``)."""
        progress = self.step_progress
        for _ in range(n):
            progress.increment_ready()
            progress.increment_completed()

    def steps_taken(self) -> int:
        return self.step_progress.total.completed

    def sync_step_counters(self, manual: bool) -> None:
        """Carry the step count over from the other optimization mode's counter (a checkpoint saved by a fit
        that ran the other loop), so ``trainer.global_step`` continues where it was."""
        automatic = self.epoch_loop.automatic_optimization.optim_progress.optimizer.step
        src, dst = (automatic, self.step_progress) if manual else (self.step_progress, automatic)
        if dst.total.completed < src.total.completed:
            dst.load_state_dict(src.state_dict())

    def set_logging_step(self, n: int) -> None:
        """Set the step Lightning's loggers use (``_batches_that_stepped``): the optimizer steps taken before."""
        self.epoch_loop._batches_that_stepped = n

    # stop decisions
    def can_stop_early(self) -> bool:
        return self.fit_loop._can_stop_early

    def epoch_ends_after_batch(self) -> bool:
        """Whether Lightning's epoch loop ends after the current batch (last batch, max_steps, or a stop)."""
        loop = self.epoch_loop
        return bool(loop._is_training_done or loop.batch_progress.is_last_batch
                    or (self.trainer.should_stop and self.fit_loop._can_stop_early))

    def fit_ends_after_epoch(self) -> bool:
        """In ``on_train_epoch_end``: whether the fit ends after this epoch (max_epochs, max_steps or a stop)."""
        fit_loop, trainer = self.fit_loop, self.trainer
        max_epochs = fit_loop.max_epochs
        return bool((trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step)
                    or (max_epochs is not None and max_epochs >= 0 and fit_loop.epoch_progress.current.processed >= max_epochs)
                    or (trainer.should_stop and fit_loop._can_stop_early))

    def epoch_finished(self) -> bool:
        """In ``on_train_epoch_end``: whether the epoch ran to its last batch (not cut short by max_steps or a stop)."""
        return bool(self.epoch_loop.batch_progress.is_last_batch)

    @staticmethod
    def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
        """The trainer a LightningModule is attached to, or None (``module.trainer`` raises when there is none)."""
        return module._trainer

    def validation_due_after_batch(self) -> bool:
        """Whether Lightning validates after the current batch (``val_check_interval``), before its next batch."""
        fetcher = self.fit_loop._data_fetcher
        return fetcher is not None and bool(self.epoch_loop._should_check_val_fx(fetcher))

    def training_logged_with_self_log(self) -> bool:
        """Whether ``self.log(on_step=True)`` was called during training (Lightning's training results hold it)."""
        return any(getattr(getattr(r, "meta", None), "on_step", False) for r in self.epoch_loop._results.values())

    def finish_epoch_logging(self) -> None:
        """Write the epoch's ``self.log(on_epoch=True)`` values now, as Lightning does after ``on_train_epoch_end``."""
        connector = self.trainer._logger_connector
        connector.epoch_end_reached()
        connector.on_epoch_end()
        self.epoch_loop._batches_that_stepped -= 1
        connector.update_train_epoch_metrics()
        self.epoch_loop._batches_that_stepped += 1

    @staticmethod
    def saved_after_full_epoch(checkpoint: dict) -> bool:
        """Whether a checkpoint was saved in ``on_train_epoch_end`` of an epoch that ran to its last batch
        (e.g. ``ModelCheckpoint``'s epoch-end save): the epoch is processed but not yet completed.

        Lightning 2.6 resumes such a checkpoint as one saved inside the epoch's end when ``max_steps`` is
        set (iteration-based training): it runs that epoch's end again and counts it as the next epoch,
        so the resumed fit loses one epoch of training. :meth:`mark_epoch_ended` makes it resume between
        the two epochs, as Lightning does without ``max_steps``.
        """
        fit_loop = checkpoint.get("loops", {}).get("fit_loop")
        if not fit_loop or "epoch_progress" not in fit_loop or "epoch_loop.batch_progress" not in fit_loop:
            return False
        epochs = fit_loop["epoch_progress"]["total"]
        return bool(epochs["ready"] == epochs["started"] == epochs["processed"] == epochs["completed"] + 1
                    and fit_loop["epoch_loop.batch_progress"]["is_last_batch"])

    @staticmethod
    def mark_epoch_ended(checkpoint: dict) -> None:
        """Make a checkpoint saved in ``on_train_epoch_end`` (after the task's and the checkpoint callbacks'
        epoch end) resume as a fit between two epochs: the next epoch starts fresh.

        Lightning 2.6 would otherwise treat it as saved mid-epoch-end when ``max_steps`` is set, and
        run the epoch end (and one training batch) again on resume.
        """
        fit_loop = checkpoint["loops"]["fit_loop"]
        epochs = fit_loop["epoch_progress"]
        for part in ("total", "current"):
            epochs[part]["completed"] = epochs[part]["processed"]
        batches = fit_loop["epoch_loop.batch_progress"]
        for key in ("ready", "started", "processed", "completed"):
            batches["current"][key] = 0
        batches["is_last_batch"] = False

    @staticmethod
    def val_check_time_interval(trainer: L.Trainer) -> Any:
        """A time-based ``val_check_interval`` (Lightning 2.6 keeps it apart from the batch-based one), or None."""
        return getattr(trainer, "_val_check_time_interval", None)

    @staticmethod
    def checkpoint_step_triggers(cb: Any) -> tuple[int, Any]:
        """``(every_n_train_steps, train_time_interval)`` of a ModelCheckpoint (kept in private attributes)."""
        return int(cb._every_n_train_steps or 0), cb._train_time_interval

    # torchmetrics
    @staticmethod
    def metric_state(metric: Any) -> tuple[dict, int]:
        return dict(metric.metric_state), int(metric._update_count)

    @staticmethod
    def load_metric_state(metric: Any, values: dict, count: int) -> None:
        for k, v in values.items():
            setattr(metric, k, v)
        metric._update_count, metric._computed = count, None

    @classmethod
    def check(cls) -> list[str]:
        """Names of the internals above that this Lightning/torchmetrics no longer has (empty: all present)."""
        import torchmetrics
        from lightning.pytorch.callbacks import ModelCheckpoint

        problems = []
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", devices=1)
        fit_loop, epoch_loop = trainer.fit_loop, trainer.fit_loop.epoch_loop
        wanted = {
            "fit_loop.epoch_loop.manual_optimization.optim_step_progress.total.completed":
                lambda: epoch_loop.manual_optimization.optim_step_progress.total.completed,
            "optim_step_progress.increment_ready/increment_completed":
                lambda: (epoch_loop.manual_optimization.optim_step_progress.increment_ready,
                         epoch_loop.manual_optimization.optim_step_progress.increment_completed),
            "epoch_loop._batches_that_stepped": lambda: epoch_loop._batches_that_stepped,
            "fit_loop._can_stop_early": lambda: type(fit_loop)._can_stop_early,
            "fit_loop.epoch_progress.current.processed": lambda: fit_loop.epoch_progress.current.processed,
            "epoch_loop._is_training_done": lambda: type(epoch_loop)._is_training_done,
            "epoch_loop.batch_progress.is_last_batch": lambda: epoch_loop.batch_progress.is_last_batch,
            "epoch_loop._should_check_val_fx": lambda: epoch_loop._should_check_val_fx,
            "fit_loop._data_fetcher": lambda: fit_loop._data_fetcher,
            "trainer._val_check_time_interval": lambda: trainer._val_check_time_interval,
            "LightningModule._trainer": lambda: L.LightningModule()._trainer,
            "ModelCheckpoint._every_n_train_steps/_train_time_interval":
                lambda: cls.checkpoint_step_triggers(ModelCheckpoint(every_n_train_steps=3)),
            "epoch_loop._results (values with .meta.on_step)": lambda: epoch_loop._results.values(),
            "epoch_loop.automatic_optimization.optim_progress.optimizer.step":
                lambda: epoch_loop.automatic_optimization.optim_progress.optimizer.step.total.completed,
            "trainer._logger_connector.{epoch_end_reached,on_epoch_end,update_train_epoch_metrics}":
                lambda: (trainer._logger_connector.epoch_end_reached, trainer._logger_connector.on_epoch_end,
                         trainer._logger_connector.update_train_epoch_metrics),
        }
        for name, get in wanted.items():
            try:
                get()
            except AttributeError as e:
                problems.append(f"{name}: {e}")
        state = fit_loop.state_dict()
        for key in ("epoch_progress", "epoch_loop.batch_progress"):
            if key not in state:
                problems.append(f"checkpoint['loops']['fit_loop'][{key!r}] is gone (keys: {sorted(state)})")
        if "epoch_progress" in state and not {"total", "current"} <= set(state["epoch_progress"]):
            problems.append(f"epoch_progress state has no total/current: {state['epoch_progress']}")
        if "epoch_loop.batch_progress" in state and "is_last_batch" not in state["epoch_loop.batch_progress"]:
            problems.append("epoch_loop.batch_progress state has no is_last_batch")
        m = torchmetrics.MeanMetric()
        m.update(torch.tensor(1.0))
        for attr in ("_update_count", "_computed", "metric_state"):
            if not hasattr(m, attr):
                problems.append(f"torchmetrics.Metric.{attr} is gone")
        return problems


def count_steps(trainer: L.Trainer, n: int = 1) -> None:
    """Count ``n`` optimizer steps in Lightning's progress tracker (``trainer.global_step``), for tasks
    that update by hand (learning rules, sweep points) instead of through a torch optimizer."""
    LightningInternals(trainer).count_steps(n)


# -- which loop a fit runs ------------------------------------------------------------------------------
def _overrides(obj: Any, hook: str, base: type) -> bool:
    """Whether ``obj`` (a callback or module) replaces ``base.<hook>``, by its class or by an instance attribute."""
    if hook in getattr(obj, "__dict__", {}):
        return not getattr(obj.__dict__[hook], "_whylearn_skip", False)
    return getattr(type(obj), hook, None) is not getattr(base, hook, None)


def batch_hook_mode(cb: Callback) -> str | None:
    """How a callback that overrides ``on_train_batch_start/end`` is called in the fast loop:
    ``per_step``, ``per_chunk``, or ``None`` (it needs Lightning's own loop). ``"none"``: it does not override them."""
    if not any(_overrides(cb, h, Callback) for h in BATCH_HOOKS):
        return "none"
    declared = getattr(cb, "whylearn_batch_hooks", None)
    if declared in (PER_STEP, PER_CHUNK):
        return declared
    from lightning.pytorch.callbacks import (
        DeviceStatsMonitor,
        LearningRateMonitor,
        ModelCheckpoint,
        ProgressBar,
        Timer,
    )

    if isinstance(cb, ModelCheckpoint):
        steps, interval = LightningInternals.checkpoint_step_triggers(cb)
        return None if steps > 0 or interval is not None else PER_CHUNK
    if isinstance(cb, (LearningRateMonitor, Timer, DeviceStatsMonitor)):
        return PER_STEP
    if isinstance(cb, ProgressBar):
        return PER_CHUNK
    return None


def _describe_callback(cb: Callback) -> str:
    from lightning.pytorch.callbacks import ModelCheckpoint

    if isinstance(cb, ModelCheckpoint):
        steps, interval = LightningInternals.checkpoint_step_triggers(cb)
        return f"ModelCheckpoint(every_n_train_steps={steps})" if steps else f"ModelCheckpoint(train_time_interval={interval})"
    hooks = [h for h in BATCH_HOOKS if _overrides(cb, h, Callback)]
    return f"callback {type(cb).__name__} (overrides {'/'.join(hooks)})"


def lightning_loop_reasons(trainer: L.Trainer, module: L.LightningModule, base: type) -> list[str]:
    """The features of this fit that the fast loop cannot honour (empty: the fast loop runs)."""
    from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy

    reasons = []
    if not isinstance(trainer.strategy, SingleDeviceStrategy) or trainer.world_size > 1:
        reasons.append(f"strategy {type(trainer.strategy).__name__} ({trainer.world_size} processes)")
    if type(trainer.precision_plugin) not in (Precision, MixedPrecision, DoublePrecision, HalfPrecision):
        reasons.append(f"precision plugin {type(trainer.precision_plugin).__name__}")
    if trainer.fast_dev_run:
        reasons.append(f"fast_dev_run={trainer.fast_dev_run}")
    else:
        if trainer.limit_train_batches != 1.0:
            reasons.append(f"limit_train_batches={trainer.limit_train_batches}")
        if trainer.overfit_batches:
            reasons.append(f"overfit_batches={trainer.overfit_batches}")
        vci = trainer.val_check_interval
        if LightningInternals.val_check_time_interval(trainer) is not None or vci != 1.0 or isinstance(vci, int):
            reasons.append(f"val_check_interval={vci!r}")
    if trainer.accumulate_grad_batches != 1:
        reasons.append(f"accumulate_grad_batches={trainer.accumulate_grad_batches}")
    for cb in trainer.callbacks:
        if batch_hook_mode(cb) is None:
            reasons.append(_describe_callback(cb))
    for name in MODULE_STEP_METHODS:
        if getattr(type(module), name) is not getattr(base, name):
            reasons.append(f"{type(module).__name__}.{name}")
    return reasons


# -- the loop itself ---------------------------------------------------------------------------------
def _skip_hook(*args: Any, **kwargs: Any) -> None:
    return None


_skip_hook._whylearn_skip = True  # type: ignore[attr-defined]


class FastLoop:
    """The state of one fit's fast loop, built when training starts: the optimizer, scheduler, scaler,
    clipping, and the lists of hooks to call at each step (only those that are overridden)."""

    def __init__(self, task: Any, clip_val: float | None, clip_algorithm: str) -> None:
        trainer = task.trainer
        self.task, self.trainer = task, trainer
        self.internals = LightningInternals(trainer)
        self.opt = task.optimizers().optimizer  # the torch optimizer: no per-step wrapper
        self.sched = task.lr_schedulers() if task.scheduler_factory is not None and task.scheduler_interval == "step" else None
        plugin = trainer.precision_plugin
        self.scaler = getattr(plugin, "scaler", None)
        self.clip_val, self.clip_algorithm = clip_val, clip_algorithm
        self.clip_params = [p for group in self.opt.param_groups for p in group["params"]]
        self.max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps >= 0 else math.inf
        base = L.LightningModule
        hooks: dict[str, list[Callable]] = {}
        for name in STEP_HOOKS:  # callbacks first, then the module, as Lightning calls them
            fns: list[Callable] = []
            for cb in trainer.callbacks:
                if _overrides(cb, name, Callback):
                    fn = getattr(cb, name)
                    fns.append(lambda *a, _fn=fn: _fn(trainer, task, *a))
            if getattr(type(task), name) is not getattr(base, name):
                fns.append(getattr(task, name))
            hooks[name] = fns
        self.zero_grad_hooks = tuple(hooks["on_before_zero_grad"])
        self.before_backward_hooks = tuple(hooks["on_before_backward"])
        self.after_backward_hooks = tuple(hooks["on_after_backward"])
        self.before_step_hooks = tuple(hooks["on_before_optimizer_step"])
        # per-step batch hooks: called here at each step; Lightning's once-per-chunk call is skipped
        self.shadowed: list[tuple[Callback, str]] = []
        starts, ends = [], []
        for cb in trainer.callbacks:
            if batch_hook_mode(cb) != PER_STEP:
                continue
            for name, fns in (("on_train_batch_start", starts), ("on_train_batch_end", ends)):
                if _overrides(cb, name, Callback):
                    fns.append(getattr(cb, name))
                    cb.__dict__[name] = _skip_hook
                    self.shadowed.append((cb, name))
        self.batch_start_hooks, self.batch_end_hooks = tuple(starts), tuple(ends)
        self.any_step_hooks = bool(self.zero_grad_hooks or self.before_backward_hooks or self.after_backward_hooks
                                   or self.before_step_hooks or starts or ends)
        self.warned_self_log = False

    def restore(self) -> None:
        """Give the per-step callbacks their own ``on_train_batch_start/end`` back."""
        for cb, name in self.shadowed:
            if cb.__dict__.get(name) is _skip_hook:
                del cb.__dict__[name]
        self.shadowed = []

    def run(self, xs: Any, ys: Any, offset: int) -> None:
        """Run the optimizer steps of one chunk (``xs``, ``ys``: K mini-batches); ``offset``: the index in the
        epoch of its first mini-batch (the ``batch_idx`` per-step callbacks see)."""
        task, trainer, internals = self.task, self.trainer, self.internals
        opt, sched, scaler = self.opt, self.sched, self.scaler
        progress = internals.step_progress
        first = progress.total.completed
        n = min(len(xs), self.max_steps - first)
        if n <= 0:
            return
        every = task.log_every_n_steps
        due = {i for i in range(n) if (first + i + 1) % every == 0}
        lrs: dict[int, float] = {}
        group0 = opt.param_groups[0]
        step_loss = task.step_loss
        zero_grad_hooks, before_backward_hooks = self.zero_grad_hooks, self.before_backward_hooks
        after_backward_hooks, before_step_hooks = self.after_backward_hooks, self.before_step_hooks
        start_hooks, end_hooks = self.batch_start_hooks, self.batch_end_hooks
        clip_val = self.clip_val
        hooked = self.any_step_hooks
        task._chunk_start = first
        losses: list[Tensor] = []
        kept: list[Any] = []
        for i in range(n):
            x, y = xs[i], ys[i]
            if start_hooks:
                internals.set_logging_step(first + i)
                for fn in start_hooks:
                    fn(trainer, task, (x, y), offset + i)
            loss, keep = step_loss(x, y)
            for fn in zero_grad_hooks:
                fn(opt)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaled = scaler.scale(loss)
                for fn in before_backward_hooks:
                    fn(scaled)
                scaled.backward()
            else:
                for fn in before_backward_hooks:
                    fn(loss)
                loss.backward()
            for fn in after_backward_hooks:
                fn()
            if scaler is not None:
                scaler.unscale_(opt)
            for fn in before_step_hooks:
                fn(opt)
            if clip_val is not None:
                self.clip()
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            progress.increment_ready()
            progress.increment_completed()
            if i in due:
                lrs[i] = group0["lr"]
            if sched is not None:
                sched.step()
            losses.append(loss.detach())
            kept.append(keep)
            if hooked:
                for fn in end_hooks:
                    fn(trainer, task, None, (x, y), offset + i)
                if trainer.should_stop and internals.can_stop_early():
                    break
        task._stopped_inside_chunk = len(losses) < len(xs)
        self.finish_chunk(first, losses, kept, lrs)

    def clip(self) -> None:
        if self.clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.clip_params, self.clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(self.clip_params, self.clip_val)

    def finish_chunk(self, first: int, losses: list[Tensor], kept: list[Any], lrs: dict[int, float]) -> None:
        task, trainer = self.task, self.trainer
        stacked = torch.stack(losses)
        check_finite(stacked, first, trainer.current_epoch)
        task._epoch_loss_sum += stacked.double().sum()  # float64: exact, whatever the chunking
        task._epoch_steps += len(losses)
        if lrs:
            for i, lr in lrs.items():
                log_scalars(task, {"train/loss": stacked[i], "lr": lr, **task.step_scalars(kept[i])}, step=first + i + 1)
        task.on_chunk_end(kept)
        # Lightning adds one after the batch: its loggers then use the number of optimizer steps taken
        self.internals.set_logging_step(first + len(losses) - 1)
        if len(losses) > 1 and not self.warned_self_log and self.internals.training_logged_with_self_log():
            self.warned_self_log = True
            warnings.warn(
                "self.log was called during a whylearn training step (or a per-step hook): in the fast loop it "
                "writes one row per chunk of optimizer steps, not one per step. Log per-step values with "
                "whylearn.loggers.log_scalars(pl_module, {...}, step=...) (what whylearn's tasks and callbacks do), "
                "or set data.steps_per_chunk=1.", stacklevel=2)


def check_finite(losses: Tensor, first: int, epoch: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first step whose loss (in ``losses``, steps first+1...) is not finite."""
    if not bool(torch.isfinite(losses).all()):
        bad = int((~torch.isfinite(losses)).nonzero()[0, 0])
        raise NonFiniteLossError(
            f"training loss is {losses[bad].item()} at step {first + bad} (epoch {epoch}); "
            f"training stopped. Checkpoints saved before this step are kept; try a smaller learning rate "
            f"or init_scale, or gradient clipping (task.gradient_clip_val)."
        )


def as_steps(batch: Any) -> tuple[Any, Any]:
    """``(xs, ys)`` of a training batch: a :class:`Chunk`, or a plain ``(x, y)`` batch taken as one step.

    Raises:
        TypeError: the batch is neither, naming what was received and what a whylearn task expects.
    """
    if isinstance(batch, Chunk):
        return batch.xs, batch.ys
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch):
        x, y = batch
        if x.shape[:1] == y.shape[:1]:
            return (x,), (y,)
        raise TypeError(
            f"a whylearn task got a training batch (x, y) whose inputs and targets disagree on the batch size: "
            f"x {tuple(x.shape)}, y {tuple(y.shape)}. A plain DataLoader must yield (x, y) pairs of one mini-batch "
            f"(x: (B, ...), y: (B, ...)); whylearn's datamodules yield Chunk(xs, ys) of K mini-batches.")
    what = type(batch).__name__
    if isinstance(batch, (tuple, list)):
        what += f" of {len(batch)} " + ", ".join(type(t).__name__ for t in batch)
    elif isinstance(batch, dict):
        what += f" with keys {sorted(batch)}"
    raise TypeError(
        f"a whylearn task got a training batch it cannot read: {what}. It expects either a "
        f"whylearn.data.Chunk(xs, ys) of K mini-batches (what whylearn's datamodules yield) or a plain "
        f"(x, y) pair of tensors of one mini-batch, e.g. from DataLoader(TensorDataset(x, y), batch_size=B), "
        f"which is one optimizer step.")

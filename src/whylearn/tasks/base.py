"""What every whylearn task shares: the fast inner loop, scalar logging keyed on optimizer steps, history.

A Lightning "batch" of a whylearn datamodule is a :class:`~whylearn.data.base.Chunk` of K mini-batches
(``steps_per_chunk``). :class:`FastTask` runs their K optimizer steps inside one ``training_step``
(:mod:`whylearn.tasks.loop`, the fast loop), and keeps every Lightning meaning: ``trainer.global_step``,
``max_steps``, checkpoints, schedulers, precision, the per-step hooks of callbacks and of the module
count and see optimizer steps. A fit that uses a Lightning feature the fast loop cannot honour runs
Lightning's own loop instead (one mini-batch per batch), saying so in one log line; the list of both
is in :mod:`whylearn.tasks.loop`.

All scalars go through :func:`whylearn.loggers.log_scalars` (re-exported here, with
:class:`~whylearn.loggers.History`, :func:`~whylearn.loggers.get_history` and
:func:`~whylearn.loggers.flush_logs`): they are sent to every logger with ``step = trainer.global_step``,
put in ``trainer.callback_metrics`` (so checkpoint monitors see them) and kept in a :class:`History`
that the figures and ``summary.json`` are drawn from and that is saved in checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torchmetrics
from lightning.pytorch.callbacks import Callback  # noqa: F401  (re-exported for older imports)
from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus
from torch import Tensor

from whylearn.loggers import History, flush_logs, get_history, log_scalars, restore_pending  # noqa: F401
from whylearn.tasks.loop import (  # noqa: F401  (re-exported)
    FastLoop,
    LightningInternals,
    NonFiniteLossError,
    as_steps,
    check_finite,
    count_steps,
    lightning_loop_reasons,
)

log = logging.getLogger("whylearn")


class SplitEval:
    """Mixin for tasks that evaluate validation and test alike: ``validation_step`` and ``test_step``
    call ``_eval_step(split, batch)`` (``split`` is ``"val"`` or ``"test"``), and the epoch ends call
    ``_eval_end(split)``, which logs the split's numbers."""

    def _eval_step(self, split: str, batch) -> None:
        raise NotImplementedError

    def _eval_end(self, split: str) -> None:
        raise NotImplementedError

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")


class HistoryInCheckpoint(L.LightningModule):
    """Base of the tasks that apply a rule by hand or run a measurement: no optimizer, and the
    :class:`History` saved in (and restored from) checkpoints."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        flush_logs(self)
        checkpoint["whylearn_history"] = get_history(self).state_dict()
        if LightningInternals.saved_after_full_epoch(checkpoint):  # as FastTask.on_save_checkpoint
            LightningInternals.mark_epoch_ended(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "whylearn_history" in checkpoint:
            get_history(self).load_state_dict(checkpoint["whylearn_history"])
        restore_pending(self, checkpoint.get("whylearn_pending"))

    def configure_optimizers(self):
        return None


def _detach(v):
    return [t.detach().cpu() for t in v] if isinstance(v, list) else v.detach().cpu()


def _to(v, device):
    return [t.to(device) for t in v] if isinstance(v, list) else v.to(device)


def rng_state() -> dict:
    """This process's global RNG states (torch, CUDA, numpy, random) as tensors and plain tuples,
    so a checkpoint holding them still loads with ``torch.load(weights_only=True)``."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": (version, torch.tensor(py_state, dtype=torch.int64), py_gauss),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` recorded."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in py_state.tolist()), py_gauss))


class FastTask(L.LightningModule):
    """Base LightningModule for whylearn tasks: K optimizer steps per Lightning step (:mod:`whylearn.tasks.loop`).

    Subclasses implement :meth:`step_loss` (loss and anything to keep for metrics
    of one mini-batch) and the evaluation hooks.

    Args:
        optimizer: a callable taking parameters (or parameter groups) and returning a
            ``torch.optim.Optimizer`` (Hydra: ``_partial_: true``).
        scheduler: optional callable taking the optimizer and returning an LR scheduler.
        scheduler_interval: ``step`` (default) or ``epoch``.
        log_every_n_steps: interval of the per-step ``train/loss`` and ``lr`` scalars.
        gradient_clip_val: clip the gradients to this value (None: off), after the
            ``on_before_optimizer_step`` hooks, as Lightning's ``Trainer(gradient_clip_val=...)``
            does (which, if set instead, is applied the same way).
        gradient_clip_algorithm: ``norm`` (the global L2 norm, default) or ``value``.
        compile: compile the model with ``torch.compile`` when the fit, validation or test starts:
            ``True`` (TorchInductor, the default backend), ``False``, or the name of a backend
            (``torch.compiler.list_backends()``, e.g. ``aot_eager``). ``nn.Module.compile`` is used,
            so parameter names and checkpoints are the same as without.

    Raises:
        ValueError: an unknown ``scheduler_interval``, ``gradient_clip_algorithm`` or compile backend.
    """

    #: False for tasks whose gradients must not be clipped as a whole (the ensemble: it would couple members)
    clips_gradients = True

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
        log_every_n_steps: int = 50,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        if isinstance(compile, str) and compile not in ("true", "false"):
            backends = torch.compiler.list_backends(exclude_tags=())
            if compile not in backends:
                raise ValueError(f"unknown torch.compile backend compile={compile!r}; allowed: true, false or one of {backends}")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value', got {gradient_clip_algorithm!r}")
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.log_every_n_steps = max(int(log_every_n_steps), 1)
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.compile_model: bool | str = {"true": True, "false": False}.get(compile, compile) if isinstance(
            compile, str) else bool(compile)
        self._compiled = False
        self._epoch_loss_sum: Tensor | None = None
        self._epoch_steps = 0
        self._chunk_start = 0  # optimizer steps taken before the current chunk's first step
        self._stopped_inside_chunk = False  # the last chunk was cut short (max_steps, or a stop)
        self._loop_trainer: L.Trainer | None = None  # the trainer whose fit the loop below was chosen for
        self._loop_ended = False  # that fit has ended (a new fit with the same trainer chooses again)
        self._loop_reasons: list[str] = []
        self._moved_clip: tuple | None = None  # the trainer's clipping (value, algorithm), applied by the fast loop
        self._fast: FastLoop | None = None

    # -- what subclasses implement ---------------------------------------------
    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        """Loss of one training mini-batch and an object kept for the chunk's metrics."""
        raise NotImplementedError

    def on_chunk_end(self, kept: list[Any]) -> None:
        """Called after the optimizer steps of a chunk with what :meth:`step_loss` kept for each step
        (in Lightning's own loop: after each step's loss, with one entry). The steps are numbered
        ``self._chunk_start + 1, ...``."""

    def step_scalars(self, kept: Any) -> dict[str, Any]:
        """Extra per-step scalars (e.g. the mini-batch accuracy), computed only on logging steps."""
        return {}

    def parameter_groups(self) -> Iterable:
        return self.parameters()

    # -- optimizers ----------------------------------------------------------------
    def configure_optimizers(self):
        opt = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.scheduler_interval}}

    # -- which loop this fit runs --------------------------------------------------------
    @property
    def automatic_optimization(self) -> bool:
        """False in the fast loop (whylearn steps the optimizer), True when this fit runs Lightning's own loop.

        Chosen when Lightning first asks, as ``Trainer.fit`` checks its configuration (see
        :mod:`whylearn.tasks.loop`); outside a fit, False.
        """
        trainer = LightningInternals.attached_trainer(self)
        if trainer is None:
            return False
        if self._loop_trainer is not trainer or (self._loop_ended and trainer.state.status == TrainerStatus.RUNNING):
            if trainer.state.fn != TrainerFn.FITTING:
                return False
            self._choose_loop(trainer)
        return bool(self._loop_reasons)

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        raise AttributeError("a whylearn task chooses its loop itself (see whylearn.tasks.loop); "
                             "set data.steps_per_chunk=1 for one mini-batch per Lightning step")

    def _choose_loop(self, trainer: L.Trainer) -> None:
        self._loop_trainer, self._loop_ended = trainer, False
        reasons = lightning_loop_reasons(trainer, self, FastTask)
        clip = trainer.gradient_clip_val
        algorithm = getattr(trainer.gradient_clip_algorithm, "value", trainer.gradient_clip_algorithm) or "norm"
        if clip and not self.clips_gradients:
            raise ValueError(f"{type(self).__name__} does not clip gradients as a whole (trainer.gradient_clip_val="
                             f"{clip}); set trainer.gradient_clip_val=null")
        if clip and self.gradient_clip_val is not None and (clip, algorithm) != (
                self.gradient_clip_val, self.gradient_clip_algorithm):
            raise ValueError(
                f"two gradient clippings were asked for: trainer.gradient_clip_val={clip} ({algorithm}) and "
                f"task.gradient_clip_val={self.gradient_clip_val} ({self.gradient_clip_algorithm}); set one of them to null")
        self._loop_reasons = reasons
        self._moved_clip = None
        if reasons:
            log.info("%s runs Lightning's own loop for this fit (one mini-batch per Lightning step, not the fast "
                     "loop's chunks of data.steps_per_chunk), because of: %s", type(self).__name__, "; ".join(reasons))
        elif clip:
            # Lightning refuses its clipping under manual optimization; the fast loop applies it at the same point
            self._moved_clip = (float(clip), str(algorithm), trainer.gradient_clip_algorithm)
            trainer.gradient_clip_val = None

    @property
    def single_step_batches(self) -> bool:
        """Whether this fit wants one mini-batch per Lightning batch (it runs Lightning's own loop): whylearn's
        datamodules then serve their epoch one mini-batch at a time, in the same order."""
        return self._loop_trainer is not None and not self._loop_ended and bool(self._loop_reasons)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            # a new fit: a chunk cut short by an earlier fit of this module is not this fit's (Lightning calls setup
            # before it restores a checkpoint, whose own flag on_load_checkpoint then sets)
            self._stopped_inside_chunk = False
        if self.compile_model and not self._compiled and isinstance(getattr(self, "model", None), torch.nn.Module):
            backend = self.compile_model if isinstance(self.compile_model, str) else "inductor"
            self.model.compile(backend=backend)
            self._compiled = True

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self._end_fit()

    def _end_fit(self) -> None:
        if self._fast is not None:
            self._fast.restore()
            self._fast = None
        trainer = self._loop_trainer
        if trainer is not None and self._moved_clip is not None:
            trainer.gradient_clip_val, _, trainer.gradient_clip_algorithm = self._moved_clip
        self._moved_clip = None
        self._loop_ended = True  # the choice stays (trainer.global_step reads it) until a new fit starts

    # -- the hot loop -----------------------------------------------------------------
    def on_train_start(self) -> None:
        LightningInternals(self.trainer).sync_step_counters(manual=not self.automatic_optimization)
        if self._stopped_inside_chunk:
            log.warning("this fit resumes from a checkpoint saved inside a chunk (at step %d, by max_steps or a stop "
                        "a callback asked for): it continues at the next chunk, skipping the rest of that chunk's "
                        "mini-batches (with data.steps_per_chunk=1 nothing would be skipped)", self.trainer.global_step)
            self._stopped_inside_chunk = False
        if not self.automatic_optimization:
            self._fast = self._fast_loop()

    def _fast_loop(self) -> FastLoop:
        clip = self._moved_clip[:2] if self._moved_clip else (self.gradient_clip_val, self.gradient_clip_algorithm)
        return FastLoop(self, *clip)

    def on_train_epoch_start(self) -> None:
        # float64: the sum of float32 losses is then exact, so it does not depend on how steps were chunked
        self._epoch_loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._epoch_steps = 0

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        xs, ys = as_steps(batch)
        if not self.automatic_optimization:
            if self._fast is None:  # (a subclass's on_train_start that does not call super())
                self._fast = self._fast_loop()
            self._fast.run(xs, ys, self._epoch_steps)  # (steps this epoch so far: kept across a resume)
            return None
        if len(xs) != 1:
            raise ValueError(
                f"this fit runs Lightning's own loop ({'; '.join(self._loop_reasons)}), one mini-batch per Lightning "
                f"batch, but the training loader yielded a chunk of {len(xs)} mini-batches: give the datamodule "
                f"steps_per_chunk=1 (whylearn's datamodules do this themselves when the task asks)")
        return self._lightning_step(xs[0], ys[0])

    def _lightning_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One step of Lightning's own loop: the loss for Lightning's optimizer closure; scalars at the step it makes."""
        trainer = self.trainer
        before = trainer.global_step  # Lightning counts the step after the optimizer steps
        self._chunk_start = before
        loss, keep = self.step_loss(x, y)
        detached = loss.detach()
        check_finite(detached[None], before, trainer.current_epoch)
        self._epoch_loss_sum += detached.double()
        self._epoch_steps += 1
        step = before + 1
        if step % self.log_every_n_steps == 0:
            lr = trainer.optimizers[0].param_groups[0]["lr"]  # the learning rate this step uses
            if trainer.world_size > 1:  # the loss of the global batch: the mean over ranks
                detached = trainer.strategy.reduce(detached, reduce_op="mean")
            log_scalars(self, {"train/loss": detached, "lr": lr, **self.step_scalars(keep)}, step=step)
        self.on_chunk_end([keep])
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's loop: clip with the trainer's setting, or the task's (they cannot both be set)."""
        if gradient_clip_val is None and self.gradient_clip_val is not None:
            gradient_clip_val, gradient_clip_algorithm = self.gradient_clip_val, self.gradient_clip_algorithm
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """Lightning's loop: step-interval schedulers as Lightning does; epoch-interval ones step in
        :meth:`on_train_epoch_end` (before checkpoint callbacks save), in both loops."""
        if self.scheduler_interval == "epoch":
            return
        scheduler.step() if metric is None else scheduler.step(metric)

    def on_validation_end(self) -> None:  # after the callbacks' on_validation_end (gap, norms)
        flush_logs(self)

    def on_train_end(self) -> None:
        if self._fast is not None:
            self._fast.restore()
        flush_logs(self, wait=True)

    def on_test_end(self) -> None:
        flush_logs(self, wait=True)

    def on_train_epoch_end(self) -> None:
        if self.scheduler_factory is not None and self.scheduler_interval == "epoch":
            self.lr_schedulers().step()
        if self._epoch_steps:
            loss_epoch = (self._epoch_loss_sum / self._epoch_steps).float()
            if self.trainer.world_size > 1:
                loss_epoch = self.trainer.strategy.reduce(loss_epoch, reduce_op="mean")
            log_scalars(self, {"train/loss_epoch": loss_epoch})

    # -- history in checkpoints --------------------------------------------------------
    # The global RNG states (torch, numpy, random; this rank's) are saved too, so dropout and any
    # other draw continue as in an uninterrupted run (the data order is keyed on (seed, epoch)).
    # A checkpoint saved mid-epoch (on a signal) also keeps the running epoch sums and the
    # torchmetrics states, since Lightning does not call on_train_epoch_start when it resumes there.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        flush_logs(self)  # what the checkpoint's history holds is also in the loggers
        checkpoint["whylearn_history"] = get_history(self).state_dict()
        checkpoint["whylearn_rng"] = rng_state()
        metrics = {}
        for name, m in self.named_modules():
            if isinstance(m, torchmetrics.Metric):
                values, count = LightningInternals.metric_state(m)
                metrics[name] = ({k: _detach(v) for k, v in values.items()}, count)
        checkpoint["whylearn_epoch"] = {
            "loss_sum": None if self._epoch_loss_sum is None else self._epoch_loss_sum.detach().cpu(),
            "steps": self._epoch_steps,
            "metrics": metrics,
            "stopped_inside_chunk": self._stopped_inside_chunk,
        }
        if getattr(self, "run_config", None) is not None:
            checkpoint["whylearn_config"] = self.run_config
        if LightningInternals.saved_after_full_epoch(checkpoint):  # e.g. ModelCheckpoint's epoch-end last.ckpt
            LightningInternals.mark_epoch_ended(checkpoint)  # resume at the next epoch, also with max_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "whylearn_history" in checkpoint:
            get_history(self).load_state_dict(checkpoint["whylearn_history"])
        restore_pending(self, checkpoint.get("whylearn_pending"))  # a row a stop kept for the resumed run
        if "whylearn_rng" in checkpoint:
            set_rng_state(checkpoint["whylearn_rng"])
        if "whylearn_epoch" in checkpoint:
            state = checkpoint["whylearn_epoch"]
            loss_sum = state["loss_sum"]
            self._epoch_loss_sum = None if loss_sum is None else loss_sum.to(self.device)
            self._epoch_steps = int(state["steps"])
            self._stopped_inside_chunk = bool(state.get("stopped_inside_chunk", False))
            modules = dict(self.named_modules())
            for name, (values, count) in state["metrics"].items():
                m = modules.get(name)
                if isinstance(m, torchmetrics.Metric):
                    LightningInternals.load_metric_state(m, {k: _to(v, self.device) for k, v in values.items()}, count)

    def log_scalars(self, metrics: dict[str, Any], step: int | None = None) -> None:
        log_scalars(self, metrics, step)

    @property
    def history(self) -> History:
        return get_history(self)

    def __getstate__(self) -> dict[str, Any]:  # a copy (pickle, deepcopy) is not attached to this fit
        state = super().__getstate__()
        state.update(_loop_trainer=None, _loop_ended=False, _loop_reasons=[], _moved_clip=None, _fast=None)
        return state

"""What every whylearn task shares: the fast inner loop, scalar logging keyed on optimizer steps, history.

A Lightning "batch" of a whylearn datamodule is a *chunk* of K mini-batches
(``steps_per_chunk``). :class:`FastTask` runs their K optimizer steps inside one
``training_step`` with manual optimization, stepping the torch optimizer
directly and counting each step in Lightning's progress tracker, so
``trainer.global_step``, ``max_steps``, checkpoints and schedulers all count
optimizer steps as usual while Lightning's per-batch hooks run once per chunk.
Per-step measurements use Lightning's own hook: every callback that overrides
``on_before_optimizer_step`` is called before each step, as Lightning would.

Why not Lightning's optimizer wrapper per step: with the MLP of the benchmark it
costs 10-20% of the step time (``docs/benchmarks.md``).

All scalars go through :meth:`FastTask.log_scalars` (also usable by callbacks on
any LightningModule via :func:`whylearn.tasks.base.log_scalars`): they are sent
to every logger with ``step = trainer.global_step``, put in
``trainer.callback_metrics`` (so checkpoint monitors see them) and kept in a
:class:`History` that the figures and ``summary.json`` are drawn from and that
is saved in checkpoints.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torchmetrics
from lightning.pytorch.callbacks import Callback
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stops, saved checkpoints are kept."""


class History:
    """Every logged scalar, as ``{key: [(step, value), ...]}``."""

    def __init__(self) -> None:
        self.data: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def add(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.data[k].append((int(step), float(v)))

    def last(self, key: str, default: float | None = None) -> float | None:
        series = self.data.get(key)
        return series[-1][1] if series else default

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pts = self.data.get(key, [])
        return [p[0] for p in pts], [p[1] for p in pts]

    def state_dict(self) -> dict:
        return {k: list(v) for k, v in self.data.items()}

    def load_state_dict(self, state: dict) -> None:
        self.data = defaultdict(list, {k: [tuple(p) for p in v] for k, v in state.items()})


def get_history(pl_module: L.LightningModule) -> History:
    hist = getattr(pl_module, "_whylearn_history", None)
    if hist is None:
        hist = History()
        pl_module._whylearn_history = hist
    return hist


def log_scalars(pl_module: L.LightningModule, metrics: dict[str, Any], step: int | None = None) -> None:
    """Log scalars at ``step`` (default: the number of optimizer steps taken) to every logger.

    Works for any LightningModule attached to a trainer. Only rank 0 writes to
    loggers (Lightning's loggers are rank-zero-only); every rank records the
    values in ``trainer.callback_metrics`` and the module's :class:`History` at once.

    Logger writes are merged per step: the scalars of one step (the task's, the
    callbacks', validation's, the epoch's) go to each logger as one row when a later
    step is logged or :func:`flush_logs` is called (at validation end, checkpoint
    saves, the end of fit and test, and on errors), since one W&B ``log`` call costs
    about 0.7 ms, as much as two optimizer steps of the benchmark's MLP.
    """
    trainer = pl_module.trainer
    if trainer.sanity_checking:
        return
    step = trainer.global_step if step is None else step
    values = {k: (v.item() if isinstance(v, Tensor) else float(v)) for k, v in metrics.items()}
    for k, v in values.items():
        trainer.callback_metrics[k] = torch.tensor(v)
    get_history(pl_module).add(values, step)
    if not trainer.is_global_zero or not trainer.loggers:
        return
    pending = getattr(pl_module, "_whylearn_pending", None)
    if pending is not None and pending[0] != step:
        flush_logs(pl_module)
        pending = None
    if pending is None:
        pl_module._whylearn_pending = (step, dict(values, epoch=trainer.current_epoch))
    else:
        pending[1].update(values)


def flush_logs(pl_module: L.LightningModule, wait: bool = False) -> None:
    """Write the pending row of :func:`log_scalars` to every logger (rank 0).

    W&B rows are queued to a background thread (:func:`whylearn.loggers.write_row`);
    ``wait=True`` also waits until they are written (end of fit and test, errors).
    """
    from whylearn.loggers import drain, write_row

    pending = getattr(pl_module, "_whylearn_pending", None)
    pl_module._whylearn_pending = None
    if pl_module._trainer is None:
        return
    trainer = pl_module.trainer
    for logger in list(trainer.loggers):
        try:
            if pending is not None:
                write_row(logger, pending[1], pending[0])
            if wait:
                drain(logger)
        except OSError as e:  # e.g. W&B's service process killed by the signal that preempts the job
            warnings.warn(f"logger {type(logger).__name__} failed ({type(e).__name__}: {e}); it is dropped "
                          f"for the rest of the run, training and checkpoints go on", stacklevel=2)
            trainer.loggers = [lg for lg in trainer.loggers if lg is not logger]


def count_steps(trainer: L.Trainer, n: int = 1) -> None:
    """Count ``n`` optimizer steps in Lightning's progress tracker (``trainer.global_step``), for tasks
    that update by hand (learning rules, sweep points) instead of through a torch optimizer."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    for _ in range(n):
        progress.increment_ready()
        progress.increment_completed()


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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "whylearn_history" in checkpoint:
            get_history(self).load_state_dict(checkpoint["whylearn_history"])

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


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


class FastTask(L.LightningModule):
    """Base LightningModule for whylearn tasks: K optimizer steps per Lightning step.

    Subclasses implement :meth:`step_loss` (loss and anything to keep for metrics
    of one mini-batch) and the evaluation hooks.

    Args:
        optimizer: a callable taking parameters (or parameter groups) and returning a
            ``torch.optim.Optimizer`` (Hydra: ``_partial_: true``).
        scheduler: optional callable taking the optimizer and returning an LR scheduler.
        scheduler_interval: ``step`` (default) or ``epoch``.
        log_every_n_steps: interval of the per-step ``train/loss`` and ``lr`` scalars.
        gradient_clip_val: clip the global gradient norm to this value (None: off).
    """

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "step",
        log_every_n_steps: int = 50,
        gradient_clip_val: float | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.log_every_n_steps = max(int(log_every_n_steps), 1)
        self.gradient_clip_val = gradient_clip_val
        self._step_hooks: list[Callback] = []
        self._epoch_loss_sum: Tensor | None = None
        self._epoch_steps = 0

    # -- what subclasses implement ---------------------------------------------
    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        """Loss of one training mini-batch and an object kept for the chunk's metrics."""
        raise NotImplementedError

    def on_chunk_end(self, kept: list[Any]) -> None:
        """Called once per chunk with what :meth:`step_loss` kept for each step."""

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

    # -- the hot loop -----------------------------------------------------------------
    def on_train_start(self) -> None:
        self._step_hooks = [cb for cb in self.trainer.callbacks if _overrides(cb, "on_before_optimizer_step")]

    def on_train_epoch_start(self) -> None:
        self._epoch_loss_sum = torch.zeros((), device=self.device)
        self._epoch_steps = 0

    def training_step(self, chunk, chunk_idx: int) -> None:
        trainer = self.trainer
        lit_opt = self.optimizers()
        opt = lit_opt.optimizer  # the torch optimizer: no per-step wrapper overhead
        sched = self.lr_schedulers() if self.scheduler_interval == "step" else None
        progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps >= 0 else math.inf
        hooks, clip = self._step_hooks, self.gradient_clip_val
        first_step = trainer.global_step
        distributed = trainer.world_size > 1
        losses: list[Tensor] = []
        kept: list[Any] = []
        xs, ys = chunk
        for x, y in zip(xs, ys, strict=False):
            if first_step + len(losses) >= max_steps:
                break
            loss, keep = self.step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            if distributed:  # DDP averages the gradients only in a backward that Lightning prepared
                self.manual_backward(loss)
            else:
                loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.parameters(), clip)
            for cb in hooks:
                cb.on_before_optimizer_step(trainer, self, opt)
            opt.step()
            if sched is not None:
                sched.step()
            progress.increment_ready()
            progress.increment_completed()
            losses.append(loss.detach())
            kept.append(keep)
        if not losses:
            return None
        stacked = torch.stack(losses)
        if not bool(torch.isfinite(stacked).all()):
            bad = int((~torch.isfinite(stacked)).nonzero()[0, 0])
            raise NonFiniteLossError(
                f"training loss is {stacked[bad].item()} at step {first_step + bad} (epoch {trainer.current_epoch}); "
                f"training stopped. Checkpoints saved before this step are kept; try a smaller learning rate "
                f"or init_scale, or gradient clipping (task.gradient_clip_val)."
            )
        self._epoch_loss_sum += stacked.sum()
        self._epoch_steps += len(losses)
        every = self.log_every_n_steps
        due = [i for i in range(len(losses)) if (first_step + i + 1) % every == 0]
        if due and trainer.world_size > 1:  # the loss of the global batch: the mean over ranks
            stacked = trainer.strategy.reduce(stacked, reduce_op="mean")
        if due:
            lr = opt.param_groups[0]["lr"]
            for i in due:
                log_scalars(self, {"train/loss": stacked[i], "lr": lr, **self.step_scalars(kept[i])}, step=first_step + i + 1)
        self.on_chunk_end(kept)
        return None

    def on_validation_end(self) -> None:  # after the callbacks' on_validation_end (gap, norms)
        flush_logs(self)

    def on_train_end(self) -> None:
        flush_logs(self, wait=True)

    def on_test_end(self) -> None:
        flush_logs(self, wait=True)

    def on_train_epoch_end(self) -> None:
        if self.scheduler_factory is not None and self.scheduler_interval == "epoch":
            self.lr_schedulers().step()
        if self._epoch_steps:
            loss_epoch = self._epoch_loss_sum / self._epoch_steps
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
        checkpoint["whylearn_epoch"] = {
            "loss_sum": None if self._epoch_loss_sum is None else self._epoch_loss_sum.detach().cpu(),
            "steps": self._epoch_steps,
            "metrics": {name: ({k: _detach(v) for k, v in m.metric_state.items()}, int(m._update_count))
                        for name, m in self.named_modules() if isinstance(m, torchmetrics.Metric)},
        }
        if getattr(self, "run_config", None) is not None:
            checkpoint["whylearn_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "whylearn_history" in checkpoint:
            get_history(self).load_state_dict(checkpoint["whylearn_history"])
        if "whylearn_rng" in checkpoint:
            set_rng_state(checkpoint["whylearn_rng"])
        if "whylearn_epoch" in checkpoint:
            state = checkpoint["whylearn_epoch"]
            loss_sum = state["loss_sum"]
            self._epoch_loss_sum = None if loss_sum is None else loss_sum.to(self.device)
            self._epoch_steps = int(state["steps"])
            modules = dict(self.named_modules())
            for name, (values, count) in state["metrics"].items():
                m = modules.get(name)
                if isinstance(m, torchmetrics.Metric):
                    for k, v in values.items():
                        setattr(m, k, _to(v, self.device))
                    m._update_count, m._computed = count, None

    def log_scalars(self, metrics: dict[str, Any], step: int | None = None) -> None:
        log_scalars(self, metrics, step)

    @property
    def history(self) -> History:
        return get_history(self)

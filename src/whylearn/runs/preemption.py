"""Preemption: a signal stops the run at the next chunk boundary with ``checkpoints/last.ckpt`` saved; SLURM requeues it.

One requeue mechanism, chosen deliberately: **submitit's**. The SLURM launcher
(``hydra/launcher=submitit_slurm``) asks SLURM for ``--signal=USR2@<signal_delay_s>``
before the time limit; submitit resubmits the same pickled job (same Hydra
config, hence the same run directory) with ``scontrol requeue``, counting
time-outs against ``max_num_timeout``. Lightning's own SLURM auto-requeue
(``SLURMEnvironment(auto_requeue=True)``, on USR1, saving ``hpc_ckpt_*.ckpt``
from inside the signal handler, possibly in the middle of an optimizer step) is
switched off by :func:`whylearn.build.build_trainer`, so there is one owner of
the signal and one checkpoint file.

What whylearn adds, in :class:`GracefulStop`: a signal (``SIGTERM``: a
preemption, ``scancel`` or ``scontrol requeue``; ``SIGINT``: Ctrl-C; ``SIGUSR2``:
the time-limit warning) only sets a flag. At the next *chunk boundary* (after
the optimizer steps of a Lightning training step, where the weights, the
optimizer, the scheduler, the step counter and the data loader's position agree;
after the epoch's end when that chunk was the epoch's last)
every rank agrees to stop, ``checkpoints/last.ckpt`` is written atomically, and
the run ends with :class:`Preempted`; on ``SIGUSR2`` inside a submitit job,
submitit's own handler then requeues the job (in a plain sbatch job, e.g. ``slurm/train.sbatch``
with ``--signal=USR2@...``, whylearn runs ``scontrol requeue`` itself). A NaN loss raises
:class:`~whylearn.tasks.base.NonFiniteLossError` inside the training step, before
any boundary, so a non-finite state is never saved: the last good checkpoint stays.

On restart the run finds its checkpoint because its directory is keyed on the job:
``hydra.run.dir`` uses :func:`whylearn.runs.identity.new_run_dir` (``slurm-<job>`` or
``slurm-<array job>_<task>`` inside SLURM, a new timestamped folder outside), a submitit sweep
re-runs the same pickled config (whose sweep directory was fixed when it was submitted), and the
W&B run id is :func:`whylearn.runs.identity.wandb_run_id` of the job, resumed with ``resume="allow"``.

Resuming: :func:`whylearn.runs.resume.plan_resume` decides and checks (before anything is written);
:class:`whylearn.runs.record.RunRecord` carries it out (CSV continued, optimizer changes applied, config.yaml written once
restored) and keeps the run's account across segments.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, Checkpoint

from whylearn.loggers import take_pending
from whylearn.runs.identity import slurm_job_key
from whylearn.tasks.loop import LightningInternals

log = logging.getLogger("whylearn")

STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR2")


class Preempted(SystemExit):
    """The run stopped on a signal. A training run saved ``checkpoints/last.ckpt`` first (``ckpt``) and
    resumes from there; a study (:mod:`whylearn.studies.base`) has no checkpoint (``ckpt`` None, ``step``
    the sweep points done): its summary.json says interrupted, and a requeue starts it again.

    A ``SystemExit`` (exit status 128 + the signal's number), not an ``Exception``: Hydra's job
    runner and submitit let it through, so a preempted submitit job leaves no result behind and
    the submitting side keeps waiting for the requeued job instead of reading a failure.
    """

    def __init__(self, signum: int, ckpt: Path | None, step: int) -> None:
        self.signum, self.ckpt, self.step = signum, ckpt, step
        name = signal.Signals(signum).name
        where = f"checkpoint saved at step {step}: {ckpt}" if ckpt else f"no checkpoint saved (step {step})"
        super().__init__(128 + int(signum))
        self.message = f"stopped by {name}; {where}"

    def __str__(self) -> str:
        return self.message


def lightning_cluster_plugins(trainer_cfg: Any) -> list:
    """Under SLURM, Lightning's cluster environment with its auto-requeue off (see the module docstring)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if trainer_cfg.get("plugins") or not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]


# -- stopping on a signal ----------------------------------------------------------------

class _AfterEpochEnd(Checkpoint):
    """Lightning calls checkpoint callbacks' ``on_train_epoch_end`` after the task's (and after
    ``ModelCheckpoint``'s, since this one is appended last): where :class:`GracefulStop` saves when a
    stop was asked for in an epoch's last chunk. Added to ``trainer.callbacks`` for the fit only
    (added before the fit it would stop Lightning from adding its default ``ModelCheckpoint``)."""

    def __init__(self, owner: GracefulStop) -> None:
        self.owner = owner

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.owner._epoch_end(trainer)

    @property
    def state_key(self) -> str:
        return "whylearn.runs.preemption._AfterEpochEnd"


class GracefulStop(Callback):
    """On SIGTERM, SIGINT or SIGUSR2: save ``last.ckpt`` at the next chunk boundary and stop.

    Args:
        ckpt_path: where to save (``<run_dir>/checkpoints/last.ckpt``), atomically.
        signals: names of the signals to handle.

    The handlers are installed when training starts (after Lightning registered its own
    SIGTERM handler, which they replace: it would stop the loop without a checkpoint) and
    the previous ones are put back when fit ends. Under
    data parallelism the ranks agree (any rank signalled stops all) before saving.

    Where it saves: after the chunk (or, in Lightning's own loop, the batch) during which the signal
    arrived, unless that batch ends the epoch or a validation follows it; then after the epoch's end
    (validation, the task's epoch metrics and epoch-interval schedulers, the checkpoint callbacks),
    or after that validation. A stop asked for in the last chunk of the whole fit lets the fit finish
    (its end is moments away) and the run go on to its test and summary. So a run resumed with
    ``ckpt_path=last`` loses nothing: its summary and metrics equal an uninterrupted run's.

    After saving, SIGUSR2 inside a submitit job is passed to submitit's own handler,
    which requeues the job; otherwise :class:`Preempted` is raised.
    """

    whylearn_batch_hooks = "per_chunk"  # acts at chunk boundaries (whylearn.tasks.loop)

    def __init__(self, ckpt_path: Path | str, signals: tuple[str, ...] = STOP_SIGNALS) -> None:
        self.ckpt_path = Path(ckpt_path)
        self.signals = [getattr(signal, s) for s in signals]
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._pending: str | None = None  # "validation" or "epoch_end": stop there
        self._marking_epoch_end = False
        self._saving = False
        self._helper: _AfterEpochEnd | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self._helper is None:
            self._helper = _AfterEpochEnd(self)
            trainer.callbacks.append(self._helper)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._remove_helper(trainer)

    def _remove_helper(self, trainer) -> None:
        if self._helper is not None:
            trainer.callbacks = [cb for cb in trainer.callbacks if cb is not self._helper]
            self._helper = None

    def _handler(self, signum, frame) -> None:
        if self.received is None:
            log.warning("received %s: saving a checkpoint at the next chunk boundary, then stopping",
                        signal.Signals(signum).name)
        self.received = signum

    def on_train_start(self, trainer, pl_module) -> None:
        import threading

        self._pending = None
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.signals:
            self._previous[s] = signal.getsignal(s)
            signal.signal(s, self._handler)

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()
        self._remove_helper(trainer)

    def _should_stop(self, trainer) -> bool:
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        return stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pending is not None or not self._should_stop(trainer):
            return

        internals = LightningInternals(trainer)
        if internals.epoch_ends_after_batch():
            self._pending = "epoch_end"  # finish the epoch's end first (on_train_epoch_end below)
        elif internals.validation_due_after_batch():
            self._pending = "validation"
        else:
            self._stop(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._pending == "validation":
            self._stop(trainer)

    def _epoch_end(self, trainer) -> None:
        """After the epoch's end (called by :class:`_AfterEpochEnd`)."""
        if self._pending != "epoch_end" and not (self._pending is None and self._should_stop(trainer)):
            return

        internals = LightningInternals(trainer)
        if internals.fit_ends_after_epoch():
            self._pending = None
            log.warning("the stop was asked for in the fit's last chunk: the fit ends now; the run goes on to its "
                        "test and summary instead of stopping")
            return
        internals.finish_epoch_logging()  # the epoch's self.log values, which Lightning writes after this hook
        self._stop(trainer, epoch_ended=internals.epoch_finished())

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if not self._saving:
            return

        # the scalars of the last step that are not written yet: the resumed run writes them with the rest of
        # that step, as one row, as the uninterrupted run does (the task restores them when it loads)
        checkpoint["whylearn_pending"] = take_pending(pl_module)
        if self._marking_epoch_end:
            LightningInternals.mark_epoch_ended(checkpoint)

    def _stop(self, trainer, epoch_ended: bool = False) -> None:
        signum = self.received or signal.SIGTERM
        self._marking_epoch_end, self._saving = epoch_ended, True
        try:
            self.save(trainer)
        finally:
            self._marking_epoch_end = self._saving = False
        self._pending = None
        step = trainer.global_step
        previous = self._previous.get(signal.SIGUSR2)
        self._restore()
        if signum == signal.SIGUSR2 and callable(previous) and _is_submitit_handler(previous):
            log.warning("SIGUSR2 in a submitit job: checkpoint at step %d saved, handing over to submitit to requeue", step)
            previous(signum, None)  # requeues and exits (SystemExit)
        elif signum == signal.SIGUSR2 and slurm_job_key() and trainer.is_global_zero:
            # an sbatch job (slurm/*.sbatch, --signal=USR2@...): the same signal, whylearn requeues it itself
            job = slurm_job_key()
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if done.returncode == 0:
                log.warning("SIGUSR2: checkpoint at step %d saved, SLURM job %s requeued", step, job)
            else:
                log.error("SIGUSR2: checkpoint saved but `scontrol requeue %s` failed: %s", job, done.stderr.strip())
        raise Preempted(signum, self.ckpt_path, step)

    def save(self, trainer) -> None:
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_name(self.ckpt_path.name + ".tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.ckpt_path)
        trainer.strategy.barrier("whylearn_graceful_stop")

    # a Checkpoint subclass: no state of its own in checkpoints
    def state_dict(self) -> dict:
        return {}


def _is_submitit_handler(handler: Any) -> bool:
    owner = getattr(handler, "__self__", None)
    return type(owner).__module__.startswith("submitit")


class SignalAtStep(Callback):
    """Fault injection: at optimizer step ``step`` (first attempt only), send a stop signal the real way.

    ``signal_name`` defaults to SIGUSR2 for ``scancel`` and SIGTERM otherwise. ``how``: ``kill``
    (``os.kill`` of this process), ``scancel`` (``scancel --signal=<sig> <job>``:
    SLURM delivers it to the job's tasks, as before a time limit) or ``requeue``
    (``scontrol requeue <job>``: SLURM terminates the job with SIGTERM and queues it again).
    Only rank 0 sends; a requeued job (``SLURM_RESTART_COUNT`` > 0) or a resumed run past
    ``step`` sends nothing. Used by the tests; also a way to check a cluster set-up.
    """

    whylearn_batch_hooks = "per_step"  # sends at exactly ``step`` inside a chunk (whylearn.tasks.loop)

    def __init__(self, step: int, signal_name: str | None = None, how: str = "kill") -> None:
        if how not in ("kill", "scancel", "requeue"):
            raise ValueError(f"unknown how {how!r}; allowed: ['kill', 'scancel', 'requeue']")
        if signal_name is None:  # scancel: the time-limit warning submitit asks for; else a termination
            signal_name = "SIGUSR2" if how == "scancel" else "SIGTERM"
        self.step, self.signal_name, self.how = int(step), signal_name, how
        self._sent = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._sent or trainer.global_step < self.step:
            return
        self._sent = True
        if not trainer.is_global_zero:
            return
        log.warning("SignalAtStep: sending %s by %s at step %d", self.signal_name, self.how, trainer.global_step)
        if self.how == "kill":
            os.kill(os.getpid(), getattr(signal, self.signal_name))
            return
        job = slurm_job_key()
        if job is None:
            raise RuntimeError(f"SignalAtStep(how={self.how!r}) needs a SLURM job; SLURM_JOB_ID is not set")
        if self.how == "scancel":
            cmd = ["scancel", f"--signal={self.signal_name.removeprefix('SIG')}", job]
        else:
            cmd = ["scontrol", "requeue", job]
        subprocess.run(cmd, check=True)

    def on_train_start(self, trainer, pl_module) -> None:
        # a run resumed from a checkpoint past the step does not signal again
        if trainer.global_step >= self.step:
            self._sent = True

"""Carrying a resume out and keeping the run's account across its segments (a start and every resume).

Planning a resume (what ``ckpt_path`` means, what a resume may change) is :mod:`whylearn.runs.resume`'s,
which the Hydra callback runs before anything is written; carrying it out is here: :class:`RunRecord`
continues the CSV log, applies the optimizer changes, writes config.yaml once restored (through
``on_restored``) and keeps the fit time and segments in every checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from whylearn.runs.checkpoints import torch_load
from whylearn.runs.resume import CSV_ROWS_KEY, RECORD_KEY, ResumePlan, _same

log = logging.getLogger("whylearn")


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step (``global_step``) a checkpoint was saved at (read as weights only)."""
    return int(torch_load(path).get("global_step", 0))


def apply_optimizer_changes(trainer, changes: dict[str, tuple[Any, Any]]) -> dict[str, list]:
    """Set the restored optimizers' hyper-parameters to the new config's values (after Lightning restored them).

    A value is changed in the parameter groups that hold the checkpoint's value (a group with its own
    value, e.g. no weight decay for biases, keeps it). A new ``lr`` rescales each group's current and
    initial learning rate and its schedulers' ``base_lrs`` by new/old, so a schedule continues its shape
    from the new base rate. Returns ``{key: [checkpoint's, new, groups changed]}``.
    """
    done: dict[str, list] = {}
    for key, (old, new) in changes.items():
        name = key.split(".", 1)[1]
        changed = 0
        for opt in trainer.optimizers:
            scheds = [c.scheduler for c in trainer.lr_scheduler_configs if getattr(c.scheduler, "optimizer", None) is opt]
            for i, group in enumerate(opt.param_groups):
                if name == "lr" and not old:  # no schedule (resume_changes refuses one from lr 0): just set it
                    if not _same(group["lr"], old):
                        continue
                    group["lr"] = float(new)
                    if "initial_lr" in group:
                        group["initial_lr"] = float(new)
                elif name == "lr":
                    if not _same(group.get("initial_lr", group["lr"]), old):
                        continue
                    ratio = float(new) / float(old)
                    group["lr"] = group["lr"] * ratio
                    if "initial_lr" in group:
                        group["initial_lr"] = float(new)
                    for s in scheds:
                        s.base_lrs[i] = s.base_lrs[i] * ratio
                        if getattr(s, "_last_lr", None):
                            s._last_lr[i] = group["lr"]
                elif name in group and _same(group[name], old):
                    group[name] = tuple(new) if isinstance(group[name], tuple) else new
                else:
                    continue
                changed += 1
        done[key] = [old, new, changed]
        log.warning("resume: %s changed from %r (checkpoint) to %r in %d parameter group(s)", key, old, new, changed)
    return done


def _csv_files(loggers: list) -> list[tuple[Path, Path]]:
    """``(metrics.csv, its copy set aside for a resume)`` of each CSV logger (rank 0; none on other ranks)."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        return []
    out = []
    for lg in loggers:
        if isinstance(lg, CSVLogger):
            path = Path(lg.log_dir) / "metrics.csv"
            out.append((path, path.with_name("metrics.csv.resume")))
    return out


def set_aside_csv(loggers: list) -> None:
    """Before a resume: move each ``metrics.csv`` to ``metrics.csv.resume``.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts (in ``fit``'s setup,
    before the checkpoint is restored); set aside, the rows survive a resume that fails, and
    :func:`put_back_csv` restores the file as it was. (A copy left by a resume that crashed is kept.)
    """
    for path, saved in _csv_files(loggers):
        if path.is_file():
            os.replace(path, saved)


def put_back_csv(loggers: list) -> None:
    """After a resume that failed before the checkpoint was restored: ``metrics.csv`` as it was."""
    for path, saved in _csv_files(loggers):
        if saved.is_file():
            os.replace(saved, path)


def csv_rows_on_disk(path: Path) -> int | None:
    """The number of data rows in a ``metrics.csv`` (None: no file). Counted with the csv module, so a
    quoted value holding a newline is one row."""
    import csv

    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return max(sum(1 for _ in csv.reader(f)) - 1, 0)


def continue_csv_loggers(loggers: list, after_step: int, rows_at_save: list | None = None) -> None:
    """Let each CSV logger of a resumed run continue its ``metrics.csv`` (once the checkpoint's weights loaded).

    From the copy :func:`set_aside_csv` made, keeps the rows that were on disk when the checkpoint was
    saved: their number is ``rows_at_save[i]`` for the i-th CSV logger (recorded by
    :meth:`RunRecord.on_save_checkpoint`). Every row after them was logged by the stopped run after the
    checkpoint and is logged again by the resumed run, including rows of the checkpoint's own step
    logged after the save (an epoch-end row, a callback's row): keeping rows by step would hold those
    twice. Checkpoints without that count (made before it was recorded) keep the rows up to
    ``after_step``, the checkpoint's step. The kept rows are written to ``metrics.csv`` (a temporary file
    moved in place) and the writer is told the header, so new rows are appended. The copy stays until
    :meth:`RunRecord.mark_restored`. Rank 0 only.
    """
    import csv

    from lightning.pytorch.loggers import CSVLogger

    files = dict(_csv_files(loggers))
    csv_loggers = [lg for lg in loggers if isinstance(lg, CSVLogger)]
    for i, lg in enumerate(csv_loggers):
        path = Path(lg.log_dir) / "metrics.csv"
        saved = files.get(path)
        if saved is None or not saved.is_file():
            continue
        with saved.open(newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = list(reader.fieldnames or []), list(reader)
        count = rows_at_save[i] if rows_at_save is not None and i < len(rows_at_save) else None
        if count is not None:
            keep = rows[:count]
        else:
            keep = [r for r in rows if "step" not in r or not r["step"] or int(float(r["step"])) <= after_step]
        writer = lg.experiment  # started by fit's setup; it removed nothing (the file was set aside)
        tmp = path.with_name("metrics.csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(keep)
        os.replace(tmp, path)
        writer.metrics_keys = sorted(fields)


class RunRecord(Callback):
    """A run's own account across its segments (a start and every resume), saved in its checkpoints.

    - ``fit_time_s``: time spent in ``fit`` over all segments, up to the checkpoint (time after the last
      checkpoint of a killed segment is not counted: its steps are done again); ``segments``: each
      segment's first and last step and its fit time. Stored as this callback's state, so every
      checkpoint (periodic, on a signal, final) carries it.
    - At every checkpoint save, the pending logged rows and the CSV loggers' buffers are written to
      ``metrics.csv`` first, so a ``kill -9`` loses no row logged before the last checkpoint.
    - Every checkpoint holds ``whylearn_config`` (the resolved config), whatever the task.
    - On a resume, after Lightning restored the checkpoint (``on_train_start``): the optimizer changes
      of the :class:`ResumePlan` are applied and ``on_restored`` runs (train.py writes config.yaml
      then); the CSV log (set aside by :func:`set_aside_csv`) is continued at ``on_fit_start``, after
      the weights and callback states loaded.
    """

    @property
    def state_key(self) -> str:
        return RECORD_KEY

    def __init__(self, run_config: dict | None = None, plan: ResumePlan | None = None,
                 on_restored: Any = None, planned_steps: int | None = None, loggers: list | None = None) -> None:
        self.run_config, self.plan = run_config, plan or ResumePlan()
        self.on_restored, self.planned_steps, self.loggers = on_restored, planned_steps, loggers or []
        self.restored = not self.plan.resuming
        self.applied: dict[str, list] = {}
        self.previous_fit_time, self.previous_segments = 0.0, []
        self._t0: float | None = None
        self._elapsed = 0.0
        self._start_step = 0

    # -- the account ------------------------------------------------------------------------
    def segment_time(self) -> float:
        return self._elapsed + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def fit_time(self) -> float:
        return self.previous_fit_time + self.segment_time()

    def segments(self, step: int, elapsed: float | None = None) -> list[dict]:
        """The segments so far: the earlier ones (from the checkpoint) and this one, up to ``step``."""
        elapsed = self.segment_time() if elapsed is None else elapsed
        now = {"start_step": self._start_step, "end_step": int(step), "fit_time_s": round(elapsed, 3)}
        if self.plan.resuming:
            now["resumed_from"] = self.plan.ckpt_path
        return [*self.previous_segments, now]

    def state_dict(self) -> dict:
        step = self._trainer.global_step if getattr(self, "_trainer", None) is not None else self._start_step
        elapsed = self.segment_time()
        return {"fit_time_s": self.previous_fit_time + elapsed, "segments": self.segments(step, elapsed),
                "planned_steps": self.planned_steps}

    def load_state_dict(self, state: dict) -> None:
        self.previous_fit_time = float(state.get("fit_time_s", 0.0))
        self.previous_segments = list(state.get("segments", []))
        if self.planned_steps is None:
            self.planned_steps = state.get("planned_steps")

    # -- hooks --------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        self._start_step = int(trainer.global_step)  # modules restored; the loops' counters come later
        if self.plan.resuming:
            self._start_step = self.plan.step
            continue_csv_loggers(self.loggers, self.plan.step, self.plan.csv_rows)
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self.mark_restored(trainer)

    def mark_restored(self, trainer) -> None:
        """The checkpoint has loaded (called at train start, or after a fit that had nothing left to do)."""
        if self.restored:
            return
        self.restored = True
        if self.plan.apply:
            self.applied = apply_optimizer_changes(trainer, self.plan.apply)
        for _, saved in _csv_files(self.loggers):
            saved.unlink(missing_ok=True)
        if self.on_restored is not None:
            self.on_restored()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.stop_clock()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.stop_clock()

    def stop_clock(self) -> None:
        if self._t0 is not None:
            self._elapsed += time.perf_counter() - self._t0
            self._t0 = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        from lightning.pytorch.loggers import CSVLogger

        if self.run_config is not None:
            checkpoint.setdefault("whylearn_config", self.run_config)
        # the row of this step may still grow (a callback's scalars of the same step): it is kept in the checkpoint,
        # not written, so a resume after kill -9 writes it as one row with the rest of its step (as a stop does)
        pending = getattr(pl_module, "_whylearn_pending", None)
        if pending is not None and "whylearn_pending" not in checkpoint:
            checkpoint["whylearn_pending"] = (int(pending[0]), dict(pending[1]))
        from lightning.pytorch.utilities.rank_zero import rank_zero_only

        rows = []
        for lg in trainer.loggers:  # the rows of the steps before: on disk, nothing logged before them is lost
            if isinstance(lg, CSVLogger):
                lg.save()
                rows.append(csv_rows_on_disk(Path(lg.log_dir) / "metrics.csv") if rank_zero_only.rank == 0 else None)
        if rows and rank_zero_only.rank == 0:  # a resume keeps exactly these rows (continue_csv_loggers)
            checkpoint[CSV_ROWS_KEY] = rows

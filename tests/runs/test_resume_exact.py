"""A run stopped by SIGTERM or SIGINT at any step and resumed with ``ckpt_path=last`` leaves the same
summary.json and metrics.csv as the uninterrupted run: the same rows, steps and values (all but the
wall-time keys fit_time_s and steps_per_s, and the run directory).

The stop lands either mid-epoch or in an epoch's last chunk (the case where the epoch's end, i.e.
validation, the epoch metrics, the epoch-interval scheduler step and the epoch's checkpoint, must be done
before saving), with an epoch-interval StepLR and with a per-step cosine schedule. MNIST-1D-sized: 18
steps an epoch, K=4 (chunks of 4, 4, 4, 4, 2 steps), 3 epochs, dropout and momentum (state that a resume
must carry).
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

BASE = [
    "experiment=mnist1d_mlp", "data.num_samples=1250", "data.train_size=900", "data.batch_size=50",
    "data.steps_per_chunk=4", "model.hidden=[32,32]", "model.dropout=0.2", "trainer.max_epochs=3",
    "trainer.check_val_every_n_epoch=1", "task.log_every_n_steps=1", "logger=csv",
    "callbacks.model_checkpoint.every_n_epochs=1", "threads=1",
]
SCHEDULES = {
    "step_epoch": ["scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5", "task.scheduler_interval=epoch"],
    "cosine": ["scheduler=cosine"],
    "cosine_max_steps": ["scheduler=cosine", "trainer.max_epochs=-1", "trainer.max_steps=54"],  # iteration-based
    # max_epochs ends the fit, max_steps is set but not reached (the mnist1d_mlp experiment's trainer, cut down)
    "cosine_max_epochs_and_steps": ["scheduler=cosine", "trainer.max_steps=6000"],
    # validation every 6 steps: Lightning's own loop (one mini-batch per step), a stop before a validation
    "cosine_val_every_6": ["scheduler=cosine", "+trainer.val_check_interval=6"],
}
WALL_TIME = ("fit_time_s", "steps_per_s", "run_dir")
# how the run was made, not what it computed: the segments (start, resume), the resume record, the overrides
HISTORY = ("segments", "resumed", "overrides")


def _summary(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in s.items() if k not in WALL_TIME + HISTORY}


def _csv(run_dir: Path) -> list[dict]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("epoch*.ckpt"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted runs, one per schedule (shared by the cases)."""
    from omegaconf import open_dict

    from conftest import compose
    from whylearn.experiment import run

    out = {}
    root = tmp_path_factory.mktemp("straight")
    for name, sched in SCHEDULES.items():
        cfg = compose(BASE + sched, root)
        with open_dict(cfg):
            cfg.paths.output_dir = str(root / name)
        summary = run(cfg)
        assert summary["status"] == "completed" and summary["steps"] == 54
        out[name] = root / name
    return out


@pytest.mark.parametrize(("schedule", "step", "signame", "saved_at", "where"), [
    ("step_epoch", 17, "SIGTERM", 18, "last chunk of epoch 0"),
    ("step_epoch", 27, "SIGINT", 30, "mid-epoch 1"),
    ("cosine", 35, "SIGTERM", 36, "last chunk of epoch 1"),
    ("cosine", 6, "SIGTERM", 8, "mid-epoch 0"),
    ("cosine_max_steps", 17, "SIGTERM", 18, "last chunk of epoch 0, max_steps"),
    ("cosine_val_every_6", 12, "SIGTERM", 12, "Lightning's loop, before a mid-epoch validation"),
])
def test_stop_and_resume_equals_the_uninterrupted_run(straight, make_cfg, tmp_path, schedule, step, signame, saved_at,
                                                      where):
    from whylearn.experiment import run
    from whylearn.runs import preemption

    fault = ["+callbacks.fault._target_=whylearn.runs.preemption.SignalAtStep", f"+callbacks.fault.step={step}",
             f"+callbacks.fault.signal_name={signame}"]
    with pytest.raises(preemption.Preempted) as info:
        run(make_cfg(BASE + SCHEDULES[schedule] + fault, sub="stopped"))
    assert info.value.signum == getattr(signal, signame)
    assert info.value.step == saved_at, where  # the end of the chunk the signal landed in, or after the epoch's end
    assert json.loads((tmp_path / "stopped" / "summary.json").read_text())["status"] == "interrupted"

    resumed = run(make_cfg(BASE + SCHEDULES[schedule] + ["ckpt_path=last"], sub="stopped"))
    assert resumed["status"] == "completed"
    want, got = straight[schedule], tmp_path / "stopped"
    assert _summary(got) == _summary(want)
    segments = json.loads((got / "summary.json").read_text())["segments"]
    assert [(s["start_step"], s["end_step"]) for s in segments] == [(0, saved_at), (saved_at, 54)]
    rows_got, rows_want = _csv(got), _csv(want)
    assert len(rows_got) == len(rows_want)
    for a, b in zip(rows_got, rows_want, strict=True):
        assert a == b, (where, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)})
    assert _checkpoints(got) == _checkpoints(want)  # the epoch checkpoints: none lost, none extra


class CrashAtStep(Callback):
    """A crash with no checkpoint of its own (as kill -9 or a lost node): raises once at optimizer step ``step``."""

    whylearn_batch_hooks = "per_step"  # at exactly ``step``, inside a chunk (whylearn.tasks.loop)

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")


def test_resume_after_a_crash_from_the_epoch_end_checkpoint_with_max_steps(straight, make_cfg, tmp_path):
    """A crash mid-epoch 1 leaves ModelCheckpoint's last.ckpt of epoch 0's end (step 18). With ``max_steps``
    set, Lightning 2.6 resumed it as saved inside that epoch's end: it ran the epoch end again, counted it as
    epoch 1 and stopped at step 36 of 54 with status "completed" (the reliability row "kill -9 mid-epoch,
    then resume"). It must train epochs 1 and 2 and end as the uninterrupted run does."""
    from whylearn.experiment import run

    crash = [f"+callbacks.crash._target_={__name__}.CrashAtStep", "+callbacks.crash.step=27"]
    with pytest.raises(RuntimeError, match="crash at step 27"):
        run(make_cfg(BASE + SCHEDULES["cosine_max_epochs_and_steps"] + crash, sub="crashed"))
    got = tmp_path / "crashed"
    assert json.loads((got / "summary.json").read_text())["status"] == "failed"

    resumed = run(make_cfg(BASE + SCHEDULES["cosine_max_epochs_and_steps"] + ["ckpt_path=last"], sub="crashed"))
    assert (resumed["status"], resumed["steps"], resumed["epochs"]) == ("completed", 54, 3)
    want = straight["cosine_max_epochs_and_steps"]
    assert _summary(got) == _summary(want)
    # (metrics.csv is not compared: a row logged at the checkpoint's step after it was saved, e.g. the grad norms
    # of step 19 at Lightning's step 18, is kept from the crashed run and written again: a separate issue)
    assert _checkpoints(got) == _checkpoints(want)

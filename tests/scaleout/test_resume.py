"""Resume outside SLURM: a run stopped by SIGTERM mid-epoch and resumed with ``ckpt_path=last``
ends exactly where an uninterrupted run ends (CPU, same seed); a NaN never overwrites the last good checkpoint."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from whylearn.runs.checkpoints import load_checkpoint

# A small MNIST-1D run with everything that has state across a resume: momentum (SGD), a cosine
# schedule, dropout (the RNG), a shuffled data order, mid-epoch chunks (K=4, 18 steps an epoch).
BASE = [
    "experiment=mnist1d_mlp", "optimizer=sgd", "data.shuffle=true", "data.num_samples=1250", "data.train_size=900",
    "data.batch_size=50",
    "data.steps_per_chunk=4", "model.hidden=[32,32]", "model.dropout=0.2", "scheduler=cosine",
    "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=1", "task.log_every_n_steps=1",
    "logger=csv", "callbacks.model_checkpoint.every_n_epochs=1", "callbacks.grad_norms=null", "threads=1",
]
KEYS = ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc", "weights/l2_total",
        "weights/dist_from_init", "steps", "epochs")


def _history(run_dir):
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return ckpt["whylearn_history"], ckpt["global_step"]


def test_sigterm_mid_epoch_then_ckpt_path_last_matches_uninterrupted(make_cfg, tmp_path):
    from whylearn.experiment import run
    from whylearn.runs import preemption

    straight = run(make_cfg(BASE, sub="straight"))
    assert straight["status"] == "completed" and straight["steps"] == 54

    cfg = make_cfg(BASE + ["+callbacks.fault._target_=whylearn.runs.preemption.SignalAtStep", "+callbacks.fault.step=27",
                           "+callbacks.fault.signal_name=SIGTERM"], sub="stopped")
    with pytest.raises(preemption.Preempted) as info:
        run(cfg)
    assert info.value.signum == signal.SIGTERM
    stopped_at = info.value.step
    assert 27 <= stopped_at < 36 and stopped_at % 18 != 0  # mid-epoch (epoch 1), on a chunk boundary
    _, saved_step = _history(tmp_path / "stopped")
    assert saved_step == stopped_at
    assert '"status": "interrupted"' in (tmp_path / "stopped" / "summary.json").read_text()

    resumed = run(make_cfg(BASE + ["ckpt_path=last"], sub="stopped"))
    assert resumed["status"] == "completed"
    for key in KEYS:
        assert resumed[key] == straight[key], key  # exactly: same floats on the CPU
    h_straight, _ = _history(tmp_path / "straight")
    h_resumed, _ = _history(tmp_path / "stopped")
    for key in ("train/loss", "lr", "val/loss", "train/loss_epoch", "gap/acc"):
        assert h_resumed[key] == h_straight[key], key  # the whole curve, step by step
    # the CSV continues without the rows of the stopped run past its checkpoint (no duplicate steps)
    import csv

    rows = [r for r in csv.DictReader((tmp_path / "stopped" / "csv" / "metrics.csv").open()) if r.get("train/loss")]
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps)) and len(steps) == 54


def test_ckpt_path_last_without_checkpoint_names_the_path(make_cfg, tmp_path):
    from whylearn.experiment import run

    with pytest.raises(FileNotFoundError, match="ckpt_path=last: no checkpoint at .*last.ckpt"):
        run(make_cfg(BASE + ["ckpt_path=last"], sub="empty"))


def test_nan_loss_keeps_the_last_good_checkpoint(make_cfg, tmp_path):
    from whylearn.experiment import run
    from whylearn.tasks.base import NonFiniteLossError

    # the learning rate jumps by 1e30 after the first epoch: the loss of epoch 2 is not finite
    cfg = make_cfg(BASE + ["scheduler=step", "scheduler.step_size=18", "scheduler.gamma=1e30",
                           "model.dropout=0.0"], sub="nan")
    with pytest.raises(NonFiniteLossError):
        run(cfg)
    ckpt = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 18  # saved at the end of epoch 0, before the blow-up
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert '"status": "failed"' in (tmp_path / "nan" / "summary.json").read_text()


def test_run_dir_and_wandb_id_are_keyed_on_the_slurm_job(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir

    from whylearn.runs.identity import run_id, wandb_run_id

    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    assert not run_id().startswith("slurm-")  # a timestamp outside SLURM
    assert wandb_run_id(tmp_path / "a") == wandb_run_id(tmp_path / "a") != wandb_run_id(tmp_path / "b")

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4200")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert run_id() == "slurm-4200_7"
    assert wandb_run_id(tmp_path / "a").startswith("4200_7-") and wandb_run_id(tmp_path / "a") == wandb_run_id(tmp_path / "a")
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(Path(__file__).resolve().parents[2] / "conf")):
        cfg = compose("train", overrides=["experiment=mnist1d_mlp", f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    assert cfg.hydra.run.dir.endswith("outputs/mnist1d_mlp/runs/slurm-4200_7")  # what a requeued job finds again

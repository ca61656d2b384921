"""DDP on the CPU (gloo): 2 processes with 25 samples each per step follow the same loss curve as
1 process with 50 (batch_size is per device), and the job writes one summary, one CSV, one W&B run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .slurm_cluster import needs_slurm, whylearn

SMALL = ["experiment=mnist1d_mlp", "data.num_samples=1250", "data.train_size=900", "model.hidden=[32,32]",
         "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "task.log_every_n_steps=1",
         "callbacks.grad_norms=null", "threads=1", "progress=lines"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=25"]


def _curve(run_dir, key="train/loss"):
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
    steps = [s for s, _ in pts]
    assert steps == sorted(set(steps)), f"{key} logged more than once per step: {steps}"
    return dict(pts)


def _check_against_one_process(run_dir, make_cfg):
    from whylearn.experiment import run

    cfg = make_cfg(SMALL + ["data.batch_size=50", "logger=csv"], sub="one")
    one, one_dir = run(cfg), Path(cfg.paths.output_dir)
    ddp_summary = json.loads((run_dir / "summary.json").read_text())
    assert ddp_summary["status"] == "completed" and ddp_summary["steps"] == one["steps"] == 36
    ddp_curve, one_curve = _curve(run_dir), _curve(one_dir)
    assert sorted(ddp_curve) == sorted(one_curve) == list(range(1, 37))
    for step, loss in one_curve.items():
        assert math.isclose(ddp_curve[step], loss, rel_tol=1e-5), (step, ddp_curve[step], loss)
    # evaluation is sharded over the ranks and reduced: the same numbers as one process sees
    for key in ("val/loss", "val/acc", "test/loss", "test/acc", "train/loss", "weights/l2_total"):
        assert math.isclose(ddp_summary[key], one[key], rel_tol=1e-4, abs_tol=1e-6), (key, ddp_summary[key], one[key])
    # one W&B run for the job, written by rank 0
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1


def test_ddp_two_cpu_processes_match_one_process_with_the_same_global_batch(make_cfg, tmp_path):
    run_dir = tmp_path / "ddp"
    res = whylearn([*SMALL, *DDP, "logger=default", f"paths.root_dir={tmp_path}", f"hydra.run.dir={run_dir}"],
                   tmp_path, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _check_against_one_process(run_dir, make_cfg)


@needs_slurm
def test_ddp_two_tasks_under_srun_train_and_log_once(make_cfg, tmp_path):
    """The Lightning way on SLURM: srun starts one task per device (--ntasks-per-node = devices)."""
    res = whylearn([*SMALL, *DDP, "logger=default", f"paths.root_dir={tmp_path}"], tmp_path, timeout=400,
                   prefix=["srun", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run_dir,) = list(tmp_path.glob("outputs/mnist1d_mlp/runs/slurm-*"))  # the folder is keyed on the job
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in res.stdout + res.stderr
    _check_against_one_process(run_dir, make_cfg)

"""On a real SLURM cluster (localhost): a submitit multirun completes every job; a job requeued
mid-training resumes in its own run directory and ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
import re

import pytest

from .slurm_cluster import needs_slurm, whylearn, whylearn_releasing_requeued
from .test_resume import BASE, KEYS

pytestmark = needs_slurm


def _summaries(sweep_root):
    return sorted(sweep_root.glob("outputs/*/multiruns/*/*/summary.json"))


@pytest.mark.slow  # the requeue test below also runs a job array to completion
def test_submitit_multirun_runs_every_job_as_an_array(tmp_path):
    res = whylearn(["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                    "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10", *BASE,
                    "trainer.max_steps=20", f"paths.root_dir={tmp_path}", "seed=0,1"], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in _summaries(tmp_path)]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert sorted(s["seed"] for s in summaries) == [0, 1] and all(s["steps"] == 20 for s in summaries)
    # submitted as one job array: <array job id>_<task> folders
    jobs = sorted(p.name for p in tmp_path.glob("outputs/*/multiruns/*/.submitit/[0-9]*_[0-9]*"))
    assert len(jobs) == 2 and re.fullmatch(r"\d+_0", jobs[0]) and jobs[1] == jobs[0][:-1] + "1", jobs


def test_requeued_jobs_resume_in_their_run_dirs_with_the_same_final_metrics(make_cfg, tmp_path):
    """A job array of two jobs, each stopped once mid-training by SLURM, then requeued:
    ``requeue``: ``scontrol requeue`` (SLURM sends SIGTERM, as on preemption, and queues the job again);
    ``scancel``: SLURM delivers USR2, as before a time limit, and submitit requeues the job."""
    from whylearn.experiment import run

    name = f"wl-requeue-{tmp_path.name}"
    res = whylearn_releasing_requeued(
        ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=10",
         f"hydra.launcher.name={name}", *BASE, "logger=default",
         "+callbacks.fault._target_=whylearn.runs.preemption.SignalAtStep", "+callbacks.fault.step=27",
         "+callbacks.fault.how=requeue,scancel", f"paths.root_dir={tmp_path}"],
        tmp_path, name)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    straight = run(make_cfg(BASE, sub="straight"))
    summaries = _summaries(tmp_path)
    assert len(summaries) == 2
    for summary_path, (how, signal_name) in zip(summaries, [("requeue", "SIGTERM"), ("scancel", "SIGUSR2")], strict=False):
        run_dir = summary_path.parent
        requeued = json.loads(summary_path.read_text())
        assert requeued["status"] == "completed"
        # the job ran twice in the same run directory: stopped with a checkpoint at a chunk boundary, then resumed
        job_num = run_dir.name.split("_")[0]  # the folder is <job number>_<its overrides>
        (job_dir,) = [p for p in (run_dir.parent / ".submitit").iterdir() if p.name.endswith(f"_{job_num}")]
        log = "\n".join(p.read_text() for p in job_dir.glob("*_log.out"))
        assert f"SignalAtStep: sending {signal_name} by {how}" in log
        assert f"received {signal_name}: saving a checkpoint" in log
        assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in log
        # one W&B run, continued: both attempts used the same id, keyed on the SLURM array task
        wandb_runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
        ids = {re.fullmatch(r"offline-run-\d{8}_\d{6}-(.+)", n).group(1) for n in wandb_runs}
        assert len(wandb_runs) == 2 and len(ids) == 1, wandb_runs
        assert ids.pop().startswith(f"{job_dir.name}-")
        for key in KEYS:
            assert requeued[key] == straight[key], (how, key)

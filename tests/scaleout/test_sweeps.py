"""Sweeps: a grid (in turn, or in parallel with joblib) with one failing job keeps the others' results and reports the
failure at the end; an Optuna search runs, resumes from its SQLite study and reports the best value."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from .slurm_cluster import whylearn

TINY = ["experiment=mnist1d_mlp", "data.num_samples=1250", "data.train_size=900", "model.hidden=[32,32]",
        "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "logger=csv", "callbacks.grad_norms=null",
        "threads=1", "progress=none"]


@pytest.mark.parametrize("launcher", ["basic", pytest.param("joblib", marks=pytest.mark.slow)])
def test_grid_with_a_failing_job_keeps_the_others_and_reports_it(launcher, tmp_path):
    """basic: one process, jobs in turn; joblib: jobs in parallel worker processes (slow here: each imports Lightning)."""
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    res = whylearn(["-m", *parallel, *TINY, f"hydra.sweep.dir={tmp_path}/sweep", "data.label_noise=1.5,0.2"], tmp_path)
    assert res.returncode != 0  # the multirun says that a job failed ...
    out = res.stdout + res.stderr
    # each job's folder names what it sets: 0_data.label_noise=1.5, 1_data.label_noise=0.2
    assert "SweepFailed: 1 of 2 jobs failed: job 0_data.label_noise=1.5 [- experiment=mnist1d_mlp" in out, out[-3000:]
    assert "data.label_noise=1.5]: ConfigError: invalid config value" in out
    assert "data.label_noise=1.5: expected a number >= 0 and <= 1" in out
    summaries = [json.loads((tmp_path / "sweep" / f"{i}_data.label_noise={v}" / "summary.json").read_text())
                 for i, v in enumerate(("1.5", "0.2"))]
    # ... and the other job ran to the end and kept its results
    assert [s["status"] for s in summaries] == ["failed", "completed"]
    assert summaries[1]["label_noise"] == 0.2 and summaries[1]["steps"] == 18 and summaries[1]["val/loss"] > 0
    table = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert (table["completed"], table["failed"]) == (1, 1)


def _rdb_reason() -> str | None:
    import optuna
    import sqlalchemy

    if int(optuna.__version__.split(".")[0]) < 3 and int(sqlalchemy.__version__.split(".")[0]) >= 2:
        return (f"optuna {optuna.__version__} (required by hydra-optuna-sweeper 1.3) cannot use SQLite storage with "
                f"SQLAlchemy {sqlalchemy.__version__}: install the pins SQLAlchemy<2 and alembic<1.14 (docs/scaleout.md)")
    return None


@pytest.mark.slow  # four trials in two sweeps, each a process: the default suite's Optuna test is the next one
@pytest.mark.skipif(_rdb_reason() is not None, reason=str(_rdb_reason()))
def test_optuna_search_resumes_from_its_storage_and_reports_the_best_value(tmp_path):
    import optuna

    db = tmp_path / "study.db"
    args = ["-m", "hparams_search=mnist1d_optuna", *TINY, "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=t",
            f"hydra.sweeper.storage=sqlite:///{db}"]
    first = whylearn([*args, f"hydra.sweep.dir={tmp_path}/first"], tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = whylearn([*args, f"hydra.sweep.dir={tmp_path}/second"], tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Using an existing study with name 't'" in second.stdout + second.stderr

    study = optuna.load_study(study_name="t", storage=f"sqlite:///{db}")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 4 and len({tuple(sorted(t.params.items())) for t in trials}) == 4  # new points, not repeats
    val_losses = [json.loads(p.read_text())["val/loss"] for p in sorted(tmp_path.glob("*/[0-9]_*/summary.json"))]
    assert len(val_losses) == 4
    best = yaml.safe_load((tmp_path / "second" / "optimization_results.yaml").read_text())
    assert math.isclose(best["best_value"], min(val_losses), rel_tol=1e-9)  # the best over both runs
    assert set(best["best_params"]) == {"optimizer.lr", "optimizer.momentum", "data.batch_size"}


def test_optuna_search_with_a_failing_trial_reports_the_best_of_the_others(tmp_path):
    """In memory (no storage needed): label_noise 0.1 (trains) or 1.5 (a bad value), seeded sampler."""
    res = whylearn(["-m", "hparams_search=mnist1d_optuna", "hydra.sweeper.sampler.seed=0", *TINY,
                    "hydra.sweeper.storage=null", "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failure_rate=0.7",
                    "hydra.sweeper.params=null", "data.label_noise=choice(0.1,1.5)",
                    f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    out = res.stdout + res.stderr
    jobs = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/summary.json"))]
    failed = [j for j in jobs if j["status"] == "failed"]
    completed = [j for j in jobs if j["status"] == "completed"]
    assert len(jobs) == 3 and failed and completed, [j["status"] for j in jobs]
    assert all("data.label_noise=1.5: expected a number >= 0 and <= 1" in j["error"] for j in failed)
    assert res.returncode == 1 and f"SweepFailed: {len(failed)} of 3 jobs failed" in out, out[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"data.label_noise": 0.1}
    assert best["best_value"] == min(j["val/loss"] for j in completed)

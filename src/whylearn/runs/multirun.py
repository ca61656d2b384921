"""Sweeps: a failing job does not take the others down, and the multirun ends with a report.

In a multirun (``-m``: the basic sweeper's grids, the joblib or submitit launchers, the Optuna
sweeper), :func:`whylearn.cli.train.main` catches an ordinary exception of a job, makes sure the job's
folder holds a ``summary.json`` with ``status: failed`` and the error, and returns None (the
Optuna sweeper then tells the study the trial failed, within ``max_failure_rate``; a NaN would not
do: optuna 2.10 refuses it and the sweeper crashes). The other jobs run on and keep their
results. :class:`SweepReport` (a Hydra callback, on in ``conf/hydra/default.yaml``) then writes
``sweep_summary.json`` in the sweep folder with every job's status and metric, logs a table, and
ends the multirun with an error naming the failed jobs, so the exit status says it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("whylearn")


class SweepFailed(SystemExit):
    """Some jobs of a multirun failed; the others completed and kept their results.

    A ``SystemExit`` (status 1, the message on stderr): Hydra turns an ordinary exception of a
    callback into a warning, and the multirun's exit status must say that jobs failed."""

    def __init__(self, message: str) -> None:
        super().__init__(f"SweepFailed: {message}")


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(run_dir: Path, error: BaseException) -> None:
    """Leave ``summary.json`` with ``status: failed`` in a job's folder (if the run did not write one)."""
    path = Path(run_dir) / "summary.json"
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": "failed", "error": f"{type(error).__name__}: {error}",
                                "run_dir": str(run_dir)}, indent=2))


def _job_order(name: str) -> tuple[int, str]:
    """Job folders (``<job number>_<overrides>``) in launch order."""
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, name)


class SweepReport(Callback):
    """Collect every job's ``summary.json`` at the end of a multirun; fail the multirun if any job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # an SQLite study of the Optuna sweeper needs its folder before the sweeper opens it
        storage = str(config.hydra.sweeper.get("storage") or "")
        if storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        metric = config.get("optimized_metric")
        jobs = []
        for summary in sorted(sweep_dir.glob("*/summary.json"), key=lambda p: _job_order(p.parent.name)):
            s = json.loads(summary.read_text())
            overrides = (summary.parent / ".hydra" / "overrides.yaml")
            jobs.append({"job": summary.parent.name, "status": s.get("status"), "error": s.get("error"),
                         metric or "metric": s.get(metric) if metric else None,
                         "overrides": overrides.read_text().strip().replace("\n", " ") if overrides.is_file() else ""})
        failed = [j for j in jobs if j["status"] != "completed"]
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(
            {"jobs": jobs, "completed": len(jobs) - len(failed), "failed": len(failed)}, indent=2))
        lines = [f"sweep {sweep_dir}: {len(jobs) - len(failed)} of {len(jobs)} jobs completed"]
        lines += [f"  job {j['job']}: {j['status']}" + (f" {metric}={j[metric]:.4g}" if metric and
                  isinstance(j.get(metric), (int, float)) else "") + (f"  ({j['error']})" if j["error"] else "")
                  for j in jobs]
        log.info("\n".join(lines))
        if failed:
            raise SweepFailed(f"{len(failed)} of {len(jobs)} jobs failed: " + "; ".join(
                f"job {j['job']} [{j['overrides']}]: {j['error']}" for j in failed)
                + f". The others' results are in {sweep_dir}; the table is in {sweep_dir / 'sweep_summary.json'}")

"""Who a run is: the SLURM job key, the run folder's name and the W&B run id, stable across requeues.

Light (no torch, no Lightning) so that ``import whylearn`` can register the
``${whylearn.run_id:}`` resolver that ``conf/hydra/default.yaml`` names.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime
from pathlib import Path


def slurm_job_key() -> str | None:
    """``<array job>_<task>`` for a SLURM array task, ``<job id>`` for a plain job, None outside SLURM.

    Both stay the same when SLURM requeues the job.
    """
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def run_id(pattern: str = "%Y-%m-%d_%H-%M-%S") -> str:
    """The name of a run's folder: ``slurm-<job key>`` inside SLURM (stable across requeues), else a timestamp."""
    key = slurm_job_key()
    return f"slurm-{key}" if key else datetime.now().strftime(pattern)


def wandb_run_id(run_dir: Path | str) -> str:
    """A W&B run id that is the same every time this job (or this run directory) starts.

    Inside SLURM: ``<job key>-<8 hex of the run dir>`` (the hash tells apart the runs of
    different sweeps that reuse job ids); outside: 16 hex digits of the run directory's path.
    """
    digest = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()
    key = slurm_job_key()
    raw = f"{key}-{digest[:8]}" if key else digest[:16]
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


def register_resolvers() -> None:
    """``${whylearn.run_id:}`` and ``${whylearn.cwd:}`` for Hydra configs (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("whylearn.run_id"):
        OmegaConf.register_new_resolver("whylearn.run_id", lambda *a: run_id(*a), use_cache=True)
    if not OmegaConf.has_resolver("whylearn.cwd"):
        # the launching directory, resolvable at any time: Hydra's ${hydra:runtime.cwd} is not yet set
        # while a multirun builds its sweep folder, so paths that depend on it broke every `-m` command
        OmegaConf.register_new_resolver("whylearn.cwd", lambda: os.getcwd())



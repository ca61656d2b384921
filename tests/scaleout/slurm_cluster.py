"""Helpers for the tests that need a real SLURM cluster (``slurm/local_cluster.sh`` starts one on localhost)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cluster_reason() -> str | None:
    """Why the SLURM tests cannot run here, or None if a node is up."""
    if shutil.which("sinfo") is None:
        return "no SLURM cluster: `sinfo` not found (start one on localhost with `sudo bash slurm/local_cluster.sh`)"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "no SLURM cluster: `sinfo` timed out (is slurmctld running? `sudo bash slurm/local_cluster.sh`)"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no SLURM node up: `sinfo` says {out.stdout.strip() or out.stderr.strip()!r} (`sudo bash slurm/local_cluster.sh`)"
    return None


needs_slurm = pytest.mark.skipif(cluster_reason() is not None, reason=str(cluster_reason()))


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("WANDB_MODE", "offline")
    e.setdefault("WANDB_SILENT", "true")
    return e


def whylearn(args: list[str], cwd: Path, timeout: float = 300, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m whylearn.cli.train ARGS`` (optionally under ``prefix``, e.g. srun) and return the result."""
    cmd = (prefix or []) + [sys.executable, "-m", "whylearn.cli.train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def whylearn_releasing_requeued(args: list[str], cwd: Path, job_name: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Like :func:`whylearn`, for a run whose SLURM jobs (named ``job_name``) get requeued: SLURM holds a
    requeued job for about two minutes (its BeginTime); this releases it at once (``StartTime=now``)."""
    import time

    cmd = [sys.executable, "-m", "whylearn.cli.train", *args]
    with subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        t0 = time.monotonic()
        while p.poll() is None and time.monotonic() - t0 < timeout:
            held = subprocess.run(["squeue", "-h", "-n", job_name, "-t", "PD", "-o", "%i %r"],
                                  capture_output=True, text=True).stdout.split("\n")
            for line in filter(None, held):
                job, reason = line.split(maxsplit=1)
                if "BeginTime" in reason:
                    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)
            time.sleep(1)
        if p.poll() is None:
            p.kill()
        out, err = p.communicate()
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)

"""Sweeps: a failing job does not take the others down, and the multirun ends with a report.

In a multirun (``-m``: the basic sweeper's grids, the joblib or submitit launchers, the Optuna
sweeper), :func:`whylearn.cli.train.main` catches an ordinary exception of a job, makes sure the job's
folder holds a ``summary.json`` with ``status: failed`` and the error, and returns None (the
Optuna sweeper then tells the study the trial failed, within ``max_failure_rate``; a NaN would not
do: optuna 2.10 refuses it and the sweeper crashes). The other jobs run on and keep their
results. :class:`SweepReport` (a Hydra callback, on in ``conf/hydra/default.yaml``) then writes
``sweep_summary.json`` in the sweep folder with every job's status and metric, logs a table, and
ends the multirun with an error naming the failed jobs, so the exit status says it.

Reading a finished multirun back (``whylearn-analyze``, ``scripts/lr_stability_report.py``): :func:`job_folders`
lists its job folders in launch order and :func:`job_overrides` reads the overrides Hydra recorded for a job,
each value typed as Hydra's override grammar types it when it sets the config.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
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


def job_folders(root: str | Path) -> list[Path]:
    """Every folder at or below ``root`` that holds a ``summary.json`` (a multirun's jobs, the runs of a runs
    folder, several multiruns), in launch order: by job number (the ``<n>_`` of ``<n>_<overrides>``; folders
    without one last), then by path. [] when there is none."""
    return sorted({p.parent for p in Path(root).rglob("summary.json")}, key=lambda job: (_job_order(job.name)[0], str(job)))


_PARSER: list[OverridesParser] = []  # built on first use (Hydra's ANTLR grammar)


def _override(text: str) -> tuple[str, Any]:
    """``(key without its +/++/~ prefix, value)`` of one override, typed by Hydra's override grammar.

    Raises ValueError (the grammar's message) for text that is not one ``key=value`` override, a sweep included."""
    if not _PARSER:
        _PARSER.append(OverridesParser.create())
    try:
        override = _PARSER[0].parse_override(text)
    except HydraException as e:
        raise ValueError(str(e)) from None
    if override.is_sweep_override():
        raise ValueError("a sweep (several values), not one value")
    value = override.value()
    if isinstance(value, (list, dict)):  # kept as Hydra writes it, so that values stay hashable
        value = override.get_value_element_as_str()
    return override.get_key_element().lstrip("+~"), value


def parse_override_value(text: str) -> Any:
    """The value of ``key=<text>`` as Hydra's override grammar types it when it sets the config.

    ``0.3`` and ``3e-1`` -> 0.3 (float), ``1`` -> 1 (int), ``true``/``True`` -> True, ``null`` -> None,
    ``'batch'``/``"batch"``/``batch`` -> "batch", ``'1'`` -> "1" (quoted: a string). A list or dict stays its
    text as Hydra writes it (``[64,64]``).

    Raises:
        ValueError: the grammar refuses ``text`` or it is a sweep (``0.1,0.2``); names ``text``.
    """
    try:
        return _override(f"k={text}")[1]
    except ValueError as e:
        raise ValueError(f"{text!r} is not one value of Hydra's override grammar: {e}") from None


def job_overrides(job: str | Path) -> dict[str, Any]:
    """``{key: value}`` of the overrides Hydra recorded for a run (``<job>/.hydra/overrides.yaml``); {} without one.

    Keys lose their ``+``/``++``/``~`` prefix (a deleted key, ``~key``, reads None); values are typed as
    :func:`parse_override_value` types them, e.g. ``optimizer.lr=3e-1`` -> 0.3, ``model.bias=true`` -> True.

    Raises:
        ValueError: the file is not a YAML list of overrides, or an item is not one ``key=value`` override
            (names the file and the item).
    """
    path = Path(job) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list):
        raise ValueError(f"{path} is not a list of overrides (Hydra writes one `- key=value` line per override)")
    out = {}
    for item in items:
        try:
            key, value = _override(str(item))
        except ValueError as e:
            raise ValueError(f"{path}: {item!r} is not one key=value override: {e}") from None
        out[key] = value
    return out


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

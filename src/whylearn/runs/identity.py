"""Who a run is: the SLURM job key, the run folder's name and the W&B run id, stable across requeues.

Light (no torch, no Lightning) so that ``import whylearn`` can register the
``${whylearn.run_dir:}`` and ``${whylearn.job_subdir:}`` resolvers that ``conf/hydra/default.yaml`` names.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

RUN_ID_PATTERN = "%Y-%m-%d_%H-%M-%S"
MAX_NAME_BYTES = 120  # a job folder's name stays far below the 255-byte limit of most file systems


def slurm_job_key() -> str | None:
    """``<array job>_<task>`` for a SLURM array task, ``<job id>`` for a plain job, None outside SLURM.

    Both stay the same when SLURM requeues the job.
    """
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def run_id(pattern: str = RUN_ID_PATTERN) -> str:
    """The name of a run's folder: ``slurm-<job key>`` inside SLURM (stable across requeues), else a timestamp."""
    key = slurm_job_key()
    return f"slurm-{key}" if key else datetime.now().strftime(pattern)


def new_run_dir(parent: str | Path, pattern: str = RUN_ID_PATTERN) -> Path:
    """A run folder of its own under ``parent``: created here, atomically, so two runs never share one.

    Outside SLURM the name is a timestamp (``pattern``); when a folder of that name already exists
    (another run started in the same second, or a coarse ``pattern``) the next free of
    ``<name>_1``, ``<name>_2``, ... is taken. ``os.mkdir`` either creates the folder or fails, so of
    any number of processes starting at the same instant each gets a different folder.

    Inside SLURM the name is ``slurm-<job key>`` (:func:`run_id`), which a requeued job must find
    again: that folder is returned without creating it (Hydra creates it), and reusing it is the point.

    Raises:
        OSError: the parent cannot be created (e.g. permissions), with its path.
    """
    parent = Path(parent)
    if slurm_job_key():
        return parent / run_id(pattern)
    parent.mkdir(parents=True, exist_ok=True)
    name = datetime.now().strftime(pattern)
    for n in range(100_000):
        candidate = parent / (name if n == 0 else f"{name}_{n}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free run folder name under {parent} for {name!r} (tried {name}_1 .. {name}_99999)")


# the plain (not swept) overrides of the multirun started in this process (whylearn.config.ValidateConfig sets it),
# for sweepers that save no multirun.yaml (Optuna)
SWEEP_COMMON_OVERRIDES: list[str] = []
ITEM_SEP = "__"


def _override_items(overrides: list[str]) -> list[tuple[str, str, bool]]:
    """``(key, value, is_sweep)`` of each override, written as Hydra writes them in ``override_dirname``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    return [(o.get_key_element(), "" if o.is_sweep_override() else o.get_value_element_as_str(), o.is_sweep_override())
            for o in parsed]


def _common_overrides(sweep_dir: str | Path | None) -> set[str]:
    """``key=value`` of the overrides every job of the sweep shares (the sweep's command line minus its sweeps)."""
    raw: list[str] = list(SWEEP_COMMON_OVERRIDES)
    saved = Path(sweep_dir) / "multirun.yaml" if sweep_dir else None
    if saved is not None and saved.is_file():  # the basic sweeper saves its config there before any job runs
        from omegaconf import OmegaConf

        try:
            raw = [str(o) for o in OmegaConf.load(saved).hydra.overrides.task]
        except Exception:  # noqa: BLE001 - an unreadable file: fall back to what this process knows
            pass
    try:
        return {f"{k}={v}" for k, v, sweep in _override_items(raw) if not sweep}
    except Exception:  # noqa: BLE001 - an override Hydra's parser refuses was refused at launch already
        return set()


def job_subdir(num: int | str, overrides: list | None = None, sweep_dir: str | None = None,
               exclude_keys: list | None = None) -> str:
    """A multirun job's folder name: ``<job number>_<what this job sets>``, e.g. ``1_model.hidden=[64,64]``.

    The job's overrides (Hydra's ``hydra.overrides.task``) are listed as ``key=value`` joined by
    ``__``, sorted, leaving out those every job of the sweep shares (a plain override on the sweep's
    command line, read from the sweep's ``multirun.yaml``) and ``exclude_keys`` (where data and
    runs go, threads ...). Path separators become ``%2F`` so a value such as a path does not nest
    folders; a name longer than :data:`MAX_NAME_BYTES` bytes is cut and ends with ``~`` and 8 hex
    digits of the whole name, so it stays unique. The job number first keeps the folders in launch
    order and unique; a job with nothing of its own is just its number.
    """
    common = _common_overrides(sweep_dir)
    exclude = {str(k) for k in (exclude_keys or [])}
    items = sorted(f"{k}={v}" for k, v, _ in _override_items(list(overrides or []))
                   if k.lstrip("+~") not in exclude and f"{k}={v}" not in common)
    text = ITEM_SEP.join(items).replace("/", "%2F").replace("\\", "%5C").replace("\0", "")
    name = f"{num}_{text}" if text else str(num)
    if len(name.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name.encode()[: MAX_NAME_BYTES - 9].decode(errors="ignore") + "~" + digest
    return name


def wandb_run_id(run_dir: Path | str) -> str:
    """A W&B run id that is the same every time this job (or this run directory) starts.

    Inside SLURM: ``<job key>-<8 hex of the run dir>`` (the hash tells apart the runs of
    different sweeps that reuse job ids); outside: 16 hex digits of the run directory's path.
    """
    digest = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()
    key = slurm_job_key()
    raw = f"{key}-{digest[:8]}" if key else digest[:16]
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


def experiment_name(default: str | None = None, *, _root_: Any = None) -> str | None:
    """The composed experiment's name (``experiment=<name>``: ``conf/experiment/<name>.yaml``), else ``default``.

    Hydra records the choice in ``hydra.runtime.choices``: read from the config's own ``hydra`` node when it
    has one (Hydra's callbacks, the compose API with ``return_hydra_config=True``), else from Hydra's
    runtime (a job's config, whose ``hydra`` node Hydra removed). ``train.yaml`` names its ``task_name``
    (the run folder) and ``experiment_name`` with it, so an experiment file need not repeat its own name.
    """
    from omegaconf import OmegaConf

    choices = OmegaConf.select(_root_, "hydra.runtime.choices", default=None) if _root_ is not None else None
    if choices is None:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    name = choices.get("experiment")
    return str(name) if name is not None else default


def register_resolvers() -> None:
    """Resolvers for Hydra configs (idempotent):

    - ``${whylearn.run_dir:<parent>[,<pattern>]}``: :func:`new_run_dir` (creates the folder; cached per
      config object, so every reading of ``hydra.run.dir`` in one run gives the same folder);
    - ``${whylearn.run_id:[<pattern>]}``: :func:`run_id`, the name only (creates nothing);
    - ``${whylearn.job_subdir:<num>,<overrides>,<sweep dir>,<exclude keys>}``: :func:`job_subdir`;
    - ``${whylearn.experiment:[<default>]}``: :func:`experiment_name`;
    - ``${whylearn.cwd:}``: the launching directory.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("whylearn.run_id"):
        OmegaConf.register_new_resolver("whylearn.run_id", lambda *a: run_id(*a), use_cache=True)
    if not OmegaConf.has_resolver("whylearn.run_dir"):
        OmegaConf.register_new_resolver("whylearn.run_dir", lambda *a: str(new_run_dir(*a)), use_cache=True)
    if not OmegaConf.has_resolver("whylearn.job_subdir"):
        OmegaConf.register_new_resolver("whylearn.job_subdir", lambda *a: job_subdir(*a))
    if not OmegaConf.has_resolver("whylearn.experiment"):
        OmegaConf.register_new_resolver("whylearn.experiment", experiment_name)
    if not OmegaConf.has_resolver("whylearn.cwd"):
        # the launching directory, resolvable at any time: Hydra's ${hydra:runtime.cwd} is not yet set
        # while a multirun builds its sweep folder, so paths that depend on it broke every `-m` command
        OmegaConf.register_new_resolver("whylearn.cwd", lambda: os.getcwd())



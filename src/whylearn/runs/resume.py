"""Deciding, before anything is written, whether a run starts fresh or resumes, and checking the resume.

Light (torch only when a checkpoint is read, no Lightning): :class:`whylearn.config.ValidateConfig`
runs :func:`plan_resume` after Hydra composed the config and before Hydra creates or touches the run
folder. Carrying a resume out (restoring, applying optimizer changes, continuing the CSV log, the
run's account of its segments) is :class:`whylearn.runs.record.RunRecord`'s.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whylearn.runs.identity import slurm_job_key

log = logging.getLogger("whylearn")

RECORD_KEY = "RunRecord"  # the state key of whylearn.runs.record.RunRecord in a checkpoint's "callbacks"
CSV_ROWS_KEY = "whylearn_csv_rows"  # per CSV logger: the metrics.csv rows on disk when the checkpoint was saved


def env_rank() -> int:
    """This process's global rank from the launcher's environment (as Lightning reads it), 0 outside DDP."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(key)
        if value:
            return int(value)
    return 0


# What a resume may change, and what it may not (docs/scaleout.md, "What a resume may change"):
#  - applied, as a Lightning user would expect of a run that continues: everything that controls the run
#    rather than defines its state: trainer.* (max_epochs, max_steps, devices, limits, ...), callbacks.*,
#    logger.*, paths.*, progress, threads, tags; where data is read from (data.data_dir, download,
#    num_workers, eval_batch_size ...); the task's logging interval and gradient clipping;
#  - applied to the restored optimizer, recorded in summary.json (resumed.applied) and logged:
#    the optimizer's hyper-parameters (lr, weight_decay, momentum, dampening, betas, eps, nesterov), in
#    the parameter groups that took them from the config; a new lr rescales the restored schedule;
#  - refused, naming each key: what defines the trained state or the data it was trained on: seed,
#    model.*, data.* (the examples, the split, the batch size), task.* (the loss ...), scheduler.*,
#    optimizer._target_ and keys it cannot change mid-run (amsgrad, foreach ...), and a new
#    max_epochs/max_steps when the schedule's total_steps is auto (the schedule would be stretched
#    mid-run; pin scheduler.total_steps to the planned steps to keep it).
RUN_FILES = ("config.yaml", "summary.json", "checkpoints", "csv/metrics.csv")
RESUME_CHECKED = ("seed", "model", "data", "task", "optimizer", "scheduler")
FREE_ON_RESUME = {
    "data": ("data_dir", "cache_dir", "download", "verify", "num_workers", "eval_batch_size", "pin_memory",
             "persistent_workers", "max_eval_windows"),
    "task": ("log_every_n_steps", "gradient_clip_val", "sample_tokens", "sample_prompt"),
}
APPLIED_OPTIMIZER_KEYS = ("lr", "weight_decay", "momentum", "dampening", "betas", "eps", "nesterov")
_UNSET = object()


class RunFolderInUse(FileExistsError):
    """The run folder already holds a run (or another process is using it) and was not asked to continue it."""


class ResumeRefused(ValueError):
    """The config differs from the checkpoint's in values a resumed run cannot take; each is named."""


@dataclass
class ResumePlan:
    """What :func:`plan_resume` decided: the checkpoint to pass to ``trainer.fit`` (None: start fresh),
    its step, the optimizer values to apply after restoring (``key: (checkpoint's, new)``), the
    checkpoint's :class:`RunRecord` state and the number of ``metrics.csv`` rows on disk at its save."""

    ckpt_path: str | None = None
    step: int = 0
    apply: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    csv_rows: list | None = None  # the checkpoint's CSV_ROWS_KEY (None: a checkpoint made before it existed)

    @property
    def resuming(self) -> bool:
        return self.ckpt_path is not None


def holds_run(run_dir: Path | str | None) -> list[str]:
    """The files of a whylearn run that ``run_dir`` holds (empty: none, the folder may be used)."""
    if run_dir is None:
        return []
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def planned_run_dir(config: Any) -> Path | None:
    """The run folder a composed config (with its ``hydra`` node) will use, if it may exist already.

    None when ``hydra.run.dir`` makes a new folder (``${whylearn.run_dir:...}`` outside SLURM): reading
    it would create that folder, and a new folder holds nothing to check.
    """
    from omegaconf import OmegaConf

    raw = str(OmegaConf.to_container(config.hydra.run, resolve=False).get("dir", ""))
    if "${whylearn.run_dir:" in raw and not slurm_job_key():
        return None
    try:
        return Path(str(config.hydra.run.dir))
    except Exception:  # noqa: BLE001 - an interpolation only the running job resolves
        return None


def _describe_run(run_dir: Path, held: list[str]) -> str:
    import json

    summary = Path(run_dir) / "summary.json"
    status = ""
    if summary.is_file():
        try:
            s = json.loads(summary.read_text())
            status = f"; summary.json: status {s.get('status')}, step {s.get('steps')}"
        except ValueError:
            status = "; summary.json unreadable"
    return f"{', '.join(held)}{status}"


def plan_resume(cfg: Any, run_dir: Path | str | None, rank: int | None = None) -> ResumePlan:
    """Decide, before anything is written, whether this run starts fresh or resumes, and check it.

    ``cfg.ckpt_path``:

    - ``null`` (default): inside SLURM, resume from ``<run_dir>/checkpoints/last.ckpt`` if it exists (a
      requeued job; its folder is keyed on the job); otherwise start fresh, in a folder that holds no run;
    - ``last``: resume from that file, which must exist (``hydra.run.dir=<the run's folder>``);
    - ``none``/``fresh``: start fresh, in a folder that holds no run;
    - a file: resume from it, into a new folder or into the folder it belongs to;
    - ``best``/``hpc``/``registry``: Lightning's own keywords, passed on unchecked.

    ``run_dir`` None means a folder that does not exist yet. ``rank``: this process's rank (default: from
    the environment); ranks other than 0 of a DDP run skip the folder checks (they start in rank 0's
    folder). A resume's checkpoint is loaded (weights only) and its config compared with ``cfg`` (see
    the comment above :data:`RUN_FILES`).

    Raises:
        FileNotFoundError: ``last`` or a file that does not exist, naming where it looked.
        RunFolderInUse: the folder holds a run and was not asked to continue it.
        whylearn.runs.checkpoints.CheckpointError: the checkpoint is truncated, corrupt or unsafe.
        ResumeRefused: values that differ from the checkpoint's and cannot be applied, each named.
    """
    value = cfg.get("ckpt_path")
    value = None if value is None else str(value)
    run_dir = None if run_dir is None else Path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt" if run_dir is not None else None
    # other ranks of a DDP run start in the folder rank 0 made (Lightning passes them hydra.run.dir)
    held = holds_run(run_dir) if (env_rank() if rank is None else rank) == 0 else []
    again = f"ckpt_path=last hydra.run.dir={run_dir}"
    refuse = (f"the run folder {run_dir} already holds a run ({_describe_run(run_dir, held)}) and whylearn does not "
              f"overwrite one. To continue it: `{again}`; to start a new run, leave hydra.run.dir out (every run "
              f"gets a new folder) or choose an empty one.") if held else ""
    if held and folder_in_use(run_dir):
        raise RunFolderInUse(f"the run folder {run_dir} is in use by another whylearn process; wait for it to end, "
                             f"or choose another hydra.run.dir")
    if value in ("best", "hpc", "registry"):
        return ResumePlan(ckpt_path=value)
    if value is None:
        if last is not None and last.is_file() and slurm_job_key():
            log.info("resuming from %s (SLURM job %s, requeued or restarted)", last, slurm_job_key())
            path = last
        elif held and not slurm_job_key():
            raise RunFolderInUse(refuse)
        else:
            return ResumePlan()
    elif value in ("none", "fresh"):
        if held:
            raise RunFolderInUse(f"ckpt_path={value}: {refuse}")
        return ResumePlan()
    elif value == "last":
        if last is None:
            raise FileNotFoundError(
                "ckpt_path=last resumes the run in a given folder: add hydra.run.dir=<the run's directory>, e.g. "
                "`whylearn-train ... ckpt_path=last hydra.run.dir=outputs/<task_name>/runs/<run>`, or pass a checkpoint path."
            )
        if not last.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: no checkpoint at {last}. Resume a run by pointing at its directory, e.g. "
                f"`whylearn-train ... ckpt_path=last hydra.run.dir=<the run's directory>`, or pass a checkpoint path."
            )
        path = last
    else:
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={value}: no such checkpoint file")
        if held and not path.resolve().is_relative_to(run_dir.resolve()):
            raise RunFolderInUse(f"ckpt_path={value} into {refuse}")
    # start-up: torch only when a checkpoint is read (this runs in Hydra's process, before the job)
    from whylearn.runs.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    record = (ckpt.get("callbacks") or {}).get(RECORD_KEY) or {}
    apply = resume_changes(ckpt["whylearn_config"], cfg, path, record.get("planned_steps"))
    return ResumePlan(str(path), int(ckpt.get("global_step", 0)), apply, record, ckpt.get(CSV_ROWS_KEY))


def _plain(node: Any) -> Any:
    """A config node as plain containers, resolving key by key (a key only the running job resolves is
    left out)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig):
        out = {}
        for k in node.keys():
            try:
                out[k] = _plain(node[k])
            except Exception:  # noqa: BLE001 - e.g. ${hydra:runtime.output_dir} before the job runs
                continue
        return out
    if isinstance(node, ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


def resume_changes(old: dict, cfg: Any, path: Path | str, planned_steps: int | None = None) -> dict[str, tuple[Any, Any]]:
    """Compare the checkpoint's config with ``cfg``: the optimizer values to apply, or :class:`ResumeRefused`."""
    from omegaconf import DictConfig

    new: dict[str, Any] = {}
    for k in (*RESUME_CHECKED, "trainer"):  # never the hydra node: reading hydra.run.dir may create a folder
        if k in cfg:
            try:
                new[k] = _plain(cfg[k]) if isinstance(cfg, DictConfig) else cfg[k]
            except Exception:  # noqa: BLE001 - an interpolation only the running job resolves
                continue
    old_f = {k: v for k, v in _flatten(old).items() if k.split(".")[0] in RESUME_CHECKED}
    new_f = {k: v for k, v in _flatten(new).items() if k.split(".")[0] in RESUME_CHECKED}
    refused, apply = [], {}
    show = lambda v: "(absent)" if v is _UNSET else repr(v)  # noqa: E731
    for key in sorted(set(old_f) | set(new_f)):
        a, b = old_f.get(key, _UNSET), new_f.get(key, _UNSET)
        if _same(a, b):
            continue
        group, _, name = key.partition(".")
        if name in FREE_ON_RESUME.get(group, ()):
            continue
        if group == "optimizer" and name in APPLIED_OPTIMIZER_KEYS and _UNSET not in (a, b):
            if name == "lr" and not a and (old.get("scheduler") or {}):
                refused.append(f"{key}: {a!r} in the checkpoint, {b!r} now: a schedule that starts from lr 0 cannot "
                               f"be rescaled to a new base rate")
            else:
                apply[key] = (a, b)
            continue
        if key == "scheduler.total_steps" and planned_steps is not None and a == "auto" and _same(b, planned_steps):
            continue  # the same schedule, its length now given explicitly
        refused.append(f"{key}: {show(a)} in the checkpoint, {show(b)} now")
    old_sched, new_sched = (old.get("scheduler") or {}), (new.get("scheduler") or {})
    if old_sched.get("total_steps") == "auto" and new_sched.get("total_steps") == "auto":
        old_t, new_t = old.get("trainer") or {}, new.get("trainer") or {}
        for key in ("max_epochs", "max_steps"):
            if key in new_t and not _same(old_t.get(key), new_t.get(key)):
                pin = f"scheduler.total_steps={planned_steps}" if planned_steps else "scheduler.total_steps=<its planned steps>"
                refused.append(f"trainer.{key}: {old_t.get(key)!r} in the checkpoint, {new_t.get(key)!r} now, with "
                               f"scheduler.total_steps=auto: the learning-rate schedule would be stretched in the middle "
                               f"of the run (add {pin} to keep the schedule and train past its end at its final value)")
    if refused:
        raise ResumeRefused(
            f"cannot resume from {path} with this config: these values differ from the checkpoint's and a run in "
            f"progress cannot take them:\n  " + "\n  ".join(refused) + "\nDrop these overrides to continue the run as "
            "it was trained, or start a new run (without ckpt_path) to train with them. A resume applies changes to "
            "trainer.*, callbacks, loggers, paths and the optimizer's lr, weight_decay, momentum, betas and eps "
            "(see docs/scaleout.md, 'What a resume may change')."
        )
    return apply


def folder_in_use(run_dir: Path) -> bool:
    """True if another process holds ``run_dir`` (:func:`run_folder_lock`); looks without taking it."""
    import fcntl

    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor releases a lock taken here
    return False


def run_folder_lock(run_dir: Path) -> Any:
    """Hold ``run_dir`` for this process (an exclusive ``flock`` on the folder itself; released when the
    process ends, even by ``kill -9``).

    Raises:
        RunFolderInUse: another process holds it.
    """
    import contextlib
    import fcntl

    @contextlib.contextmanager
    def held():
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunFolderInUse(f"the run folder {run_dir} is in use by another whylearn process; "
                                     f"wait for it to end, or choose another hydra.run.dir") from None
            yield
        finally:
            os.close(fd)

    return held()



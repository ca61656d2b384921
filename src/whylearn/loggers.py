"""Loggers: W&B that never prompts (offline without a login), CSV always on.

W&B rows are written from a background thread (:class:`BackgroundWriter`): each
``wandb.log`` wakes W&B's client thread and its service process, about 0.85 ms of
CPU per row, as long as two or three optimizer steps of a small MLP. The training
loop only queues the row; the thread writes rows in order, in bursts at most a
second apart (about 0.5 ms of CPU per row). Everything else that
talks to W&B (images, the summary, ``finish``) first waits for the queue to drain
(:func:`drain`, :func:`log_images`, :func:`finish_wandb`).
"""

from __future__ import annotations

import atexit
import logging
import netrc
import os
import threading
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def wandb_logged_in() -> bool:
    """True if an API key is configured (``WANDB_API_KEY`` or a netrc entry for the W&B host).

    Reads configuration only; never contacts the server and never prompts.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


LOG_MODEL_CHOICES = (False, True, "all")
WATCH_CHOICES = (None, "gradients", "parameters", "all")


def wandb_logger(mode: str = "auto", write_interval_s: float = 1.0, log_model: bool | str = False,
                 watch: str | None = None, watch_log_freq: int = 100, **kwargs):
    """A Lightning ``WandbLogger`` (:class:`WandbRunLogger`) whose mode is decided without any prompt.

    Args:
        mode: ``auto`` (online if logged in, else offline; ``WANDB_MODE`` wins if set),
            ``online``, ``offline`` or ``disabled``.
        write_interval_s: scalar rows are written to W&B from a background thread in bursts at most
            this many seconds apart (:class:`BackgroundWriter`); 0 writes each row as soon as it is queued.
        log_model: Lightning's meaning (``WandbLogger(log_model=...)``): ``true`` logs the checkpoints of
            ``ModelCheckpoint`` as a ``model`` artifact at the end of training, ``all`` every checkpoint as it
            is saved; whylearn adds the final ``checkpoints/last.ckpt`` of a completed run (aliases
            ``latest``, ``final``). Offline too: W&B stages the files and ``wandb sync`` uploads them.
        watch: ``gradients``, ``parameters`` or ``all``: W&B histograms of the model's gradients and/or
            parameters every ``watch_log_freq`` optimizer steps, as ``wandb.watch`` logs them, each at the
            step it was measured at (:class:`whylearn.callbacks.WandbWatch`); ``null`` (default): off.
        watch_log_freq: optimizer steps between two histograms of a tensor (>= 1).
        **kwargs: passed to ``WandbLogger`` / ``wandb.init`` (project, name, save_dir, group, job_type,
            tags, id, ...).

    Raises:
        ValueError: an unknown ``mode``, ``log_model`` or ``watch``, or a bad interval / frequency,
            naming the ``logger.wandb`` option and the allowed values (before any W&B run starts).

    Offline runs are written under ``<save_dir>/wandb/offline-run-*``; ``wandb sync <dir>``
    uploads them later.
    """
    allowed = ("auto", "online", "offline", "disabled")
    if mode not in allowed:
        raise ValueError(f"unknown W&B mode {mode!r}; allowed: {list(allowed)}")
    if log_model not in LOG_MODEL_CHOICES or (log_model in (0, 1) and not isinstance(log_model, bool)):
        raise ValueError(f"logger.wandb.log_model={log_model!r} is not allowed; allowed: [false, true, all]")
    if watch not in WATCH_CHOICES:
        raise ValueError(f"logger.wandb.watch={watch!r} is not allowed; allowed: [null, gradients, parameters, all]")
    if isinstance(watch_log_freq, bool) or not isinstance(watch_log_freq, int) or watch_log_freq < 1:
        raise ValueError(f"logger.wandb.watch_log_freq must be an integer >= 1, got {watch_log_freq!r}")
    if not write_interval_s >= 0:
        raise ValueError(f"write_interval_s must be a number of seconds >= 0, got {write_interval_s!r}")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    os.environ["WANDB_MODE"] = mode  # the wandb library reads it; also stops any login prompt
    os.environ.setdefault("WANDB_SILENT", "true")
    if kwargs.get("save_dir"):
        Path(kwargs["save_dir"]).mkdir(parents=True, exist_ok=True)
    tags = kwargs.pop("tags", None)
    kwargs["tags"] = list(tags) if tags else None
    return _wandb_run_logger_class()(mode=mode, log_model=log_model, write_interval_s=float(write_interval_s),
                                     watch=watch, watch_log_freq=int(watch_log_freq), **kwargs)


def _wandb_run_logger_class() -> type:
    """:class:`WandbRunLogger`, defined on first use: importing this module does not import Lightning."""
    if "WandbRunLogger" in globals():
        return globals()["WandbRunLogger"]
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    class WandbRunLogger(WandbLogger):
        """Lightning's ``WandbLogger`` that continues one W&B run over the segments of a resumed job.

        How W&B treats a run that comes back: its history is a list of rows in the order they were
        logged, numbered by W&B's own ``_step``; W&B refuses a row whose ``_step`` is lower than the
        last one and never replaces a row. whylearn keeps Lightning's convention: ``_step`` counts rows
        and the x axis of every chart is ``trainer/global_step`` (the optimizer step). A job that is
        killed and resumed from its last checkpoint at step ``c`` trains again the steps after ``c``
        that the stopped job had already logged (up to the kill, step ``k``). Sent again, those rows
        would appear twice in the run's history (two points per step between ``c`` and ``k``).

        So, when training resumes (:meth:`continue_from`, called at the start of training by
        :class:`whylearn.callbacks.WandbRunSync`), this logger learns which steps the run already holds:

        - offline (the default without a login): W&B cannot resume offline runs; every segment writes
          its own ``wandb/offline-run-<time>-<id>`` folder with the same run id, and ``wandb sync``
          uploads the files of one run one after the other. This logger reads the earlier segments'
          files (:func:`read_wandb_run`): which keys each step holds, and their last ``_step``. It
          continues ``_step`` after it (so the synced run's rows stay in order), does not send again a
          value the run holds at that step, and sends the values of steps up to ``c`` that the run
          lacks from the checkpoint's history (rows W&B's service had not written when the process
          was killed: ``kill -9`` loses the rows still in flight to it).
        - online: W&B resumes the run itself (``resume="allow"``) and continues ``_step``; the run's
          summary holds the last ``trainer/global_step`` it received, and rows up to that step are not
          sent again.

        The values of the steps between ``c`` and ``k`` that W&B keeps are those of the stopped
        segment; a resumed run on the CPU recomputes them bit for bit (``tests/test_wandb.py``).
        """

        def __init__(self, *, mode: str, log_model: bool | str = False, write_interval_s: float = 1.0,
                     watch: str | None = None, watch_log_freq: int = 100, **kwargs) -> None:
            # Lightning refuses log_model with offline=True ("cannot be uploaded in offline mode"); W&B
            # stages offline artifacts and `wandb sync` uploads them, so the mode goes to wandb.init only.
            super().__init__(offline=False, mode=mode, log_model=log_model, **kwargs)
            if self._wandb_init.get("anonymous") is None:  # W&B warns that the setting has no effect
                self._wandb_init.pop("anonymous", None)
            self._mode = mode
            self._whylearn_write_interval = float(write_interval_s)
            self.watch_mode, self.watch_log_freq = watch, int(watch_log_freq)
            self._segments_read = False
            self._earlier: dict[int, frozenset] = {}  # optimizer step -> keys the earlier segments hold
            self._earlier_last: int | None = None  # the last optimizer step the run holds
            self._held: dict[int, frozenset] | None = None  # armed by continue_from
            self._held_last: int | None = None
            self._next_step: int | None = None  # W&B _step of the next row (offline continuation)
            self.resumed_from: int | None = None

        @property
        def experiment(self):
            run = WandbLogger.experiment.fget(self)
            if not self._segments_read and self._experiment is not None:
                self._segments_read = True
                self._read_earlier_segments(self._experiment)
            return run

        def _read_earlier_segments(self, run) -> None:
            if self._mode == "offline":
                here = Path(run.dir).parent  # .../wandb/offline-run-<time>-<id>/files -> the segment's folder
                files = [f for f in here.parent.glob(f"offline-run-*-{run.id}/run-{run.id}.wandb") if f.parent != here]
                last_wb_step = -1
                held: dict[int, set] = {}
                for f in sorted(files):
                    for row in read_wandb_run(f)["history"]:
                        last_wb_step = max(last_wb_step, int(row.get("_step", -1)))
                        step = row.get("trainer/global_step")
                        if step is None:
                            continue
                        keys = held.setdefault(int(step), set())
                        for k in row:  # a histogram or image is stored as <key>/_type, <key>/values, ...
                            if k not in _BOOKKEEPING:
                                keys.add(k[: -len("/_type")] if k.endswith("/_type") else k)
                if files:
                    self._next_step = last_wb_step + 1
                    interned: dict[frozenset, frozenset] = {}
                    self._earlier = {s: interned.setdefault(frozenset(k), frozenset(k)) for s, k in held.items()}
                    self._earlier_last = max(held) if held else -1  # -1: the earlier segments hold no row
                    log.info("W&B run %s: %d earlier offline segment(s) in %s hold optimizer steps up to %s; "
                             "this segment continues their rows", run.id, len(files), here.parent, self._earlier_last)
            elif getattr(run, "resumed", False):
                last = run.summary.get("trainer/global_step")
                self._earlier_last = int(last) if last is not None else None

        @rank_zero_only
        def continue_from(self, step: int, history: dict[str, list] | None = None) -> None:
            """Training starts at optimizer step ``step`` (0: fresh; > 0: resumed from a checkpoint of that step).

            Resumed: rows the run already holds are not sent again, and (offline, where the earlier
            segments' files say exactly what the run holds) values of ``history`` (``{key: [(step,
            value), ...]}``, the checkpoint's) up to ``step`` that the run lacks are sent now.
            """
            self.experiment  # noqa: B018 - start the run and read the earlier segments
            if step <= 0 or self._earlier_last is None:  # fresh training, or no earlier segment known
                self._held, self._held_last = None, None
                return
            self.resumed_from = int(step)
            self._held = self._earlier if self._mode == "offline" else None
            self._held_last = self._earlier_last
            if self._held is None or not history:
                return
            missing: dict[int, dict[str, float]] = {}
            for key, points in history.items():
                for s, v in points:
                    if s <= step and key not in self._held.get(int(s), ()):
                        missing.setdefault(int(s), {})[key] = v
            if missing:
                log.info("W&B run %s: sending %d values of %d steps up to step %d that the earlier segments' "
                         "files lack (from the checkpoint's history)", self._experiment.id,
                         sum(map(len, missing.values())), len(missing), step)
            for s in sorted(missing):
                write_row(self, missing[s], s)

        def _unsent(self, metrics: dict, step: int) -> dict:
            if self._held_last is None or step > self._held_last:
                return metrics
            if self._held is None:  # online: W&B holds every row up to its last step
                return {}
            keys = self._held.get(int(step), frozenset())
            left = {k: v for k, v in metrics.items() if k not in keys}
            return left if any(k not in _BOOKKEEPING for k in left) else {}

        @rank_zero_only
        def log_metrics(self, metrics, step: int | None = None) -> None:
            if step is not None:
                metrics = self._unsent(metrics, step)
                if not metrics:
                    return
            if self._next_step is None:
                super().log_metrics(metrics, step)
                return
            row = dict(metrics)
            if step is not None:
                row["trainer/global_step"] = step
            self.experiment.log(row, step=self._next_step, commit=True)
            self._next_step += 1

        @rank_zero_only
        def log_final_checkpoint(self, path: str | Path, step: int | None = None) -> bool:
            """Log the checkpoint a completed run ends with as a ``model`` artifact (if ``log_model`` is on).

            Named ``model-<run id>`` as Lightning names its checkpoints, file ``model.ckpt``, aliases
            ``latest`` and ``final``. Skipped if Lightning already logged this very file. Returns
            whether it was logged.
            """
            import wandb

            path = Path(path)
            if not self._log_model or self._experiment is None or not path.is_file():
                return False
            mtime = path.stat().st_mtime
            logged = {os.path.realpath(p): t for p, t in self._logged_model_time.items()}
            if logged.get(os.path.realpath(path)) == mtime:
                return False
            name = self._checkpoint_name or f"model-{self._experiment.id}"
            artifact = wandb.Artifact(name=name, type="model",
                                      metadata={"step": step, "original_filename": path.name, "final": True})
            artifact.add_file(str(path), name="model.ckpt", policy=self.add_file_policy)
            self._experiment.log_artifact(artifact, aliases=["latest", "final"])
            self._logged_model_time[str(path)] = mtime
            return True

    WandbRunLogger.__qualname__ = "WandbRunLogger"  # pickled by name (ddp_spawn pickles the loggers)
    globals()["WandbRunLogger"] = WandbRunLogger
    return WandbRunLogger


_BOOKKEEPING = frozenset({"_step", "_runtime", "_timestamp", "trainer/global_step", "epoch"})


def __getattr__(name: str):
    if name == "WandbRunLogger":  # built on first use: importing this module does not import Lightning
        return _wandb_run_logger_class()
    raise AttributeError(name)


def wandb_identity(cfg: Any) -> dict[str, Any]:
    """The W&B ``name``, ``group``, ``job_type`` and ``tags`` of a run, from its config and Hydra's job.

    - name: the experiment (``experiment_name``, else ``task_name``) followed by the command line's
      overrides that change what is run (not ``experiment=``, ``hydra.*``, ``paths.*``, ``logger*``,
      ``progress``, ``threads``, ``ckpt_path``, ``tags``); a job of a multirun adds `` #<job number>``,
      so every job of a sweep has its own name; cut in the middle to W&B's 128 characters;
    - group: the sweep of a multirun (its folder relative to ``paths.log_dir``, e.g.
      ``mnist1d_mlp/multiruns/2026-11-21_19-43-04``; ``<experiment> sweep <folder name>`` if it lies
      elsewhere), of a W&B agent (``<experiment> wandb-sweep <sweep id>``), else the experiment;
    - job_type: ``sweep-job`` for a job of either kind of sweep, else ``train``;
    - tags: ``cfg.tags`` and the experiment's name.
    """
    from omegaconf import OmegaConf

    exp = str(cfg.get("experiment_name") or cfg.get("task_name") or "whylearn")
    overrides, multirun, job_num, sweep_dir = [], False, None, None
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            overrides = [o for o in OmegaConf.to_container(hc.overrides.task) if not _not_in_name(o)]
            multirun = hc.mode == RunMode.MULTIRUN
            job_num, sweep_dir = hc.job.get("num"), hc.sweep.get("dir")
    except Exception as e:  # noqa: BLE001 - the name is a convenience; never fail a run for it
        log.debug("no Hydra job information for the W&B name: %s", e)
    name = " ".join([exp, *(o.lstrip("+~") for o in overrides)])
    if multirun and job_num is not None:
        name += f" #{job_num}"
    if len(name) > 128:  # W&B's limit; keep the end, where a sweep's overrides and the job number usually are
        name = f"{exp} ...{name[-(124 - len(exp)):]}" if len(exp) < 60 else name[:125] + "..."
    group, job_type = exp, "train"
    if multirun:
        where, log_dir = str(sweep_dir or ""), (cfg.get("paths") or {}).get("log_dir")
        try:
            rel = os.path.relpath(where, str(log_dir)) if log_dir and where else ".."
        except ValueError:  # another drive
            rel = ".."
        group = rel if not rel.startswith("..") else f"{exp} sweep {Path(where).name}"
        group, job_type = group[-128:], "sweep-job"
    if os.environ.get("WANDB_SWEEP_ID"):
        group, job_type = f"{exp} wandb-sweep {os.environ['WANDB_SWEEP_ID']}"[:128], "sweep-job"
    tags = list(dict.fromkeys([*(str(t) for t in (cfg.get("tags") or [])), exp]))
    return {"name": name, "group": group, "job_type": job_type, "tags": tags}


_NOT_IN_NAME = ("experiment", "hydra", "paths", "logger", "progress", "threads", "ckpt_path", "hparams_search", "tags")


def _not_in_name(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key.split(".", 1)[0].split("/", 1)[0] in _NOT_IN_NAME


def log_config(loggers: list, cfg: Any) -> None:
    """Log the resolved config to every logger (``log_hyperparams``; rank 0, as Lightning's loggers do).

    W&B: the run's config (nested, as W&B shows Hydra configs: ``optimizer.lr``, ``model.hidden``);
    CSV: ``hparams.yaml`` beside ``metrics.csv``; TensorBoard: its hparams (flattened by Lightning).
    """
    from omegaconf import DictConfig, OmegaConf

    params = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for lg in loggers:
        lg.log_hyperparams(params)


_BLOCK = 32768  # W&B's run file: LevelDB-style log of 32 KiB blocks


def _records(data: bytes, pos: int = 7):
    """The ``wandb_internal_pb2.Record`` s of a run file's bytes from ``pos`` (a block boundary or 7, after
    the header), in order; fragments of a record begun before ``pos`` are skipped; a record cut short
    (the writer was killed) ends the iteration."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    pending: bytes | None = None
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]  # 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST
        if pos + 7 + length > len(data):  # the last record was cut short
            return
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind in (1, 2):
            pending = chunk
        elif pending is None:  # the rest of a record begun before pos
            continue
        else:
            pending += chunk
        if kind not in (1, 4):
            continue
        rec = pb.Record()
        try:
            rec.ParseFromString(pending)
        except DecodeError:
            return
        pending = None
        yield rec


def wandb_run_finished(path: str | Path) -> bool:
    """True if a W&B run file ends with W&B's ``exit`` record (``wandb.finish`` has been written out;
    a killed run's file never gets one). Reads only the file's last blocks."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        return False
    start = max(7, (len(data) // _BLOCK - 1) * _BLOCK)
    last = None
    for rec in _records(data, start):
        last = rec.WhichOneof("record_type")
    return last == "exit"


def read_wandb_run(path: str | Path) -> dict:
    """Read a W&B run file (``wandb/offline-run-*/run-*.wandb``) without uploading it.

    The file is a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of
    records, each with a 7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST)
    of ``wandb_internal_pb2.Record`` protobufs, which is what ``wandb sync`` uploads.
    A file cut short (the process was killed while W&B's service wrote it) is read up to its
    last whole record.

    Returns:
        ``{"history": [ {key: value, ...}, ... ], "summary": {key: value}, "config": {key: value},
        "run": {"id", "name", "group", "job_type", "tags", "project", "start_time"},
        "artifacts": [{"name", "type", "aliases", "metadata", "files": {path: {"digest", "size"}}}],
        "finished": bool}``, values decoded from their JSON encoding; ``summary`` and ``config`` merge
        every update in order (W&B's own ``_wandb`` config key left out); ``finished``: the file ends
        with W&B's exit record.

    Raises:
        ValueError: the file does not start with the W&B header.
    """
    import json

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (header {data[:7]!r})")
    history: list[dict] = []
    summary: dict = {}
    config: dict = {}
    run: dict = {}
    artifacts: list[dict] = []
    which = None

    def key_of(item) -> str:
        return item.key or "/".join(item.nested_key)

    def update_config(cfg_record) -> None:
        for item in cfg_record.update:
            if key_of(item) != "_wandb":
                config[key_of(item)] = json.loads(item.value_json)
        for item in cfg_record.remove:
            config.pop(key_of(item), None)

    for rec in _records(data):
        which = rec.WhichOneof("record_type")
        if which == "history":
            history.append({key_of(item): json.loads(item.value_json) for item in rec.history.item})
        elif which == "summary":
            for item in rec.summary.update:
                summary[key_of(item)] = json.loads(item.value_json)
        elif which == "run":
            r = rec.run
            run = {"id": r.run_id, "name": r.display_name, "group": r.run_group, "job_type": r.job_type,
                   "tags": list(r.tags), "project": r.project, "start_time": r.start_time.ToSeconds()}
            update_config(r.config)
        elif which == "config":
            update_config(rec.config)
        elif which == "artifact":
            a = rec.artifact
            artifacts.append({
                "name": a.name, "type": a.type, "aliases": list(a.aliases),
                "metadata": json.loads(a.metadata) if a.metadata else {},
                "files": {c.path: {"digest": c.digest, "size": c.size} for c in a.manifest.contents},
            })
    return {"history": history, "summary": summary, "config": config, "run": run, "artifacts": artifacts,
            "finished": which == "exit"}


def read_wandb_segments(wandb_dir: str | Path, run_id: str) -> list[dict]:
    """Every offline segment of one W&B run in ``wandb_dir`` (``offline-run-<time>-<run_id>/``), oldest first.

    A job that is stopped and resumed offline writes one folder per segment with the same run id;
    ``wandb sync`` uploads them to one run in this order. Each entry is :func:`read_wandb_run`'s dict
    plus ``"path"``.
    """
    files = sorted(Path(wandb_dir).glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    return [{**read_wandb_run(f), "path": f} for f in files]


class BackgroundWriter:
    """Calls ``logger.log_metrics(row, step)`` from one daemon thread, in the order rows were queued,
    in bursts at most every ``interval`` seconds.

    Each ``wandb.log`` wakes W&B's own client thread and its service process; measured with the
    benchmark's 13-scalar rows on one core, a row sent on its own costs about 0.85 ms of CPU in all
    (0.5 in this process, 0.35 in ``wandb-core``), a row sent in a burst of 50 about 0.5 ms
    (``docs/benchmarks.md``). So the thread waits ``interval`` seconds after the first row of a burst
    (or until :meth:`drain`) and then writes every queued row. Nothing visible is lost: W&B uploads
    history in batches every few seconds anyway, and :meth:`drain` (the end of fit and test, errors,
    before images and the summary) writes at once.

    An exception raised by the logger in the thread is re-raised (the same object) in the
    caller at the next :meth:`put` or :meth:`drain`, so the caller's error handling sees it
    as if the write had been synchronous (:func:`flush_logs` drops a
    logger that raises ``OSError``). Rows queued after such an error are discarded.

    Args:
        logger: anything with ``log_metrics(metrics: dict, step: int)``.
        interval: seconds the thread waits after the first queued row before writing (0: at once).

    Attributes:
        bursts: number of bursts written so far.
    """

    def __init__(self, logger: Any, interval: float = 1.0) -> None:
        if not interval >= 0:
            raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}")
        self.logger, self.interval = logger, float(interval)
        self.error: BaseException | None = None
        self.bursts = 0
        self._cond = threading.Condition()
        self._rows: list[tuple[dict, int]] = []
        self._writing = False  # a burst is being written (outside the lock)
        self._flush = False  # drain() asked for the queued rows now
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="whylearn-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # registered after wandb's own atexit hook, so it runs first

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._rows and not self._closing:
                    self._cond.wait()
                deadline = time.monotonic() + self.interval
                while not (self._flush or self._closing) and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                batch, self._rows = self._rows, []
                self._flush = False
                if not batch and self._closing:
                    return
                self._writing = True
            try:
                self.bursts += 1
                for row, step in batch:
                    if self.error is not None:
                        break
                    self.logger.log_metrics(row, step=step)
            except BaseException as e:  # noqa: BLE001 - handed to the training thread
                self.error = e
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def _raise(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def put(self, row: dict[str, float], step: int) -> None:
        self._raise()
        with self._cond:
            if self._closing or not self._thread.is_alive():
                raise RuntimeError("the background log writer has been closed")
            self._rows.append((row, step))
            if len(self._rows) == 1:
                self._cond.notify_all()

    def drain(self) -> None:
        """Write every queued row now and wait until they are written; re-raise the logger's error, if any."""
        with self._cond:
            self._flush = True
            self._cond.notify_all()
            while (self._rows or self._writing) and self._thread.is_alive():
                self._cond.wait(0.1)
            self._flush = False
        self._raise()

    def close(self) -> None:
        """Write what is queued, stop the thread and forget the exit hook (which holds the logger)."""
        atexit.unregister(self.close)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=60)


def _is_wandb(logger: Any) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def write_row(logger: Any, row: dict[str, float], step: int) -> None:
    """Write one row of scalars: W&B through its :class:`BackgroundWriter`, any other logger at once."""
    if not _is_wandb(logger):
        logger.log_metrics(row, step=step)
        return
    writer = getattr(logger, "_whylearn_writer", None)
    if writer is None:
        logger.experiment  # noqa: B018 - start the run in this thread, not in the writer's
        interval = getattr(logger, "_whylearn_write_interval", 1.0)
        writer = logger._whylearn_writer = BackgroundWriter(logger, interval)
    writer.put(row, step)


def drain(logger: Any) -> None:
    """Wait for the rows queued for ``logger`` (a no-op for loggers written synchronously)."""
    writer = getattr(logger, "_whylearn_writer", None)
    if isinstance(writer, BackgroundWriter):  # (Lightning's DummyLogger answers any attribute with a function)
        writer.drain()


def log_images(loggers: list, images: dict[str, str | Path]) -> None:
    """Log PNG files to every W&B logger as ``wandb.Image`` s (``{key: path}``), after its queued rows."""
    if not images:
        return
    for lg in loggers:
        if _is_wandb(lg):
            import wandb

            drain(lg)
            lg.experiment.log({key: wandb.Image(str(path)) for key, path in images.items()})


def log_members(loggers: list, members: list[dict[str, Any]]) -> None:
    """An ensemble run's ``members`` table (label, each setting, parameter count, final metrics; one row per
    member, as in summary.json) to every W&B logger as the table ``members`` (Lightning's ``log_table``)."""
    if not members:
        return
    settings = list(dict.fromkeys(k for m in members for k in m.get("settings", {})))
    metrics = list(dict.fromkeys(k for m in members for k in m if k not in ("label", "settings")))
    columns = ["label", *settings, *metrics]
    rows = [[m["label"], *[m.get("settings", {}).get(k) for k in settings], *[m.get(k) for k in metrics]] for m in members]
    for lg in loggers:
        if _is_wandb(lg):
            drain(lg)
            lg.log_table(key="members", columns=columns, data=rows)


def finish_wandb(loggers: list, summary: dict[str, Any] | None = None) -> None:
    """Write the queued rows and the numeric entries of ``summary``, then ``wandb.finish()``.

    A completed run (``summary["status"] == "completed"``) with ``log_model`` on also logs its final
    ``<run_dir>/checkpoints/last.ckpt`` as a model artifact (:meth:`WandbRunLogger.log_final_checkpoint`).

    Called once per run, so the jobs of a multirun in one process never share a W&B run.
    """
    for lg in loggers:
        if not _is_wandb(lg):
            continue
        import wandb

        writer = getattr(lg, "_whylearn_writer", None)
        try:
            if writer is not None:
                writer.drain()
        finally:
            if writer is not None:
                writer.close()
                lg._whylearn_writer = None
        run_file = None
        if lg._experiment is not None:
            if getattr(lg._experiment.settings, "mode", None) == "offline":
                run_file = Path(lg._experiment.dir).parent / f"run-{lg._experiment.id}.wandb"
            if summary:
                lg.experiment.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
                if summary.get("status") == "completed" and summary.get("run_dir") and hasattr(lg, "log_final_checkpoint"):
                    lg.log_final_checkpoint(Path(summary["run_dir"]) / "checkpoints" / "last.ckpt", summary.get("steps"))
            if getattr(lg, "_log_model", False):
                offline = getattr(lg._experiment.settings, "mode", None) == "offline"
                log.info("W&B: checkpoints logged as model artifact model-%s (the final one with aliases latest, final)%s",
                         lg._experiment.id, "; offline: `wandb sync` uploads them with the run" if offline else "")
        wandb.finish()
        if run_file is not None:
            _wait_until_written(run_file)


def _wait_until_written(run_file: Path, timeout_s: float = 60.0) -> None:
    """``wandb.finish()`` returns before W&B's service has written the last records of an offline run
    (measured with wandb 0.31: 410 of 500 rows in the file right after it returned, all 500 a second
    later); wait for its exit record, so the file is whole when the run returns (``wandb sync`` right
    after, or the next segment of a resumed job in the same process, read it whole)."""
    deadline = time.monotonic() + timeout_s
    while not (run_file.is_file() and wandb_run_finished(run_file)):
        if time.monotonic() > deadline:
            log.warning("W&B has not finished writing %s after %.0f s", run_file, timeout_s)
            return
        time.sleep(0.02)


# -- scalars keyed on optimizer steps: the history, and the rows every logger receives -----------------
# (moved here from whylearn.tasks.base, which re-exports them: the logging layer sits below tasks and
# callbacks, so analysis/ and callbacks/ need not import tasks/ to log.)


class History:
    """Every scalar logged with :func:`log_scalars`, as ``{key: [(step, value), ...]}``.

    ``step`` is the number of optimizer steps taken when the value was known (``trainer.global_step``).
    Kept on the LightningModule (:func:`get_history`), saved in its checkpoints by whylearn's tasks, and
    the source of ``summary.json`` and the run's figures.
    """

    def __init__(self) -> None:
        self.data: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def add(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.data[k].append((int(step), float(v)))

    def last(self, key: str, default: float | None = None) -> float | None:
        series = self.data.get(key)
        return series[-1][1] if series else default

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pts = self.data.get(key, [])
        return [p[0] for p in pts], [p[1] for p in pts]

    def state_dict(self) -> dict:
        return {k: list(v) for k, v in self.data.items()}

    def load_state_dict(self, state: dict) -> None:
        self.data = defaultdict(list, {k: [tuple(p) for p in v] for k, v in state.items()})


def get_history(pl_module: Any) -> History:
    """The :class:`History` of a LightningModule (created empty on first use)."""
    hist = getattr(pl_module, "_whylearn_history", None)
    if hist is None:
        hist = History()
        pl_module._whylearn_history = hist
    return hist


def log_scalars(pl_module: Any, metrics: dict[str, Any], step: int | None = None) -> None:
    """Log scalars at ``step`` (default: the number of optimizer steps taken) to every logger.

    Works for any LightningModule attached to a trainer. Only rank 0 writes to
    loggers (Lightning's loggers are rank-zero-only); every rank records the
    values in ``trainer.callback_metrics`` and the module's :class:`History` at once.

    Logger writes are merged per step: the scalars of one step (the task's, the
    callbacks', validation's, the epoch's) go to each logger as one row when a later
    step is logged or :func:`flush_logs` is called (at validation end, checkpoint
    saves, the end of fit and test, and on errors), since one W&B ``log`` call costs
    about 0.7 ms, as much as two optimizer steps of the benchmark's MLP.
    """
    trainer = pl_module.trainer
    if trainer.sanity_checking:
        return
    step = trainer.global_step if step is None else step
    values = {k: (v.item() if isinstance(v, torch.Tensor) else float(v)) for k, v in metrics.items()}
    callback_metrics = trainer.callback_metrics
    for k, v in values.items():
        callback_metrics[k] = torch.tensor(v)
    get_history(pl_module).add(values, step)
    if not trainer.is_global_zero or not trainer.loggers:
        return
    pending = getattr(pl_module, "_whylearn_pending", None)
    if pending is not None and pending[0] != step:
        flush_logs(pl_module)
        pending = None
    if pending is None:
        pl_module._whylearn_pending = (step, dict(values, epoch=trainer.current_epoch))
    else:
        pending[1].update(values)


def flush_logs(pl_module: Any, wait: bool = False) -> None:
    """Write the pending row of :func:`log_scalars` to every logger (rank 0).

    W&B rows are queued to a background thread (:func:`write_row`); ``wait=True`` also waits until they
    are written (end of fit and test, errors). A logger that raises ``OSError`` (e.g. W&B's service
    process killed by the signal that preempts the job) is dropped for the rest of the run, with a warning.
    """
    pending = getattr(pl_module, "_whylearn_pending", None)
    pl_module._whylearn_pending = None
    if pl_module._trainer is None:
        return
    trainer = pl_module.trainer
    for logger in list(trainer.loggers):
        try:
            if pending is not None:
                write_row(logger, pending[1], pending[0])
            if wait:
                drain(logger)
        except OSError as e:
            warnings.warn(f"logger {type(logger).__name__} failed ({type(e).__name__}: {e}); it is dropped "
                          f"for the rest of the run, training and checkpoints go on", stacklevel=2)
            trainer.loggers = [lg for lg in trainer.loggers if lg is not logger]


def take_pending(pl_module: Any) -> tuple[int, dict] | None:
    """Remove and return the row :func:`log_scalars` has not written yet (``(step, {key: value})`` or None),
    e.g. to keep it in a checkpoint saved on a signal: a resumed run then writes it merged with the rest of
    its step, as an uninterrupted run would (:func:`restore_pending`)."""
    pending = getattr(pl_module, "_whylearn_pending", None)
    pl_module._whylearn_pending = None
    return None if pending is None else (int(pending[0]), dict(pending[1]))


def restore_pending(pl_module: Any, pending: tuple[int, dict] | None) -> None:
    """Put back a row removed by :func:`take_pending` (on resume), to be written with the later scalars of its step."""
    pl_module._whylearn_pending = None if pending is None else (int(pending[0]), dict(pending[1]))

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
from pathlib import Path
from typing import Any

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


def wandb_logger(mode: str = "auto", write_interval_s: float = 1.0, **kwargs):
    """A Lightning ``WandbLogger`` whose mode is decided without any prompt.

    Args:
        mode: ``auto`` (online if logged in, else offline; ``WANDB_MODE`` wins if set),
            ``online``, ``offline`` or ``disabled``.
        write_interval_s: scalar rows are written to W&B from a background thread in bursts at most
            this many seconds apart (:class:`BackgroundWriter`); 0 writes each row as soon as it is queued.
        **kwargs: passed to ``WandbLogger`` (project, name, save_dir, group, tags, id, ...).

    Offline runs are written under ``<save_dir>/wandb/offline-run-*``; ``wandb sync <dir>``
    uploads them later.
    """
    from lightning.pytorch.loggers import WandbLogger

    allowed = ("auto", "online", "offline", "disabled")
    if mode not in allowed:
        raise ValueError(f"unknown W&B mode {mode!r}; allowed: {list(allowed)}")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    os.environ["WANDB_MODE"] = mode  # the wandb library reads it; also stops any login prompt
    os.environ.setdefault("WANDB_SILENT", "true")
    if kwargs.get("save_dir"):
        Path(kwargs["save_dir"]).mkdir(parents=True, exist_ok=True)
    tags = kwargs.pop("tags", None)
    kwargs["tags"] = list(tags) if tags else None
    if not write_interval_s >= 0:
        raise ValueError(f"write_interval_s must be a number of seconds >= 0, got {write_interval_s!r}")
    logger = WandbLogger(offline=(mode == "offline"), mode=mode, **kwargs)
    logger._whylearn_write_interval = float(write_interval_s)
    return logger


def read_wandb_run(path: str | Path) -> dict:
    """Read an offline W&B run file (``wandb/offline-run-*/run-*.wandb``) without uploading it.

    The file is a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of
    records, each with a 7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST)
    of ``wandb_internal_pb2.Record`` protobufs, which is what ``wandb sync`` uploads.

    Returns:
        ``{"history": [ {key: value, ...}, ... ], "summary": {key: value}}`` with values
        decoded from their JSON encoding; ``summary`` merges every summary update in order.

    Raises:
        ValueError: the file does not start with the W&B header.
    """
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (header {data[:7]!r})")
    block, pos, pending = 32768, 7, b""
    history: list[dict] = []
    summary: dict = {}
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind not in (1, 4):
            continue
        rec = pb.Record()
        rec.ParseFromString(pending)
        which = rec.WhichOneof("record_type")
        if which == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item})
        elif which == "summary":
            for item in rec.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"history": history, "summary": summary}


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
    as if the write had been synchronous (:func:`whylearn.tasks.base.flush_logs` drops a
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
        if lg._experiment is not None and summary:
            lg.experiment.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        wandb.finish()

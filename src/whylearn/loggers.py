"""Loggers: W&B that never prompts (offline without a login), CSV always on.

W&B rows are written from a background thread (:class:`BackgroundWriter`): each
``wandb.log`` is a synchronous round trip to W&B's own service thread, about
0.7-1 ms, as long as two or three optimizer steps of a small MLP. The training
loop only queues the row; the thread writes rows in order. Everything else that
talks to W&B (images, the summary, ``finish``) first waits for the queue to drain
(:func:`drain`, :func:`log_images`, :func:`finish_wandb`).
"""

from __future__ import annotations

import atexit
import logging
import netrc
import os
import queue
import threading
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


def wandb_logger(mode: str = "auto", **kwargs):
    """A Lightning ``WandbLogger`` whose mode is decided without any prompt.

    Args:
        mode: ``auto`` (online if logged in, else offline; ``WANDB_MODE`` wins if set),
            ``online``, ``offline`` or ``disabled``.
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
    return WandbLogger(offline=(mode == "offline"), mode=mode, **kwargs)


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
    """Calls ``logger.log_metrics(row, step)`` from one daemon thread, in the order rows were queued.

    An exception raised by the logger in the thread is re-raised (the same object) in the
    caller at the next :meth:`put` or :meth:`drain`, so the caller's error handling sees it
    as if the write had been synchronous (:func:`whylearn.tasks.base.flush_logs` drops a
    logger that raises ``OSError``). Rows queued after such an error are discarded.
    """

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="whylearn-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # registered after wandb's own atexit hook, so it runs first

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self.error is None:
                    self.logger.log_metrics(item[0], step=item[1])
            except BaseException as e:  # noqa: BLE001 - handed to the training thread
                self.error = e
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def put(self, row: dict[str, float], step: int) -> None:
        self._raise()
        if not self._thread.is_alive():
            raise RuntimeError("the background log writer has been closed")
        self._queue.put((row, step))

    def drain(self) -> None:
        """Wait until every queued row is written; re-raise the logger's error, if any."""
        if self._thread.is_alive():
            self._queue.join()
        self._raise()

    def close(self) -> None:
        """Write what is queued, stop the thread and forget the exit hook (which holds the logger)."""
        atexit.unregister(self.close)
        if self._thread.is_alive():
            self._queue.put(None)
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
        writer = logger._whylearn_writer = BackgroundWriter(logger)
    writer.put(row, step)


def drain(logger: Any) -> None:
    """Wait for the rows queued for ``logger`` (a no-op for loggers written synchronously)."""
    writer = getattr(logger, "_whylearn_writer", None)
    if writer is not None:
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

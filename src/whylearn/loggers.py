"""Loggers: W&B that never prompts (offline without a login), CSV always on."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

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

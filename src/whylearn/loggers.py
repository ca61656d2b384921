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

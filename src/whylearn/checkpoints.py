"""Reading checkpoints with errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not one whylearn wrote."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a Lightning checkpoint written by whylearn-train.

    Returns:
        the checkpoint dict (``state_dict``, ``whylearn_config``, ``whylearn_history``, ...).

    Raises:
        CheckpointError: the file does not exist, cannot be unpickled (truncated or corrupt),
            or lacks the ``state_dict`` / ``whylearn_config`` entries whylearn writes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any failure to read is reported the same way
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {type(e).__name__}: {e}. "
            f"The file is truncated or corrupt; use another checkpoint of the run (checkpoints/*.ckpt)."
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    if "whylearn_config" not in ckpt:
        raise CheckpointError(f"{path} was not written by whylearn-train (no 'whylearn_config' entry)")
    return ckpt

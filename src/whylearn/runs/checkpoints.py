"""Reading checkpoints safely, with errors that say what is wrong.

Every checkpoint whylearn reads goes through :func:`load_checkpoint`, i.e.
``torch.load(weights_only=True)``: tensors and plain containers (dict, list, tuple, str, numbers) only,
so a crafted file whose unpickling would run code (a ``__reduce__`` that calls ``os.system``, opens
a file ...) is refused before any of it runs. What whylearn and Lightning write needs nothing else:
weights, optimizer and LR-scheduler states, loop counters, callback states, hyper-parameters of plain
values, and whylearn's own entries (``whylearn_config``: the resolved config as plain containers;
``whylearn_history``; ``whylearn_rng``: RNG states as tensors and tuples; ``whylearn_epoch``).
:data:`SAFE_GLOBALS` lists the few further types allowed (registered with
``torch.serialization.add_safe_globals`` when this module is imported).
"""

from __future__ import annotations

import pathlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch

# Types a checkpoint may hold beyond torch's defaults: path objects (e.g. a callback state that keeps a
# Path; unpickling one only builds the path). whylearn's own entries are plain containers and tensors
# by design (tests/runs/test_lifecycle.py checks every task's checkpoint needs nothing more).
SAFE_GLOBALS: tuple[type, ...] = (pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath, pathlib.PureWindowsPath)
torch.serialization.add_safe_globals(list(SAFE_GLOBALS))


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, unsafe to unpickle, or not one whylearn wrote."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds Python objects whose unpickling could run code; it was not loaded."""


def torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    Raises:
        CheckpointError: missing, empty, truncated or corrupt file.
        UnsafeCheckpointError: the file holds a type outside torch's weights-only set and
            :data:`SAFE_GLOBALS` (nothing of it was executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if unsupported:
            name = unsupported.group(1)
            raise UnsafeCheckpointError(
                f"refused to load {path}: it holds a Python object of type {name}, and unpickling such objects "
                f"can run arbitrary code. whylearn loads checkpoints with torch.load(weights_only=True) (tensors "
                f"and plain containers); nothing in the file was executed. A checkpoint written by whylearn-train "
                f"never needs more. (A harmless type of your own can be allowed with "
                f"torch.serialization.add_safe_globals before loading.)"
            ) from None
        raise CheckpointError(_unreadable(path, size, e)) from e
    except Exception as e:  # noqa: BLE001 - any failure to read is reported the same way
        raise CheckpointError(_unreadable(path, size, e)) from e


def _unreadable(path: Path, size: int, e: Exception) -> str:
    detail = str(e).strip().splitlines()[0] if str(e).strip() else "(no message)"
    if "Weights only load failed" in detail:
        detail = "not a torch checkpoint (an unknown pickle instruction)"
    return (f"cannot read checkpoint {path} ({size} bytes): {type(e).__name__}: {detail}. The file is truncated or "
            f"corrupt; use another checkpoint of the run (checkpoints/*.ckpt).")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a Lightning checkpoint written by whylearn-train, as weights only (see the module docstring).

    Returns:
        the checkpoint dict (``state_dict``, ``whylearn_config``, ``whylearn_history``, ...).

    Raises:
        CheckpointError: the file does not exist, cannot be unpickled (truncated or corrupt),
            or lacks the ``state_dict`` / ``whylearn_config`` entries whylearn writes.
        UnsafeCheckpointError: the file holds objects whose unpickling could run code.
    """
    path = Path(path)
    ckpt = torch_load(path, map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    if "whylearn_config" not in ckpt:
        raise CheckpointError(f"{path} was not written by whylearn-train (no 'whylearn_config' entry)")
    return ckpt

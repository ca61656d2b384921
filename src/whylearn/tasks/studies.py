"""Helpers for studies: tasks whose one analysis step trains several whole models, each through its
own quiet Lightning ``Trainer`` (the pattern of the Kepler sweep), and writes a summary per model."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch


def quiet_trainer(max_steps: int, device: torch.device, root: Path | None = None, **kwargs) -> L.Trainer:
    """A Trainer for a nested fit: ``max_steps`` optimizer steps on ``device``, no logger, checkpoint,
    progress bar, model summary or validation (the study measures what it needs itself)."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    return L.Trainer(max_steps=int(max_steps), max_epochs=-1, accelerator=accelerator, devices=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(root) if root else None, **kwargs)


def call_with_facts(factory: Callable[..., Any], **facts: Any) -> Any:
    """Call ``factory`` (a class or a ``functools.partial``, e.g. from Hydra's ``_partial_: true``) with
    those of ``facts`` its signature names and it has not bound already (e.g. a model's
    ``input_size`` / ``input_shape`` / ``num_classes`` from the data)."""
    bound = set(getattr(factory, "keywords", {}) or {})
    params = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in facts.items() if k in params and k not in bound})


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    """Write one nested run's summary as JSON (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=float))
    return path


def is_smoke_test(trainer: L.Trainer | None) -> bool:
    """True under ``debug=fast_dev_run`` (Lightning's ``fast_dev_run``): a study then trains every part for
    a couple of steps with one seed, to check that it runs end to end (its numbers mean nothing)."""
    return bool(getattr(trainer, "fast_dev_run", False))

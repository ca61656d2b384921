"""Turn a composed config into objects: the short list of ``instantiate`` calls every entry point shares."""

from __future__ import annotations

import inspect
import logging
import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("whylearn")


class ShapeMismatchError(ValueError):
    """The model cannot take the data's inputs or does not output one logit per class."""


def instantiate_with(node: DictConfig, **candidates: Any) -> Any:
    """Instantiate ``node``, filling each candidate argument that the target's signature names
    and the config leaves out, null or ``auto`` (e.g. a model's ``input_size`` from the data)."""
    params = inspect.signature(get_object(node._target_)).parameters
    fill = {k: v for k, v in candidates.items() if k in params and node.get(k) in (None, "auto")}
    return instantiate(node, **fill)


def data_facts(dm) -> dict[str, Any]:
    """What a model may need to know about the data: shapes and sizes."""
    shape = tuple(dm.input_shape)
    facts = {"input_shape": list(shape), "input_size": math.prod(shape), "num_classes": dm.num_classes}
    if len(shape) == 3:  # images (C, H, W)
        facts["in_channels"], facts["spatial_dims"] = shape[0], 2
    elif len(shape) == 2:  # sequences with channels (C, L)
        facts["in_channels"], facts["spatial_dims"] = shape[0], 1
    elif len(shape) == 1:  # plain sequences (L,), e.g. MNIST-1D: one channel
        facts["in_channels"], facts["spatial_dims"] = 1, 1
    for key in ("vocab_size", "block_size"):
        if hasattr(dm, key):
            facts[key] = getattr(dm, key)
    return facts


def build_datamodule(cfg: DictConfig):
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build_model(cfg: DictConfig, dm) -> torch.nn.Module:
    """Instantiate ``cfg.model``, sized from the data where the config says ``auto`` or leaves it out."""
    return instantiate_with(cfg.model, **data_facts(dm))


def check_model_data(model: torch.nn.Module, dm) -> None:
    """Run two training samples through the model; name both shapes if they do not fit.

    Raises:
        ShapeMismatchError: the forward pass fails on the data's inputs, or the output is not (B, num_classes).
    """
    x = dm.train.x[:2].cpu()
    expected_in = getattr(model, "input_size", None)
    data_shape = tuple(dm.train.x.shape[1:])
    if expected_in is not None and math.prod(data_shape) != expected_in:
        raise ShapeMismatchError(
            f"the data's inputs have shape {data_shape} ({math.prod(data_shape)} features) but the model "
            f"{type(model).__name__} expects input_size={expected_in}; set model.input_size to "
            f"{math.prod(data_shape)} or to auto (sized from the data)"
        )
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as e:
        raise ShapeMismatchError(
            f"the model {type(model).__name__} cannot take the data's inputs of shape (B, {', '.join(map(str, data_shape))}): {e}"
        ) from e
    finally:
        model.train(was)
    num_classes = getattr(dm, "num_classes", None)
    if num_classes and out.ndim == 2 and out.shape[-1] != num_classes:
        raise ShapeMismatchError(
            f"the model {type(model).__name__} outputs {out.shape[-1]} logits per sample but the data has "
            f"{num_classes} classes; set model.num_classes to {num_classes} or to auto"
        )


def build_task(cfg: DictConfig, model: torch.nn.Module, dm) -> L.LightningModule:
    optimizer = instantiate(cfg.optimizer)
    scheduler = None
    if cfg.get("scheduler"):
        sched_cfg = cfg.scheduler
        if "total_steps" in sched_cfg and sched_cfg.total_steps in (None, "auto"):
            sched_cfg = OmegaConf.merge(sched_cfg, {"total_steps": planned_steps(cfg, dm)})
        scheduler = instantiate(sched_cfg)
    return instantiate_with(cfg.task, model=model, optimizer=optimizer, scheduler=scheduler,
                            model_factory=model_factory(cfg, dm), **data_facts(dm))


def model_factory(cfg: DictConfig, dm):
    """``make(**options)``: the run's model with some ``model.*`` options changed (e.g. ``width=40``),
    sized from the data like :func:`build_model`; for tasks that build several models (ensembles).

    Raises (when called):
        ValueError: an option the model config does not have.
    """
    def make(**options: Any) -> torch.nn.Module:
        unknown = sorted(k for k in options if k not in cfg.model)
        if unknown:
            raise ValueError(f"model has no option(s) {unknown}; allowed: {sorted(k for k in cfg.model if k != '_target_')}")
        node = cfg.model.copy()
        for k, v in options.items():
            OmegaConf.update(node, k, v, merge=False)
        return instantiate_with(node, **data_facts(dm))

    return make


def planned_steps(cfg: DictConfig, dm) -> int:
    """Optimizer steps the trainer will take: ``max_steps`` if set, else epochs x batches per epoch."""
    max_steps = cfg.trainer.get("max_steps", -1)
    if max_steps is not None and max_steps > 0:
        return int(max_steps)
    n = len(dm.train) // data_parallel_size(cfg)  # batch_size is per device: each rank sees 1/world of the data
    per_epoch = math.ceil(n / dm.batch_size) if not getattr(dm, "drop_last", False) else n // dm.batch_size
    return int(cfg.trainer.max_epochs) * per_epoch


def data_parallel_size(cfg: DictConfig) -> int:
    """Processes that split the data: devices x num_nodes under a ddp strategy, else 1."""
    t = cfg.trainer
    if not str(t.get("strategy") or "").startswith("ddp"):
        return 1
    devices, nodes = t.get("devices", 1), t.get("num_nodes", 1) or 1
    return int(devices) * int(nodes) if isinstance(devices, int) else 1


def build_callbacks(cfg: DictConfig) -> list:
    from whylearn.callbacks import LogLines

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]
    progress = cfg.get("progress", "auto")
    if progress == "auto":
        progress = "rich" if sys.stdout.isatty() else "lines"
    if progress == "rich":
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    elif progress == "lines":
        callbacks.append(LogLines())
    elif progress not in ("tqdm", "none"):
        raise ValueError(f"unknown progress {progress!r}; allowed: ['auto', 'rich', 'tqdm', 'lines', 'none']")
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path | None = None) -> list:
    """The configured loggers, plus a CSV logger in the run directory if none was configured (always on).

    A W&B logger whose ``id`` is null gets the job's deterministic id (:func:`whylearn.identity.wandb_run_id`
    of ``run_dir``) with ``resume="allow"``, so a requeued or resumed run continues the same W&B run.
    """
    from lightning.pytorch.loggers import CSVLogger

    from whylearn.identity import wandb_run_id

    def make(c: DictConfig):
        if run_dir is not None and str(c.get("_target_", "")).endswith("wandb_logger") and c.get("id") is None:
            return instantiate(c, id=wandb_run_id(run_dir), resume="allow")
        return instantiate(c)

    loggers = [make(c) for c in (cfg.get("logger") or {}).values() if c is not None and "_target_" in c]
    if not any(isinstance(lg, CSVLogger) for lg in loggers):
        loggers.append(CSVLogger(save_dir=cfg.paths.output_dir, name="csv", version=""))
    return loggers


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    progress = cfg.get("progress", "auto")
    if progress == "auto":
        progress = "rich" if sys.stdout.isatty() else "lines"
    from whylearn.jobs import lightning_cluster_plugins

    extra = {"plugins": plugins} if (plugins := lightning_cluster_plugins(cfg.trainer)) else {}
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, default_root_dir=cfg.paths.output_dir,
        enable_progress_bar=progress in ("rich", "tqdm"), **extra,
    )


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)

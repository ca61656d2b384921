"""Turn a composed config into objects: the short list of ``instantiate`` calls every entry point shares."""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from whylearn.data.base import data_facts
from whylearn.loggers import WandbRunLogger, wandb_identity
from whylearn.runs.identity import wandb_run_id
from whylearn.runs.preemption import lightning_cluster_plugins

log = logging.getLogger("whylearn")


class ShapeMismatchError(ValueError):
    """The model cannot take the data's inputs or does not output one logit per class."""


def instantiate_with(node: DictConfig, **candidates: Any) -> Any:
    """Instantiate ``node``, filling each candidate argument that the target's signature names
    and the config leaves out, null or ``auto`` (e.g. a model's ``input_size`` from the data)."""
    params = inspect.signature(get_object(node._target_)).parameters
    fill = {k: v for k, v in candidates.items() if k in params and node.get(k) in (None, "auto")}
    return instantiate(node, **fill)


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


PROGRESS_CHOICES = ("auto", "rich", "tqdm", "lines", "none")


def progress_kind(cfg: DictConfig) -> str:
    """``cfg.progress`` with ``auto`` decided: ``rich`` in a terminal, ``lines`` otherwise.

    Raises:
        ValueError: an unknown value, naming it and the allowed ones.
    """
    progress = cfg.get("progress", "auto")
    if progress not in PROGRESS_CHOICES:
        raise ValueError(f"unknown progress {progress!r}; allowed: {list(PROGRESS_CHOICES)}")
    if progress == "auto":
        progress = "rich" if sys.stdout.isatty() else "lines"
    return progress


def build_callbacks(cfg: DictConfig) -> list:
    """The configured callbacks, then the progress display (:mod:`whylearn.callbacks.progress`): a rich or
    tqdm bar counting optimizer steps, or plain log lines; ``progress=none`` shows nothing."""
    # start-up: the callbacks bring matplotlib and the instruments; whylearn-eval and whylearn-sample build none
    from whylearn.callbacks import LogLines, StepProgressBar, StepTQDMProgressBar

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]
    progress = progress_kind(cfg)
    if progress == "rich":
        callbacks.append(StepProgressBar())
    elif progress == "tqdm":
        callbacks.append(StepTQDMProgressBar())
    elif progress == "lines":
        callbacks.append(LogLines())
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path | None = None) -> list:
    """The configured loggers, plus a CSV logger in the run directory if none was configured (always on).

    A W&B logger whose ``id`` is null gets the job's deterministic id (:func:`whylearn.runs.identity.wandb_run_id`
    of ``run_dir``; a W&B agent's ``WANDB_RUN_ID`` wins) with ``resume="allow"``, so a requeued or resumed
    run continues the same W&B run. Its ``name``, ``group``, ``job_type`` and ``tags`` left ``auto`` come
    from :func:`whylearn.loggers.wandb_identity` (the experiment, the job's overrides, the sweep).
    """
    from lightning.pytorch.loggers import CSVLogger


    def make(c: DictConfig):
        if not str(c.get("_target_", "")).endswith("wandb_logger"):
            return instantiate(c)
        extra: dict[str, Any] = {}
        if run_dir is not None and c.get("id") is None:
            extra = {"id": os.environ.get("WANDB_RUN_ID") or wandb_run_id(run_dir), "resume": "allow"}
        identity = wandb_identity(cfg)
        for key in ("name", "group", "job_type"):
            if c.get(key, "auto") in ("auto", None):
                extra[key] = identity[key]
        if c.get("tags", "auto") in ("auto", None):
            extra["tags"] = identity["tags"]
        return instantiate(c, **extra)

    loggers = [make(c) for c in (cfg.get("logger") or {}).values() if c is not None and "_target_" in c]
    if not any(isinstance(lg, CSVLogger) for lg in loggers):
        loggers.append(CSVLogger(save_dir=cfg.paths.output_dir, name="csv", version=""))
    return loggers


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    """The configured ``Trainer``, showing progress only through whylearn's step-counting bars
    (Lightning's own bar is off otherwise), with :class:`whylearn.callbacks.WandbRunSync` when a
    W&B logger is among ``loggers`` and :class:`whylearn.callbacks.WandbWatch` where it has ``watch`` set."""
    from whylearn.callbacks import WandbRunSync, WandbWatch  # start-up: see build_callbacks

    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbRunLogger)]
    if wandb_loggers and not any(isinstance(c, WandbRunSync) for c in callbacks):
        callbacks = [*callbacks, WandbRunSync()]
    callbacks += [WandbWatch(lg, lg.watch_mode, lg.watch_log_freq) for lg in wandb_loggers if lg.watch_mode]
    extra = {"plugins": plugins} if (plugins := lightning_cluster_plugins(cfg.trainer)) else {}
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, default_root_dir=cfg.paths.output_dir,
        enable_progress_bar=progress_kind(cfg) in ("rich", "tqdm"), **extra,
    )


def build_study(cfg: DictConfig):
    """The experiment's study (:mod:`whylearn.studies.base`): ``cfg.study`` instantiated, a callable
    (Hydra ``_partial_: true``) that :func:`whylearn.studies.base.call_study` runs."""
    return instantiate(cfg.study)


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)

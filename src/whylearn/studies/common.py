"""What the studies share: plain configs to objects, a quiet nested Trainer, mean and sd over seeds, JSON."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from whylearn.data.base import data_facts


def plain(cfg: Any) -> Any:
    """OmegaConf containers (resolved) -> plain dicts and lists; anything else as it is."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [plain(v) for v in cfg]
    return cfg


def merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for mappings (lists and values are replaced)."""
    out = dict(plain(base))
    for k, v in plain(override or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def instantiate(node: Mapping[str, Any], **kwargs: Any) -> Any:
    """Hydra's ``instantiate`` of a plain ``{_target_: ..., ...}`` mapping, with extra keyword arguments."""
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(dict(node), **kwargs)


def build_datamodule(node: Mapping[str, Any], seed: int):
    """Instantiate a datamodule node with ``seed`` (split, subset, corruption, data order), set up."""
    dm = instantiate({**node, "seed": int(seed)})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build_model(node: Mapping[str, Any], dm, seed: int) -> nn.Module:
    """Instantiate a model node after seeding torch with ``seed``; the data's shapes fill the arguments
    the target's signature names and the node leaves out (or sets to ``auto``)."""
    from hydra.utils import get_object

    params = inspect.signature(get_object(node["_target_"])).parameters
    fill = {k: v for k, v in data_facts(dm).items() if k in params and node.get(k) in (None, "auto")}
    torch.manual_seed(int(seed))
    return instantiate({k: v for k, v in node.items() if k not in fill}, **fill)


def optimizer_factory(node: Mapping[str, Any]):
    """An optimizer node (``{_target_: torch.optim.Adam, lr: ...}``) as a factory of parameters."""
    return instantiate({**node, "_partial_": True})


def quiet_trainer(max_steps: int, root: Path | None = None, callbacks: Sequence = (),
                  device: torch.device | str = "cpu") -> L.Trainer:
    """A Trainer for a nested fit: ``max_steps`` optimizer steps on ``device`` (default the CPU), no logger,
    checkpoint, progress bar, model summary or validation loop (the study measures what it needs itself,
    e.g. with :class:`TrackSplits`)."""
    accelerator = "gpu" if torch.device(device).type == "cuda" else "cpu"
    return L.Trainer(max_steps=int(max_steps), max_epochs=-1, accelerator=accelerator, devices=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(root) if root else None,
                     callbacks=list(callbacks))


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


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) over the finite values; sd 0 for one value, nan for none."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


write_json = write_summary  # one nested run's JSON, written as the other studies write theirs


def read_seed_summaries(run_dirs: Sequence[str | Path], missing: type[Exception] = ValueError) -> dict[str, dict[int, dict]]:
    """The per-seed results a study writes (``runs/<arm>/seed<s>/summary.json``) in one or more run folders, e.g.
    the runs of one study's arms or seeds made as separate processes: ``{arm folder name: {seed: result}}``, arms
    in the order first found, seeds as found.

    Raises:
        ``missing`` (default ValueError): a folder without per-seed summaries.
        ValueError: an (arm, seed) found twice (both files named).
    """
    found: dict[str, dict[int, tuple[Path, dict]]] = {}
    for d in run_dirs:
        paths = sorted(Path(d).glob("runs/*/seed*/summary.json"))
        if not paths:
            raise missing(f"{d}: no per-seed summaries (runs/<arm>/seed<s>/summary.json)")
        for p in paths:
            r = json.loads(p.read_text())
            arm, seed = p.parent.parent.name, int(r["seed"])
            if seed in found.setdefault(arm, {}):
                raise ValueError(f"arm {arm!r} seed {seed} is in two folders (found twice): {found[arm][seed][0]} and {p}")
            found[arm][seed] = (p, r)
    return {arm: {s: r for s, (_, r) in seeds.items()} for arm, seeds in found.items()}


def seeds_of(seed: int, num_seeds: int) -> list[int]:
    """``seed, seed + 1, ..., seed + num_seeds - 1``.

    Raises:
        ValueError: num_seeds < 1.
    """
    if int(num_seeds) < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
    return [int(seed) + i for i in range(int(num_seeds))]


class TrackSplits(Callback):
    """Every ``every`` optimizer steps (at the end of the chunk that reaches the next multiple) and when
    training ends, record one row: ``step`` and ``<split>_loss``, ``<split>_acc`` for each of ``splits``
    (the datamodule's whole ``train`` / ``val`` / ``test`` split, in eval mode, with the task's own
    ``evaluate``: the training split without augmentation and with the labels trained on).

    Measuring by step count, not through Lightning's validation loop, keeps the interval the same
    whatever the epoch length (a 1000-example subset has 8-step epochs at batch 128).
    """

    def __init__(self, splits: Sequence[str] = ("val", "test"), every: int = 100) -> None:
        bad = [s for s in splits if s not in ("train", "val", "test")]
        if bad:
            raise ValueError(f"unknown splits {bad}; allowed: ['train', 'val', 'test']")
        if int(every) < 1:
            raise ValueError(f"every must be >= 1 optimizer step, got {every}")
        self.splits, self.every = tuple(splits), int(every)
        self.rows: list[dict[str, float]] = []
        self._next = self.every

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        row: dict[str, float] = {"step": int(trainer.global_step)}
        for name in self.splits:
            split = getattr(dm, name)
            m = pl_module.evaluate(split.x, split.y, batch_size=getattr(dm, "eval_batch_size", 4096))
            row[f"{name}_loss"], row[f"{name}_acc"] = m["loss"], m["acc"]
        self.rows.append(row)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step >= self._next:
            self.measure(trainer, pl_module)
            self._next = (trainer.global_step // self.every + 1) * self.every

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.rows or self.rows[-1]["step"] != trainer.global_step:
            self.measure(trainer, pl_module)

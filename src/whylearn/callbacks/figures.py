"""Figures drawn at the end of fit into the run's figures/ folder (and logged to W&B)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from whylearn.analysis.attention import attention_figure
from whylearn.analysis.figures import plot_series
from whylearn.loggers import get_history, log_images


def _figures_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.default_root_dir) / "figures"


def _log_image(trainer: L.Trainer, name: str, path: Path) -> None:
    log_images(trainer.loggers, {f"figures/{name}": path})


class CurveFigure(Callback):
    """At the end of fit, plot logged scalars against optimizer steps (optionally on log axes).

    Args:
        name: file name (``figures/<name>.png``).
        keys: ``{scalar key: legend label}``.
        title, ylabel: of the axes.
        logx, logy: logarithmic axes (grokking's accuracy curves use a log step axis).
    """

    def __init__(self, name: str, keys: dict[str, str], title: str = "", ylabel: str = "",
                 logx: bool = False, logy: bool = False) -> None:
        self.name, self.keys, self.title, self.ylabel = name, dict(keys), title, ylabel
        self.logx, self.logy = logx, logy

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        path = plot_series(get_history(pl_module), list(self.keys.items()), self.title, self.ylabel,
                           _figures_dir(trainer) / f"{self.name}.png", logy=self.logy, logx=self.logx)
        if path is not None:
            _log_image(trainer, self.name, path)


class AttentionMaps(Callback):
    """At the end of fit, draw the attention weights of every layer and head for a short prompt.

    Needs a task whose ``model`` has ``attention_maps`` (e.g. :class:`whylearn.models.GPT`).
    The prompt is text (encoded with ``datamodule.tokenizer``) or a list of token ids; it is cut
    to the model's ``block_size``. Saved as ``figures/attention.png`` and logged to W&B.
    """

    def __init__(self, prompt: str | list[int] = "ROMEO:\nWhat light", name: str = "attention") -> None:
        self.prompt, self.name = prompt, name

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        model = pl_module.model
        tok = getattr(trainer.datamodule, "tokenizer", None)
        if isinstance(self.prompt, str):
            if tok is None:
                raise ValueError("AttentionMaps got a text prompt but the datamodule has no tokenizer; give token ids")
            ids = tok.encode(self.prompt)[: model.block_size]
            labels = [tok.decode([i]) for i in ids]
        else:
            ids = [int(i) for i in self.prompt][: model.block_size]
            labels = [str(i) for i in ids]
        path = attention_figure(model, ids, labels, _figures_dir(trainer) / f"{self.name}.png")
        _log_image(trainer, self.name, path)

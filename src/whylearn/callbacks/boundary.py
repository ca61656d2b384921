"""Decision-boundary figure of a 2-D classifier: the training data and the regions the model assigns."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from whylearn.analysis.classic import plot_decision_boundary


class DecisionBoundary(Callback):
    """At the end of training, draw ``figures/<name>.png``: the training points and the learned boundary.

    Works with any task whose forward maps (B, 2) inputs to logits (B, C) (class = argmax) or to
    scores (B,) (class 1 where score > 0), e.g. an MLP in a ClassificationTask or a Perceptron
    in a PerceptronTask.

    Raises:
        ValueError: the data are not 2-D.
    """

    def __init__(self, name: str = "decision_boundary", resolution: int = 200) -> None:
        self.name, self.resolution = name, int(resolution)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        d = trainer.datamodule.train.x.flatten(1).shape[1]
        if d != 2:  # fail before training, not after it
            raise ValueError(f"DecisionBoundary draws 2-D data; these inputs have {d} features "
                             f"(drop it with callbacks.decision_boundary=null)")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        split = trainer.datamodule.train
        x, y = split.x.flatten(1), split.y
        if x.shape[1] != 2:
            raise ValueError(f"DecisionBoundary draws 2-D data; these inputs have {x.shape[1]} features")
        device = x.device
        was = pl_module.training
        pl_module.eval()

        def predict(grid: torch.Tensor) -> torch.Tensor:
            out = pl_module(grid.to(device=device, dtype=x.dtype))
            return out.argmax(-1) if out.ndim == 2 else (out > 0).long()

        with torch.no_grad():
            acc = float((predict(x) == y).float().mean())
        task = type(pl_module).__name__.replace("Task", "")
        model = type(getattr(pl_module, "model", pl_module)).__name__
        plot_decision_boundary(predict, x, y, Path(trainer.default_root_dir) / "figures" / f"{self.name}.png",
                               title=f"{model} ({task}), {trainer.datamodule.name}: train acc {acc:.3f}",
                               resolution=self.resolution)
        pl_module.train(was)

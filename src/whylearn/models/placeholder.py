"""A placeholder model for analysis runs: no parameters, constant zero logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NoModel(nn.Module):
    """Outputs zeros (B, num_classes) for any input (B, ...); has no parameters.

    The model of a run whose task is a measurement (:class:`~whylearn.tasks.analysis.AnalysisTask`):
    ``whylearn-train`` builds a model for every run, and this one does nothing.
    """

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        self.num_classes = int(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], self.num_classes, dtype=torch.float32, device=x.device)

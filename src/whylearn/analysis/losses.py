"""The training losses of the classification tasks, as plain functions of logits and targets.

An instrument like the others here: the Hessian and landscape measurements (callbacks and
``whylearn-landscape``) evaluate the very loss a task optimizes without importing the task.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

LOSSES = ("cross_entropy", "mse")


def classification_loss(name: str, logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Loss of logits (B, C) against integer targets (B,).

    ``cross_entropy``: softmax cross-entropy. ``mse``: squared error against one-hot
    targets, averaged over classes (as in the double-descent literature, e.g.
    Belkin et al. 2019). ``reduction``: ``mean`` over the batch, ``sum``, or
    ``none`` for the per-sample losses (B,).
    """
    if name == "cross_entropy":
        return F.cross_entropy(logits, y, reduction=reduction)
    if name == "mse":
        per_sample = (logits - F.one_hot(y, logits.shape[-1]).to(logits.dtype)).pow(2).mean(-1)
        if reduction == "none":
            return per_sample
        return per_sample.sum() if reduction == "sum" else per_sample.mean()
    raise ValueError(f"unknown loss {name!r}; allowed: {list(LOSSES)}")

"""The diagonal of the Fisher information of a classifier, from per-sample gradients.

Elastic weight consolidation (Kirkpatrick et al. 2017, Eq. 3 and "Methods") protects what a
network learned on task A by pulling each parameter back to its task-A value theta*_A,i with a
stiffness proportional to F_i, the diagonal of the Fisher information of the network's predictive
distribution on task A's data:

    F_i = E_x E_{y ~ p_theta(y|x)} [ (d log p_theta(y|x) / d theta_i)^2 ].

:func:`fisher_diagonal` estimates it with one label drawn from the model per input (the true
Fisher; ``labels="empirical"`` uses the data's labels instead, the "empirical Fisher"), computing
the per-sample gradients with ``torch.func`` (``vmap`` over ``grad`` of ``functional_call``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

LABELS = ("sampled", "empirical")


def masked_logits(logits: Tensor, allowed: Tensor | None) -> Tensor:
    """Logits (..., C) with the classes outside ``allowed`` (bool (C,) or (..., C)) set to -inf
    (a task-incremental head answers among its task's classes only); ``allowed=None`` keeps all."""
    if allowed is None:
        return logits
    return logits.masked_fill(~allowed, float("-inf"))


def fisher_diagonal(model: nn.Module, x: Tensor, y: Tensor | None = None, allowed: Tensor | None = None,
                    labels: str = "sampled", batch_size: int = 256,
                    generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Diagonal Fisher information of ``model``'s predictive distribution, averaged over the inputs x (N, ...).

    Args:
        model: a classifier, inputs (B, ...) -> logits (B, C); evaluated in eval mode (restored after).
        x: inputs (N, ...).
        y: integer labels (N,), needed for ``labels="empirical"``.
        allowed: classes the model may answer with (bool (C,)), None for all.
        labels: ``sampled`` (y drawn from the model: the Fisher of EWC) or ``empirical`` (the data's y).
        batch_size: inputs per vmapped batch of per-sample gradients.
        generator: for the sampled labels.

    Returns:
        ``{parameter name: F (same shape as the parameter)}``, F >= 0, for every parameter that
        requires a gradient.

    Raises:
        ValueError: an unknown ``labels``, or ``empirical`` without y.
    """
    if labels not in LABELS:
        raise ValueError(f"unknown labels {labels!r}; allowed: {list(LABELS)}")
    if labels == "empirical" and y is None:
        raise ValueError("labels='empirical' needs the data's labels y")
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    was = model.training
    model.eval()

    def log_prob(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.log_softmax(masked_logits(out, allowed), -1)[0].gather(0, yi.reshape(1))[0]

    per_sample = vmap(grad(log_prob), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            if labels == "sampled":
                with torch.no_grad():
                    probs = F.softmax(masked_logits(model(xb), allowed), -1)
                yb = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                yb = y[i:i + batch_size]
            grads = per_sample(params, xb, yb)
            for n, g in grads.items():
                total[n] += g.pow(2).sum(0)
    finally:
        model.train(was)
    return {n: t / x.shape[0] for n, t in total.items()}

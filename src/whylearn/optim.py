"""Learning-rate schedules not in ``torch.optim.lr_scheduler`` as one call."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

WARMUP_STYLES = ("linear", "nanogpt", "nanda")


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  min_lr_ratio: float = 0.0, warmup_style: str = "linear") -> LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` x the base LR.

    The schedule of GPT-2/3 and nanoGPT (lr(t) = min + (max - min) (1 + cos(pi t'))/2 after warm-up,
    t' = (t - W) / (total_steps - W)), expressed as a multiplier on each parameter group's base LR.
    Step t (counted from 0) uses factor(t). Steps past ``total_steps`` stay at the minimum.

    ``warmup_style``: during the W = ``warmup_steps`` warm-up steps the factor is
    ``linear``: (t + 1) / W (reaches 1 at the last warm-up step), or
    ``nanogpt``: (t + 1) / (W + 1) (nanoGPT's ``train.py get_lr``; 1 is first reached at step W), or
    ``nanda``: t / W (the first step has learning rate 0; Nanda et al. 2023's transformers.py,
    ``LambdaLR(optimizer, lambda step: min(step / 10, 1))``).

    Raises:
        ValueError: total_steps < 1, warmup_steps < 0 or warmup_steps > total_steps, or an
            unknown warmup_style.
    """
    if warmup_style not in WARMUP_STYLES:
        raise ValueError(f"unknown warmup_style {warmup_style!r}; allowed: {list(WARMUP_STYLES)}")
    warmup_div = warmup_steps + (1 if warmup_style == "nanogpt" else 0)
    shift = 0 if warmup_style == "nanda" else 1
    if total_steps is None or total_steps < 1:
        raise ValueError(f"warmup_cosine needs total_steps >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + shift) / warmup_div
        t = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return LambdaLR(optimizer, factor)

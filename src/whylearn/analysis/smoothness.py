"""How predictable one gradient step is: Santurkar et al. 2018's landscape measures, and BatchNorm's two modes.

Santurkar, Tsipras, Ilyas & Madry 2018 ("How does batch normalization help optimization?", Sec. 3.1,
Fig. 4) argue that BatchNorm helps because it makes the loss landscape smoother: at a point w of training,
with g = grad L(w) on a batch, they move along the gradient, w - eta g, for a range of step sizes eta and
measure

- the *loss landscape*: the variation of L(w - eta g) over eta (their Fig. 4a, the shaded range),
- the *gradient predictiveness*: the l2 change of the gradient, ||grad L(w) - grad L(w - eta g)|| (Fig. 4b),
- the *"effective" beta-smoothness*: the largest change of the gradient per distance moved,
  max_eta ||grad L(w) - grad L(w - eta g)|| / ||eta g|| (Fig. 4c).

All three are smaller, and vary less during training, with BatchNorm. :func:`gradient_step_variation`
computes them for any model and batch; :func:`batchnorm_mode_gap` compares a BatchNorm network's two
modes (batch statistics, as in training, against the running averages used at test time), the gap that
grows at tiny batch sizes (Ioffe 2017, "Batch renormalization", Sec. 1).

Both are pure: the model's parameters, buffers (running statistics), mode and torch's global RNG state
are as before the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


def _cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(out, y)


@contextmanager
def _preserved(model: nn.Module, seed: int | None) -> Iterator[None]:
    """Restore parameters, buffers, mode and the global RNG state (noise layers draw from it) afterwards."""
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers()]
    was = model.training
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(model.parameters(), params, strict=True):
                    p.copy_(v)
                for b, v in zip(model.buffers(), buffers, strict=True):
                    b.copy_(v)
            model.train(was)


def _loss_and_grad(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, params: list[nn.Parameter],
                   seed: int) -> tuple[float, Tensor]:
    torch.manual_seed(seed)  # the same noise (dropout, noisy BatchNorm) at every point along the line
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads])


def gradient_step_variation(model: nn.Module, x: Tensor, y: Tensor, step_sizes: Sequence[float],
                            loss_fn: LossFn = _cross_entropy, train_mode: bool = True, seed: int = 0) -> dict:
    """Loss and gradient along the gradient direction, Santurkar et al. 2018, Sec. 3.1 and Fig. 4.

    Args:
        model: the network at w (its trainable parameters).
        x, y: the batch (B, ...), (B,) that defines L (a training batch in the paper).
        step_sizes: the eta > 0 to move by, w - eta g.
        loss_fn: mean loss ``loss_fn(outputs, y)`` (default cross-entropy).
        train_mode: evaluate in training mode (BatchNorm with the batch's statistics, as training sees
            the loss; running statistics are restored afterwards) or eval mode.
        seed: the global RNG is reseeded with this before each forward pass, so stochastic layers draw
            the same noise at every point (and the caller's RNG stream is left untouched).

    Returns:
        ``{"loss": L(w), "grad_norm": ||g||, "losses": [L(w - eta g)], "grad_changes": [||g - g_eta||],
        "loss_range": max - min of L over {w} and the w - eta g, "grad_change": max ||g - g_eta||,
        "beta": max ||g - g_eta|| / (eta ||g||)}`` (floats; ``beta`` is 0 for a zero gradient).

    Raises:
        ValueError: no step sizes, or one that is not > 0.
    """
    steps = [float(s) for s in step_sizes]
    if not steps or min(steps) <= 0:
        raise ValueError(f"step_sizes must be a non-empty list of numbers > 0, got {list(step_sizes)}")
    params = [p for p in model.parameters() if p.requires_grad]
    with _preserved(model, None):
        model.train(train_mode)
        loss0, g0 = _loss_and_grad(model, loss_fn, x, y, params, seed)
        start = [p.detach().clone() for p in params]
        gnorm = float(g0.norm())
        losses, changes, betas = [], [], []
        for eta in steps:
            with torch.no_grad():
                offset = 0
                for p, p0 in zip(params, start, strict=True):
                    n = p.numel()
                    p.copy_(p0 - eta * g0[offset : offset + n].view_as(p))
                    offset += n
            loss, g = _loss_and_grad(model, loss_fn, x, y, params, seed)
            change = float((g - g0).norm())
            losses.append(loss)
            changes.append(change)
            betas.append(change / (eta * gnorm) if gnorm > 0 else 0.0)
    return {"loss": loss0, "grad_norm": gnorm, "step_sizes": steps, "losses": losses, "grad_changes": changes,
            "loss_range": max(losses + [loss0]) - min(losses + [loss0]), "grad_change": max(changes),
            "beta": max(betas)}


@torch.no_grad()
def batchnorm_mode_gap(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, seed: int = 0) -> dict:
    """Accuracy of a BatchNorm network with batch statistics (training mode) and with running averages (eval).

    Training mode normalizes each batch of ``batch_size`` consecutive samples of x with that batch's own
    mean and variance (what the network saw while training, at its training batch size); eval mode uses
    the running averages, one fixed affine map per unit. At tiny batch sizes the batch statistics are
    noisy and the two disagree (Ioffe 2017, Sec. 1).

    Args:
        model: the network (any module; without BatchNorm the two modes differ only by dropout/noise).
        x, y: the data (N, ...), (N,).
        batch_size: samples per batch in training mode (the last batch may be smaller; a last batch of a
            single sample is dropped from the training-mode count, as BatchNorm cannot normalize it).
        seed: seeds stochastic layers in training mode (the caller's RNG stream is untouched).

    Returns:
        ``{"eval_acc", "batch_stats_acc", "mode_gap"}``: accuracies in [0, 1] and
        ``mode_gap = batch_stats_acc - eval_acc``.

    Raises:
        ValueError: batch_size < 2 (BatchNorm needs two samples for a variance) or an empty x.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 for batch statistics, got {batch_size}")
    n = x.shape[0]
    if n == 0:
        raise ValueError("no data: x has 0 samples")
    with _preserved(model, seed):
        model.eval()
        eval_acc = int((model(x).argmax(-1) == y).sum()) / n
        model.train()
        correct, counted = 0, 0
        for i in range(0, n, batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            if xb.shape[0] < 2:
                continue
            correct += int((model(xb).argmax(-1) == yb).sum())
            counted += xb.shape[0]
    batch_acc = correct / max(counted, 1)
    return {"eval_acc": eval_acc, "batch_stats_acc": batch_acc, "mode_gap": batch_acc - eval_acc}

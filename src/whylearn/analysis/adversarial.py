"""Adversarial examples under an L-infinity budget: FGSM, PGD and accuracy against the budget.

Szegedy et al. 2014 ("Intriguing properties of neural networks") found that imperceptibly small,
worst-case perturbations change a trained network's prediction. Goodfellow, Shlens & Szegedy 2015
("Explaining and harnessing adversarial examples", Sec. 4, Eq. (1)) explain them by the networks'
near-linearity and give the *fast gradient sign method*::

    x_adv = clip(x + epsilon * sign(grad_x L(f(x), y)))

Madry et al. 2018 ("Towards deep learning models resistant to adversarial attacks", Sec. 2, Eq. (2))
iterate it as *projected gradient descent* on the negative loss (PGD), from a uniformly random start
in the budget, projecting back onto the L-infinity ball of radius epsilon after each step::

    x^{t+1} = Proj_{||x' - x||_inf <= epsilon, x' in [lo, hi]} ( x^t + alpha * sign(grad_x L(f(x^t), y)) )

Every function here is pure: it takes a model and tensors and returns tensors or numbers, never
changes the model's parameters, gradients (``.grad`` stays as it was) or mode, and works in the
units of the inputs it is given. MNIST's perturbation budgets (0.1, 0.25, 0.3) are in pixel units of
images scaled to [0, 1] (``bounds=(0, 1)``); for data without a natural range (MNIST-1D) pass
``bounds=None``: the perturbed input is then only held inside the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whylearn.analysis.hessian import eval_mode
from whylearn.analysis.plotting import save_figure, subplots

LossFn = Callable[[Tensor, Tensor], Tensor]
ATTACKS = ("fgsm", "pgd")


def _check(x: Tensor, y: Tensor, epsilon: float, bounds: tuple[float, float] | None) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"inputs and labels disagree on the batch size: x {tuple(x.shape)}, y {tuple(y.shape)}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0 (an L-infinity radius in input units), got {epsilon}")
    if bounds is not None and not bounds[0] < bounds[1]:
        raise ValueError(f"bounds must be (low, high) with low < high, or None, got {bounds}")


def _clip(x_adv: Tensor, x: Tensor, epsilon: float, bounds: tuple[float, float] | None) -> Tensor:
    """Project onto the L-infinity ball of radius epsilon around x, then onto [low, high]."""
    x_adv = torch.max(torch.min(x_adv, x + epsilon), x - epsilon)
    return x_adv.clamp(bounds[0], bounds[1]) if bounds is not None else x_adv


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn = F.cross_entropy) -> tuple[Tensor, Tensor]:
    """The gradient of the summed loss with respect to the inputs, and the per-example losses.

    Args:
        model: maps x (B, ...) to logits (B, C); called as it is (its mode is the caller's).
        x: inputs (B, ...); y: integer labels (B,).
        loss_fn: ``loss_fn(logits, y)`` with ``reduction`` left to this function: it is called with
            ``reduction="none"`` when it accepts it (cross-entropy does), so each example's gradient
            is the gradient of its own loss.

    Returns:
        (grad (B, ...) of sum_i L_i with respect to x, losses (B,)). Parameter ``.grad`` are untouched
        (the gradient is taken with ``torch.autograd.grad`` with respect to x alone).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        try:
            losses = loss_fn(logits, y, reduction="none")
        except TypeError:
            losses = loss_fn(logits, y).expand(x.shape[0])
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return grad.detach(), losses.detach()


def fgsm(model: nn.Module, x: Tensor, y: Tensor, epsilon: float, bounds: tuple[float, float] | None = (0.0, 1.0),
         loss_fn: LossFn = F.cross_entropy) -> Tensor:
    """The fast gradient sign method (Goodfellow et al. 2015, Sec. 4, Eq. (1)).

    Args:
        model: maps x (B, ...) to logits (B, C); used in its current mode.
        x: clean inputs (B, ...), in the units the budget is stated in.
        y: true labels (B,), long.
        epsilon: L-infinity budget (>= 0), input units.
        bounds: valid input range (low, high), applied after the step; None: no range.
        loss_fn: the loss whose increase is sought (default: cross-entropy).

    Returns:
        x_adv (B, ...) = clip(x + epsilon * sign(grad_x L)), detached; ||x_adv - x||_inf <= epsilon.

    Raises:
        ValueError: negative epsilon, mismatched batch sizes or bounds with low >= high.
    """
    _check(x, y, epsilon, bounds)
    if epsilon == 0:
        return x.detach().clone()
    grad, _ = input_gradient(model, x, y, loss_fn)
    return _clip(x.detach() + epsilon * grad.sign(), x.detach(), epsilon, bounds)


def pgd(model: nn.Module, x: Tensor, y: Tensor, epsilon: float, step_size: float | None = None, steps: int = 40,
        random_start: bool = True, restarts: int = 1, bounds: tuple[float, float] | None = (0.0, 1.0),
        loss_fn: LossFn = F.cross_entropy, generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient descent on the negative loss, L-infinity ball (Madry et al. 2018, Sec. 2, Eq. (2)).

    Args:
        model: maps x (B, ...) to logits (B, C); used in its current mode.
        x, y: clean inputs (B, ...) and true labels (B,).
        epsilon: L-infinity budget (>= 0), input units.
        step_size: alpha per step, input units; default 2.5 * epsilon / steps (Madry et al.'s MNIST
            set-up, 40 steps of 0.01 at epsilon 0.3, uses 1.33 * epsilon / steps).
        steps: gradient steps (>= 1).
        random_start: start from x + U(-epsilon, epsilon) (Madry et al.), else from x.
        restarts: independent random starts; each example keeps the perturbation with the highest
            final loss (a misclassified one first). Only meaningful with ``random_start``.
        bounds: valid input range (low, high); None: no range.
        loss_fn: the loss ascended (default: cross-entropy).
        generator: for the random starts (on x's device); None uses the global RNG.

    Returns:
        x_adv (B, ...) detached, with ||x_adv - x||_inf <= epsilon and inside ``bounds``.

    Raises:
        ValueError: negative epsilon, steps or restarts < 1, step_size <= 0, bad bounds.
    """
    _check(x, y, epsilon, bounds)
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
    alpha = 2.5 * epsilon / steps if step_size is None else float(step_size)
    if epsilon > 0 and not alpha > 0:
        raise ValueError(f"step_size must be > 0 (input units), got {step_size}")
    x = x.detach()
    if epsilon == 0:
        return x.clone()
    best = x.clone()
    best_score = torch.full((x.shape[0],), -float("inf"), device=x.device)
    for _ in range(restarts):
        if random_start:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) if generator is not None \
                else torch.rand_like(x)
            x_adv = _clip(x + (2 * noise - 1) * epsilon, x, epsilon, bounds)
        else:
            x_adv = x.clone()
        for _ in range(steps):
            grad, _ = input_gradient(model, x_adv, y, loss_fn)
            x_adv = _clip(x_adv + alpha * grad.sign(), x, epsilon, bounds)
        with torch.no_grad():
            logits = model(x_adv)
            losses = F.cross_entropy(logits, y, reduction="none")
            score = losses + 1e6 * (logits.argmax(-1) != y).float()  # a misclassification beats any loss
        better = score > best_score
        best[better] = x_adv[better]
        best_score = torch.where(better, score, best_score)
    return best


def attack(name: str, model: nn.Module, x: Tensor, y: Tensor, epsilon: float, **kwargs) -> Tensor:
    """Dispatch to :func:`fgsm` or :func:`pgd` by ``name``; kwargs go to that function.

    Raises:
        ValueError: an unknown attack name (names the allowed ones).
    """
    if name == "fgsm":
        return fgsm(model, x, y, epsilon, **{k: v for k, v in kwargs.items() if k in ("bounds", "loss_fn")})
    if name == "pgd":
        return pgd(model, x, y, epsilon, **kwargs)
    raise ValueError(f"unknown attack {name!r}; allowed: {list(ATTACKS)}")


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return (model(x).argmax(-1) == y)


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, epsilons: Sequence[float], attack_name: str = "pgd",
                    batch_size: int = 1000, **attack_kwargs) -> list[float]:
    """Accuracy on adversarial examples of (x, y), one per budget in ``epsilons``, in eval mode.

    Args:
        model: the classifier; evaluated (and attacked) in eval mode, its mode restored afterwards.
        x, y: the examples (N, ...) and labels (N,), e.g. the test set or a fixed subset of it.
        epsilons: L-infinity budgets, input units (0 gives the clean accuracy).
        attack_name: ``fgsm`` or ``pgd``.
        batch_size: examples attacked at once.
        attack_kwargs: passed to the attack (``steps``, ``step_size``, ``restarts``, ``bounds``, ...).

    Returns:
        [accuracy at each epsilon], fractions in [0, 1]: the share of examples whose adversarial
        version is classified correctly (Madry et al.'s "adversarial accuracy"; 1 - the error rate
        of Goodfellow et al.).
    """
    if attack_name not in ATTACKS:
        raise ValueError(f"unknown attack {attack_name!r}; allowed: {list(ATTACKS)}")
    out = []
    with eval_mode(model):
        for eps in epsilons:
            correct = 0
            for i in range(0, x.shape[0], batch_size):
                xb, yb = x[i: i + batch_size], y[i: i + batch_size]
                xa = attack(attack_name, model, xb, yb, float(eps), **attack_kwargs) if eps > 0 else xb
                correct += int(_correct(model, xa, yb).sum())
            out.append(correct / max(x.shape[0], 1))
    return out


@torch.no_grad()
def mean_confidence_wrong(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    """Mean softmax probability of the predicted class over the misclassified adversarial examples
    (Goodfellow et al. 2015 report it beside the error rate: 79.3% for the softmax classifier,
    97.6% for the maxout network at epsilon 0.25); nan if none is misclassified."""
    with eval_mode(model):
        p = model(x_adv).softmax(-1)
    wrong = p.argmax(-1) != y
    return float(p.max(-1).values[wrong].mean()) if bool(wrong.any()) else float("nan")


def adversarial_example(model: nn.Module, x0: Tensor, y0: Tensor, epsilon: float, **pgd_kwargs) -> dict[str, Any]:
    """One PGD example for a figure: the clean input x0 (1, ...), its perturbation at ``epsilon`` and their
    difference as nested lists, with the label, the predictions and their probabilities (eval mode)."""
    with eval_mode(model):
        x_adv = pgd(model, x0, y0, epsilon, **pgd_kwargs)
        with torch.no_grad():
            p_clean, p_adv = model(x0).softmax(-1)[0], model(x_adv).softmax(-1)[0]
    return {"epsilon": float(epsilon), "label": int(y0[0]), "x": x0[0].tolist(), "x_adv": x_adv[0].tolist(),
            "delta": (x_adv - x0)[0].tolist(), "pred_clean": int(p_clean.argmax()), "p_clean": float(p_clean.max()),
            "pred_adv": int(p_adv.argmax()), "p_adv": float(p_adv.max())}


def plot_accuracy_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], epsilons: Sequence[float],
                         labels: Mapping[str, str], path: str | Path, title: str = "", n_seeds: int = 1) -> Path:
    """Accuracy against epsilon under FGSM (left) and PGD (right), one line per model.

    Args:
        curves: name -> ``{"fgsm": [acc per epsilon], "pgd": [...]}`` (either or both; one panel per attack),
            optionally with ``fgsm_sd`` and ``pgd_sd`` (drawn as +-1 sd bands).
        epsilons: the budgets (x axis). labels: name -> legend text. n_seeds: for the titles.
    """
    eps = np.asarray(epsilons, dtype=float)
    names = {"fgsm": "FGSM (Goodfellow et al. 2015)", "pgd": "PGD (Madry et al. 2018)"}
    attacks = [a for a in ATTACKS if any(a in c for c in curves.values())]
    fig, axes = subplots(len(attacks), 1, width=5.5, height=4.2)
    for ax, attack_name in zip(np.atleast_1d(axes), attacks, strict=True):
        what = names[attack_name]
        for name, curve in curves.items():
            mu = np.asarray(curve[attack_name], dtype=float)
            line, = ax.plot(eps, mu, "o-", ms=4, label=labels.get(name, name))
            if f"{attack_name}_sd" in curve:
                sd = np.nan_to_num(np.asarray(curve[f"{attack_name}_sd"], dtype=float))
                ax.fill_between(eps, mu - sd, mu + sd, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epsilon (L-infinity budget, input units)")
        ax.set_ylabel("test accuracy on adversarial examples")
        ax.set_ylim(-0.02, 1.02)
        seeds = f", mean ± sd over {n_seeds} seeds" if n_seeds > 1 else ", one seed"
        ax.set_title(f"{title + ': ' if title else ''}{what}{seeds}", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_triptych(examples: Sequence[tuple[str, Mapping[str, Any]]], path: str | Path, title: str = "") -> Path:
    """One row per model: the clean input, its PGD perturbation and their difference (images or 1-D signals),
    from :func:`adversarial_example` dicts."""
    fig, axes = subplots(3, len(examples), width=3.0, height=2.8)
    axes = np.asarray(axes).reshape(len(examples), 3)
    for row, (label, ex) in zip(axes, examples, strict=True):
        heads = (f"clean: pred {ex['pred_clean']} ({ex['p_clean']:.2f}), label {ex['label']}",
                 f"perturbed: pred {ex['pred_adv']} ({ex['p_adv']:.2f})",
                 f"difference, |.|_inf <= {ex['epsilon']:g}")
        for ax, k, head in zip(row, ("x", "x_adv", "delta"), heads, strict=True):
            arr = np.asarray(ex[k], dtype=np.float64)
            if arr.ndim >= 2:  # an image (C, H, W) or (H, W)
                img = arr.reshape(arr.shape[-2], arr.shape[-1]) if arr.ndim == 2 or arr.shape[0] == 1 else arr.transpose(1, 2, 0)
                if k == "delta":
                    im = ax.imshow(img, cmap="RdBu", vmin=-ex["epsilon"], vmax=ex["epsilon"])
                    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
                else:
                    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            else:  # a 1-D signal
                ax.plot(arr.reshape(-1), color="tab:red" if k == "delta" else "k", lw=1.2)
                if k == "delta":
                    for sign in (1, -1):
                        ax.axhline(sign * ex["epsilon"], color="gray", ls=":", lw=0.8)
                ax.set_xlabel("position")
            ax.set_title(head, fontsize=8)
        row[0].set_ylabel(label, fontsize=9)
    fig.suptitle(f"{title + ': ' if title else ''}PGD adversarial examples", fontsize=10)
    return save_figure(fig, path, grid=False)

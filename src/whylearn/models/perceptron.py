"""Rosenblatt's perceptron (1958): a threshold unit with bias, trained by the perceptron rule on mistakes.

Rule (Rosenblatt 1958; in the form of Novikoff 1962): for a sample (x, y) with y in {-1, +1},
if y (w.x + b) <= 0 then w <- w + lr * y x and b <- b + lr * y * bias_input; otherwise nothing.
Started from w = 0, b = 0, the number of mistakes on data separable with margin gamma
inside a ball of radius R is at most (R/gamma)^2 (Novikoff 1962, Theorem 1), where x
includes the bias input (see :func:`novikoff_bound`). The step size ``lr`` does not
change the mistakes when starting from zero (it only rescales w).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Perceptron(nn.Module):
    """A linear threshold unit: score w.x + b, prediction sign (+1 if score > 0 else -1).

    Args:
        input_size: d, features per sample (inputs (B, ...) are flattened to (B, d)).
        bias: learn a bias (as a weight on a constant input ``bias_input``).
        bias_input: the constant input the bias multiplies (1 by default).
        num_classes: ignored (accepted so that a config may size it from 2-class data).

    Shapes: forward (B, ...) -> scores (B,); :meth:`predict` -> labels in {-1, +1} (B,).
    Weights start at zero (Novikoff's theorem assumes it). Parameters are updated by
    :meth:`perceptron_update`, never by autograd (``requires_grad=False``).
    """

    def __init__(self, input_size: int, bias: bool = True, bias_input: float = 1.0, num_classes: int | None = None) -> None:
        super().__init__()
        if num_classes not in (None, 2):
            raise ValueError(f"a perceptron separates 2 classes; the data have num_classes={num_classes}")
        self.input_size, self.use_bias, self.bias_input = int(input_size), bool(bias), float(bias_input)
        self.weight = nn.Parameter(torch.zeros(self.input_size), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1).to(self.weight.dtype)
        if x.shape[1] != self.input_size:
            raise ValueError(f"Perceptron expects {self.input_size} features per sample, got {x.shape[1]}")
        return x @ self.weight + self.bias * self.bias_input

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Labels in {-1, +1} (a zero score counts as -1, so w = 0 errs on every sample)."""
        return torch.where(self.forward(x) > 0, 1, -1)

    @torch.no_grad()
    def perceptron_update(self, x: Tensor, y: int | Tensor, lr: float = 1.0) -> bool:
        """Apply the perceptron rule to one sample x (d,) with label y in {-1, +1}; return True on a mistake.

        Raises:
            ValueError: y not in {-1, +1}.
        """
        y = int(y)
        if y not in (-1, 1):
            raise ValueError(f"perceptron labels must be -1 or +1, got {y}")
        x = x.reshape(-1).to(self.weight.dtype)
        score = torch.dot(self.weight, x) + self.bias * self.bias_input
        if y * float(score) > 0:
            return False
        self.weight.add_(x, alpha=lr * y)
        if self.use_bias:
            self.bias.add_(lr * y * self.bias_input)
        return True

    def augmented(self, x: Tensor) -> Tensor:
        """Inputs with the bias input appended, (B, d+1) (or (B, d) without bias): the space of Novikoff's bound."""
        x = x.flatten(1).to(self.weight.dtype)
        if not self.use_bias:
            return x
        return torch.cat([x, torch.full((x.shape[0], 1), self.bias_input, dtype=x.dtype, device=x.device)], 1)


def train_perceptron(model: Perceptron, x: Tensor, y: Tensor, max_epochs: int = 100, lr: float = 1.0,
                     shuffle: bool = False, seed: int = 0) -> list[int]:
    """Cycle through (x, y) applying the perceptron rule until an epoch without mistakes or ``max_epochs``.

    Args:
        x: (n, d) inputs; y: (n,) labels in {-1, +1} (or {0, 1}, mapped to -1/+1).
        shuffle: visit samples in a fresh seeded order each epoch (else in order).

    Returns:
        mistakes per epoch (the last is 0 iff the data were separated).
    """
    y = _pm1(y)
    g = torch.Generator().manual_seed(seed)
    per_epoch: list[int] = []
    for _ in range(max_epochs):
        order = torch.randperm(len(y), generator=g) if shuffle else torch.arange(len(y))
        m = sum(model.perceptron_update(x[i], y[i], lr) for i in order.tolist())
        per_epoch.append(int(m))
        if m == 0:
            break
    return per_epoch


def _pm1(y: Tensor) -> Tensor:
    """Labels as -1/+1: {0, 1} labels are mapped (0 -> -1); raises ValueError on anything else."""
    vals = set(torch.unique(y).tolist())
    if vals <= {0, 1}:
        return (2 * y - 1).long()
    if vals <= {-1, 1}:
        return y.long()
    raise ValueError(f"binary labels must be in {{0, 1}} or {{-1, +1}}, got values {sorted(vals)}")


def margin(x: Tensor, y: Tensor, w: Tensor, b: float = 0.0) -> float:
    """Geometric margin min_i y_i (w.x_i + b) / ||(w, b)|| of the hyperplane (w, b) on (x, y); negative if it errs.

    With b included in the norm this is the margin in the augmented space (x, 1) that
    the perceptron with bias works in; pass b = 0 for a hyperplane through the origin.
    """
    y = _pm1(y).to(x.dtype)
    w = w.to(x.dtype)
    norm = torch.sqrt(w.dot(w) + b * b)
    return float((y * (x.flatten(1) @ w + b)).min() / norm)


def novikoff_bound(x: Tensor, y: Tensor, w_star: Tensor, b_star: float = 0.0, bias_input: float | None = 1.0) -> dict[str, float]:
    """Novikoff's (1962) bound (R/gamma)^2 on the perceptron's mistakes, measured on the data.

    R is the largest norm of an input as the perceptron sees it (with the bias input
    appended, unless ``bias_input`` is None), and gamma the margin of the separating
    hyperplane (w*, b*) in that same space: the augmented normal is (w*, b*/bias_input).

    Returns:
        ``{"R": R, "gamma": gamma, "bound": (R/gamma)^2}``.

    Raises:
        ValueError: (w*, b*) does not separate the data (gamma <= 0).
    """
    x = x.flatten(1).double()
    if bias_input is None:
        xa, wa = x, w_star.double()
    else:
        xa = torch.cat([x, torch.full((x.shape[0], 1), float(bias_input), dtype=x.dtype)], 1)
        wa = torch.cat([w_star.double(), torch.tensor([b_star / bias_input], dtype=x.dtype)])
    gamma = margin(xa, y, wa, 0.0)
    if gamma <= 0:
        raise ValueError(f"the reference hyperplane does not separate the data (margin {gamma:.3g})")
    r = float(xa.norm(dim=1).max())
    return {"R": r, "gamma": gamma, "bound": (r / gamma) ** 2}


def linearly_separable(x: Tensor, y: Tensor) -> bool:
    """Whether some hyperplane (w, b) separates the data strictly: is y_i (w.x_i + b) >= 1 for all i feasible?

    A linear-programming feasibility check (scipy's HiGHS), the exact answer the perceptron can
    only give when it stops: the perceptron converges iff this is True (Novikoff 1962), and cycles
    forever otherwise (Minsky & Papert 1969, the perceptron cycling theorem).

    Args:
        x: (n, ...) inputs (flattened); y: (n,) labels in {0, 1} or {-1, +1}.
    """
    import numpy as np
    from scipy.optimize import linprog

    xs = x.flatten(1).double().cpu().numpy()
    ys = _pm1(y).double().cpu().numpy()
    a = -(ys[:, None] * np.hstack([xs, np.ones((xs.shape[0], 1))]))
    r = linprog(np.zeros(xs.shape[1] + 1), A_ub=a, b_ub=-np.ones(xs.shape[0]),
                bounds=[(None, None)] * (xs.shape[1] + 1), method="highs")
    if r.status not in (0, 2):
        raise RuntimeError(f"the separability LP ended with status {r.status}: {r.message}")
    return r.status == 0

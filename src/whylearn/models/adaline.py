"""ADALINE and the Widrow-Hoff LMS rule (Widrow & Hoff 1960, "Adaptive switching circuits").

The adaptive linear element computes y_hat = w.x (+ b). The least-mean-squares rule
updates after each sample

    w <- w + mu (y - w.x) x,

which is exactly stochastic gradient descent with batch size 1 on the squared error
(1/2)(y - w.x)^2 with step size mu. Averaged over the data it is steepest descent on
the mean squared error, w <- w + mu (p - R w) with R = E[x x^T] (the input correlation
matrix) and p = E[y x]: it converges iff 0 < mu < 2 / lambda_max(R) (Widrow & Stearns
1985, ch. 4). The single-sample rule has a noisier, smaller stable range: its mean-square
error stays bounded for mu below roughly 2 / trace(R) (Widrow et al. 1976, "Stationary
and nonstationary learning characteristics of the LMS adaptive filter"; with our mu the
bound on their 2*mu reads mu < 2/trace(R); Horowitz & Senne 1981 give the exact range for
Gaussian inputs, slightly below it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Adaline(nn.Module):
    """A linear unit y_hat = w.x + b, trained by LMS (:meth:`lms_update`), not by autograd.

    Args:
        input_size: d (inputs (B, ...) are flattened to (B, d)).
        bias: learn a bias (as a weight on a constant input 1).
        num_classes: ignored (so a config may pass it).

    Shapes: forward (B, ...) -> (B,). Weights start at zero, float64.
    """

    def __init__(self, input_size: int, bias: bool = False, num_classes: int | None = None) -> None:
        super().__init__()
        self.input_size, self.use_bias = int(input_size), bool(bias)
        self.weight = nn.Parameter(torch.zeros(self.input_size, dtype=torch.float64), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1).to(self.weight.dtype)
        if x.shape[1] != self.input_size:
            raise ValueError(f"Adaline expects {self.input_size} features per sample, got {x.shape[1]}")
        return x @ self.weight + self.bias

    @torch.no_grad()
    def lms_update(self, x: Tensor, y: Tensor, mu: float) -> Tensor:
        """The Widrow-Hoff rule on a batch x (B, d), y (B,): w += mu * mean_b (y_b - w.x_b) x_b.

        With B = 1 this is the single-sample LMS rule; with the whole data set it is
        steepest descent on the mean squared error. Returns the errors (B,) before the update.
        """
        x = x.flatten(1).to(self.weight.dtype)
        err = y.to(self.weight.dtype) - self.forward(x)
        self.weight.add_(x.T @ err, alpha=mu / x.shape[0])
        if self.use_bias:
            self.bias.add_(err.mean(), alpha=mu)
        return err


def lms_bounds(x: Tensor) -> dict[str, float]:
    """Eigen-facts of the input correlation matrix R = X^T X / n of inputs x (n, d).

    Returns ``lambda_max``, ``trace``, ``mu_max_mean`` = 2 / lambda_max (steepest descent / the
    mean weights) and ``mu_max_lms`` = 2 / trace (single-sample LMS, Widrow's estimate).
    """
    x = x.flatten(1).double()
    corr = x.T @ x / x.shape[0]
    lam = float(torch.linalg.eigvalsh(corr).max())
    tr = float(corr.trace())
    return {"lambda_max": lam, "trace": tr, "mu_max_mean": 2.0 / lam, "mu_max_lms": 2.0 / tr}


def run_lms(x: Tensor, y: Tensor, mu: float, epochs: int = 1, batch_size: int = 1, seed: int | None = 0,
            blowup: float = 1e8) -> dict[str, object]:
    """Train an :class:`Adaline` (no bias) from zero by LMS with batches of ``batch_size`` for ``epochs`` passes.

    ``batch_size=1`` is the Widrow-Hoff rule; ``batch_size=len(x)`` is full-batch steepest
    descent. ``seed`` fixes each epoch's data order (None: in order). Stops early once
    the training MSE exceeds ``blowup`` times its initial value (diverged).

    Returns dict: ``weight`` (d,), ``mse`` (per epoch, training mean squared error,
    (1/n) sum (y - w.x)^2), ``diverged`` (bool).
    """
    n = x.shape[0]
    model = Adaline(x.flatten(1).shape[1])
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    y = y.double()
    mse0 = float(y.pow(2).mean())
    history: list[float] = []
    diverged = False
    for _ in range(epochs):
        order = torch.randperm(n, generator=g) if g is not None else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            model.lms_update(x[idx], y[idx], mu)
        mse = float((y - model(x)).pow(2).mean())
        history.append(mse)
        if not mse < blowup * max(mse0, 1e-12):  # also catches nan
            diverged = True
            break
    return {"weight": model.weight.detach().clone(), "mse": history, "diverged": diverged}

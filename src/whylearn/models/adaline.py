"""ADALINE and the Widrow-Hoff LMS rule (Widrow & Hoff 1960, "Adaptive switching circuits").

The adaptive linear element computes y_hat = w.x (+ b). The least-mean-squares rule
updates after each sample

    w <- w + mu (y - w.x) x,

which is exactly stochastic gradient descent with batch size 1 on the squared error
(1/2)(y - w.x)^2 with step size mu. (Widrow's papers write the same rule as w + 2 mu e x;
every bound below is in this module's convention, mu here = 2 mu there.)

Where the step size is stable, with R = E[x x^T] (the input correlation matrix), eigenvalues
lambda_i:

- Averaged over the data (the mean weights, or the full-batch steepest-descent form
  w <- w + mu (p - R w), p = E[y x]) the rule converges iff 0 < mu < 2 / lambda_max(R)
  (Widrow & Stearns 1985, ch. 4).
- The single-sample rule on i.i.d. zero-mean Gaussian inputs is stable in mean square (its
  mean-square error stays bounded) iff

      sum_i mu lambda_i / (2 - 2 mu lambda_i) < 1   and   mu lambda_max < 1

  (Horowitz & Senne 1981; Feuer & Weinstein 1985, "Convergence analysis of LMS filters with
  uncorrelated Gaussian data", IEEE Trans. ASSP 33(1), necessary and sufficient conditions).
  :func:`lms_mean_square_edge` solves it; :func:`lms_excess_mse_theory` iterates the exact
  recursion it comes from. Derivation (real data, inputs independent over time, so x_t is
  independent of the weight error c_t = w_t - w*): c' = (I - mu x x^T) c + mu v x with v the
  target noise, and by Isserlis' theorem E[x x^T K x x^T] = 2 R K R + tr(R K) R, so
  K = E[c c^T] obeys K' = K - mu (R K + K R) + mu^2 (2 R K R + tr(R K) R) + mu^2 sigma_v^2 R.
  In R's eigenbasis the diagonal k_i closes on itself,
  k_i' = (1 - 2 mu lambda_i + 2 mu^2 lambda_i^2) k_i + mu^2 lambda_i (sum_j lambda_j k_j + sigma_v^2),
  a diagonal plus rank-one matrix whose spectral radius crosses 1 exactly at the condition above.
- Two simpler bounds follow from it. Since mu lambda_i / (2 - 2 mu lambda_i) >= mu lambda_i / 2,
  mu < 2 / trace(R) is **necessary** (Widrow et al. 1976's estimate; the exact edge lies below
  it, 0.87 x 2/trace for d = 20 eigenvalues spread from 1 to 10). Since the sum is at most
  mu tr / (2 - 2 mu tr), mu < 2 / (3 trace(R)) is **sufficient**.
- Mean-square stability is a property of the ensemble. A single run follows the top Lyapunov
  exponent of the random products (I - mu x x^T), which is at most half the log of the
  mean-square growth rate: below the edge every run converges (in distribution, to the noise
  floor); just above it a single run may still converge while the mean square diverges through
  rare, huge excursions (heavy tails). With eigenvalues spread over many directions the two
  edges nearly coincide; with one dominant eigenvalue they do not (see docs/experiments.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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
    """Step-size bounds of LMS from the input correlation matrix R = X^T X / n of inputs x (n, d).

    Returns:
        ``lambda_max``, ``trace``; ``mu_max_mean`` = 2 / lambda_max (exact edge of steepest descent
        and of the mean weights); ``mu_edge_ms`` = :func:`lms_mean_square_edge` of R's eigenvalues
        (exact mean-square edge of single-sample LMS for Gaussian inputs with this R);
        ``mu_necessary_lms`` = 2 / trace (necessary: the edge is below it) and
        ``mu_sufficient_lms`` = 2 / (3 trace) (sufficient). (Earlier versions reported 2 / trace
        as ``mu_max_lms``, "the" single-sample limit; it is not one, so that key is gone.)
    """
    x = x.flatten(1).double()
    corr = x.T @ x / x.shape[0]
    return lms_bounds_from_spectrum(torch.linalg.eigvalsh(corr).tolist())


def lms_bounds_from_spectrum(eigenvalues: Sequence[float] | Tensor) -> dict[str, float]:
    """:func:`lms_bounds` from the eigenvalues of R directly (all must be > 0; ValueError otherwise)."""
    lam = _spectrum(eigenvalues)
    lam_max, tr = float(lam.max()), float(lam.sum())
    return {"lambda_max": lam_max, "trace": tr, "mu_max_mean": 2.0 / lam_max, "mu_edge_ms": lms_mean_square_edge(lam),
            "mu_necessary_lms": 2.0 / tr, "mu_sufficient_lms": 2.0 / (3.0 * tr)}


def _spectrum(eigenvalues: Sequence[float] | Tensor) -> np.ndarray:
    lam = np.asarray(torch.as_tensor(eigenvalues, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1)
    if lam.size == 0 or not np.all(np.isfinite(lam)) or (lam <= 0).any():
        raise ValueError(f"the eigenvalues of R must be a non-empty list of positive numbers, got {lam.tolist()}")
    return lam


def lms_mean_square_sum(eigenvalues: Sequence[float] | Tensor, mu: float) -> float:
    """sum_i mu lambda_i / (2 - 2 mu lambda_i): single-sample LMS is mean-square stable iff this is < 1 and mu lambda_max < 1.

    Feuer & Weinstein (1985), in this module's convention (w += mu e x, real Gaussian inputs);
    returns inf when mu lambda_max >= 1. The steady-state misadjustment (excess MSE over the
    noise variance) below the edge is s / (1 - s) with s this sum (see :func:`lms_misadjustment`).
    """
    lam = _spectrum(eigenvalues)
    if mu <= 0:
        raise ValueError(f"the step size mu must be > 0, got {mu}")
    if mu * lam.max() >= 1:
        return float("inf")
    return float(np.sum(mu * lam / (2.0 - 2.0 * mu * lam)))


def lms_mean_square_edge(eigenvalues: Sequence[float] | Tensor) -> float:
    """The exact mean-square stability edge mu* of single-sample LMS for i.i.d. zero-mean Gaussian inputs.

    mu* is the root on (0, 1/lambda_max) of sum_i mu lambda_i / (2 - 2 mu lambda_i) = 1
    (Feuer & Weinstein 1985; Horowitz & Senne 1981), for the update w <- w + mu (y - w.x) x.
    The sum increases from 0 to infinity on that interval, so the root is unique.
    2 / (3 trace) <= mu* < 2 / trace always.

    Args:
        eigenvalues: the spectrum of R = E[x x^T], (d,), all > 0.

    Raises:
        ValueError: an eigenvalue <= 0 (or none).
    """
    from scipy.optimize import brentq

    lam = _spectrum(eigenvalues)
    hi = 1.0 / lam.max()
    return float(brentq(lambda mu: np.sum(mu * lam / (2.0 - 2.0 * mu * lam)) - 1.0, 0.0, hi * (1 - 1e-15),
                        xtol=1e-15, rtol=1e-13))


def lms_mean_square_rate(eigenvalues: Sequence[float] | Tensor, mu: float) -> float:
    """Per-step growth factor of the mean square of single-sample LMS on Gaussian inputs (> 1: it diverges).

    The spectral radius of the (diagonal + rank-one) matrix of the recursion of
    :func:`lms_excess_mse_theory`, diag(1 - 2 mu l + 2 mu^2 l^2) + mu^2 l l^T: E|c_t|^2 grows or
    decays like rate^t. It equals 1 exactly at :func:`lms_mean_square_edge`. Half its log bounds the
    top Lyapunov exponent of a single run from above (Jensen's inequality).
    """
    lam = _spectrum(eigenvalues)
    f = np.diag(1.0 - 2.0 * mu * lam + 2.0 * mu**2 * lam**2) + mu**2 * np.outer(lam, lam)
    return float(np.max(np.abs(np.linalg.eigvals(f))))


def lms_misadjustment(eigenvalues: Sequence[float] | Tensor, mu: float) -> float:
    """Steady-state excess MSE over the noise variance: s / (1 - s), s = :func:`lms_mean_square_sum`; inf at or above the edge."""
    s = lms_mean_square_sum(eigenvalues, mu)
    return s / (1.0 - s) if s < 1 else float("inf")


def lms_excess_mse_theory(corr: Tensor | np.ndarray, c0: Tensor | np.ndarray, mus: Sequence[float], steps: int,
                          noise_var: float = 0.0, every: int = 1) -> np.ndarray:
    """The exact mean excess MSE E[c_t^T R c_t] of single-sample LMS on i.i.d. Gaussian inputs, t = every, 2 every, ...

    Iterates the second-moment recursion of the weight error c = w - w* in R's eigenbasis
    (module docstring): k_i' = (1 - 2 mu l_i + 2 mu^2 l_i^2) k_i + mu^2 l_i (sum_j l_j k_j + noise_var),
    from k_i = (q_i . c0)^2 (a deterministic start c0, e.g. -w* when w starts at 0). Exact, no
    small-step approximation; it needs only R, c0 and the target-noise variance.

    Args:
        corr: R (d, d), symmetric positive definite. c0: the initial weight error (d,).
        mus: step sizes (M,). steps: number of updates. noise_var: variance of the target noise
            y - w*.x (independent of x). every: record every this many steps.

    Returns:
        (M, steps // every) array of E[excess MSE] (inf once it overflows).
    """
    corr = np.asarray(torch.as_tensor(corr, dtype=torch.float64).cpu())
    lam, q = np.linalg.eigh(corr)
    lam = _spectrum(lam)
    k = (q.T @ np.asarray(torch.as_tensor(c0, dtype=torch.float64).cpu())) ** 2
    mu = np.asarray(mus, dtype=np.float64)[:, None]
    diag = 1.0 - 2.0 * mu * lam + 2.0 * mu**2 * lam**2
    k = np.repeat(k[None, :], mu.shape[0], axis=0)
    out = np.empty((mu.shape[0], steps // every))
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            s = k @ lam
            k = diag * k + mu**2 * lam * (s[:, None] + noise_var)
            if t % every == 0:
                out[:, t // every - 1] = np.where(np.isfinite(s), k @ lam, np.inf)
    return np.nan_to_num(out, nan=np.inf)


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

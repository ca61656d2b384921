"""Curvature of the training loss: Hessian-vector products, top eigenvalues, trace.

The Hessian H of a network's loss has n x n entries for n parameters, far too
many to build; every quantity here is computed from Hessian-vector products
(HVPs) Hv, which cost about two gradient evaluations (Pearlmutter 1994).

- :func:`hvp` computes Hv by forward-over-reverse differentiation
  (``torch.func.jvp`` of ``torch.func.grad``) or by double backward
  (``torch.autograd.grad`` twice), over the whole data or in chunks.
- :func:`top_eigenvalues` runs power iteration (k = 1) or block power
  (subspace) iteration with Rayleigh-Ritz (k > 1) on HVPs, until the relative
  residual ||H v - lambda v|| / |lambda| is below a tolerance: the *sharpness*
  lambda_max(H) of Cohen et al. 2021 ("Gradient descent on neural networks
  typically occurs at the edge of stability"), who find that full-batch gradient
  descent with step size eta drives it to about 2 / eta.
- :func:`hutchinson_trace` estimates tr(H) = E[z^T H z] with Rademacher z
  (Hutchinson 1989).

Parameters are handled as one flat vector theta (n,) in the order of
``model.named_parameters()``; the model is evaluated with
``torch.func.functional_call``, in eval mode (so BatchNorm uses its running
statistics and dropout is off; the mode is restored afterwards).

Power iteration converges to the eigenvalue of largest *magnitude*; for the
Hessian of a trained network this is the top positive one in practice, but a
run far from a minimum can have a large negative eigenvalue, which is then
what is returned (with its sign).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

LossFn = Callable[[Tensor, Tensor], Tensor]
HVP_METHODS = ("auto", "func", "autograd")


# -- parameters as one flat vector --------------------------------------------------------
def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs that require gradients, in ``named_parameters`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def flatten_params(model: nn.Module) -> Tensor:
    """theta (n,): the trainable parameters, detached and concatenated."""
    return torch.cat([p.detach().reshape(-1) for _, p in trainable(model)])


class ParamSpec:
    """Names and shapes of a model's trainable parameters: flat vector <-> dict of tensors."""

    def __init__(self, model: nn.Module) -> None:
        named = trainable(model)
        if not named:
            raise ValueError(f"{type(model).__name__} has no trainable parameters")
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.numel = sum(self.sizes)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """dict name -> tensor (views into ``flat``, shape (n,))."""
        if flat.shape[-1] != self.numel:
            raise ValueError(f"a parameter vector of this model has {self.numel} entries, got shape {tuple(flat.shape)}")
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes, strict=False)}

    def flatten(self, tensors: dict[str, Tensor] | list[Tensor]) -> Tensor:
        ts = [tensors[n] for n in self.names] if isinstance(tensors, dict) else list(tensors)
        return torch.cat([t.reshape(-1) for t in ts])


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its mode afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def default_loss(logits: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(logits, y)


def make_loss_of_params(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn = default_loss,
                        spec: ParamSpec | None = None) -> Callable[[Tensor], Tensor]:
    """f(theta) = loss_fn(model_theta(x), y), with theta the flat parameter vector (n,).

    Buffers (BatchNorm running statistics) are taken from the model as they are.
    """
    spec = spec or ParamSpec(model)
    buffers = dict(model.named_buffers())

    def f(theta: Tensor) -> Tensor:
        params = spec.unflatten(theta)
        return loss_fn(functional_call(model, (params, buffers), (x,)), y)

    return f


def _chunks(x: Tensor, y: Tensor, chunk_size: int | None) -> list[tuple[Tensor, Tensor, float]]:
    n = x.shape[0]
    if n == 0:
        raise ValueError("no data: x has 0 samples")
    if chunk_size is None or chunk_size >= n:
        return [(x, y, 1.0)]
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    return [(x[i : i + chunk_size], y[i : i + chunk_size], min(chunk_size, n - i) / n) for i in range(0, n, chunk_size)]


# -- Hessian-vector products -----------------------------------------------------------------
class HVP:
    """Hessian-vector products of the mean loss over (x, y) at the model's current parameters.

    Args:
        model: the network; its parameters are read once (theta) and never modified.
        x, y: the data (N, ...), (N,) defining the loss (its mean over the N samples).
        loss_fn: ``loss_fn(outputs, y) -> scalar`` mean loss (default cross-entropy).
        method: ``func`` (forward-over-reverse with ``torch.func``; vectorizes several
            vectors with ``vmap``), ``autograd`` (double backward, one vector at a time) or
            ``auto`` (double backward for one vector, ``func`` + ``vmap`` for several: the faster
            of each on a CPU, see ``docs/benchmarks.md``).
        chunk_size: evaluate the loss over at most this many samples at once and sum
            the chunks' HVPs weighted by their share of N (exact for a mean loss).

    Calling ``hvp(v)`` with v (n,) returns Hv (n,); ``hvp.batch(V)`` with V (k, n) returns (k, n).
    ``hvp.calls`` counts HVPs computed (k per batch call).
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn = default_loss,
                 method: str = "auto", chunk_size: int | None = None) -> None:
        if method not in HVP_METHODS:
            raise ValueError(f"unknown HVP method {method!r}; allowed: {list(HVP_METHODS)}")
        self.model, self.method, self.loss_fn = model, method, loss_fn
        self.spec = ParamSpec(model)
        self.theta = flatten_params(model)
        self.chunks = _chunks(x, y, chunk_size)
        self.calls = 0
        self._fs = [(make_loss_of_params(model, cx, cy, loss_fn, self.spec), w) for cx, cy, w in self.chunks]

    @property
    def numel(self) -> int:
        return self.spec.numel

    def loss(self) -> float:
        with torch.no_grad(), eval_mode(self.model):
            return float(sum(w * f(self.theta) for f, w in self._fs))

    def gradient(self) -> Tensor:
        with eval_mode(self.model):
            return sum(w * grad(f)(self.theta) for f, w in self._fs)

    def _hvp_func(self, v: Tensor) -> Tensor:
        out = None
        for f, w in self._fs:
            hv = w * jvp(grad(f), (self.theta,), (v,))[1]
            out = hv if out is None else out + hv
        return out

    def _hvp_autograd(self, v: Tensor) -> Tensor:
        out = torch.zeros_like(self.theta)
        for f, w in self._fs:
            theta = self.theta.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(f(theta), theta, create_graph=True)
            (hv,) = torch.autograd.grad(g @ v, theta)
            out += w * hv
        return out

    def __call__(self, v: Tensor) -> Tensor:
        if v.shape != self.theta.shape:
            raise ValueError(f"v must have shape ({self.numel},) like the parameters, got {tuple(v.shape)}")
        self.calls += 1
        with eval_mode(self.model):
            return self._hvp_func(v) if self.method == "func" else self._hvp_autograd(v)  # auto: double backward

    def batch(self, V: Tensor) -> Tensor:
        """HV for k vectors at once: V (k, n) -> (k, n); vectorized with vmap for ``method='func'``."""
        if V.ndim != 2 or V.shape[1] != self.numel:
            raise ValueError(f"V must have shape (k, {self.numel}), got {tuple(V.shape)}")
        if self.method == "autograd" or V.shape[0] == 1:
            return torch.stack([self(v) for v in V])
        self.calls += V.shape[0]
        with eval_mode(self.model):
            return vmap(self._hvp_func)(V)


def hvp(model: nn.Module, x: Tensor, y: Tensor, v: Tensor, loss_fn: LossFn = default_loss,
        method: str = "auto", chunk_size: int | None = None) -> Tensor:
    """Hv (n,) for the Hessian H of the mean loss over (x, y) at the model's parameters; see :class:`HVP`."""
    return HVP(model, x, y, loss_fn, method, chunk_size)(v)


# -- eigenvalues ----------------------------------------------------------------------------------
@dataclass
class EigResult:
    """Top eigenvalues (descending by magnitude), their eigenvectors (k, n), iterations and HVPs used.

    ``residual``: the relative residual max_i ||A v_i - lambda_i v_i|| / |lambda_i| of the returned pairs
    (for a symmetric operator the returned lambda_i is within ``residual`` x |lambda_i| of an eigenvalue);
    ``converged``: it fell to the requested tolerance (after at least ``min_iters`` iterations).
    """

    values: Tensor
    vectors: Tensor
    iterations: int
    hvps: int
    converged: bool
    history: list[float] = field(default_factory=list)
    residual: float = float("nan")

    @property
    def top(self) -> float:
        return float(self.values[0])


def power_iteration(matvec: Callable[[Tensor], Tensor], n: int, iters: int = 100, tol: float = 1e-4,
                    generator: torch.Generator | None = None, init: Tensor | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                    min_iters: int = 2) -> EigResult:
    """Top eigenvalue (largest magnitude) of a symmetric operator by power iteration.

    Each iteration computes w = A v (one matvec), the Rayleigh quotient lambda = v.w and the residual
    r = ||w - lambda v|| of the unit vector v; it stops once r <= tol x |lambda| and at least
    ``min_iters`` iterations ran. For a symmetric A the Rayleigh quotient is then within tol x |lambda|
    of an eigenvalue (Parlett, *The Symmetric Eigenvalue Problem*, Thm. 4.5.1), and within
    (tol lambda)^2 / gap of it. (A stop on small changes of the Rayleigh quotient, the criterion used
    before, stops early where the top two eigenvalues are close and reads the eigenvalue low.)

    Args:
        matvec: v (n,) -> Av (n,).
        n: dimension.
        iters: maximum iterations (one matvec each).
        tol: relative residual at which to stop (0: run all ``iters``).
        generator: seeds the random start vector; ``init`` gives one instead (e.g. last estimate, warm start).
        min_iters: iterations before the residual may stop it.

    Returns:
        :class:`EigResult` with ``values`` (1,), ``vectors`` (1, n), ``iterations``, ``residual`` (relative, of
        the returned pair) and ``converged``.

    Raises:
        ValueError: iters < 1, min_iters < 1, tol < 0.
    """
    if iters < 1 or min_iters < 1:
        raise ValueError(f"iters and min_iters must be >= 1, got {iters} and {min_iters}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0 (a relative residual), got {tol}")
    v = init.clone() if init is not None else torch.randn(n, generator=generator, dtype=dtype).to(device)
    v = v / v.norm()
    lam, hist, converged, it, residual = 0.0, [], False, 0, float("inf")
    best = v
    for it in range(1, iters + 1):  # noqa: B007 - the iteration count is returned
        w = matvec(v)
        lam = float(v @ w)
        hist.append(lam)
        residual = float((w - lam * v).norm()) / max(abs(lam), 1e-30)
        best = v
        norm = w.norm()
        if norm == 0:
            lam, residual, converged = 0.0, 0.0, True
            break
        if residual <= tol and it >= min_iters:
            converged = True
            break
        v = w / norm
    return EigResult(torch.tensor([lam]), best[None], it, it, converged, hist, residual)


def subspace_iteration(matmat: Callable[[Tensor], Tensor], n: int, k: int, iters: int = 100, tol: float = 1e-4,
                       generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                       device: torch.device | str = "cpu", min_iters: int = 2) -> EigResult:
    """Top-k eigenvalues (by magnitude) of a symmetric operator by block power iteration.

    Each iteration: W = A V (k matvecs, batched), Rayleigh-Ritz on the k x k projected matrix
    V W^T, then V <- orthonormalized W (QR). Stops once every Ritz pair (lambda_i, u_i) has a relative
    residual ||A u_i - lambda_i u_i|| / |lambda_i| <= tol (after at least ``min_iters`` iterations).

    Args:
        matmat: V (k, n) -> (A V^T)^T (k, n).

    Raises:
        ValueError: k not in [1, n], iters or min_iters < 1, tol < 0.
    """
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if iters < 1 or min_iters < 1 or tol < 0:
        raise ValueError(f"need iters >= 1, min_iters >= 1, tol >= 0; got {iters}, {min_iters}, {tol}")
    V = torch.randn(k, n, generator=generator, dtype=dtype).to(device)
    V = torch.linalg.qr(V.T).Q.T
    hist, converged, it, residual = [], False, 0, float("inf")
    vals, ritz = torch.zeros(k), V
    for it in range(1, iters + 1):  # noqa: B007 - the iteration count is returned
        W = matmat(V)                           # (k, n) rows A v_i
        T = V @ W.T                             # (k, k) projected operator
        T = (T + T.T) / 2
        evals, evecs = torch.linalg.eigh(T)
        order = evals.abs().argsort(descending=True)
        evals, evecs = evals[order], evecs[:, order]
        vals = evals.detach().cpu()
        hist.append(float(vals[0]))
        ritz = evecs.T @ V                      # Ritz vectors (k, n)
        AR = evecs.T @ W                        # A applied to them
        residual = float(((AR - evals[:, None] * ritz).norm(dim=1) / evals.abs().clamp_min(1e-30)).max())
        if residual <= tol and it >= min_iters:
            converged = True
            break
        V = torch.linalg.qr(W.T).Q.T            # the power step: next block = orthonormalized A V
    return EigResult(vals, ritz, it, it * k, converged, hist, residual)


def top_eigenvalues(model: nn.Module, x: Tensor, y: Tensor, k: int = 1, loss_fn: LossFn = default_loss,
                    iters: int = 100, tol: float = 1e-4, method: str = "auto", chunk_size: int | None = None,
                    seed: int = 0, init: Tensor | None = None, min_iters: int = 2) -> EigResult:
    """Top-k Hessian eigenvalues of the mean loss over (x, y): power iteration (k=1) or subspace iteration.

    ``values[0]`` is the sharpness lambda_max (units: loss per squared parameter unit). ``tol`` is the
    relative residual ||H v - lambda v|| / |lambda| to reach, ``iters`` the most iterations, ``min_iters``
    the fewest; the result reports ``iterations``, ``residual`` and ``converged``.
    See :class:`HVP` for ``loss_fn``, ``method`` and ``chunk_size``.
    """
    op = HVP(model, x, y, loss_fn, method, chunk_size)
    g = torch.Generator().manual_seed(seed)
    dev, dt = op.theta.device, op.theta.dtype
    if k == 1:
        res = power_iteration(op, op.numel, iters, tol, g, init, dt, dev, min_iters)
    else:
        res = subspace_iteration(op.batch, op.numel, k, iters, tol, g, dt, dev, min_iters)
    res.hvps = op.calls
    return res


def sharpness(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn = default_loss, **kwargs) -> float:
    """lambda_max of the Hessian of the mean loss over (x, y); keyword arguments as :func:`top_eigenvalues`."""
    return top_eigenvalues(model, x, y, 1, loss_fn, **kwargs).top


def hutchinson_trace(model: nn.Module, x: Tensor, y: Tensor, num_samples: int = 32, loss_fn: LossFn = default_loss,
                     method: str = "auto", chunk_size: int | None = None, seed: int = 0,
                     batch: int = 8) -> tuple[float, float]:
    """Hutchinson's estimate of tr(H): the mean of z^T H z over Rademacher vectors z.

    Returns:
        (estimate, its standard error) from ``num_samples`` probes, ``batch`` HVPs at a time.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    op = HVP(model, x, y, loss_fn, method, chunk_size)
    g = torch.Generator().manual_seed(seed)
    vals = []
    for i in range(0, num_samples, batch):
        m = min(batch, num_samples - i)
        Z = (torch.randint(0, 2, (m, op.numel), generator=g) * 2 - 1).to(op.theta)
        vals.append((Z * op.batch(Z)).sum(1))
    v = torch.cat(vals).double()
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se

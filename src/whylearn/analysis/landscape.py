"""The loss landscape in one and two dimensions (Li et al. 2018, "Visualizing the loss landscape of neural nets").

- :func:`interpolate`: the loss along the straight line theta(alpha) = (1 - alpha) theta_a + alpha theta_b
  (Goodfellow et al. 2015: from the initialization to the solution; Frankle et al. 2020:
  between two independently trained solutions), with the *barrier height*
  max_alpha [L(theta(alpha)) - ((1 - alpha) L(theta_a) + alpha L(theta_b))].
- :func:`filter_normalized_direction`: a Gaussian random direction d rescaled filter by
  filter, d_ij <- d_ij ||theta_i|| / ||d_i|| (Li et al. 2018, Sec. 4, Eq. 1), where a filter is
  one output unit of a weight tensor (a row of a Linear weight, an output channel of a
  convolution kernel). Biases and normalization parameters (every parameter with fewer
  than two dimensions, and every parameter of a BatchNorm/LayerNorm/GroupNorm module) are
  set to zero in the direction, as in Li et al.
- :func:`slice_2d`: L(theta + a d1 + b d2) on a grid of (a, b).
- :func:`evaluate_points`: the loss (and accuracy) at many parameter vectors, in batches of
  points with ``torch.func.functional_call`` + ``vmap`` (``method='vmap'``) or one point at a
  time by loading the parameters into the model (``method='loop'``); see
  ``docs/benchmarks.md`` for which is faster where.

Figures: :func:`plot_interpolation`, :func:`plot_contour`, :func:`plot_surface` (matplotlib, Agg).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from whylearn.analysis.hessian import ParamSpec, default_loss, eval_mode, flatten_params, trainable
from whylearn.analysis.plotting import save_figure  # noqa: E402

LossFn = Callable[[Tensor, Tensor], Tensor]
METHODS = ("auto", "vmap", "loop")
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


# -- directions ---------------------------------------------------------------------------------
def _norm_param_names(model: nn.Module) -> set[str]:
    names = set()
    for mname, m in model.named_modules():
        if isinstance(m, NORM_TYPES):
            names.update(f"{mname}.{p}" if mname else p for p, _ in m.named_parameters(recurse=False))
    return names


def filter_normalized_direction(model: nn.Module, generator: torch.Generator | None = None,
                                theta: Tensor | None = None) -> Tensor:
    """A random direction (n,) with each filter scaled to the norm of the matching filter of theta.

    Args:
        model: gives the parameter names and shapes (and theta, unless given).
        generator: seeds the Gaussian draw.
        theta: the parameters (n,) to normalize against (default: the model's).

    Returns:
        d (n,), flat in ``named_parameters`` order: for a weight of shape (out, ...), d[i] ~ N(0, I)
        rescaled so that ||d[i]|| = ||theta[i]|| for every output index i; zero for biases and
        normalization parameters (Li et al. 2018, Sec. 4).
    """
    spec = ParamSpec(model)
    theta = flatten_params(model) if theta is None else theta
    skip = _norm_param_names(model)
    params = spec.unflatten(theta)
    parts = []
    for name, shape in zip(spec.names, spec.shapes, strict=False):
        w = params[name]
        if len(shape) < 2 or name in skip:
            parts.append(torch.zeros(w.numel(), dtype=w.dtype, device=w.device))
            continue
        d = torch.randn(shape, generator=generator, dtype=w.dtype).to(w.device)
        dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        wn = w.flatten(1).norm(dim=1)
        d = d * (wn / dn).view(-1, *([1] * (len(shape) - 1)))
        parts.append(d.reshape(-1))
    return torch.cat(parts)


def filter_norms(model: nn.Module, vec: Tensor) -> dict[str, Tensor]:
    """Per-filter L2 norms of a flat vector laid out like the model's parameters (weights with >= 2 dims)."""
    spec = ParamSpec(model)
    return {n: t.flatten(1).norm(dim=1) for n, t in spec.unflatten(vec).items() if t.ndim >= 2}


# -- evaluating many parameter vectors -----------------------------------------------------------------
def _is_classification(out: Tensor, y: Tensor) -> bool:
    return out.ndim == 2 and y.ndim == 1 and not torch.is_floating_point(y)


def evaluate_points(model: nn.Module, points: Tensor, x: Tensor, y: Tensor, loss_fn: LossFn = default_loss,
                    method: str = "auto", points_per_batch: int = 32, data_chunk: int | None = None) -> dict[str, Tensor]:
    """Mean loss (and accuracy, for classification) over (x, y) at each parameter vector.

    Args:
        model: the network (eval mode is used; its own parameters are left unchanged).
        points: (P, n) parameter vectors laid out as ``named_parameters``.
        x, y: data (N, ...), (N,).
        loss_fn: ``loss_fn(outputs, y)`` -> mean loss (default cross-entropy).
        method: ``vmap`` (``points_per_batch`` points per batched forward), ``loop``
            (load each point into the model and run a plain forward) or ``auto``: ``loop`` when
            the data is on the CPU (measured faster there for the MNIST-1D MLP, see
            ``docs/benchmarks.md``), ``vmap`` on an accelerator.
        data_chunk: forward at most this many samples at once (memory); None: all.

    Returns:
        ``{"loss": (P,), "acc": (P,)}`` (``acc`` only for integer targets and 2D outputs), on the CPU.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {list(METHODS)}")
    if method == "auto":
        method = "loop" if x.device.type == "cpu" else "vmap"
    if points.ndim != 2:
        raise ValueError(f"points must be (P, n), got shape {tuple(points.shape)}")
    spec = ParamSpec(model)
    if points.shape[1] != spec.numel:
        raise ValueError(f"points have {points.shape[1]} entries but the model has {spec.numel} parameters")
    N = x.shape[0]
    chunk = N if data_chunk is None else int(data_chunk)
    buffers = dict(model.named_buffers())
    losses = torch.zeros(points.shape[0], dtype=torch.float64)
    accs = torch.zeros(points.shape[0], dtype=torch.float64)
    has_acc = True

    def stats(theta: Tensor, xc: Tensor, yc: Tensor) -> tuple[Tensor, Tensor]:
        out = functional_call(model, (spec.unflatten(theta), buffers), (xc,))
        acc = (out.argmax(-1) == yc).float().mean() if _is_classification(out, yc) else out.new_zeros(())
        return loss_fn(out, yc), acc

    with torch.no_grad(), eval_mode(model):
        probe = model(x[:1])
        has_acc = _is_classification(probe, y[:1])
        for s in range(0, N, chunk):
            xc, yc = x[s : s + chunk], y[s : s + chunk]
            w = xc.shape[0] / N
            if method == "vmap":
                batched = vmap(stats, in_dims=(0, None, None))
                for i in range(0, points.shape[0], points_per_batch):
                    l, a = batched(points[i : i + points_per_batch], xc, yc)
                    losses[i : i + l.shape[0]] += w * l.double().cpu()
                    accs[i : i + a.shape[0]] += w * a.double().cpu()
            else:
                params = [p for _, p in trainable(model)]
                original = [p.detach().clone() for p in params]
                try:
                    for i, theta in enumerate(points):
                        for p, t in zip(params, spec.unflatten(theta).values(), strict=False):
                            p.copy_(t)  # a copy: the points are never aliased by the model
                        out = model(xc)
                        losses[i] += w * float(loss_fn(out, yc))
                        if has_acc:
                            accs[i] += w * float((out.argmax(-1) == yc).float().mean())
                finally:
                    for p, o in zip(params, original, strict=False):
                        p.copy_(o)
    res = {"loss": losses}
    if has_acc:
        res["acc"] = accs
    return res


Data = Mapping[str, tuple[Tensor, Tensor]]


def _evaluate_all(model, points, data: Data, loss_fn, method, points_per_batch, data_chunk) -> dict[str, np.ndarray]:
    out = {}
    for name, (x, y) in data.items():
        for k, v in evaluate_points(model, points, x, y, loss_fn, method, points_per_batch, data_chunk).items():
            out[f"{name}/{k}"] = v.numpy()
    return out


# -- 1D: interpolation -------------------------------------------------------------------------------------
@dataclass
class Interpolation:
    """Losses (and accuracies) along theta(alpha) = (1 - alpha) theta_a + alpha theta_b.

    ``values`` maps ``"<split>/loss"``, ``"<split>/acc"`` to arrays over ``alphas``.
    """

    alphas: np.ndarray
    values: dict[str, np.ndarray]
    labels: tuple[str, str] = ("theta_a", "theta_b")

    def barrier(self, key: str = "train/loss") -> float:
        return barrier_height(self.alphas, self.values[key])

    def to_json(self) -> dict:
        return {"alphas": self.alphas.tolist(), "labels": list(self.labels),
                "values": {k: v.tolist() for k, v in self.values.items()},
                "barriers": {k: self.barrier(k) for k in self.values if k.endswith("/loss")}}


def barrier_height(alphas: np.ndarray, losses: np.ndarray) -> float:
    """max over alpha of L(alpha) - [(1 - alpha) L(0) + alpha L(1)] (Frankle et al. 2020, "Linear mode connectivity").

    The endpoints are taken at the alphas nearest 0 and 1; alphas outside [0, 1] are ignored.
    Zero or negative: no barrier (the path is at or below the chord).
    """
    a, l = np.asarray(alphas, float), np.asarray(losses, float)
    i0, i1 = int(np.abs(a).argmin()), int(np.abs(a - 1).argmin())
    inside = (a >= a[i0]) & (a <= a[i1])
    chord = (1 - a) * l[i0] + a * l[i1]
    return float((l - chord)[inside].max())


def interpolate(model: nn.Module, theta_a: Tensor, theta_b: Tensor, data: Data, alphas=None,
                loss_fn: LossFn = default_loss, method: str = "auto", points_per_batch: int = 32,
                data_chunk: int | None = None, labels: tuple[str, str] = ("theta_a", "theta_b")) -> Interpolation:
    """Evaluate the loss on ``data`` (``{"train": (x, y), "val": (x, y)}``) along the segment from theta_a to theta_b.

    Args:
        alphas: the points (default 41 in [-0.25, 1.25], which include 0 and 1 exactly).
    """
    if theta_a.shape != theta_b.shape:
        raise ValueError(f"the two parameter vectors differ in shape: {tuple(theta_a.shape)} vs {tuple(theta_b.shape)}")
    alphas = np.linspace(-0.25, 1.25, 41) if alphas is None else np.asarray(alphas, float)
    a = torch.as_tensor(alphas, dtype=theta_a.dtype, device=theta_a.device)[:, None]
    points = (1 - a) * theta_a[None] + a * theta_b[None]
    return Interpolation(alphas, _evaluate_all(model, points, data, loss_fn, method, points_per_batch, data_chunk), labels)


# -- 2D: slices --------------------------------------------------------------------------------------------
@dataclass
class Slice2D:
    """L(theta + a d1 + b d2) on the grid ``a`` (na,) x ``b`` (nb,); ``values[key]`` has shape (na, nb)."""

    a: np.ndarray
    b: np.ndarray
    values: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"a": self.a.tolist(), "b": self.b.tolist(), "values": {k: v.tolist() for k, v in self.values.items()},
                "meta": self.meta}


def parse_grid(grid) -> tuple[int, int]:
    if isinstance(grid, int):
        grid = (grid, grid)
    try:
        na, nb = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be an int or a pair of ints (points per axis), got {grid!r}") from None
    if na < 2 or nb < 2:
        raise ValueError(f"grid needs at least 2 points per axis, got {grid!r}")
    return na, nb


def slice_2d(model: nn.Module, data: Data, theta: Tensor | None = None, d1: Tensor | None = None,
             d2: Tensor | None = None, grid=21, span: tuple[float, float, float, float] = (-1.0, 1.0, -1.0, 1.0),
             seed: int = 0, loss_fn: LossFn = default_loss, method: str = "auto", points_per_batch: int = 32,
             data_chunk: int | None = None) -> Slice2D:
    """The loss on a 2D plane through theta (default: the model's parameters).

    Args:
        d1, d2: directions (n,); default: two filter-normalized random directions drawn with ``seed``.
        grid: points per axis, an int or (na, nb).
        span: (a_min, a_max, b_min, b_max); Li et al. plot [-1, 1]^2.

    Returns:
        :class:`Slice2D`; ``meta`` records the grid, span, seed and the cosine between d1 and d2.
    """
    na, nb = parse_grid(grid)
    theta = flatten_params(model) if theta is None else theta
    g = torch.Generator().manual_seed(seed)
    d1 = filter_normalized_direction(model, g, theta) if d1 is None else d1
    d2 = filter_normalized_direction(model, g, theta) if d2 is None else d2
    a = np.linspace(span[0], span[1], na)
    b = np.linspace(span[2], span[3], nb)
    A, B = np.meshgrid(a, b, indexing="ij")
    ta = torch.as_tensor(A.reshape(-1), dtype=theta.dtype, device=theta.device)[:, None]
    tb = torch.as_tensor(B.reshape(-1), dtype=theta.dtype, device=theta.device)[:, None]
    points = theta[None] + ta * d1[None] + tb * d2[None]
    vals = _evaluate_all(model, points, data, loss_fn, method, points_per_batch, data_chunk)
    cos = float(d1 @ d2 / (d1.norm() * d2.norm()).clamp_min(1e-12))
    meta = {"grid": [na, nb], "span": list(span), "seed": seed, "cos_d1_d2": cos,
            "theta_norm": float(theta.norm()), "d1_norm": float(d1.norm()), "d2_norm": float(d2.norm())}
    return Slice2D(a, b, {k: v.reshape(na, nb) for k, v in vals.items()}, meta)


def surface_roughness(a: np.ndarray, b: np.ndarray, Z: np.ndarray) -> dict[str, float]:
    """Numbers for how convex or chaotic a 2D loss slice is, from the grid values alone.

    Li et al. 2018 map |lambda_min / lambda_max| of the full Hessian over the slice to
    show where a surface is non-convex. This is the cheap analogue on the slice itself: at every interior
    grid point the 2x2 Hessian of the surface by central finite differences,
    [[Z_aa, Z_ab], [Z_ab, Z_bb]], with eigenvalues lambda_1 <= lambda_2.

    Args:
        a: (na,) and b: (nb,) the grid coordinates (evenly spaced, na, nb >= 3);
        Z: (na, nb) the loss, ``Z[i, j]`` at ``(a[i], b[j])``.

    Returns:
        ``mean``: mean of Z over the grid; ``edge_mean``: mean over the border points;
        ``centre``: Z at the point nearest (0, 0); ``local_minima``: interior points strictly below all 8
        neighbours; ``nonconvex_fraction``: fraction of interior points with lambda_1 < 0;
        ``eig_ratio_mean``: mean over interior points of |min(lambda_1, 0)| / max(|lambda_1|, |lambda_2|)
        (0 where the surface is locally convex, 1 where it is concave); ``radial_monotone_fraction``:
        fraction of the 8 grid rays from the centre point (axes and diagonals) along which Z never
        decreases (1 for a convex bowl centred on the solution).

    Raises:
        ValueError: shapes that disagree, a grid smaller than 3x3, or non-finite values.
    """
    a, b, Z = np.asarray(a, float), np.asarray(b, float), np.asarray(Z, float)
    if Z.ndim != 2 or Z.shape != (a.size, b.size):
        raise ValueError(f"Z must have shape (len(a), len(b)) = ({a.size}, {b.size}), got {Z.shape}")
    if min(Z.shape) < 3:
        raise ValueError(f"surface_roughness needs a grid of at least 3x3 points, got {Z.shape}")
    if not np.isfinite(Z).all():
        raise ValueError("surface_roughness got non-finite loss values (nan or inf) on the grid")
    ha, hb = a[1] - a[0], b[1] - b[0]
    c = Z[1:-1, 1:-1]
    zaa = (Z[2:, 1:-1] - 2 * c + Z[:-2, 1:-1]) / ha**2
    zbb = (Z[1:-1, 2:] - 2 * c + Z[1:-1, :-2]) / hb**2
    zab = (Z[2:, 2:] - Z[2:, :-2] - Z[:-2, 2:] + Z[:-2, :-2]) / (4 * ha * hb)
    mean_ = (zaa + zbb) / 2
    rad = np.sqrt(((zaa - zbb) / 2) ** 2 + zab**2)
    l1, l2 = mean_ - rad, mean_ + rad
    ratio = np.abs(np.minimum(l1, 0)) / np.maximum(np.maximum(np.abs(l1), np.abs(l2)), 1e-12)
    neigh = np.stack([Z[1 + di:Z.shape[0] - 1 + di, 1 + dj:Z.shape[1] - 1 + dj]
                      for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)])
    minima = int((c[None] < neigh).all(0).sum())
    i0, j0 = int(np.abs(a).argmin()), int(np.abs(b).argmin())
    monotone = []
    for di, dj in [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]:
        ray, i, j = [], i0, j0
        while 0 <= i < Z.shape[0] and 0 <= j < Z.shape[1]:
            ray.append(Z[i, j])
            i, j = i + di, j + dj
        if len(ray) > 1:
            monotone.append(bool((np.diff(ray) >= 0).all()))
    border = np.concatenate([Z[0], Z[-1], Z[1:-1, 0], Z[1:-1, -1]])
    return {"mean": float(Z.mean()), "edge_mean": float(border.mean()), "centre": float(Z[i0, j0]),
            "local_minima": minima, "nonconvex_fraction": float((l1 < 0).mean()),
            "eig_ratio_mean": float(ratio.mean()),
            "radial_monotone_fraction": float(np.mean(monotone)) if monotone else float("nan")}


# -- figures -----------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_interpolation(interp: Interpolation, path: str | Path, title: str | None = None) -> Path:
    """Loss (left, log scale) and accuracy (right) along the segment; endpoints marked."""
    plt = _plt()
    accs = [k for k in interp.values if k.endswith("/acc")]
    fig, axes = plt.subplots(1, 2 if accs else 1, figsize=(10 if accs else 5.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    for k, v in interp.values.items():
        if k.endswith("/loss"):
            ax.plot(interp.alphas, v, "o-", ms=3, label=f"{k} (barrier {interp.barrier(k):.3g})")
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    for a2 in axes[0]:
        a2.axvline(0, color="gray", lw=0.8, ls=":")
        a2.axvline(1, color="gray", lw=0.8, ls=":")
        a2.set_xlabel(f"alpha  (0: {interp.labels[0]}, 1: {interp.labels[1]})")
        a2.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if accs:
        for k in accs:
            axes[0, 1].plot(interp.alphas, interp.values[k], "o-", ms=3, label=k)
        axes[0, 1].set_ylabel("accuracy")
        axes[0, 1].legend(fontsize=8)
    fig.suptitle(title or "Linear interpolation of the parameters")
    return save_figure(fig, path, grid=False)


def plot_contour(sl: Slice2D, path: str | Path, key: str = "train/loss", title: str | None = None,
                 levels: int = 30, log: bool = True) -> Path:
    """Filled contour of ``sl.values[key]`` over (a, b), log10 of the loss by default; the centre marked."""
    plt = _plt()
    Z = sl.values[key]
    Zp = np.log10(np.clip(Z, 1e-12, None)) if log and key.endswith("loss") else Z
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    cs = ax.contourf(sl.a, sl.b, Zp.T, levels=levels, cmap="viridis")
    ax.contour(sl.a, sl.b, Zp.T, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    fig.colorbar(cs, ax=ax, label=f"log10 {key}" if Zp is not Z else key)
    ax.plot([0], [0], "r*", ms=10)
    ax.set_xlabel("direction 1 (filter-normalized)")
    ax.set_ylabel("direction 2 (filter-normalized)")
    ax.set_title(title or f"{key} on a random 2D slice")
    ax.set_aspect("equal")
    return save_figure(fig, path, grid=False)


def plot_surface(sl: Slice2D, path: str | Path, key: str = "train/loss", title: str | None = None,
                 clip: float | None = None) -> Path:
    """3D surface of ``sl.values[key]`` over (a, b) (values above ``clip`` are clipped, as Li et al. do)."""
    plt = _plt()
    Z = sl.values[key].copy()
    if clip is not None:
        Z = np.minimum(Z, clip)
    A, B = np.meshgrid(sl.a, sl.b, indexing="ij")
    fig = plt.figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(A, B, Z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_zlabel(key)
    ax.set_title(title or f"{key} surface")
    return save_figure(fig, path, grid=False)


def save_json(obj: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path

"""Linear regions of ReLU networks: where the activation pattern changes.

A network built from affine maps and ReLUs is piecewise linear in its input: on
each set of inputs sharing one *activation pattern* (which ReLUs are on) it is a
single affine map, and that set is a convex polytope (Montufar et al. 2014;
Hanin & Rolnick 2019, "Complexity of linear regions in deep networks", who find
the number of regions met along a line grows with the number of neurons, not
exponentially with depth, in practice).

- :func:`regions_on_segment`: the *exact* regions along the segment
  x(t) = x0 + t (x1 - x0), t in [0, 1]. Layer by layer, the pre-activations of layer l
  are affine in t between consecutive breakpoints of the layers below, so their zeros
  are found exactly by linear interpolation of their values at those breakpoints;
  every zero is a breakpoint. Counts are per layer (changes of that layer's pattern)
  and in total (distinct breakpoints + 1).
- :func:`regions_on_plane`: distinct activation patterns on a grid over the plane
  through three inputs (each pattern's set is convex, so distinct patterns are
  distinct regions; a grid finds only the regions it hits: a lower bound, stated
  with its resolution).
- :func:`distinct_patterns`: the number of distinct patterns over a data set
  (almost every training point in its own region for a wide trained net).

The network's nonlinearities must be ``nn.ReLU`` modules (patterns are read by
forward hooks on them; a module reused k times counts as k layers) and everything
else piecewise linear: Linear, convolutions, average pooling, BatchNorm in eval
mode, Flatten, Dropout (off in eval mode), Identity, containers, and any module
whose class sets ``piecewise_linear = True`` (e.g. the ResNet's zero-padding
shortcut). Anything else raises ``ValueError`` naming the module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from whylearn.analysis.hessian import eval_mode
from whylearn.analysis.plotting import save_figure  # noqa: E402

PIECEWISE_LINEAR = (nn.Linear, nn.ReLU, nn.Flatten, nn.Dropout, nn.Identity, nn.Sequential, nn.ModuleList,
                    nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.AvgPool1d, nn.AvgPool2d,
                    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


def check_relu_network(model: nn.Module) -> int:
    """Number of ``nn.ReLU`` modules; raises ValueError on a module that is not piecewise linear or on none."""
    relus = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            relus += 1
        elif (not isinstance(m, PIECEWISE_LINEAR) and not getattr(m, "piecewise_linear", False)
              and next(m.children(), None) is None):  # a leaf layer
            raise ValueError(
                f"module {name or type(m).__name__!r} ({type(m).__name__}) is not one of the piecewise-linear layers "
                f"that region counting supports: {[t.__name__ for t in PIECEWISE_LINEAR]} (use activation: relu)")
    if relus == 0:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU module: no activation patterns to count")
    return relus


class PatternRecorder:
    """Context manager recording the pre-activations (inputs) of every ``nn.ReLU`` call, in call order."""

    def __init__(self, model: nn.Module) -> None:
        check_relu_network(model)
        self.model = model
        self.pre: list[Tensor] = []
        self._handles = []

    def __enter__(self) -> PatternRecorder:
        def hook(_m, inp, _out):
            self.pre.append(inp[0].detach().flatten(1))

        self._handles = [m.register_forward_hook(hook) for m in self.model.modules() if isinstance(m, nn.ReLU)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def run(self, x: Tensor) -> list[Tensor]:
        """Pre-activations per ReLU layer, each (B, units)."""
        self.pre = []
        with torch.no_grad(), eval_mode(self.model):
            self.model(x)
        return self.pre


def preactivations(model: nn.Module, x: Tensor, batch: int = 8192) -> list[Tensor]:
    """Pre-activations of each ReLU layer for inputs x (B, ...): a list of (B, units_l)."""
    with PatternRecorder(model) as rec:
        outs = [rec.run(x[i : i + batch]) for i in range(0, x.shape[0], batch)]
    return [torch.cat([o[l] for o in outs]) for l in range(len(outs[0]))]


def patterns(model: nn.Module, x: Tensor, batch: int = 8192) -> list[Tensor]:
    """Activation patterns per ReLU layer: a list of bool (B, units_l), True where the unit is on (z > 0)."""
    return [z > 0 for z in preactivations(model, x, batch)]


def count_distinct(rows: Tensor) -> int:
    """Number of distinct rows of a (B, m) bool/int tensor."""
    if rows.shape[1] == 0:
        return 1
    packed = np.packbits(rows.cpu().numpy().astype(np.uint8), axis=1)
    return int(np.unique(packed, axis=0).shape[0])


# -- exact, along a segment -------------------------------------------------------------------------------------
@dataclass
class SegmentRegions:
    """Regions along x0 -> x1: ``total`` = distinct breakpoints in (0, 1) + 1; ``per_layer[l]`` = changes of layer
    l's pattern + 1; ``breakpoints`` (sorted t values), ``layer_of`` (the first layer whose unit switches there)."""

    total: int
    per_layer: list[int]
    breakpoints: np.ndarray
    layer_of: np.ndarray
    length: float

    @property
    def density(self) -> float:
        """Regions per unit input distance (Hanin & Rolnick's measure along a line)."""
        return self.total / max(self.length, 1e-12)


def regions_on_segment(model: nn.Module, x0: Tensor, x1: Tensor, tol: float = 1e-9) -> SegmentRegions:
    """Exact linear regions of a ReLU network along the segment from x0 to x1 (single inputs, any shape).

    The computation runs in float64 on a copy of the model. Breakpoints closer than ``tol``
    (in t) are merged: two units switching at the same input count as one breakpoint.
    """
    if x0.shape != x1.shape:
        raise ValueError(f"the segment's ends differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}")
    import copy

    net = copy.deepcopy(model).double()
    x0, x1 = x0.double().to(next(net.parameters()).device), x1.double().to(next(net.parameters()).device)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64, device=x0.device)
    layer_of = torch.tensor([-1, -1])
    with PatternRecorder(net) as rec:
        n_layers = len(rec.run(x0[None]))
        for l in range(n_layers):
            z = rec.run(x0[None] + ts[:, None].view(-1, *([1] * x0.ndim)) * (x1 - x0)[None])[l]  # (T, units)
            za, zb = z[:-1], z[1:]
            cross = (za * zb) < 0                       # a sign change strictly inside the interval
            ia, ju = cross.nonzero(as_tuple=True)
            if ia.numel():
                frac = za[ia, ju] / (za[ia, ju] - zb[ia, ju])
                new_t = ts[ia] + frac * (ts[ia + 1] - ts[ia])
                inside = (new_t > tol) & (new_t < 1 - tol)
                ts_all = torch.cat([ts, new_t[inside]])
                lay_all = torch.cat([layer_of, torch.full((int(inside.sum()),), l)])
                order = torch.argsort(ts_all, stable=True)
                ts, layer_of = ts_all[order], lay_all[order]
                keep = torch.ones_like(ts, dtype=torch.bool)
                keep[1:] = (ts[1:] - ts[:-1]) > tol    # units switching at the same t: one breakpoint
                ts, layer_of = ts[keep], layer_of[keep]
        # per-layer counts from the patterns at interval midpoints
        mids = (ts[:-1] + ts[1:]) / 2
        pats = [p > 0 for p in rec.run(x0[None] + mids[:, None].view(-1, *([1] * x0.ndim)) * (x1 - x0)[None])]
    per_layer = [int((p[1:] != p[:-1]).any(1).sum()) + 1 for p in pats]
    full = torch.cat(pats, 1)
    total = int((full[1:] != full[:-1]).any(1).sum()) + 1
    inner = ts[1:-1].cpu().numpy()
    return SegmentRegions(total, per_layer, inner, layer_of[1:-1].cpu().numpy(), float((x1 - x0).norm()))


def regions_along_pairs(model: nn.Module, x: Tensor, num_pairs: int = 20, seed: int = 0) -> dict[str, float]:
    """Mean exact region count along ``num_pairs`` segments between random pairs of the inputs x (N, ...).

    Returns ``regions/line_total`` (mean total), ``regions/line_layer<l>`` (mean per layer),
    ``regions/line_density`` (mean regions per unit input distance).
    """
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 inputs to draw segments, got {x.shape[0]}")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, x.shape[0], (num_pairs,), generator=g)
    j = (i + torch.randint(1, x.shape[0], (num_pairs,), generator=g)) % x.shape[0]
    res = [regions_on_segment(model, x[a], x[b]) for a, b in zip(i.tolist(), j.tolist(), strict=False)]
    out = {"regions/line_total": float(np.mean([r.total for r in res])),
           "regions/line_density": float(np.mean([r.density for r in res]))}
    for l in range(len(res[0].per_layer)):
        out[f"regions/line_layer{l}"] = float(np.mean([r.per_layer[l] for r in res]))
    return out


# -- on a grid in a plane ------------------------------------------------------------------------------------------------
@dataclass
class PlaneRegions:
    """Distinct patterns on a ``resolution`` x ``resolution`` grid of x0 + u (x1 - x0) + v (x2 - x0), (u, v) in ``span``.

    ``ids`` (res, res): an integer id of each grid point's full pattern (for pictures).
    """

    total: int
    per_layer: list[int]
    resolution: int
    span: tuple[float, float, float, float]
    ids: np.ndarray = field(repr=False)


def regions_on_plane(model: nn.Module, x0: Tensor, x1: Tensor, x2: Tensor, resolution: int = 200,
                     span: tuple[float, float, float, float] = (-0.5, 1.5, -0.5, 1.5)) -> PlaneRegions:
    """Count the activation patterns met on a grid over the plane through three inputs (see module docstring)."""
    if not (x0.shape == x1.shape == x2.shape):
        raise ValueError(f"the three inputs differ in shape: {tuple(x0.shape)}, {tuple(x1.shape)}, {tuple(x2.shape)}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    u = torch.linspace(span[0], span[1], resolution, dtype=x0.dtype, device=x0.device)
    v = torch.linspace(span[2], span[3], resolution, dtype=x0.dtype, device=x0.device)
    U, V = torch.meshgrid(u, v, indexing="ij")
    shape = (-1, *([1] * x0.ndim))
    pts = x0[None] + U.reshape(shape) * (x1 - x0)[None] + V.reshape(shape) * (x2 - x0)[None]
    pats = patterns(model, pts)
    full = torch.cat(pats, 1).cpu().numpy().astype(np.uint8)
    _, ids = np.unique(np.packbits(full, axis=1), axis=0, return_inverse=True)
    return PlaneRegions(int(ids.max()) + 1, [count_distinct(p) for p in pats], resolution, tuple(span),
                        ids.reshape(resolution, resolution))


def distinct_patterns(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Distinct activation patterns over the inputs x (N, ...): ``total``, ``fraction`` (= total / N), per layer."""
    pats = patterns(model, x)
    total = count_distinct(torch.cat(pats, 1))
    out = {"total": total, "fraction": total / x.shape[0]}
    out.update({f"layer{l}": count_distinct(p) for l, p in enumerate(pats)})
    return out


def plot_plane(pr: PlaneRegions, path, title: str | None = None, points: dict | None = None):
    """The plane coloured by region (random colour per pattern); ``points`` {label: (u, v)} marked."""
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    colours = rng.random((pr.total, 3)) * 0.8 + 0.2
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    ax.imshow(colours[pr.ids].transpose(1, 0, 2), origin="lower", extent=pr.span, interpolation="nearest")
    for label, (pu, pv) in (points or {"x0": (0, 0), "x1": (1, 0), "x2": (0, 1)}).items():
        ax.plot(pu, pv, "k.", ms=8)
        ax.annotate(label, (pu, pv), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("u  (x0 + u (x1 - x0) + v (x2 - x0))")
    ax.set_ylabel("v")
    ax.set_title(title or f"{pr.total} regions on a {pr.resolution}x{pr.resolution} grid")
    return save_figure(fig, path, grid=False)

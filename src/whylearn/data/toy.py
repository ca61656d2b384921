"""The data of the classic story: seeded toy sets for perceptrons, XOR, LMS and Hopfield networks.

Generators (plain functions returning tensors, seeded by an integer):

- :func:`separable` -- points in d dimensions inside a ball of radius R, linearly
  separable by a known unit normal ``w_star`` (and offset ``b_star``) with margin
  at least gamma: the setting of Novikoff's (1962) perceptron convergence theorem.
- :func:`xor_points` -- the four XOR points (Minsky & Papert 1969); :func:`noisy_xor`
  -- many points around them.
- :func:`circles` -- two concentric rings; :func:`spirals` -- two interleaved spirals
  (Lang & Witbrock 1988).
- :func:`gaussian_regression` -- correlated Gaussian inputs and a noisy linear target,
  with a prescribed spectrum of the input correlation matrix (Widrow & Hoff 1960).
- :func:`random_patterns` -- i.i.d. +-1 patterns; :func:`binary_images` -- 10x10
  black-and-white glyphs as +-1 vectors (Hopfield 1982); :func:`corrupt` flips a
  fraction of bits.

:class:`ToyDataModule` serves the classification sets as an
:class:`~whylearn.data.base.InMemoryDataModule` (labels 0/1), :class:`PatternsDataModule`
the Hopfield patterns (train: the stored patterns; test: corrupted probes labelled
with the index of their pattern), :class:`RegressionDataModule` the LMS data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from whylearn.data.base import InMemoryDataModule, Split

KINDS = ("separable", "xor", "noisy_xor", "circles", "spirals")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def separable(n: int, d: int = 2, gamma: float = 0.1, radius: float = 1.0, offset: float = 0.0,
              seed: int = 0) -> dict[str, Tensor]:
    """n points in R^d, ``||x|| <= radius``, labelled y = sign(w*.x + b*) with ``|w*.x + b*| >= gamma``.

    Construction (no rejection): a random unit normal w*; each point's signed distance
    to the hyperplane w*.x + b* = 0 is drawn uniformly from the allowed range
    ``[gamma, radius + |b*|]`` (with a random side, kept inside the ball), and its
    component orthogonal to w* uniformly in the remaining ball of the complement.

    Args:
        n: number of points (>= 1). d: dimension (>= 1). gamma: margin, 0 < gamma < radius - |offset|.
        radius: R, the radius of the ball holding the points. offset: b*, the hyperplane's offset.
        seed: seeds everything.

    Returns:
        dict with ``x`` (n, d) float64, ``y`` (n,) in {-1, +1} (long), ``w_star`` (d,) unit,
        ``b_star`` (scalar tensor), ``gamma`` and ``radius`` (the prescribed values, tensors).

    Raises:
        ValueError: a size below 1 or a margin that leaves no room in the ball.
    """
    if n < 1 or d < 1:
        raise ValueError(f"separable needs n >= 1 and d >= 1, got n={n}, d={d}")
    if not 0 < gamma < radius - abs(offset):
        raise ValueError(f"margin gamma must be in (0, radius - |offset|) = (0, {radius - abs(offset)}), got {gamma}")
    g = _gen(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    w /= w.norm()
    y = torch.where(torch.rand(n, generator=g) < 0.5, -1, 1)
    # signed distance s = w.x + b on the label's side; |w.x| = |s - b| must stay <= radius
    hi = torch.where(y > 0, torch.full((n,), radius + offset, dtype=torch.float64),
                     torch.full((n,), radius - offset, dtype=torch.float64))
    dist = gamma + (hi - gamma) * torch.rand(n, generator=g, dtype=torch.float64)
    proj = y.double() * dist - offset  # w.x
    x = proj[:, None] * w[None, :]
    if d > 1:
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        z -= (z @ w)[:, None] * w[None, :]
        z /= z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        room = (radius**2 - proj**2).clamp_min(0).sqrt()
        r = room * torch.rand(n, generator=g, dtype=torch.float64) ** (1.0 / (d - 1))
        x = x + r[:, None] * z
    return {"x": x, "y": y.long(), "w_star": w, "b_star": torch.tensor(float(offset), dtype=torch.float64),
            "gamma": torch.tensor(float(gamma)), "radius": torch.tensor(float(radius))}


def xor_points() -> tuple[Tensor, Tensor]:
    """The four XOR points (0,0),(0,1),(1,0),(1,1) with labels 0,1,1,0: x (4, 2) float, y (4,) long."""
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return x, torch.tensor([0, 1, 1, 0])


def noisy_xor(n: int, noise: float = 0.15, seed: int = 0) -> tuple[Tensor, Tensor]:
    """n points: a random XOR corner plus Gaussian noise of std ``noise``; label = XOR of the corner."""
    g = _gen(seed)
    corners = torch.randint(0, 2, (n, 2), generator=g)
    x = corners.float() + noise * torch.randn(n, 2, generator=g)
    return x, (corners[:, 0] ^ corners[:, 1]).long()


def circles(n: int, r_inner: float = 0.5, r_outer: float = 1.0, noise: float = 0.08, seed: int = 0) -> tuple[Tensor, Tensor]:
    """n points on two concentric rings (label 0 inner, 1 outer) with Gaussian radial noise."""
    g = _gen(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    theta = 2 * math.pi * torch.rand(n, generator=g)
    r = torch.where(y == 0, r_inner, r_outer) + noise * torch.randn(n, generator=g)
    return torch.stack([r * theta.cos(), r * theta.sin()], 1), y.long()


def spirals(n: int, turns: float = 1.5, noise: float = 0.05, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two interleaved spirals (Lang & Witbrock 1988): n points, label = which arm, radius in (0, 1]."""
    g = _gen(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    t = torch.rand(n, generator=g).sqrt()
    theta = 2 * math.pi * turns * t + math.pi * y
    x = torch.stack([t * theta.cos(), t * theta.sin()], 1) + noise * torch.randn(n, 2, generator=g)
    return x, y.long()


def gaussian_regression(n: int, eigenvalues: list[float] | Tensor, noise: float = 0.1, seed: int = 0) -> dict[str, Tensor]:
    """Inputs x ~ N(0, C) with C = Q diag(eigenvalues) Q^T (Q random orthogonal), target y = w*.x + noise.

    Returns dict with ``x`` (n, d), ``y`` (n,), ``w_star`` (d,), ``corr`` = C (d, d), float64.
    The input correlation matrix R = E[x x^T] = C sets the LMS step-size edges: 2 / lambda_max(R)
    for steepest descent, and for single-sample LMS the mean-square edge of
    :func:`whylearn.models.adaline.lms_mean_square_edge` (below the necessary 2 / trace(R)).
    """
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    if lam.ndim != 1 or (lam <= 0).any():
        raise ValueError(f"eigenvalues must be a 1-D list of positive numbers, got {eigenvalues}")
    g = _gen(seed)
    d = lam.shape[0]
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * lam.sqrt() @ q.T
    w = torch.randn(d, generator=g, dtype=torch.float64) / math.sqrt(d)
    y = x @ w + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return {"x": x, "y": y, "w_star": w, "corr": q @ torch.diag(lam) @ q.T}


def random_patterns(p: int, n: int, seed: int = 0) -> Tensor:
    """p i.i.d. uniform +-1 patterns of n bits: (p, n) float."""
    if p < 1 or n < 1:
        raise ValueError(f"random_patterns needs p >= 1 and n >= 1, got p={p}, n={n}")
    return torch.where(torch.rand(p, n, generator=_gen(seed)) < 0.5, -1.0, 1.0)


_GLYPHS = {
    "T": ["##########", "##########", "....##....", "....##....", "....##....",
          "....##....", "....##....", "....##....", "....##....", "....##...."],
    "H": ["##......##", "##......##", "##......##", "##......##", "##########",
          "##########", "##......##", "##......##", "##......##", "##......##"],
    "X": ["#........#", ".#......#.", "..#....#..", "...#..#...", "....##....",
          "....##....", "...#..#...", "..#....#..", ".#......#.", "#........#"],
    "O": ["..######..", ".#......#.", "#........#", "#........#", "#........#",
          "#........#", "#........#", "#........#", ".#......#.", "..######.."],
    "L": ["##........", "##........", "##........", "##........", "##........",
          "##........", "##........", "##........", "##########", "##########"],
    "+": ["..........", "....##....", "....##....", "....##....", ".########.",
          ".########.", "....##....", "....##....", "....##....", ".........."],
}


def binary_images(names: list[str] | None = None) -> tuple[Tensor, list[str]]:
    """10x10 black-and-white glyphs as +-1 vectors: ((k, 100) float, names). Black (#) is +1.

    Available: T, H, X, O, L, + (default: all). Raises ValueError naming them on an unknown name.
    """
    names = list(_GLYPHS) if names is None else list(names)
    bad = [k for k in names if k not in _GLYPHS]
    if bad:
        raise ValueError(f"unknown glyphs {bad}; allowed: {list(_GLYPHS)}")
    imgs = [[1.0 if c == "#" else -1.0 for row in _GLYPHS[k] for c in row] for k in names]
    return torch.tensor(imgs), names


def corrupt(patterns: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Flip exactly ``round(fraction * n)`` randomly chosen bits of each +-1 pattern (p, n)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"corruption fraction must be in [0, 1], got {fraction}")
    g = _gen(seed)
    p, n = patterns.shape
    k = int(round(fraction * n))
    flip = torch.rand(p, n, generator=g).argsort(dim=1)[:, :k]
    out = patterns.clone()
    out.scatter_(1, flip, -out.gather(1, flip))
    return out


class ToyDataModule(InMemoryDataModule):
    """A 2-class toy set (labels 0/1) with a separate seeded test draw.

    Args:
        kind: ``separable`` | ``xor`` (the 4 points; test = the same 4) | ``noisy_xor`` |
            ``circles`` | ``spirals``.
        n_train, n_test: sizes (ignored for ``xor``).
        d, gamma, radius, offset: of ``separable`` (see :func:`separable`).
        noise: of ``noisy_xor``, ``circles``, ``spirals``.
        data_seed: the generator's seed (test set: data_seed + 1; for ``separable`` the
            test points share the training set's w*).
        **kwargs: :class:`~whylearn.data.base.InMemoryDataModule` options; ``val_size``
            defaults to 0 (validate on the test draw).

    Attributes after setup: for ``separable``, ``w_star``, ``b_star``, ``gamma``, ``radius``.
    """

    num_classes = 2

    def __init__(self, kind: str = "separable", n_train: int = 200, n_test: int = 200, d: int = 2,
                 gamma: float = 0.1, radius: float = 1.0, offset: float = 0.0, noise: float | None = None,
                 data_seed: int = 0, val_size: float | int = 0, **kwargs) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown toy data kind {kind!r}; allowed: {list(KINDS)}")
        super().__init__(val_size=val_size, **kwargs)
        self.kind, self.n_train, self.n_test, self.d = kind, int(n_train), int(n_test), int(d)
        self.gamma, self.radius, self.offset, self.noise = float(gamma), float(radius), float(offset), noise
        self.data_seed = int(data_seed)
        self.w_star: Tensor | None = None
        self.b_star: float = 0.0

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"toy_{self.kind}"

    def load_splits(self) -> dict[str, Split]:
        k, s = self.kind, self.data_seed
        nz = {} if self.noise is None else {"noise": float(self.noise)}
        if k == "separable":
            both = separable(self.n_train + self.n_test, self.d, self.gamma, self.radius, self.offset, seed=s)
            x, y = both["x"].float(), ((both["y"] + 1) // 2).long()
            self.w_star, self.b_star = both["w_star"], float(both["b_star"])
            n = self.n_train
            return {"train": Split(x[:n], y[:n]), "test": Split(x[n:], y[n:])}
        if k == "xor":
            x, y = xor_points()
            return {"train": Split(x, y), "test": Split(x.clone(), y.clone())}
        fn = {"noisy_xor": noisy_xor, "circles": circles, "spirals": spirals}[k]
        xtr, ytr = fn(self.n_train, seed=s, **nz)
        xte, yte = fn(self.n_test, seed=s + 1, **nz)
        return {"train": Split(xtr, ytr), "test": Split(xte, yte)}


class PatternsDataModule(InMemoryDataModule):
    """Hopfield memories: train = the P stored +-1 patterns (N bits), test = corrupted probes.

    Args:
        source: ``random`` (P i.i.d. patterns of N bits) or ``images`` (10x10 glyphs, N = 100).
        num_patterns: P (``random``); number of glyphs (``images``, at most 6).
        num_neurons: N (``random``).
        corruption: fraction of bits flipped in each probe.
        probes_per_pattern: corrupted probes per stored pattern in the test split.
        data_seed: seeds the patterns and the corruption.

    Targets are pattern indices (``y[i]`` = which stored pattern); ``num_classes`` is 0 because
    this is no classification set (the model's output is a state, not logits).
    """

    num_classes = 0

    def __init__(self, source: str = "random", num_patterns: int = 10, num_neurons: int = 200,
                 corruption: float = 0.1, probes_per_pattern: int = 1, data_seed: int = 0,
                 val_size: float | int = 0, batch_size: int = 1, **kwargs) -> None:
        if source not in ("random", "images"):
            raise ValueError(f"unknown pattern source {source!r}; allowed: ['random', 'images']")
        super().__init__(val_size=val_size, batch_size=batch_size, **kwargs)
        self.source, self.num_patterns, self.num_neurons = source, int(num_patterns), int(num_neurons)
        self.corruption, self.probes_per_pattern, self.data_seed = float(corruption), int(probes_per_pattern), int(data_seed)
        self.pattern_names: list[str] = []

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"patterns_{self.source}"

    def load_splits(self) -> dict[str, Split]:
        if self.source == "random":
            pats = random_patterns(self.num_patterns, self.num_neurons, seed=self.data_seed)
            self.pattern_names = [str(i) for i in range(self.num_patterns)]
        else:
            pats, self.pattern_names = binary_images(list(_GLYPHS)[: self.num_patterns])
        idx = torch.arange(pats.shape[0]).repeat(self.probes_per_pattern)
        probes = corrupt(pats[idx], self.corruption, seed=self.data_seed + 1)
        return {"train": Split(pats, torch.arange(pats.shape[0])), "test": Split(probes, idx)}


class RegressionDataModule(InMemoryDataModule):
    """Correlated Gaussian inputs and a noisy linear target (:func:`gaussian_regression`), float targets.

    Args:
        eigenvalues: spectrum of the input correlation matrix (its length is d); or give
            ``d`` and ``condition``: d eigenvalues spaced geometrically from 1 to ``condition``.
        n_train, n_test, noise, data_seed: sizes, target noise std, generator seed.
    """

    num_classes = 0

    def __init__(self, eigenvalues: list[float] | None = None, d: int = 20, condition: float = 10.0,
                 n_train: int = 2000, n_test: int = 2000, noise: float = 0.1, data_seed: int = 0,
                 val_size: float | int = 0, **kwargs) -> None:
        super().__init__(val_size=val_size, **kwargs)
        if eigenvalues is None:
            eigenvalues = torch.logspace(0, math.log10(condition), int(d), dtype=torch.float64).tolist()
        self.eigenvalues = list(eigenvalues)
        self.n_train, self.n_test, self.noise, self.data_seed = int(n_train), int(n_test), float(noise), int(data_seed)
        self.corr: Tensor | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return "gaussian_regression"

    def load_splits(self) -> dict[str, Split]:
        data = gaussian_regression(self.n_train + self.n_test, self.eigenvalues, self.noise, seed=self.data_seed)
        self.corr, self.w_star = data["corr"], data["w_star"]
        x, y, n = data["x"], data["y"], self.n_train
        return {"train": Split(x[:n], y[:n]), "test": Split(x[n:], y[n:])}

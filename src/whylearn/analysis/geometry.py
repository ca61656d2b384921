"""High-dimensional geometry: three facts, each as an analytic curve beside a Monte Carlo estimate.

Understanding Deep Learning (Prince 2023), Sec. 8.4 and notebook 8.4 ("High-dimensional spaces"),
and the conversation's "the volume of a high-dimensional orange is all skin":

1. **Random vectors are nearly orthogonal.** The angle between two independent standard Gaussian
   vectors in d dimensions has density proportional to sin(theta)^(d-2) on [0, pi]; its mean is
   90 degrees and, since the cosine has variance exactly 1/d, its spread is about 1/sqrt(d) radians
   (57.3 / sqrt(d) degrees). :func:`angle_sd_exact` integrates the density, :func:`random_angles`
   samples it.
2. **The volume of a ball is in its skin.** The fraction of a d-ball's volume within eps of its
   surface (relative to the radius) is 1 - (1 - eps)^d (UDL notebook 8.4: the outer 1% of the radius
   at d = 300 holds 95%). :func:`shell_fraction` is the formula; :func:`uniform_ball` samples the
   ball by a method that does not use the radius law (the first d coordinates of a uniform point on
   the sphere in d + 2 dimensions; Voelker, Gosmann & Stewart 2017), so the Monte Carlo check is not
   circular.
3. **The ball is nothing next to its cube.** The unit ball's volume over its enclosing cube's,
   V_d(1) / 2^d = pi^(d/2) / (Gamma(d/2 + 1) 2^d) (UDL problem 8.7 and notebook 8.4: the ball of
   diameter 1 in the unit cube), goes to 0: 0.785 in 2-D, 0.0025 at d = 10, about 10^-1187 at d = 1000.
   Plain Monte Carlo (the fraction of uniform points in the cube that land in the ball) sees nothing
   beyond d of about 20; :func:`ball_cube_ratio_tilted` estimates the same probability by importance
   sampling with an exponentially tilted proposal (each coordinate from a Gaussian truncated to the
   cube, tilted so that the squared norm sits at the ball's boundary; Siegmund 1976), which works
   in log space for any d.

:func:`high_dimensional_geometry` is the study of ``experiment=high_dim_geometry`` (a measurement function
of the Study protocol, :func:`whylearn.studies.base.call_study`): it writes one figure per fact and returns
the numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import optimize, special, stats

from whylearn.analysis.plotting import save_figure, subplots

log = logging.getLogger("whylearn")

DEG = 180.0 / math.pi


def _check_dim(d: int) -> int:
    if int(d) != d or d < 1:
        raise ValueError(f"the dimension d must be a positive integer, got {d!r}")
    return int(d)


# -- 1. angles between random vectors --------------------------------------------------------------
def random_angles(d: int, num_pairs: int, rng: np.random.Generator, chunk: int = 2000) -> np.ndarray:
    """Angles in degrees (num_pairs,) between independent pairs of standard Gaussian vectors in R^d.

    Raises:
        ValueError: d < 2 (in one dimension the angle is 0 or 180 degrees) or num_pairs < 1.
    """
    d = _check_dim(d)
    if d < 2 or num_pairs < 1:
        raise ValueError(f"angles need d >= 2 and num_pairs >= 1, got d={d}, num_pairs={num_pairs}")
    out = []
    for start in range(0, num_pairs, chunk):
        n = min(chunk, num_pairs - start)
        a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        cos = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
        out.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.concatenate(out)


def angle_density(theta_deg: np.ndarray, d: int) -> np.ndarray:
    """Density (per degree) of the angle between two random isotropic vectors in R^d, d >= 2:
    sin(theta)^(d-2) / B((d-1)/2, 1/2) on [0, 180]."""
    d = _check_dim(d)
    t = np.radians(np.asarray(theta_deg, np.float64))
    if d == 2:  # sin^0: uniform on [0, 180]
        return np.full_like(t, 1.0 / 180.0)
    with np.errstate(divide="ignore"):
        log_sin = np.log(np.clip(np.sin(t), 0.0, None))
    log_norm = special.betaln((d - 1) / 2.0, 0.5)
    return np.exp((d - 2) * log_sin - log_norm) / DEG


def angle_sd_exact(d: int, grid: int = 200_001) -> float:
    """Standard deviation in degrees of the angle whose density is :func:`angle_density` (mean 90)."""
    t = np.linspace(0.0, 180.0, grid)
    p = angle_density(t, d)
    return float(math.sqrt(np.trapezoid((t - 90.0) ** 2 * p, t) / np.trapezoid(p, t)))


def angle_sd_approx(d: int) -> float:
    """The large-d spread of the angle: 1/sqrt(d) radians, in degrees (the cosine has variance 1/d)."""
    return DEG / math.sqrt(_check_dim(d))


# -- 2. the skin of a ball ---------------------------------------------------------------------------
def shell_fraction(d: int, eps: float) -> float:
    """Fraction of a d-ball's volume within ``eps`` (a fraction of the radius) of its surface: 1 - (1 - eps)^d."""
    d = _check_dim(d)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be a fraction of the radius in [0, 1], got {eps}")
    return float(-math.expm1(d * math.log1p(-eps))) if eps < 1 else 1.0


def uniform_ball(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """n points (n, d) uniform in the unit d-ball: the first d coordinates of a uniform point on the
    unit sphere of R^(d+2) (Voelker, Gosmann & Stewart 2017), no radius law assumed."""
    d = _check_dim(d)
    g = rng.standard_normal((n, d + 2))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return g[:, :d]


def shell_fraction_mc(d: int, eps: Sequence[float], n: int, rng: np.random.Generator, chunk: int = 20_000) -> list[float]:
    """Monte Carlo fraction of :func:`uniform_ball` points with norm > 1 - eps, for each eps."""
    counts = np.zeros(len(eps))
    for start in range(0, n, chunk):
        r = np.linalg.norm(uniform_ball(min(chunk, n - start), d, rng), axis=1)
        counts += [(r > 1.0 - e).sum() for e in eps]
    return [float(c / n) for c in counts]


# -- 3. the ball inside its cube ---------------------------------------------------------------------
def log10_ball_cube_ratio(d: int) -> float:
    """log10 of V_d(1) / 2^d = pi^(d/2) / (Gamma(d/2 + 1) 2^d): the unit ball over its enclosing cube
    (equally: the ball of diameter 1 inside the unit cube, UDL notebook 8.4)."""
    d = _check_dim(d)
    return float(((d / 2) * math.log(math.pi) - special.gammaln(d / 2 + 1) - d * math.log(2.0)) / math.log(10.0))


def ball_cube_ratio_plain(d: int, n: int, rng: np.random.Generator, chunk: int = 100_000) -> float:
    """Fraction of n uniform points of the cube [-1/2, 1/2]^d inside the ball of radius 1/2 (0 when none land)."""
    d = _check_dim(d)
    hits = 0
    for start in range(0, n, chunk):
        u = rng.uniform(-0.5, 0.5, (min(chunk, n - start), d))
        hits += int(((u * u).sum(1) <= 0.25).sum())
    return hits / n


def _tilt(d: int) -> float:
    """The tilt lambda >= 0 whose truncated proposal has E[sum of u_i^2] = 1/4 (the ball's boundary)."""
    target = 0.25 / d
    if target >= 1.0 / 12.0:  # d <= 3: the uniform proposal already reaches the boundary on average
        return 0.0

    def gap(lam: float) -> float:
        s = 1.0 / math.sqrt(2.0 * lam)
        return float(stats.truncnorm(-0.5 / s, 0.5 / s, scale=s).var()) - target

    return float(optimize.brentq(gap, 1e-9, 100.0 * d))


def ball_cube_ratio_tilted(d: int, n: int, rng: np.random.Generator) -> dict[str, float]:
    """Importance-sampling estimate of log10 P(|u|^2 <= 1/4), u uniform in [-1/2, 1/2]^d.

    Proposal: each u_i i.i.d. with density exp(-lambda u^2) / Z on [-1/2, 1/2] (lambda from
    :func:`_tilt`). Since the uniform density is 1, the likelihood ratio is Z^d exp(lambda S) with
    S = |u|^2, so P = Z^d E_q[1{S <= 1/4} exp(lambda S)], evaluated in log space.

    Returns dict: ``log10`` (the estimate), ``log10_se`` (its standard error from the sample),
    ``lambda``, ``hit_rate`` (the fraction of proposals inside the ball).
    """
    d = _check_dim(d)
    lam = _tilt(d)
    if lam == 0.0:
        u = rng.uniform(-0.5, 0.5, (n, d))
        log_z = 0.0
    else:
        s = 1.0 / math.sqrt(2.0 * lam)
        lo = special.ndtr(-0.5 / s)  # inverse-CDF sampling of N(0, s^2) truncated to [-1/2, 1/2]
        u = s * special.ndtri(lo + rng.uniform(size=(n, d)) * (1.0 - 2.0 * lo))
        log_z = math.log(math.sqrt(math.pi / lam) * math.erf(math.sqrt(lam) / 2.0))
    S = (u * u).sum(1)
    inside = S <= 0.25
    if not inside.any():
        return {"log10": float("-inf"), "log10_se": float("inf"), "lambda": lam, "hit_rate": 0.0}
    # weights relative to their largest possible value exp(lambda / 4), so nothing overflows
    w = np.where(inside, np.exp(lam * (S - 0.25)), 0.0)
    mean_w = w.mean()
    log_p = d * log_z + lam * 0.25 + math.log(mean_w)
    rel_se = w.std(ddof=1) / (mean_w * math.sqrt(n))
    return {"log10": log_p / math.log(10.0), "log10_se": rel_se / math.log(10.0), "lambda": lam,
            "hit_rate": float(inside.mean())}


# -- the analysis entry ------------------------------------------------------------------------------
def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def high_dimensional_geometry(
    out_dir: Path,
    dims: Sequence[int] = (2, 3, 5, 10, 20, 50, 100, 200, 300, 500, 1000),
    num_pairs: int = 10_000,
    num_points: int = 100_000,
    shell_eps: Sequence[float] = (0.01, 0.05, 0.1),
    num_cube_points: int = 1_000_000,
    plain_max_dim: int = 30,
    num_tilted: int = 20_000,
    histogram_dims: Sequence[int] = (2, 10, 100, 1000),
    seed: int = 0,
    repeats: int = 3,
) -> dict:
    """The three facts for every d in ``dims``, Monte Carlo repeated with seeds seed .. seed+repeats-1.

    Args:
        dims: dimensions (>= 2).
        num_pairs: random vector pairs per d and seed (angles).
        num_points: uniform ball points per d and seed (shell fractions).
        shell_eps: shell thicknesses as fractions of the radius.
        num_cube_points: uniform cube points per d and seed (plain ball/cube Monte Carlo), run for
            d <= ``plain_max_dim`` only (beyond, not one point in 10^6 lands in the ball; null in the summary).
        num_tilted: tilted proposals per d and seed (importance-sampled ball/cube ratio).
        histogram_dims: the dimensions whose angle histograms are drawn.
        seed, repeats: the Monte Carlo seeds.

    Returns the numbers for ``summary.json``: per d the Monte Carlo mean and sd over seeds next to
    the analytic value, under ``angle/...``, ``shell/...``, ``ball_cube/...``.

    Raises:
        ValueError: a dimension < 2, repeats < 1, an eps outside [0, 1].
    """
    dims = [_check_dim(d) for d in dims]
    if min(dims) < 2 or repeats < 1:
        raise ValueError(f"dims must be >= 2 and repeats >= 1, got dims={dims}, repeats={repeats}")
    for e in shell_eps:
        shell_fraction(2, float(e))  # validates eps before any sampling
    seeds = [int(seed) + i for i in range(int(repeats))]
    rngs = {s: np.random.default_rng(s) for s in seeds}
    res: dict = {"dims": dims, "seeds": seeds, "shell_eps": [float(e) for e in shell_eps]}
    ang_mean, ang_sd, shell_mc, plain, tilted = [], [], [], [], []
    hist = {}
    for d in dims:
        a = {s: random_angles(d, num_pairs, rngs[s]) for s in seeds}
        ang_mean.append(_mean_sd([a[s].mean() for s in seeds]))
        ang_sd.append(_mean_sd([a[s].std(ddof=1) for s in seeds]))
        if d in histogram_dims:
            hist[d] = a[seeds[0]]
        shell_mc.append([shell_fraction_mc(d, shell_eps, num_points, rngs[s]) for s in seeds])
        plain.append(_mean_sd([ball_cube_ratio_plain(d, num_cube_points, rngs[s]) for s in seeds])
                     if d <= plain_max_dim else (None, None))
        tilted.append(_mean_sd([ball_cube_ratio_tilted(d, num_tilted, rngs[s])["log10"] for s in seeds]))
        log.info("d=%d: angle %.2f +- %.3f deg (exact sd %.3f), outer %.0f%% shell %.4f (formula %.4f), "
                 "log10 ball/cube %.3f (formula %.3f)", d, ang_mean[-1][0], ang_sd[-1][0], angle_sd_exact(d),
                 100 * shell_eps[0], np.mean([r[0] for r in shell_mc[-1]]), shell_fraction(d, shell_eps[0]),
                 tilted[-1][0], log10_ball_cube_ratio(d))

    res["angle/mean_deg"] = [m for m, _ in ang_mean]
    res["angle/mean_deg_sd"] = [s for _, s in ang_mean]
    res["angle/sd_deg"] = [m for m, _ in ang_sd]
    res["angle/sd_deg_sd"] = [s for _, s in ang_sd]
    res["angle/sd_deg_exact"] = [angle_sd_exact(d) for d in dims]
    res["angle/sd_deg_approx"] = [angle_sd_approx(d) for d in dims]
    for j, e in enumerate(shell_eps):
        res[f"shell/eps{e:g}/fraction"] = [shell_fraction(d, e) for d in dims]
        res[f"shell/eps{e:g}/fraction_mc"] = [_mean_sd([r[j] for r in rows])[0] for rows in shell_mc]
        res[f"shell/eps{e:g}/fraction_mc_sd"] = [_mean_sd([r[j] for r in rows])[1] for rows in shell_mc]
    res["ball_cube/log10_ratio"] = [log10_ball_cube_ratio(d) for d in dims]
    res["ball_cube/ratio_plain_mc"] = [m for m, _ in plain]
    res["ball_cube/ratio_plain_mc_sd"] = [s for _, s in plain]
    res["ball_cube/log10_ratio_mc"] = [m for m, _ in tilted]
    res["ball_cube/log10_ratio_mc_sd"] = [s for _, s in tilted]
    # scalars at a few dimensions, the keys the experiment's reference block reads
    for i, d in enumerate(dims):
        if d in (10, 100, 300, 1000):
            res[f"angle/mean_deg/d{d}"] = res["angle/mean_deg"][i]
            res[f"angle/sd_deg/d{d}"] = res["angle/sd_deg"][i]
            res[f"angle/sd_deg_exact/d{d}"] = res["angle/sd_deg_exact"][i]
            for e in shell_eps:
                res[f"shell/eps{e:g}/fraction_mc/d{d}"] = res[f"shell/eps{e:g}/fraction_mc"][i]
            res[f"ball_cube/log10_ratio_mc/d{d}"] = res["ball_cube/log10_ratio_mc"][i]
            res[f"ball_cube/log10_ratio/d{d}"] = res["ball_cube/log10_ratio"][i]
            res[f"ball_cube/ratio_plain_mc/d{d}"] = res["ball_cube/ratio_plain_mc"][i]
    figures = Path(out_dir) / "figures"
    _plot_angles(res, hist, figures / "geometry_angles.png")
    _plot_shell(res, figures / "geometry_shell.png")
    _plot_ball_cube(res, figures / "geometry_ball_cube.png")
    return res


def _plot_angles(res: dict, hist: dict[int, np.ndarray], path: Path) -> Path:
    fig, axes = subplots(2, width=5.6, height=3.9)
    t = np.linspace(0.0, 180.0, 1801)
    for d, a in sorted(hist.items()):
        line = axes[0].hist(a, bins=np.linspace(0, 180, 181), density=True, histtype="step", label=f"d = {d}")[2][0]
        axes[0].plot(t, angle_density(t, d), color=line.get_edgecolor(), lw=0.8, ls=":")
    axes[0].set_xlabel("angle between two random Gaussian vectors (degrees)")
    axes[0].set_ylabel("density")
    axes[0].set_xticks([0, 45, 90, 135, 180])
    axes[0].set_title("Angle histograms (dotted: the sin^(d-2) density)")
    axes[0].legend(fontsize=8)
    dims = np.array(res["dims"], float)
    axes[1].errorbar(dims, res["angle/sd_deg"], yerr=res["angle/sd_deg_sd"], fmt="o", ms=4,
                     label=f"Monte Carlo, {len(res['seeds'])} seeds")
    axes[1].loglog(dims, res["angle/sd_deg_exact"], "-", lw=1, label="exact (sin^(d-2) density)")
    axes[1].loglog(dims, res["angle/sd_deg_approx"], "k--", lw=1, label="57.3 / sqrt(d)")
    axes[1].set_xlabel("dimension d")
    axes[1].set_ylabel("sd of the angle (degrees)")
    axes[1].set_title("Random vectors are nearly orthogonal")
    axes[1].legend(fontsize=8)
    return save_figure(fig, path)


def _plot_shell(res: dict, path: Path) -> Path:
    fig, ax = subplots(width=6.0, height=4.2)
    dims = np.array(res["dims"], float)
    dd = np.unique(np.round(np.logspace(np.log10(dims.min()), np.log10(dims.max()), 200)).astype(int))
    for e in res["shell_eps"]:
        (line,) = ax.semilogx(dd, [shell_fraction(int(d), e) for d in dd], "-", lw=1, label=f"1 - (1 - {e:g})^d")
        ax.errorbar(dims, res[f"shell/eps{e:g}/fraction_mc"], yerr=res[f"shell/eps{e:g}/fraction_mc_sd"], fmt="o", ms=4,
                    color=line.get_color(), label=f"Monte Carlo, outer {100 * e:g}% of the radius")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("fraction of the ball's volume in the shell")
    ax.set_title("The volume of a high-dimensional orange is all skin")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _plot_ball_cube(res: dict, path: Path) -> Path:
    fig, ax = subplots(width=6.0, height=4.2)
    dims = np.array(res["dims"], float)
    dd = np.unique(np.round(np.logspace(np.log10(dims.min()), np.log10(dims.max()), 200)).astype(int))
    ax.semilogx(dd, [log10_ball_cube_ratio(int(d)) for d in dd], "k-", lw=1, label="pi^(d/2) / (Gamma(d/2+1) 2^d)")
    plain = np.array([np.nan if p is None else p for p in res["ball_cube/ratio_plain_mc"]], float)
    seen = np.nan_to_num(plain) > 0
    ax.semilogx(dims[seen], np.log10(plain[seen]), "s", ms=6, mfc="none",
                label="Monte Carlo: uniform points in the cube (nothing lands beyond d ~ 20)")
    ax.errorbar(dims, res["ball_cube/log10_ratio_mc"], yerr=res["ball_cube/log10_ratio_mc_sd"], fmt="o", ms=3,
                label="Monte Carlo: importance sampling, tilted proposal")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("log10 (volume of unit ball / volume of enclosing cube)")
    ax.set_title("The ball is nothing next to its cube")
    ax.legend(fontsize=8)
    return save_figure(fig, path)

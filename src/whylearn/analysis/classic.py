"""Sweeps of the classic machines, as plain functions (tensors in, numbers out) and their figures.

- :func:`xor_ensemble` / :func:`xor_sweep`: many seeds of a one-hidden-layer MLP on the four XOR
  points, trained together by full-batch gradient descent (backpropagation, Rumelhart, Hinton &
  Williams 1986), each seed initialized exactly as :class:`whylearn.models.MLP` with that seed.
- :func:`perceptron_margin_sweep`: perceptron mistakes against Novikoff's (R/gamma)^2.
- :func:`lms_sweep`: full-batch and single-sample LMS over a grid of step sizes mu, against the exact
  edges (2 / lambda_max; the mean-square edge of Feuer & Weinstein 1985), with :func:`lms_stream`
  (single-sample LMS on fresh Gaussian inputs) and :func:`growth_decades` (the trend criterion).
- :func:`hopfield_capacity`: retrieval overlap against the load P/N (Amit et al. 1985);
  :func:`half_recall_load` locates the collapse.
- :func:`plot_decision_boundary`: data and learned boundary of any 2-D classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.data.toy import corrupt, random_patterns, separable, xor_points  # noqa: E402
from whylearn.models.adaline import (  # noqa: E402
    lms_bounds,
    lms_bounds_from_spectrum,
    lms_excess_mse_theory,
    lms_mean_square_rate,
    lms_mean_square_sum,
    run_lms,
)
from whylearn.models.ensemble import MemberEnsemble
from whylearn.models.hopfield import Hopfield, overlap  # noqa: E402
from whylearn.models.mlp import MLP  # noqa: E402
from whylearn.models.perceptron import Perceptron, novikoff_bound, train_perceptron  # noqa: E402


# -- XOR ------------------------------------------------------------------------------------------
def xor_members(widths: Sequence[int], activations: Sequence[str], seeds: Sequence[int], steps: int = 2000,
                lr: float = 1.0, momentum: float = 0.9, loss: str = "mse") -> list[dict]:
    """Train one MLP 2 -> width -> 2 per (activation, width, seed) on the 4 XOR points, all of them at once.

    Each member starts from ``MLP(2, 2, [width], activation)`` built after ``torch.manual_seed(seed)``
    and is trained by full-batch SGD (``lr``, ``momentum``) on ``loss``: ``mse`` (squared error
    of softmax-free outputs against one-hot targets, mean over classes, as
    :func:`whylearn.tasks.classification_loss`) or ``cross_entropy``. All members are one
    :class:`~whylearn.models.ensemble.MemberEnsemble` (widths of one activation grouped, each layer
    one batched matmul); their losses are summed, so their gradients do not mix: this equals
    training each MLP alone.

    Returns one dict per member, in (activation, width, seed) order: ``activation``, ``width``,
    ``seed``, ``acc`` (final accuracy on the 4 points), ``loss`` (final), ``hidden_grad_norm`` (the
    norm of the first layer's gradient at initialization; 0 for the step activation).

    Raises:
        ValueError: an unknown loss or activation.
    """
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"unknown loss {loss!r}; allowed: ['mse', 'cross_entropy']")
    x, y = xor_points()
    settings, nets = [], []
    for act in activations:
        for w in widths:
            for s in seeds:
                torch.manual_seed(int(s))
                nets.append(MLP(2, 2, hidden=[int(w)], activation=act))
                settings.append((act, int(w), int(s)))
    ens = MemberEnsemble(nets, layout="auto", batch_size=4)
    S = len(nets)
    target = F.one_hot(y, 2).float()

    def per_member_loss() -> tuple[Tensor, Tensor]:
        out = ens(x)  # (S, 4, 2)
        if loss == "mse":
            return (out - target).pow(2).mean((1, 2)), out
        return F.cross_entropy(out.reshape(-1, 2), y.repeat(S), reduction="none").view(S, 4).mean(1), out

    opt = torch.optim.SGD(ens.parameters(), lr=lr, momentum=momentum)
    hidden_grad = torch.zeros(S)
    for t in range(steps):
        opt.zero_grad(set_to_none=True)
        lvec, _ = per_member_loss()
        lvec.sum().backward()
        if t == 0:  # the first layer's gradient of each member (a padded unit's entries are exactly 0)
            for group, idx in zip(ens.groups, ens.group_members, strict=True):
                (w1, b1) = group.layer_params()[0]
                sq = torch.zeros(len(idx))
                for p in (w1, b1):
                    if p is not None and p.grad is not None:
                        sq += p.grad.pow(2).flatten(1).sum(1)
                hidden_grad[idx] = sq.sqrt()
        opt.step()
    with torch.no_grad():
        lvec, out = per_member_loss()
        acc = (out.argmax(-1) == y[None, :]).float().mean(1)
    return [{"activation": a, "width": w, "seed": s, "acc": float(acc[i]), "loss": float(lvec[i]),
             "hidden_grad_norm": float(hidden_grad[i])} for i, (a, w, s) in enumerate(settings)]


def xor_ensemble(width: int, activation: str, seeds: Sequence[int], steps: int = 2000, lr: float = 1.0,
                 momentum: float = 0.9, loss: str = "mse") -> dict[str, Tensor]:
    """:func:`xor_members` for one width and activation: dict of ``acc``, ``loss`` and
    ``hidden_grad_norm``, each (S,) in the order of ``seeds``."""
    rows = xor_members([width], [activation], seeds, steps, lr, momentum, loss)
    return {k: torch.tensor([r[k] for r in rows]) for k in ("acc", "loss", "hidden_grad_norm")}


def xor_sweep(widths: Sequence[int], activations: Sequence[str], seeds: Sequence[int], **kw) -> list[dict]:
    """Success rate (final accuracy 4/4) over ``seeds`` for every width and activation, all
    networks trained as one vectorized model (:func:`xor_members`)."""
    members = xor_members(widths, activations, seeds, **kw)
    rows = []
    for act in activations:
        for w in widths:
            rs = [m for m in members if m["activation"] == act and m["width"] == int(w)]
            accs = [m["acc"] for m in rs]
            rows.append({"activation": act, "width": int(w), "success_rate": sum(a == 1.0 for a in accs) / len(accs),
                         "mean_acc": sum(accs) / len(accs), "max_acc": max(accs),
                         "hidden_grad_norm_init": sum(m["hidden_grad_norm"] for m in rs) / len(rs)})
    return rows


# -- perceptron -----------------------------------------------------------------------------------
def perceptron_margin_sweep(gammas: Sequence[float], dims: Sequence[int], seeds: Sequence[int], n: int = 200,
                            radius: float = 1.0, max_epochs: int = 10_000) -> list[dict]:
    """For each margin, dimension and seed: perceptron mistakes on :func:`separable` data and Novikoff's bound.

    The bound is measured in the space the perceptron works in (bias input 1 appended), with the
    generator's hyperplane (margin >= gamma), so it is (R_aug / gamma_aug)^2 with R_aug <= sqrt(R^2+1).
    """
    rows = []
    for gamma in gammas:
        for d in dims:
            for s in seeds:
                data = separable(n, int(d), float(gamma), radius, seed=int(s))
                p = Perceptron(int(d)).double()
                per_epoch = train_perceptron(p, data["x"], data["y"], max_epochs=max_epochs)
                nb = novikoff_bound(data["x"], data["y"], data["w_star"], float(data["b_star"]))
                rows.append({"gamma": float(gamma), "d": int(d), "seed": int(s), "mistakes": int(sum(per_epoch)),
                             "epochs": len(per_epoch), "separated": per_epoch[-1] == 0, "bound": nb["bound"],
                             "R": nb["R"], "gamma_measured": nb["gamma"], "bound_prescribed": (radius / gamma) ** 2})
    return rows


# -- LMS ------------------------------------------------------------------------------------------
def lms_stream(corr: Tensor | np.ndarray, w_star: Tensor | np.ndarray, noise: float, mus: Sequence[float],
               steps: int, seeds: Sequence[int], record_every: int = 100, check_every: int = 10,
               blowup: float = 1e40, chunk: int = 1000) -> dict[str, np.ndarray]:
    """Single-sample LMS on fresh i.i.d. Gaussian samples: every step size x every seed, run at once (numpy).

    The setting of the mean-square theory (:func:`whylearn.models.adaline.lms_mean_square_edge`):
    run r draws its own stream from ``numpy.random.default_rng(seeds[r])``, x_t = L z_t with
    L L^T = ``corr`` and y_t = w*.x_t + ``noise`` v_t (z, v standard normal), each sample used
    once; every step size sees the same streams. Each (mu, seed) is an independent run of
    w <- w + mu (y - w.x) x from w = 0, the rule of :meth:`whylearn.models.Adaline.lms_update`
    with batch 1 (``tests/analysis/test_classic.py`` checks they agree).

    A run whose squared weight error exceeds ``blowup`` (checked every ``check_every`` steps) is
    frozen and counted as blown up; its excess MSE reads inf from then on.

    Beside each run a noise-free companion u <- (I - mu x x^T) u on the same inputs, renormalized
    every ``check_every`` steps, measures the run's top Lyapunov exponent (mean log growth per
    step of the weight error; negative: the run converges, whatever its mean square does).

    Returns:
        ``steps`` (n_rec,) the recorded step counts; ``excess`` (M, R, n_rec) the excess MSE
        (w - w*)^T R (w - w*) (the population MSE minus the noise variance); ``blew_up`` (M, R);
        ``lyapunov`` (M, R), natural log per step.
    """
    corr = np.asarray(torch.as_tensor(corr, dtype=torch.float64).cpu())
    w_star = np.asarray(torch.as_tensor(w_star, dtype=torch.float64).cpu())
    chol = np.linalg.cholesky(corr)
    mu = np.asarray(mus, dtype=np.float64)[:, None]
    rngs = [np.random.default_rng(int(s)) for s in seeds]
    m, r, d = mu.shape[0], len(rngs), w_star.shape[0]
    w = np.zeros((m, r, d))
    u = np.broadcast_to(w_star / np.linalg.norm(w_star) if np.linalg.norm(w_star) > 0 else np.ones(d) / np.sqrt(d),
                        (m, r, d)).copy()
    log_growth = np.zeros((m, r))
    mu3 = mu[..., None]
    mu_eff = np.repeat(mu, r, axis=1)
    blew = np.zeros((m, r), dtype=bool)
    recs, rec_steps = [], []
    t = 0
    while t < steps:
        n = min(chunk, steps - t)
        z = np.stack([g.standard_normal((n, d + 1)) for g in rngs], axis=1)  # (n, R, d + 1)
        xs = z[..., :d] @ chol.T
        ys = xs @ w_star + noise * z[..., d]
        for i in range(n):
            x = xs[i]
            e = ys[i] - (w * x).sum(-1)
            w += (mu_eff * e)[..., None] * x
            u -= mu3 * (u * x).sum(-1, keepdims=True) * x
            t += 1
            if t % check_every == 0:
                norm = np.sqrt((u * u).sum(-1))
                log_growth += np.log(norm)
                u /= norm[..., None]
                c2 = ((w - w_star) ** 2).sum(-1)
                bad = ~(c2 < blowup) & ~blew
                if bad.any():
                    blew |= bad
                    mu_eff[bad] = 0.0
            if t % record_every == 0:
                c = w - w_star
                ex = np.einsum("mrd,de,mre->mr", c, corr, c)
                recs.append(np.where(blew, np.inf, ex))
                rec_steps.append(t)
    norm = np.sqrt((u * u).sum(-1))
    return {"steps": np.array(rec_steps), "excess": np.stack(recs, -1), "blew_up": blew,
            "lyapunov": (log_growth + np.log(norm)) / max(t, 1)}


def growth_decades(values: np.ndarray, start: float = 0.5) -> np.ndarray:
    """Decades by which ``values`` (..., n) grow over their last ``1 - start`` fraction, by a least-squares line.

    The trend criterion of divergence: the slope of log10(values) against the record index over
    the tail, times the tail's length. A run settled at its noise floor reads about 0 whatever
    its level; a slowly diverging one reads its growth (a run that merely ends high does not).
    inf where any value in the tail is not finite; values <= 0 are clipped at 1e-300.
    """
    v = np.asarray(values, dtype=np.float64)
    tail = v[..., int(start * v.shape[-1]):]
    if tail.shape[-1] < 2:
        raise ValueError(f"need at least 2 records in the tail, got {tail.shape[-1]} of {v.shape[-1]}")
    finite = np.isfinite(tail).all(-1)
    logs = np.log10(np.clip(np.where(np.isfinite(tail), tail, 1.0), 1e-300, None))
    k = np.arange(tail.shape[-1], dtype=np.float64)
    k -= k.mean()
    slope = (logs * k).sum(-1) / (k * k).sum()
    return np.where(finite, slope * (tail.shape[-1] - 1), np.inf)


def lms_sweep(x: Tensor, y: Tensor, mus: Sequence[float], corr: Tensor, w_star: Tensor, noise: float,
              steps: int = 20_000, seeds: Sequence[int] = range(16), full_steps: int = 100, record_every: int = 100,
              threshold_decades: float = 1.0) -> dict[str, Any]:
    """Where LMS converges and where it diverges, against the exact edges, for each step size in ``mus``.

    - Full batch (steepest descent) on the training set (x (n, d), y (n,)), ``full_steps`` steps
      from w = 0; exact edge 2 / lambda_max of the training inputs' R. Diverged: the excess of the
      training MSE over the least-squares minimum grew over the second half of the run (for
      steepest descent on a quadratic it falls monotonically iff stable).
    - Single sample, the Widrow-Hoff rule: :func:`lms_stream` on fresh Gaussian inputs with
      R = ``corr`` (the configured spectrum), target w*.x + ``noise`` v, ``steps`` updates, one run
      per seed. Exact mean-square edge: :func:`~whylearn.models.adaline.lms_mean_square_edge`
      of ``corr``; the exact mean excess MSE (:func:`~whylearn.models.adaline.lms_excess_mse_theory`)
      is computed beside the simulation. A run diverged if its excess MSE grew by more than
      ``threshold_decades`` decades over the second half (:func:`growth_decades`) or blew up; the
      ensemble (mean over runs, the mean-square quantity) diverged by the same test on the mean.
      Each run's top Lyapunov exponent (:func:`lms_stream`) says whether that run converges at
      all; it may, for a while above the mean-square edge (module docstring of
      :mod:`whylearn.models.adaline`), and ``lms_ms_rate_theory`` (half the log of
      :func:`~whylearn.models.adaline.lms_mean_square_rate`) is its upper bound.

    Returns:
        dict with the bounds (``full/mu_edge``, ``lms/mu_edge_ms``, ``lms/mu_necessary`` = 2/trace,
        ``lms/mu_sufficient`` = 2/(3 trace)), per-mu ``rows``, the recorded ``curves`` (ensemble
        mean and theory for every mu), and the measured brackets: ``full/mu_stable`` (largest mu
        that did not diverge), ``full/mu_diverge`` (smallest that did), ``lms/mu_stable`` (largest
        mu with every run stable), ``lms/mu_diverge`` (smallest with most runs diverged),
        ``lms/ms_mu_stable`` / ``lms/ms_mu_diverge`` (by the ensemble mean),
        ``lms/lyapunov_mu_stable`` / ``lms/lyapunov_mu_diverge`` (by the sign of the mean Lyapunov
        exponent), each also divided by its exact edge (``..._over_edge``), and whether the edge lies
        strictly inside (``full/edge_bracketed``, ``lms/edge_bracketed``, ``lms/ms_edge_bracketed``).
    """
    x, y = x.flatten(1).double(), y.double()
    mus = [float(m) for m in mus]
    seeds = [int(s) for s in seeds]
    full_b = lms_bounds(x)
    pop = torch.as_tensor(corr, dtype=torch.float64)
    spectrum = torch.linalg.eigvalsh(pop).tolist()
    pop_b = lms_bounds_from_spectrum(spectrum)
    mse0 = float(y.pow(2).mean())
    w_ls = torch.linalg.lstsq(x, y[:, None]).solution.squeeze(1)
    mse_ls = float((y - x @ w_ls).pow(2).mean())

    sim = lms_stream(pop, w_star, noise, mus, steps, seeds, record_every)
    theory = lms_excess_mse_theory(pop, -torch.as_tensor(w_star, dtype=torch.float64), mus, steps, noise**2, record_every)
    ex = sim["excess"]  # (M, R, n_rec)
    half = ex.shape[-1] // 2
    with np.errstate(over="ignore", invalid="ignore"):
        run_growth = growth_decades(ex)  # (M, R)
        mean_curve = ex.mean(1)  # (M, n_rec)
        ms_growth = growth_decades(mean_curve)
    run_div = sim["blew_up"] | (run_growth > threshold_decades)
    rows = []
    for i, mu in enumerate(mus):
        full = run_lms(x, y, mu, epochs=full_steps, batch_size=x.shape[0], seed=None, blowup=1e30)
        fex = np.asarray(full["mse"]) - mse_ls
        full_div = bool(full["diverged"] or not np.isfinite(fex[-1]) or fex[-1] > max(fex[len(fex) // 2], 1e-12 * mse0))
        s = lms_mean_square_sum(spectrum, mu)
        with np.errstate(over="ignore", invalid="ignore"):
            rows.append({
                "mu": mu, "mu_over_edge_ms": mu / pop_b["mu_edge_ms"], "mu_over_full_edge": mu / full_b["mu_max_mean"],
                "full_mse": float(full["mse"][-1]) if full["mse"] and math.isfinite(full["mse"][-1]) else float("inf"),
                "full_diverged": full_div,
                "lms_runs_diverged": float(run_div[i].mean()), "lms_diverged": bool(run_div[i].mean() > 0.5),
                "lms_runs_blew_up": float(sim["blew_up"][i].mean()),
                "lms_growth_decades_median": float(np.median(run_growth[i])),
                "lms_lyapunov": float(sim["lyapunov"][i].mean()), "lms_lyapunov_diverged": bool(sim["lyapunov"][i].mean() > 0),
                "lms_ms_rate_theory": 0.5 * math.log(lms_mean_square_rate(spectrum, mu)),
                "lms_ms_diverged": bool(sim["blew_up"][i].any() or ms_growth[i] > threshold_decades),
                "lms_ms_diverged_theory": bool(s >= 1.0),
                "lms_ms_sum": s,
                "lms_excess_mse": float(ex[i, :, half:].mean()) if np.isfinite(ex[i, :, half:]).all() else float("inf"),
                "lms_excess_mse_median": float(np.median(ex[i, :, half:].mean(-1))),
                "lms_excess_mse_theory": float(theory[i, half:].mean()),
            })

    def bracket(diverge_key: str, edge: float, prefix: str, stable_ok: Callable | None = None) -> dict[str, Any]:
        ok = stable_ok or (lambda r: not r[diverge_key])
        st = max([r["mu"] for r in rows if ok(r)], default=float("nan"))
        dv = min([r["mu"] for r in rows if r[diverge_key]], default=float("nan"))
        return {f"{prefix}mu_stable": st, f"{prefix}mu_diverge": dv, f"{prefix}mu_stable_over_edge": st / edge,
                f"{prefix}mu_diverge_over_edge": dv / edge, f"{prefix}edge_bracketed": bool(st < edge < dv)}

    out: dict[str, Any] = {
        "full/mu_edge": full_b["mu_max_mean"], "full/lambda_max": full_b["lambda_max"],
        "lms/mu_edge_ms": pop_b["mu_edge_ms"], "lms/mu_necessary": pop_b["mu_necessary_lms"],
        "lms/mu_sufficient": pop_b["mu_sufficient_lms"], "lms/lambda_max": pop_b["lambda_max"], "lms/trace": pop_b["trace"],
        "lms/edge_over_necessary": pop_b["mu_edge_ms"] / pop_b["mu_necessary_lms"],
        "spectrum": spectrum, "mse_initial": mse0, "mse_least_squares": mse_ls, "noise_var": float(noise) ** 2,
        "lms/steps": int(steps), "lms/seeds": seeds, "full/steps": int(full_steps), "rows": rows,
        "curves": {"steps": sim["steps"].tolist(), "ensemble_mean": mean_curve.tolist(), "theory": theory.tolist()},
    }
    out.update(bracket("full_diverged", full_b["mu_max_mean"], "full/"))
    out.update(bracket("lms_diverged", pop_b["mu_edge_ms"], "lms/", stable_ok=lambda r: r["lms_runs_diverged"] == 0.0))
    out.update(bracket("lms_ms_diverged", pop_b["mu_edge_ms"], "lms/ms_"))
    out.update(bracket("lms_lyapunov_diverged", pop_b["mu_edge_ms"], "lms/lyapunov_"))
    return out


# -- Hopfield ---------------------------------------------------------------------------------------
def hopfield_recall(num_neurons: int, num_patterns: int, corruption: float = 0.1, seed: int = 0,
                    max_sweeps: int = 30) -> dict[str, float]:
    """Store P random patterns in N neurons, corrupt each, settle; mean final overlap and fraction recalled.

    A pattern counts as recalled when the settled state's overlap with it is at least 0.95
    (the fixed points of a loaded network sit a few percent of bits away from the patterns).
    ``seed`` seeds one trial: the patterns, the corruption and the update order get three
    independent streams spawned from it (``numpy.random.SeedSequence(seed)``), so trials with
    neighbouring seeds share no random numbers.
    """
    s_pat, s_cor, s_upd = (int(v) for v in np.random.SeedSequence(int(seed)).generate_state(3))
    xi = random_patterns(num_patterns, num_neurons, seed=s_pat)
    net = Hopfield(num_neurons)
    net.store(xi)
    probe = corrupt(xi, corruption, seed=s_cor)
    final, sweeps = net.settle(probe, max_sweeps=max_sweeps, seed=s_upd)
    m = overlap(final, xi)
    return {"overlap": float(m.mean()), "recalled": float((m >= 0.95).float().mean()),
            "overlap_start": float(overlap(probe, xi).mean()), "sweeps": sweeps}


def hopfield_capacity(num_neurons: int, loads: Sequence[float], trials: int = 3, corruption: float = 0.1,
                      seed: int = 0) -> list[dict]:
    """:func:`hopfield_recall` averaged over trials ``seed .. seed + trials - 1`` for each load alpha = P/N.

    P = round(alpha N), at least 1. Rows: ``load`` (P/N as realized), ``P``, ``N``, mean ``overlap``
    and ``recalled`` over trials, and ``recalled_sd`` (their standard deviation over trials).
    """
    rows = []
    for a in loads:
        p = max(1, int(round(a * num_neurons)))
        rs = [hopfield_recall(num_neurons, p, corruption, seed=seed + t) for t in range(trials)]
        rec = np.array([r["recalled"] for r in rs])
        rows.append({"load": p / num_neurons, "P": p, "N": num_neurons, "trials": trials,
                     "overlap": sum(r["overlap"] for r in rs) / trials, "recalled": float(rec.mean()),
                     "recalled_sd": float(rec.std(ddof=1)) if trials > 1 else 0.0})
    return rows


def half_recall_load(rows: Sequence[dict]) -> float:
    """The load at which the fraction recalled first falls through 1/2, linearly interpolated between grid loads.

    ``rows`` as from :func:`hopfield_capacity` for one N (sorted by load here). nan when it never
    falls below 1/2 on the grid; the first load when it starts below.
    """
    rs = sorted(rows, key=lambda r: r["load"])
    if rs and rs[0]["recalled"] < 0.5:
        return float(rs[0]["load"])
    for a, b in zip(rs, rs[1:], strict=False):
        if a["recalled"] >= 0.5 > b["recalled"]:
            return float(a["load"] + (a["recalled"] - 0.5) / (a["recalled"] - b["recalled"]) * (b["load"] - a["load"]))
    return float("nan")


# -- figures --------------------------------------------------------------------------------------
def plot_decision_boundary(predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, path: str | Path,
                           title: str = "", resolution: int = 200) -> Path:
    """Scatter 2-D points (n, 2) coloured by label and shade the regions of ``predict`` (grid (m, 2) -> labels (m,))."""
    x, y = x.detach().cpu().float(), y.detach().cpu()
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"decision boundaries are drawn for 2-D inputs, got shape {tuple(x.shape)}")
    lo, hi = x.min(0).values, x.max(0).values
    pad = 0.15 * (hi - lo).clamp_min(1e-3)
    gx, gy = torch.meshgrid(torch.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution),
                            torch.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution), indexing="xy")
    with torch.no_grad():
        z = predict(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).reshape(resolution, resolution).float().cpu()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.contourf(gx, gy, z, levels=[-2, 0.5, 2], colors=["#cfe0f5", "#f7d3c8"], alpha=0.8)
    ax.contour(gx, gy, z, levels=[0.5], colors="k", linewidths=1)
    pos = y > 0
    ax.scatter(x[~pos, 0], x[~pos, 1], s=14, c="#1f5fa8", label="class 0 / -1", edgecolors="none")
    ax.scatter(x[pos, 0], x[pos, 1], s=14, c="#c0392b", marker="s", label="class 1 / +1", edgecolors="none")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_aspect("equal", adjustable="box")
    return save_figure(fig, path, grid=False)

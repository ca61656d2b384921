"""Sweeps of the classic machines, as plain functions (tensors in, numbers out) and their figures.

- :func:`xor_ensemble` / :func:`xor_sweep`: many seeds of a one-hidden-layer MLP on the four XOR
  points, trained together by full-batch gradient descent (backpropagation, Rumelhart, Hinton &
  Williams 1986), each seed initialized exactly as :class:`whylearn.models.MLP` with that seed.
- :func:`perceptron_margin_sweep`: perceptron mistakes against Novikoff's (R/gamma)^2.
- :func:`lms_sweep`: final error of full-batch and single-sample LMS over a grid of step sizes mu.
- :func:`hopfield_capacity`: retrieval overlap against the load P/N (Amit et al. 1985).
- :func:`plot_decision_boundary`: data and learned boundary of any 2-D classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.data.toy import corrupt, random_patterns, separable, xor_points  # noqa: E402
from whylearn.models.adaline import lms_bounds, run_lms  # noqa: E402
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
    from whylearn.models.ensemble import MemberEnsemble

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
def lms_sweep(x: Tensor, y: Tensor, mus: Sequence[float], epochs: int = 20, seed: int = 0) -> dict:
    """Train from zero by full-batch LMS (steepest descent) and single-sample LMS for each mu.

    Returns dict with the bounds of :func:`whylearn.models.adaline.lms_bounds`, per-mu rows
    (``mu``, ``full_mse``, ``full_diverged``, ``lms_mse``, ``lms_diverged``), and the measured
    stability edges: the largest mu of the grid that did not diverge for each form.
    A run counts as diverged if its training MSE exceeded 1e8 times the initial one, or ended
    above the initial MSE (y^2 mean).
    """
    bounds = lms_bounds(x)
    mse0 = float(y.double().pow(2).mean())
    rows = []
    for mu in mus:
        full = run_lms(x, y, float(mu), epochs=epochs * 10, batch_size=x.shape[0], seed=None)
        single = run_lms(x, y, float(mu), epochs=epochs, batch_size=1, seed=seed)
        row = {"mu": float(mu)}
        for name, r in (("full", full), ("lms", single)):
            last = r["mse"][-1]
            row[f"{name}_mse"] = last if math.isfinite(last) else float("inf")
            row[f"{name}_diverged"] = bool(r["diverged"] or not last < mse0)
        rows.append(row)
    def edge(key):
        return max([r["mu"] for r in rows if not r[f"{key}_diverged"]], default=float("nan"))
    def first_bad(key):
        return min([r["mu"] for r in rows if r[f"{key}_diverged"]], default=float("nan"))
    return {**bounds, "rows": rows, "mse_initial": mse0, "mu_stable_full": edge("full"), "mu_diverge_full": first_bad("full"),
            "mu_stable_lms": edge("lms"), "mu_diverge_lms": first_bad("lms")}


# -- Hopfield ---------------------------------------------------------------------------------------
def hopfield_recall(num_neurons: int, num_patterns: int, corruption: float = 0.1, seed: int = 0,
                    max_sweeps: int = 30) -> dict[str, float]:
    """Store P random patterns in N neurons, corrupt each, settle; mean final overlap and fraction recalled.

    A pattern counts as recalled when the settled state's overlap with it is at least 0.95
    (the fixed points of a loaded network sit a few percent of bits away from the patterns).
    """
    xi = random_patterns(num_patterns, num_neurons, seed=seed)
    net = Hopfield(num_neurons)
    net.store(xi)
    probe = corrupt(xi, corruption, seed=seed + 1)
    final, sweeps = net.settle(probe, max_sweeps=max_sweeps, seed=seed + 2)
    m = overlap(final, xi)
    return {"overlap": float(m.mean()), "recalled": float((m >= 0.95).float().mean()),
            "overlap_start": float(overlap(probe, xi).mean()), "sweeps": sweeps}


def hopfield_capacity(num_neurons: int, loads: Sequence[float], trials: int = 3, corruption: float = 0.1,
                      seed: int = 0) -> list[dict]:
    """:func:`hopfield_recall` averaged over ``trials`` seeds for each load alpha = P/N (P = round(alpha N), >= 1)."""
    rows = []
    for a in loads:
        p = max(1, int(round(a * num_neurons)))
        rs = [hopfield_recall(num_neurons, p, corruption, seed=seed + 100 * t) for t in range(trials)]
        rows.append({"load": p / num_neurons, "P": p, "N": num_neurons,
                     "overlap": sum(r["overlap"] for r in rs) / trials, "recalled": sum(r["recalled"] for r in rs) / trials})
    return rows


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

"""The sweeps of the classic learning rules' story: many tiny models per run, each sweep one study.

Each is a :class:`~whylearn.studies.base.SweepStudy` (the Study protocol, :mod:`whylearn.studies.base`):
``whylearn-train experiment=<name>`` builds it from the experiment's ``study:`` node (``conf/study/``), it
runs the whole sweep (one logged step per sweep point, with a progress display), returns its table for
``summary.json`` and draws its figure into ``<run dir>/figures``. No Lightning fit around it.

- :class:`XORSweep`: XOR success rate over seeds per hidden width and activation (Rumelhart et al. 1986).
- :class:`PerceptronMarginSweep`: perceptron mistakes against Novikoff's (R/gamma)^2 bound.
- :class:`LMSSweep`: Widrow-Hoff LMS over step sizes against the exact stability edges.
- :class:`HopfieldCapacitySweep`: retrieval against the load P/N (Amit, Gutfreund & Sompolinsky 1985).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from whylearn.analysis import classic as sweeps  # noqa: E402
from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.models.adaline import lms_mean_square_edge  # noqa: E402
from whylearn.studies.base import SweepStudy  # noqa: E402


class XORSweep(SweepStudy):
    """Success rate (4/4 on XOR) over seeds of MLPs 2 -> width -> 2 for each width and activation.

    See :func:`whylearn.analysis.classic.xor_members`: every network of the sweep (each width,
    activation and seed) is trained at once, as one vectorized ensemble, by full-batch SGD with
    momentum on the squared error, from the initialization :class:`whylearn.models.MLP` gives each seed.
    """

    def __init__(self, widths: Sequence[int] = (1, 2, 3, 4, 8), activations: Sequence[str] = ("step", "sigmoid", "tanh", "relu"),
                 num_seeds: int = 100, steps: int = 2000, lr: float = 0.5, momentum: float = 0.9, loss: str = "mse",
                 seed: int = 0) -> None:
        self.widths, self.activations = [int(w) for w in widths], list(activations)
        self.num_seeds, self.steps, self.lr, self.momentum, self.loss = (
            int(num_seeds),
            int(steps),
            float(lr),
            float(momentum),
            loss,
        )
        self.seed = int(seed)

    @property
    def seeds(self) -> range:
        """The sweep's seeds: ``seed, seed + 1, ..., seed + num_seeds - 1``."""
        return range(self.seed, self.seed + self.num_seeds)

    def run_sweep(self) -> dict[str, Any]:
        self.announce(len(self.widths) * len(self.activations), "XOR: widths x activations")
        rows = sweeps.xor_sweep(self.widths, self.activations, self.seeds, steps=self.steps, lr=self.lr,
                                momentum=self.momentum, loss=self.loss)  # the whole sweep as one ensemble
        for row in rows:
            self.point_done({f"xor/success_rate/{row['activation']}": row["success_rate"], "xor/width": row["width"]})
        out = {"rows": rows, "num_seeds": self.num_seeds, "seeds": [self.seed, self.seed + self.num_seeds - 1],
               "success_rate": {f"{r['activation']}/w{r['width']}": r["success_rate"] for r in rows}}
        # flat keys for the reference block (Rumelhart et al. 1986: 2 sigmoid units; width 1 never suffices)
        out.update({f"xor/success_rate/{r['activation']}/w{r['width']}": r["success_rate"] for r in rows})
        return out

    def plot(self, result: dict[str, Any], figures: Path) -> None:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for act in self.activations:
            rs = [r for r in result["rows"] if r["activation"] == act]
            ax.plot([r["width"] for r in rs], [r["success_rate"] for r in rs], "o-", label=act)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width")
        ax.set_ylabel(f"success rate (4/4) over {result['num_seeds']} seeds")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title("XOR by backpropagation, one hidden layer")
        ax.grid(alpha=0.3)
        ax.legend()
        save_figure(fig, figures / "xor_success.png", grid=False)


class PerceptronMarginSweep(SweepStudy):
    """Perceptron mistakes against Novikoff's (R/gamma)^2 over margins, dimensions and seeds."""

    def __init__(self, gammas: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.4), dims: Sequence[int] = (2, 10, 100),
                 num_seeds: int = 10, n: int = 500, radius: float = 1.0, max_epochs: int = 100_000, seed: int = 0) -> None:
        self.gammas, self.dims = [float(g) for g in gammas], [int(d) for d in dims]
        self.num_seeds, self.n, self.radius, self.max_epochs = int(num_seeds), int(n), float(radius), int(max_epochs)
        self.seed = int(seed)

    def run_sweep(self) -> dict[str, Any]:
        rows = []
        self.announce(len(self.gammas) * len(self.dims), "perceptron: margins x dimensions")
        seeds = range(self.seed, self.seed + self.num_seeds)  # seed s: data sets s .. s + num_seeds - 1
        for g in self.gammas:
            for d in self.dims:
                rs = sweeps.perceptron_margin_sweep([g], [d], seeds, self.n, self.radius, self.max_epochs)
                rows += rs
                self.point_done({f"perceptron/max_mistakes/d{d}": max(r["mistakes"] for r in rs), "perceptron/gamma": g})
        within = all(r["mistakes"] <= r["bound"] for r in rows)
        return {"rows": rows, "all_separated": all(r["separated"] for r in rows), "all_within_bound": within,
                "max_mistakes_over_bound": max(r["mistakes"] / r["bound"] for r in rows),
                "seeds": [self.seed, self.seed + self.num_seeds - 1]}

    def plot(self, result: dict[str, Any], figures: Path) -> None:
        rows = result["rows"]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for d in self.dims:
            rs = [r for r in rows if r["d"] == d]
            ax.scatter([r["bound"] for r in rs], [r["mistakes"] for r in rs], s=12, alpha=0.7, label=f"d = {d}")
        lo = min(r["bound"] for r in rows)
        hi = max(r["bound"] for r in rows)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="mistakes = (R/gamma)^2")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Novikoff bound (R/gamma)^2 (measured, with bias input)")
        ax.set_ylabel("perceptron mistakes until separation")
        ax.set_title(f"Perceptron vs Novikoff bound, {self.num_seeds} seeds per point", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        save_figure(fig, figures / "perceptron_margin_sweep.png", grid=False)


class LMSSweep(SweepStudy):
    """Widrow-Hoff LMS over a grid of step sizes mu: full batch (steepest descent) and single sample.

    See :func:`whylearn.analysis.classic.lms_sweep`. The full-batch form runs on the training set;
    the single-sample rule runs on fresh i.i.d. Gaussian samples from the datamodule's distribution
    (R = ``datamodule.corr``, the configured spectrum; target w*.x + noise), ``num_seeds`` runs with
    seeds ``seed, seed + 1, ..., seed + num_seeds - 1``. The grid: ``num_mu`` values spaced
    geometrically from ``mu_min_factor`` x the exact mean-square edge of the single-sample rule to
    ``mu_max_factor`` x 2/lambda_max, plus ``edge_factors`` x each of the two exact edges.

    Args:
        data: the datamodule (``data: regression``'s node under ``study.data``): the training set of the
            full-batch form, the distribution of the single-sample rule.
        steps: single-sample updates per run. full_steps: full-batch steps.
        record_every: steps between recorded excess MSEs. threshold_decades: growth over the second
            half of a run (decades of excess MSE) above which it counts as diverged.

    Raises:
        TypeError: the datamodule has no input correlation matrix ``corr`` and target ``w_star``
            (``whylearn.data.RegressionDataModule``).
    """

    def __init__(self, data, num_mu: int = 25, mu_min_factor: float = 0.05, mu_max_factor: float = 2.0,
                 edge_factors: Sequence[float] = (0.9, 0.95, 1.05, 1.1, 1.25, 1.5), steps: int = 20_000,
                 num_seeds: int = 16, full_steps: int = 100, record_every: int = 100, threshold_decades: float = 1.0,
                 seed: int = 0) -> None:
        if steps < 2 * record_every or num_seeds < 1 or num_mu < 0:
            raise ValueError(f"need steps >= 2 * record_every, num_seeds >= 1 and num_mu >= 0; got steps={steps}, "
                             f"record_every={record_every}, num_seeds={num_seeds}, num_mu={num_mu}")
        self.num_mu, self.mu_min_factor, self.mu_max_factor = int(num_mu), float(mu_min_factor), float(mu_max_factor)
        self.edge_factors = [float(f) for f in edge_factors]
        self.steps, self.num_seeds, self.full_steps = int(steps), int(num_seeds), int(full_steps)
        self.record_every, self.threshold_decades, self.seed = int(record_every), float(threshold_decades), int(seed)
        self.data = data

    def run_sweep(self) -> dict[str, Any]:
        dm = self.data
        dm.prepare_data()
        dm.setup("fit")
        if getattr(dm, "corr", None) is None or getattr(dm, "w_star", None) is None:
            raise TypeError(f"the LMS sweep needs a datamodule with the inputs' correlation matrix `corr` and the target "
                            f"weights `w_star` (whylearn.data.RegressionDataModule); got {type(dm).__name__}")
        x, y = dm.train.x.cpu().double(), dm.train.y.cpu().double()
        edge_full = sweeps.lms_bounds(x)["mu_max_mean"]
        edge_ms = lms_mean_square_edge(torch.linalg.eigvalsh(dm.corr.double()))
        lo, hi = self.mu_min_factor * edge_ms, self.mu_max_factor * edge_full
        grid = torch.logspace(math.log10(lo), math.log10(hi), self.num_mu, dtype=torch.float64).tolist() if self.num_mu else []
        mus = sorted(set(grid + [f * edge_ms for f in self.edge_factors] + [f * edge_full for f in self.edge_factors]))
        res = sweeps.lms_sweep(x, y, mus, dm.corr, dm.w_star, float(dm.noise), steps=self.steps,
                               seeds=range(self.seed, self.seed + self.num_seeds), full_steps=self.full_steps,
                               record_every=self.record_every, threshold_decades=self.threshold_decades)
        self.announce(len(res["rows"]), "LMS: step sizes")
        for r in res["rows"]:
            self.point_done({"lms/mu": r["mu"], "lms/full_diverged": float(r["full_diverged"]),
                             "lms/runs_diverged": r["lms_runs_diverged"], "lms/lyapunov": r["lms_lyapunov"]})
        return {**getattr(dm, "describe", dict)(), **res}  # the data set (sizes, name) as a training run states it

    def plot(self, result: dict[str, Any], figures: Path) -> None:
        rows = result["rows"]
        mus = [r["mu"] for r in rows]
        edge = result["lms/mu_edge_ms"]
        cap = 1e3 * result["mse_initial"]
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
        ax = axes[0]
        ax.plot(mus, [min(r["full_mse"], cap) for r in rows], "o-", ms=3, label="full batch: training MSE")
        ax.plot(mus, [min(r["lms_excess_mse_median"] + result["noise_var"], cap) for r in rows], "s-", ms=3,
                label=f"single sample: MSE, median of {len(result['lms/seeds'])} runs")
        for v, c, ls, lab in ((result["full/mu_edge"], "C0", "--", "2/lambda_max (full batch, exact)"),
                              (edge, "C3", "-", "mean-square edge (Feuer & Weinstein 1985)"),
                              (result["lms/mu_necessary"], "C1", ":", "2/trace (necessary)"),
                              (result["lms/mu_sufficient"], "C2", ":", "2/(3 trace) (sufficient)")):
            ax.axvline(v, color=c, ls=ls, lw=1.2, label=lab)
        ax.axhline(result["mse_initial"], color="gray", ls=":", lw=1, label="initial MSE (w = 0)")
        ax.set(xscale="log", yscale="log", xlabel="step size mu", ylabel=f"MSE at the end (capped at {cap:.2g})",
               title="Where LMS converges")
        ax.legend(fontsize=6)
        ax = axes[1]
        steps = result["curves"]["steps"]
        near = [i for i, r in enumerate(rows) if any(abs(r["mu_over_edge_ms"] - f) < 1e-9 for f in (0.9, 0.95, 1.05, 1.1))]
        for k, i in enumerate(near):
            meas = [min(v, 1e30) for v in result["curves"]["ensemble_mean"][i]]
            theo = [min(v, 1e30) for v in result["curves"]["theory"][i]]
            ax.plot(steps, meas, color=f"C{k}", lw=1.2, label=f"mu = {rows[i]['mu_over_edge_ms']:.2f} x edge, measured mean")
            ax.plot(steps, theo, color=f"C{k}", ls="--", lw=1, label="exact recursion")
        ax.set(yscale="log", xlabel="single-sample updates", ylabel="excess MSE (mean over runs)",
               title="Mean square beside the exact recursion (Gaussian inputs)")
        ax.legend(fontsize=6)
        ax = axes[2]
        sel = [r for r in rows if r["mu"] < 3 * edge]
        ax.plot([r["mu_over_edge_ms"] for r in sel], [r["lms_lyapunov"] for r in sel], "o-", ms=3,
                label="top Lyapunov exponent of a run (measured, mean)")
        ax.plot([r["mu_over_edge_ms"] for r in sel], [r["lms_ms_rate_theory"] for r in sel], "--",
                label="1/2 log of the mean-square growth rate (exact)")
        ax.axhline(0, color="k", lw=0.8)
        ax.axvline(1, color="C3", lw=1)
        ax.set(xscale="log", xlabel="mu / mean-square edge", ylabel="log growth per update",
               title="A single run vs the mean square")
        ax.legend(fontsize=6)
        for a in axes:
            a.grid(alpha=0.3, which="both")
        fig.suptitle("Widrow-Hoff LMS: full batch and single sample against the exact edges", fontsize=10)
        save_figure(fig, figures / "lms_mu_sweep.png", grid=False)


class HopfieldCapacitySweep(SweepStudy):
    """Retrieval from ``corruption`` of the bits against the load P/N (Amit, Gutfreund & Sompolinsky 1985: 0.138).

    ``trials`` networks per (N, load), with seeds ``seed .. seed + trials - 1``. Summary: the table
    (``rows``, with the standard deviation of the fraction recalled over trials), the largest load
    with at least half recalled, and ``hopfield/half_recall_load/N<N>``, the interpolated load where
    the fraction recalled falls through 1/2.
    """

    def __init__(
        self,
        num_neurons: Sequence[int] = (100, 400),
        loads: Sequence[float] = (0.02, 0.05, 0.08, 0.1, 0.12, 0.14, 0.16, 0.2, 0.25, 0.3),
        trials: int = 5,
        corruption: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.num_neurons, self.loads = [int(n) for n in num_neurons], [float(a) for a in loads]
        self.trials, self.corruption, self.seed = int(trials), float(corruption), int(seed)

    def run_sweep(self) -> dict[str, Any]:
        rows = []
        self.announce(len(self.num_neurons) * len(self.loads), "Hopfield: sizes x loads")
        for n in self.num_neurons:
            for a in self.loads:
                r = sweeps.hopfield_capacity(n, [a], self.trials, self.corruption, self.seed)[0]
                rows.append(r)
                self.point_done(
                    {f"hopfield/overlap/N{n}": r["overlap"], f"hopfield/recalled/N{n}": r["recalled"], "hopfield/load": r["load"]}
                )
        # the measured capacity: the largest load at which at least half of the patterns were recalled,
        # and the load where the fraction recalled falls through 1/2 (interpolated)
        cap = {
            f"N{n}": max([r["load"] for r in rows if r["N"] == n and r["recalled"] >= 0.5], default=0.0) for n in self.num_neurons
        }
        out: dict[str, Any] = {"rows": rows, "capacity_half_recalled": cap, "corruption": self.corruption,
                               "trials": self.trials, "seeds": [self.seed, self.seed + self.trials - 1]}
        for n in self.num_neurons:
            out[f"hopfield/half_recall_load/N{n}"] = sweeps.half_recall_load([r for r in rows if r["N"] == n])
        return out

    def plot(self, result: dict[str, Any], figures: Path) -> None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for n in self.num_neurons:
            rs = [r for r in result["rows"] if r["N"] == n]
            axes[0].plot([r["load"] for r in rs], [r["overlap"] for r in rs], "o-", ms=4, label=f"N = {n}")
            axes[1].plot([r["load"] for r in rs], [r["recalled"] for r in rs], "o-", ms=4, label=f"N = {n}")
        for ax, yl in zip(axes, ("mean overlap after settling", "fraction recalled (overlap >= 0.95)"), strict=False):
            ax.axvline(0.138, color="k", ls="--", lw=1, label="0.138 (Amit et al. 1985)")
            ax.set_xlabel("load P / N")
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"Hopfield capacity: probes with {result['corruption']:.0%} of bits flipped", fontsize=9)
        save_figure(fig, figures / "hopfield_capacity.png", grid=False)

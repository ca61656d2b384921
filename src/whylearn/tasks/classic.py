"""Tasks for the classic learning rules, applied by hand (no autograd), and for the sweeps of their story.

- :class:`PerceptronTask`: Rosenblatt's rule on mistakes, epoch after epoch until an epoch
  without mistakes (``trainer.max_epochs`` is the cap); logs mistakes per epoch and in total.
- :class:`HopfieldTask`: Hebbian storage of the training patterns, retrieval of the corrupted
  test probes by asynchronous updates.
- :class:`SweepTask` and its subclasses run a whole sweep of tiny models inside one fit
  (one Lightning step per sweep point): :class:`XORSweepTask`, :class:`PerceptronMarginSweepTask`,
  :class:`LMSSweepTask`, :class:`HopfieldCapacityTask`. Each returns its table in
  ``summary.json`` and draws its figure into ``<run dir>/figures``.

Every rule application counts as one optimizer step in Lightning's progress tracker, as
:class:`~whylearn.tasks.base.FastTask` does; scalars go through :func:`~whylearn.tasks.base.log_scalars`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from whylearn.analysis import classic as sweeps  # noqa: E402
from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.data.base import Chunk  # noqa: E402
from whylearn.models.adaline import lms_mean_square_edge
from whylearn.models.hopfield import Hopfield, overlap  # noqa: E402
from whylearn.models.perceptron import Perceptron, _pm1, linearly_separable, margin, novikoff_bound  # noqa: E402
from whylearn.tasks.analysis import AnalysisTask  # noqa: E402
from whylearn.tasks.base import HistoryInCheckpoint, count_steps, get_history, log_scalars  # noqa: E402


def _figures_dir(task: L.LightningModule) -> Path:
    return Path(task.trainer.default_root_dir) / "figures"


def _samples(chunk) -> Any:
    xs, ys = chunk[0], chunk[1]  # a Chunk (xs, ys) of K mini-batches, or a plain (x, y) batch (its samples)
    if not isinstance(chunk, Chunk):
        xs, ys = [xs], [ys]
    for x, y in zip(xs, ys, strict=False):
        yield from zip(x, y, strict=False)


# -- the perceptron ----------------------------------------------------------------------------------
class PerceptronTask(HistoryInCheckpoint):
    """Train a :class:`~whylearn.models.Perceptron` by the perceptron rule (Rosenblatt 1958).

    Each training sample of each mini-batch is visited in the datamodule's (seeded, shuffled)
    order; a mistake (y (w.x + b) <= 0) moves the weights by lr * y * x. Each visit counts as one
    step. After an epoch without mistakes training stops (the data were separated); otherwise
    it runs until ``trainer.max_epochs``. Labels 0/1 are used as -1/+1.

    Logs: ``perceptron/mistakes_epoch``, ``perceptron/mistakes_total``, ``train/acc_epoch``
    (accuracy of the weights at the end of each epoch), ``val/acc``, ``test/acc``.
    Summary: train/val/test accuracy, mistakes per epoch and total, whether the training set was
    separated (``separated``) and whether it is separable at all (``linearly_separable``, by a linear
    program), and Novikoff's bound (R/gamma)^2 with the data's known separating hyperplane (toy
    ``separable`` data) and with the learned one if it separates (any separating hyperplane gives a
    valid bound; the learned one gives a loose one). Where the bound does not apply (a training set
    that is not separable, e.g. with label noise) ``novikoff/applies`` is False with the reason.

    Args:
        model: the perceptron. lr: step size (irrelevant from w = 0, kept for completeness).
        check_separable: also decide whether the training set is linearly separable at all, by a
            linear program (:func:`~whylearn.models.perceptron.linearly_separable`), reported as
            ``linearly_separable``.
    """

    def __init__(self, model: Perceptron, lr: float = 1.0, check_separable: bool = True,
                 num_classes: int | None = None) -> None:
        super().__init__()
        if not isinstance(model, Perceptron):
            raise TypeError(f"PerceptronTask trains a whylearn.models.Perceptron, got {type(model).__name__}")
        self.automatic_optimization = False
        self.model, self.lr, self.check_separable = model, float(lr), bool(check_separable)
        self.mistakes_per_epoch: list[int] = []
        self._epoch_mistakes = 0
        self._eval_sum = [0, 0]  # correct, seen

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        self._epoch_mistakes = 0

    def training_step(self, chunk, chunk_idx: int) -> None:
        n = 0
        for x, y in _samples(chunk):
            self._epoch_mistakes += int(self.model.perceptron_update(x, 2 * int(y) - 1, self.lr))
            n += 1
        count_steps(self.trainer, n)

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor) -> float:
        return float((self.model.predict(x) == _pm1(y)).float().mean())

    def on_train_epoch_end(self) -> None:
        self.mistakes_per_epoch.append(self._epoch_mistakes)
        dm = self.trainer.datamodule
        log_scalars(self, {"perceptron/mistakes_epoch": self._epoch_mistakes,
                           "perceptron/mistakes_total": sum(self.mistakes_per_epoch),
                           "train/acc_epoch": self.accuracy(dm.train.x, dm.train.y)})
        if self._epoch_mistakes == 0:
            self.trainer.should_stop = True

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self._eval_sum[0] += int((self.model.predict(x) == _pm1(y)).sum())
        self._eval_sum[1] += len(y)

    def _eval_end(self, key: str) -> None:
        c, n = self._eval_sum
        self._eval_sum = [0, 0]
        if n:
            log_scalars(self, {key: c / n})

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val/acc")

    test_step = validation_step

    def on_test_epoch_end(self) -> None:
        self._eval_end("test/acc")

    def summary_metrics(self, datamodule) -> dict[str, Any]:
        dm = datamodule
        train_x, train_y = dm.train.x.cpu(), dm.train.y.cpu()
        out: dict[str, Any] = {
            "train/acc": self.accuracy(train_x, train_y), "val/acc": self.accuracy(dm.val.x.cpu(), dm.val.y.cpu()),
            "mistakes_total": int(sum(self.mistakes_per_epoch)), "mistakes_per_epoch": list(self.mistakes_per_epoch),
            "epochs_run": len(self.mistakes_per_epoch),
            "separated": bool(self.mistakes_per_epoch and self.mistakes_per_epoch[-1] == 0),
        }
        if self.check_separable:
            out["linearly_separable"] = linearly_separable(train_x, train_y)
        out.update(self._novikoff(dm, train_x, train_y, out))
        if out["separated"]:
            w, b = self.model.weight.detach().cpu().double(), float(self.model.bias) * self.model.bias_input
            gamma_hat = margin(train_x.flatten(1).double(), train_y, w, b if self.model.use_bias else 0.0)
            r = (
                float(self.model.augmented(train_x.double()).norm(dim=1).max())
                if self.model.use_bias
                else float(train_x.flatten(1).norm(dim=1).max())
            )
            out.update({"learned/margin": gamma_hat, "learned/bound": (r / gamma_hat) ** 2 if gamma_hat > 0 else None})
        self._plot_mistakes()
        return out

    def _novikoff(self, dm, train_x: Tensor, train_y: Tensor, out: dict[str, Any]) -> dict[str, Any]:
        """Novikoff's bound where it applies: the data's known hyperplane (w*, b*) separates the training set.

        It does not apply to a training set that is not linearly separable (label noise, XOR,
        MNIST 4 vs 9 at 20x20): no hyperplane has a positive margin, and the perceptron cycles
        forever (Minsky & Papert 1969); then ``novikoff/applies`` is False with the reason, and no
        bound is reported. (A separable training set without a known hyperplane gets no bound either.)
        """
        bias_input = self.model.bias_input if self.model.use_bias else None
        w_star = getattr(dm, "w_star", None)
        if out.get("linearly_separable") is False:
            return {"novikoff/applies": False,
                    "novikoff/reason": "the training set is not linearly separable (linear program): no hyperplane has a "
                                       "positive margin, so the bound does not apply and the perceptron cannot stop"}
        if w_star is None:
            return {}
        w, b = w_star.double(), float(dm.b_star)
        if margin(train_x.flatten(1).double(), train_y, w, b) <= 0:  # the sign of the margin: the same in any space
            noisy = getattr(dm, "noisy_indices", None)
            why = f" ({len(noisy)} training labels flipped by label noise)" if noisy is not None and len(noisy) else ""
            return {"novikoff/applies": False,
                    "novikoff/reason": f"the data's hyperplane w* no longer separates the training set{why}; "
                                       "no bound is computed from it"}
        nb = novikoff_bound(train_x, train_y, w_star, dm.b_star, bias_input)
        return {"novikoff/applies": True, "novikoff/R": nb["R"], "novikoff/gamma": nb["gamma"], "novikoff/bound": nb["bound"],
                "novikoff/within_bound": out["mistakes_total"] <= nb["bound"],
                "novikoff/mistakes_over_bound": out["mistakes_total"] / nb["bound"]}

    def _plot_mistakes(self) -> None:
        if not self.mistakes_per_epoch:
            return
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ep = list(range(1, len(self.mistakes_per_epoch) + 1))
        ax.plot(ep, self.mistakes_per_epoch, "o-" if len(ep) < 40 else "-", markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mistakes (updates) in the epoch")
        ax.set_title(f"Perceptron: {sum(self.mistakes_per_epoch)} mistakes in {len(ep)} epochs")
        top, low = max(self.mistakes_per_epoch), min(self.mistakes_per_epoch)
        if top > 20 * max(low, 1):  # a wide range (e.g. falling to 0): log-like; otherwise linear, with its ticks
            ax.set_yscale("symlog", linthresh=1)
        else:
            ax.set_ylim(0, 1.05 * top + 1)
        ax.grid(alpha=0.3)
        save_figure(fig, _figures_dir(self) / "mistakes_per_epoch.png", grid=False)


# -- the Hopfield network ------------------------------------------------------------------------------
class HopfieldTask(HistoryInCheckpoint):
    """Store the training patterns in a :class:`~whylearn.models.Hopfield` network; retrieve the test probes.

    Training applies Hebb's rule once per stored pattern (one step each); the test settles
    every corrupted probe by asynchronous sweeps and logs the mean overlap with its stored
    pattern before and after (``test/overlap_start``, ``test/overlap``) and the fraction
    recalled (overlap >= 0.95, ``test/recalled``). With N = 100 neurons the patterns are drawn
    as 10x10 images: stored, corrupted, retrieved.

    Args:
        model: the network. max_sweeps: cap on asynchronous sweeps per probe. seed: update order.
    """

    def __init__(self, model: Hopfield, max_sweeps: int = 30, seed: int = 0, num_classes: int | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model, self.max_sweeps, self.seed = model, int(max_sweeps), int(seed)
        self.result: dict[str, Any] = {}

    def training_step(self, chunk, chunk_idx: int) -> None:
        for x, _ in _samples(chunk):
            self.model.store(x[None])
            count_steps(self.trainer)

    def on_train_epoch_end(self) -> None:
        self.trainer.should_stop = True  # Hebbian storage is one pass

    def on_test_epoch_start(self) -> None:
        self._parts: list[dict[str, Tensor]] = []

    def test_step(self, batch, batch_idx: int) -> None:
        probes, idx = batch
        stored = self.trainer.datamodule.train.x.to(probes.device)[idx]
        settled, sweeps = self.model.settle(probes, self.max_sweeps, seed=self.seed + batch_idx)
        self._parts.append({"probes": probes.cpu(), "settled": settled.cpu(), "stored": stored.cpu(),
                            "sweeps": torch.tensor([sweeps])})

    def on_test_epoch_end(self) -> None:
        r = {k: torch.cat([p[k] for p in self._parts]) for k in ("probes", "settled", "stored", "sweeps")}
        m0, m1 = overlap(r["probes"], r["stored"]), overlap(r["settled"], r["stored"])
        self.result = r
        log_scalars(self, {"test/overlap_start": m0.mean(), "test/overlap": m1.mean(),
                           "test/recalled": (m1 >= 0.95).float().mean(), "test/sweeps": r["sweeps"].max()})

    def summary_metrics(self, datamodule) -> dict[str, Any]:
        hist = get_history(self)
        out = {k: hist.last(k) for k in ("test/overlap_start", "test/overlap", "test/recalled", "test/sweeps")}
        n, p = self.model.num_neurons, self.model.num_stored
        out.update({"N": n, "P": p, "load": p / n})
        if self.result and n == 100:
            self._plot_images(getattr(datamodule, "pattern_names", []))
        return out

    def _plot_images(self, names: Sequence[str]) -> None:
        r = self.result
        k = min(len(r["probes"]), 8)
        fig, axes = plt.subplots(3, k, figsize=(1.3 * k, 4.2), squeeze=False)
        for j in range(k):
            for i, (key, label) in enumerate((("stored", "stored"), ("probes", "corrupted"), ("settled", "retrieved"))):
                ax = axes[i, j]
                ax.imshow(r[key][j].reshape(10, 10), cmap="gray_r", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(label, fontsize=8)
            m = float(overlap(r["settled"][j], r["stored"][j]))
            axes[2, j].set_xlabel(f"m = {m:.2f}", fontsize=8)
        fig.suptitle(f"Hopfield network, N = 100, P = {self.model.num_stored}", fontsize=9)
        save_figure(fig, _figures_dir(self) / "hopfield_images.png", grid=False)


# -- sweeps ---------------------------------------------------------------------------------------
class SweepTask(AnalysisTask):
    """An analysis that runs a sweep of tiny models: :meth:`run_sweep` once, one step per sweep point.

    Subclasses implement :meth:`run_sweep` (-> dict kept as ``self.result``, rows under ``rows``;
    it calls :meth:`~whylearn.tasks.analysis.AnalysisTask.point_done` after each point) and
    :meth:`plot` (figures into the run directory's ``figures/``, also logged to W&B). The datamodule
    and model of the config are the sweep's base point (used for shapes and checks; each sweep
    point builds its own). Use with ``trainer.max_epochs: 1`` and ``test_after_fit: false``.
    """

    def __init__(self, model: nn.Module | None = None, num_classes: int | None = None) -> None:
        super().__init__(None, model)

    def run_sweep(self) -> dict[str, Any]:
        raise NotImplementedError

    def plot(self, result: dict[str, Any], figures: Path) -> None:
        raise NotImplementedError

    def run_analysis(self, out_dir: Path) -> dict[str, Any]:
        result = self.run_sweep()
        self.plot(result, out_dir / "figures")
        return result


class XORSweepTask(SweepTask):
    """Success rate (4/4 on XOR) over seeds of MLPs 2 -> width -> 2 for each width and activation.

    See :func:`whylearn.analysis.classic.xor_members`: every network of the sweep (each width,
    activation and seed) is trained at once, as one vectorized ensemble, by full-batch SGD with
    momentum on the squared error, from the initialization :class:`whylearn.models.MLP` gives each seed.
    """

    def __init__(self, widths: Sequence[int] = (1, 2, 3, 4, 8), activations: Sequence[str] = ("step", "sigmoid", "tanh", "relu"),
                 num_seeds: int = 100, steps: int = 2000, lr: float = 0.5, momentum: float = 0.9, loss: str = "mse",
                 seed: int = 0, model: nn.Module | None = None, num_classes: int | None = None) -> None:
        super().__init__(model)
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


class PerceptronMarginSweepTask(SweepTask):
    """Perceptron mistakes against Novikoff's (R/gamma)^2 over margins, dimensions and seeds."""

    def __init__(self, gammas: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.4), dims: Sequence[int] = (2, 10, 100),
                 num_seeds: int = 10, n: int = 500, radius: float = 1.0, max_epochs: int = 100_000, seed: int = 0,
                 model: nn.Module | None = None, num_classes: int | None = None) -> None:
        super().__init__(model)
        self.gammas, self.dims = [float(g) for g in gammas], [int(d) for d in dims]
        self.num_seeds, self.n, self.radius, self.max_epochs = int(num_seeds), int(n), float(radius), int(max_epochs)
        self.seed = int(seed)

    def run_sweep(self) -> dict[str, Any]:
        rows = []
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


class LMSSweepTask(SweepTask):
    """Widrow-Hoff LMS over a grid of step sizes mu: full batch (steepest descent) and single sample.

    See :func:`whylearn.analysis.classic.lms_sweep`. The full-batch form runs on the training set;
    the single-sample rule runs on fresh i.i.d. Gaussian samples from the datamodule's distribution
    (R = ``datamodule.corr``, the configured spectrum; target w*.x + noise), ``num_seeds`` runs with
    seeds ``seed, seed + 1, ..., seed + num_seeds - 1``. The grid: ``num_mu`` values spaced
    geometrically from ``mu_min_factor`` x the exact mean-square edge of the single-sample rule to
    ``mu_max_factor`` x 2/lambda_max, plus ``edge_factors`` x each of the two exact edges.

    Args:
        steps: single-sample updates per run. full_steps: full-batch steps.
        record_every: steps between recorded excess MSEs. threshold_decades: growth over the second
            half of a run (decades of excess MSE) above which it counts as diverged.

    Raises:
        TypeError: the datamodule has no input correlation matrix ``corr`` and target ``w_star``
            (use ``data: regression``).
    """

    def __init__(self, num_mu: int = 25, mu_min_factor: float = 0.05, mu_max_factor: float = 2.0,
                 edge_factors: Sequence[float] = (0.9, 0.95, 1.05, 1.1, 1.25, 1.5), steps: int = 20_000,
                 num_seeds: int = 16, full_steps: int = 100, record_every: int = 100, threshold_decades: float = 1.0,
                 seed: int = 0, model: nn.Module | None = None, num_classes: int | None = None) -> None:
        super().__init__(model)
        if steps < 2 * record_every or num_seeds < 1 or num_mu < 0:
            raise ValueError(f"need steps >= 2 * record_every, num_seeds >= 1 and num_mu >= 0; got steps={steps}, "
                             f"record_every={record_every}, num_seeds={num_seeds}, num_mu={num_mu}")
        self.num_mu, self.mu_min_factor, self.mu_max_factor = int(num_mu), float(mu_min_factor), float(mu_max_factor)
        self.edge_factors = [float(f) for f in edge_factors]
        self.steps, self.num_seeds, self.full_steps = int(steps), int(num_seeds), int(full_steps)
        self.record_every, self.threshold_decades, self.seed = int(record_every), float(threshold_decades), int(seed)

    def run_sweep(self) -> dict[str, Any]:
        dm = self.trainer.datamodule
        if getattr(dm, "corr", None) is None or getattr(dm, "w_star", None) is None:
            raise TypeError(f"the LMS sweep needs a datamodule with the inputs' correlation matrix `corr` and the target "
                            f"weights `w_star` (data: regression); got {type(dm).__name__}")
        x, y = dm.train.x.cpu().double(), dm.train.y.cpu().double()
        edge_full = sweeps.lms_bounds(x)["mu_max_mean"]
        edge_ms = lms_mean_square_edge(torch.linalg.eigvalsh(dm.corr.double()))
        lo, hi = self.mu_min_factor * edge_ms, self.mu_max_factor * edge_full
        grid = torch.logspace(math.log10(lo), math.log10(hi), self.num_mu, dtype=torch.float64).tolist() if self.num_mu else []
        mus = sorted(set(grid + [f * edge_ms for f in self.edge_factors] + [f * edge_full for f in self.edge_factors]))
        res = sweeps.lms_sweep(x, y, mus, dm.corr, dm.w_star, float(dm.noise), steps=self.steps,
                               seeds=range(self.seed, self.seed + self.num_seeds), full_steps=self.full_steps,
                               record_every=self.record_every, threshold_decades=self.threshold_decades)
        for r in res["rows"]:
            self.point_done({"lms/mu": r["mu"], "lms/full_diverged": float(r["full_diverged"]),
                             "lms/runs_diverged": r["lms_runs_diverged"], "lms/lyapunov": r["lms_lyapunov"]})
        return res

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


class HopfieldCapacityTask(SweepTask):
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
        model: nn.Module | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(model)
        self.num_neurons, self.loads = [int(n) for n in num_neurons], [float(a) for a in loads]
        self.trials, self.corruption, self.seed = int(trials), float(corruption), int(seed)

    def run_sweep(self) -> dict[str, Any]:
        rows = []
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

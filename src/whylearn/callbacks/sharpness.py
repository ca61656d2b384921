"""Curvature during training: the top Hessian eigenvalue ("sharpness") every N optimizer steps.

Cohen et al. 2021 ("Gradient descent on neural networks typically occurs at the edge of
stability"): with full-batch gradient descent at step size eta, the sharpness rises
("progressive sharpening") until it reaches about 2 / eta, the largest curvature at which
gradient descent on a quadratic is stable, and then hovers there while the loss keeps
falling, non-monotonically. This callback logs the sharpness and 2 / lr side by side.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from whylearn.analysis import hessian as H
from whylearn.analysis.losses import classification_loss
from whylearn.analysis.plotting import save_figure
from whylearn.loggers import get_history, log_scalars

log = logging.getLogger("whylearn")


# -- helpers shared by the landscape callbacks ----------------------------------------------------------------
def network(pl_module: L.LightningModule) -> torch.nn.Module:
    """The task's network (``pl_module.model``), or the module itself."""
    return getattr(pl_module, "model", pl_module)


def task_loss_fn(pl_module: L.LightningModule):
    """The mean training loss ``loss(outputs, y)`` the task optimizes (cross-entropy or mse for classification)."""
    name = getattr(pl_module, "loss_name", None)
    if name is None:
        return H.default_loss

    return lambda out, y: classification_loss(name, out, y)


def fixed_subset(split, num_samples: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded subset of ``num_samples`` of a Split (all of it if None or larger)."""
    n = len(split)
    if num_samples is None or num_samples >= n:
        return split.x, split.y
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:num_samples].sort().values.to(split.x.device)
    return split.x[idx], split.y[idx]


def datamodule_split(trainer: L.Trainer, name: str):
    split = getattr(trainer.datamodule, name, None)
    if split is None:
        raise RuntimeError(f"this callback needs a datamodule holding its {name!r} split in memory (x, y); "
                           f"{type(trainer.datamodule).__name__} has none")
    return split


def run_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.default_root_dir)


def add_summary(pl_module: L.LightningModule, values: dict[str, Any]) -> None:
    """Values for the run's summary.json (merged by the task's ``summary_metrics``)."""
    extra = getattr(pl_module, "extra_summary", None)
    if extra is None:
        extra = {}
        pl_module.extra_summary = extra
    extra.update(values)


class Sharpness(Callback):
    """Log the top Hessian eigenvalue(s) of the training loss every ``every_n_steps`` optimizer steps.

    Args:
        every_n_steps: measurement interval (measured before the optimizer step whose index is a
            multiple of it, i.e. at the parameters after that many steps; step 0 included); None:
            only once, at the end of training.
        num_samples: seeded subset of the training set defining the loss (None: all of it,
            the full-batch loss of Cohen et al.).
        k: eigenvalues to track (1: power iteration; more: subspace iteration).
        iters, tol, min_iters: the most and fewest iterations and the relative residual
            ||H v - lambda v|| / |lambda| at which the iteration stops (:func:`~whylearn.analysis.hessian.power_iteration`);
            successive estimates are warm-started from the last eigenvector. A measurement that runs out of
            iterations first is logged with ``sharpness/converged`` 0 and a warning.
        trace_samples: if > 0, also Hutchinson's estimate of tr(H) with that many probes.
        method, chunk_size: see :class:`whylearn.analysis.hessian.HVP`.
        figure: draw ``figures/sharpness.png`` (train loss and sharpness against steps, with 2/lr).

    Scalars: ``sharpness/lambda_max`` (= ``sharpness/lambda_1``), ``sharpness/lambda_<i>``,
    ``sharpness/trace``, ``sharpness/two_over_lr``, ``sharpness/ratio`` (lambda_max x lr / 2),
    ``sharpness/hvps``, and the iteration's own convergence: ``sharpness/iterations``,
    ``sharpness/residual`` (relative), ``sharpness/converged`` (1 or 0). Summary: the final
    ``sharpness/lambda_max``, ``sharpness/two_over_lr``, ``sharpness/ratio``, ``sharpness/residual``,
    ``sharpness/converged``, the mean ratio over the second half of the measurements
    (``sharpness/ratio_late_mean``, Cohen et al.'s "hovers at 2/eta") and ``sharpness/not_converged``
    (how many measurements ran out of iterations).
    """

    def __init__(self, every_n_steps: int | None = 100, num_samples: int | None = 1000, k: int = 1, iters: int = 100,
                 tol: float = 1e-3, trace_samples: int = 0, method: str = "auto", chunk_size: int | None = None,
                 seed: int = 0, figure: bool = True, min_iters: int = 2) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None (only at the end), got {every_n_steps}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if method not in H.HVP_METHODS:
            raise ValueError(f"unknown HVP method {method!r}; allowed: {list(H.HVP_METHODS)}")
        self.every_n_steps, self.num_samples, self.k = every_n_steps, num_samples, k
        if iters < 1 or min_iters < 1 or tol < 0:
            raise ValueError(f"need iters >= 1, min_iters >= 1 and tol >= 0; got {iters}, {min_iters}, {tol}")
        self.iters, self.tol, self.trace_samples, self.min_iters = iters, tol, trace_samples, min_iters
        self.not_converged = 0
        self.method, self.chunk_size, self.seed, self.figure = method, chunk_size, seed, figure
        self._v: torch.Tensor | None = None
        self._last_step = -1

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        x, y = fixed_subset(datamodule_split(trainer, "train"), self.num_samples, self.seed)
        model, loss_fn = network(pl_module), task_loss_fn(pl_module)
        if self.k == 1:
            res = H.top_eigenvalues(model, x, y, 1, loss_fn, self.iters, self.tol, self.method, self.chunk_size,
                                    self.seed, init=self._v, min_iters=self.min_iters)
            self._v = res.vectors[0].detach()
        else:
            res = H.top_eigenvalues(model, x, y, self.k, loss_fn, self.iters, self.tol, self.method,
                                    self.chunk_size, self.seed, min_iters=self.min_iters)
        if not res.converged:
            self.not_converged += 1
            log.warning("sharpness at step %d: %d iterations left a relative residual of %.2g (tol %g); the value "
                        "%.4g may be low: raise callbacks.sharpness.iters", trainer.global_step, res.iterations,
                        res.residual, self.tol, res.top)
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        out = {"sharpness/lambda_max": res.top, "sharpness/hvps": res.hvps,
               "sharpness/two_over_lr": 2.0 / lr if lr else float("inf"), "sharpness/ratio": res.top * lr / 2.0,
               "sharpness/iterations": res.iterations, "sharpness/residual": res.residual,
               "sharpness/converged": float(res.converged)}
        if self.k > 1:
            out.update({f"sharpness/lambda_{i + 1}": float(v) for i, v in enumerate(res.values)})
        if self.trace_samples > 0:
            tr, se = H.hutchinson_trace(model, x, y, self.trace_samples, loss_fn, self.method, self.chunk_size, self.seed)
            out.update({"sharpness/trace": tr, "sharpness/trace_se": se})
        return out

    def _maybe(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if self.every_n_steps is None or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        log_scalars(pl_module, self.measure(trainer, pl_module), step=step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._maybe(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            log_scalars(pl_module, self.measure(trainer, pl_module), step=trainer.global_step)
        hist = get_history(pl_module)
        summary = {k: hist.last(k) for k in ("sharpness/lambda_max", "sharpness/two_over_lr", "sharpness/trace",
                                              "sharpness/ratio", "sharpness/residual", "sharpness/converged")
                   if hist.last(k) is not None}
        _, ratios = hist.series("sharpness/ratio")
        if ratios:
            late = ratios[len(ratios) // 2:]
            summary["sharpness/ratio_late_mean"] = sum(late) / len(late)
        summary["sharpness/not_converged"] = self.not_converged
        add_summary(pl_module, summary)
        if self.figure and trainer.is_global_zero:
            plot_sharpness(hist, run_dir(trainer) / "figures" / "sharpness.png")


def plot_sharpness(hist, path: Path, title: str | None = None) -> Path | None:
    """Two panels against optimizer steps: the training loss, and the sharpness with the 2/lr line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, lam = hist.series("sharpness/lambda_max")
    if not steps:
        return None
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.8))
    ls, lv = hist.series("train/loss")
    if ls:
        a0.plot(ls, lv, lw=1)
        a0.set_yscale("log")
    a0.set_xlabel("optimizer step")
    a0.set_ylabel("train loss")
    a0.grid(alpha=0.3)
    a1.plot(steps, lam, "-", lw=1.2, label="lambda_max (top Hessian eigenvalue)")
    ts, two = hist.series("sharpness/two_over_lr")
    if ts:
        a1.plot(ts, two, "k--", lw=1, label="2 / lr (published edge, Cohen et al. 2021)")
    for i in range(2, 10):
        s, v = hist.series(f"sharpness/lambda_{i}")
        if s:
            a1.plot(s, v, lw=0.8, alpha=0.7, label=f"lambda_{i}")
    a1.set_xlabel("optimizer step")
    a1.set_ylabel("sharpness")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle(title or "Sharpness during training (Cohen et al. 2021)")
    return save_figure(fig, path, grid=False)

"""Forecasting positions: squared error on the next observation, errors in AU against the truth.

Used for Kepler's planets (:class:`~whylearn.data.kepler.KeplerDataModule`): a model maps a
window of observed positions (B, 2 * window) to the position ``horizon`` steps later (B, 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from whylearn.data.kepler import fit_power_law, measured_period, orbit_positions
from whylearn.tasks.base import FastTask, SplitEval, log_scalars


class ForecastTask(SplitEval, FastTask):
    """Train ``model`` to forecast a position from a window of earlier positions (mean squared error).

    The model sees the window divided by ``input_scale`` (AU) and, with ``residual``, predicts the
    displacement from the last observed position in units of ``output_scale`` (AU); otherwise the
    position itself in units of ``input_scale``. The loss is the mean squared error in those units;
    the logged errors ``val/rmse``, ``test/rmse`` are root mean squared Euclidean errors in AU.

    Args:
        model: maps (B, 2 * window) to (B, 2).
        optimizer, scheduler, scheduler_interval, log_every_n_steps, gradient_clip_val, gradient_clip_algorithm,
            compile: see FastTask.
    """

    def __init__(self, model: nn.Module, optimizer: Callable[..., torch.optim.Optimizer], residual: bool = True,
                 input_scale: float = 5.0, output_scale: float = 0.1, scheduler: Callable[..., Any] | None = None,
                 scheduler_interval: str = "step", log_every_n_steps: int = 50,
                 gradient_clip_val: float | None = None, gradient_clip_algorithm: str = "norm",
                 compile: bool | str = False) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, log_every_n_steps, gradient_clip_val,
                         gradient_clip_algorithm, compile)
        if input_scale <= 0 or output_scale <= 0:
            raise ValueError(f"input_scale and output_scale must be > 0 AU, got {input_scale} and {output_scale}")
        self.model, self.residual = model, residual
        self.input_scale, self.output_scale = float(input_scale), float(output_scale)
        self._sums: dict[str, list[float]] = {}

    def forward(self, x: Tensor) -> Tensor:
        """Forecast positions (B, 2) in AU from windows (B, 2 * window) in AU."""
        out = self.model(x / self.input_scale)
        if self.residual:
            return x[:, -2:] + out * self.output_scale
        return out * self.input_scale

    def step_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Any]:
        out = self.model(x / self.input_scale)
        target = (y - x[:, -2:]) / self.output_scale if self.residual else y / self.input_scale
        return (out - target).pow(2).mean(), None

    @torch.no_grad()
    def rmse(self, x: Tensor, y: Tensor, batch_size: int = 8192) -> float:
        """Root mean squared Euclidean forecast error (AU) on tensors x (N, 2w), y (N, 2), in eval mode."""
        was = self.model.training
        self.model.eval()
        sq = sum(float((self.forward(x[i:i + batch_size]) - y[i:i + batch_size]).pow(2).sum())
                 for i in range(0, x.shape[0], batch_size))
        self.model.train(was)
        return math.sqrt(sq / max(x.shape[0], 1))

    # -- evaluation -----------------------------------------------------------------------
    def _eval_step(self, name: str, batch) -> None:
        x, y = batch
        s = self._sums.setdefault(name, [0.0, 0])
        s[0] += float((self.forward(x) - y).pow(2).sum())
        s[1] += x.shape[0]

    def _eval_end(self, name: str) -> None:
        sq, n = self._sums.pop(name, [0.0, 0])
        if n:
            log_scalars(self, {f"{name}/rmse": math.sqrt(sq / n), f"{name}/loss": sq / n})

    # -- what a forecaster implies about the law -------------------------------------------------
    @torch.no_grad()
    def rollout(self, window: Tensor, steps: int) -> Tensor:
        """Feed the model its own forecasts: windows (P, 2w) -> trajectory (P, steps, 2) in AU (horizon 1)."""
        was = self.model.training
        self.model.eval()
        w = window.clone()
        out = []
        for _ in range(steps):
            nxt = self.forward(w)
            out.append(nxt)
            w = torch.cat([w[:, 2:], nxt], dim=1)
        self.model.train(was)
        return torch.stack(out, dim=1)

    def summary_metrics(self, datamodule) -> dict[str, Any]:
        """Forecast errors (AU) inside and after the training time window, per planet, the
        linear-extrapolation baseline, and the exponent of T ~ a^x implied by rolled-out orbits."""
        return forecast_summary(self, datamodule)


def linear_extrapolation(x: Tensor, horizon: int = 1) -> Tensor:
    """Constant-velocity forecast from the last two positions of windows (N, 2w): x_t + h (x_t - x_{t-1})."""
    return x[:, -2:] + horizon * (x[:, -2:] - x[:, -4:-2])


def implied_exponent(task: ForecastTask, dm, years: float | None = None) -> dict[str, Any]:
    """Roll the forecaster out from each planet's true window at the end of the training window
    for ``years`` (default: the longest period), measure each rolled-out period, fit T ~ a^x."""
    if dm.horizon != 1:
        return {}
    years = years or max(p.period for p in dm.planets) * 1.05
    steps = int(round(years / dm.dt))
    t = dm.t_train + np.arange(dm.window) * dm.dt
    start = np.stack([orbit_positions(p, t).reshape(-1) for p in dm.planets])
    device = next(task.model.parameters()).device
    traj = task.rollout(torch.tensor(start, dtype=torch.float32, device=device), steps).cpu().double().numpy()
    periods = []
    for i in range(len(dm.planets)):
        path = traj[i]
        periods.append(measured_period(path, dm.dt) if np.isfinite(path).all() else float("nan"))
    a = np.array([p.a for p in dm.planets])
    T = np.array(periods)
    ok = np.isfinite(T) & (T > 0)
    x, r2 = fit_power_law(a[ok], T[ok]) if ok.sum() >= 2 else (float("nan"), float("nan"))
    return {"implied_exponent": x, "implied_exponent_r2": r2,
            "implied_periods": {p.name: float(T[i]) for i, p in enumerate(dm.planets)},
            "true_periods": {p.name: p.period for p in dm.planets}}


def forecast_summary(task: ForecastTask, dm) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("train", "val", "test", "test_out"):
        split = getattr(dm, name)
        out[f"{name}/rmse"] = task.rmse(split.x, split.y)
    out["gap/extrapolation_rmse_ratio"] = out["test_out/rmse"] / max(out["test/rmse"], 1e-12)
    for name in ("test", "test_out"):
        split = getattr(dm, name)
        base = linear_extrapolation(split.x, dm.horizon)
        out[f"{name}/rmse_linear_extrapolation"] = math.sqrt(float((base - split.y).pow(2).sum(-1).mean()))
        which = torch.as_tensor(dm.planet_index[name], device=split.x.device)
        with torch.no_grad():
            err = (task.forward(split.x) - split.y).pow(2).sum(-1)
        for i, p in enumerate(dm.planets):
            m = which == i
            if bool(m.any()):
                out[f"{name}/rmse/{p.name}"] = math.sqrt(float(err[m].mean()))
    out.update(implied_exponent(task, dm))
    return out

"""Kepler's sample inefficiency: an MLP forecaster of planetary positions against the number of observations.

Kepler found T^2 ~ a^3 and the ellipses from a few tens of Tycho's positions per planet;
a neural network trained on N observation windows needs orders of magnitude more, makes
no forecast outside the time window it was trained on any better than its data allows,
and states no law: the only "law" one can read from it is the exponent of T ~ a^x that
its rolled-out orbits imply.

:func:`sample_efficiency` trains one :class:`~whylearn.models.MLP` per N (and seed) through
Lightning with :class:`~whylearn.tasks.forecasting.ForecastTask` on
:class:`~whylearn.data.kepler.KeplerDataModule`, and draws the sample-efficiency curve,
the in-window vs after-window errors and the implied exponent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from whylearn.analysis.plotting import save_figure, subplots
from whylearn.data.kepler import KeplerDataModule
from whylearn.models import MLP, LSTMForecaster
from whylearn.tasks.forecasting import ForecastTask

log = logging.getLogger("whylearn")


MODELS = ("mlp", "lstm")


def build_forecaster(model: str, window: int, hidden: Sequence[int]):
    """``mlp``: MLP (2 * window) -> hidden... -> 2 with GELU; ``lstm``: an LSTM of width hidden[0] over the window."""
    if model == "mlp":
        return MLP(input_size=2 * window, num_classes=2, hidden=list(hidden), activation="gelu")
    if model == "lstm":
        return LSTMForecaster(input_size=2 * window, num_classes=2, hidden_size=int(hidden[0]), num_layers=len(hidden))
    raise ValueError(f"unknown forecaster {model!r}; allowed: {list(MODELS)}")


def train_forecaster(num_train: int, seed: int, data: dict, hidden: Sequence[int], lr: float, max_steps: int,
                     weight_decay: float = 0.0, out_dir: Path | None = None, model: str = "mlp") -> dict[str, Any]:
    """Train one forecaster (``mlp`` or ``lstm``) on ``num_train`` windows through a Lightning Trainer; return its summary."""
    import lightning as L
    import torch


    L.seed_everything(seed, verbose=False)
    dm = KeplerDataModule(num_train=num_train, seed=seed, **data)
    dm.setup()
    net = build_forecaster(model, dm.window, hidden)
    task = ForecastTask(net, partial(torch.optim.AdamW, lr=lr, weight_decay=weight_decay))
    trainer = L.Trainer(max_steps=max_steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(out_dir) if out_dir else None)
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    summary = {"num_train": num_train, "seed": seed, "steps": int(trainer.global_step),
               "fit_time_s": round(time.perf_counter() - t0, 2), **task.summary_metrics(dm)}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def sample_efficiency(out_dir: Path, num_train: Sequence[int] = (30, 100, 300, 1000, 3000, 10000, 30000, 100000),
                      seed: int = 0, num_seeds: int = 1, data: dict | None = None, hidden: Sequence[int] = (128, 128),
                      lr: float = 1e-3, max_steps: int = 4000, weight_decay: float = 0.0,
                      kepler_observations: int = 30, model: str = "mlp") -> dict[str, Any]:
    """Sweep N, train a forecaster per (N, seed), write figures and per-run summaries under ``out_dir``.

    The seeds are ``seed, seed + 1, ..., seed + num_seeds - 1`` (each seeds the data draw and the
    initialization of its run). Returns the sweep's numbers (errors in AU per N, mean over seeds,
    with their standard deviations ``*_sd`` when there are several) for ``summary.json``.

    Raises:
        ValueError: an unknown ``model`` or ``num_seeds`` < 1.
    """
    import torch

    if model not in MODELS:
        raise ValueError(f"unknown forecaster {model!r}; allowed: {list(MODELS)}")
    if num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
    seeds = range(int(seed), int(seed) + int(num_seeds))
    torch.set_num_threads(1)  # small MLPs: one thread is fastest, and two fight on a shared machine
    data = dict(data or {})
    rows = []
    for n in num_train:
        for seed in seeds:
            s = train_forecaster(int(n), int(seed), data, hidden, lr, max_steps, weight_decay,
                                 out_dir / "runs" / f"N{n}_seed{seed}", model)
            log.info("Kepler N=%d seed=%d: rmse in-window %.4g AU, after %.4g AU, implied exponent %.3f (%.1f s)",
                     n, seed, s["test/rmse"], s["test_out/rmse"], s.get("implied_exponent", float("nan")), s["fit_time_s"])
            rows.append(s)
    ref = KeplerDataModule(num_train=1, **data)
    ref.setup()

    def mean_over_seeds(key: str) -> np.ndarray:
        return np.array([np.nanmean([r[key] for r in rows if r["num_train"] == n]) for n in num_train])

    def sd_over_seeds(key: str) -> list[float]:
        """Standard deviation over the seeds with a finite value (nan with fewer than two; 0 for one seed)."""
        out = []
        for n in num_train:
            v = np.array([r[key] for r in rows if r["num_train"] == n], dtype=np.float64)
            v = v[np.isfinite(v)]
            out.append(0.0 if len(seeds) == 1 else float(v.std(ddof=1)) if len(v) > 1 else float("nan"))
        return out

    Ns = np.array(num_train, dtype=float)
    rmse_in, rmse_out = mean_over_seeds("test/rmse"), mean_over_seeds("test_out/rmse")
    rmse_train = mean_over_seeds("train/rmse")
    expo = mean_over_seeds("implied_exponent")
    lin_in = float(np.mean([r["test/rmse_linear_extrapolation"] for r in rows]))
    figs = out_dir / "figures"

    fig, ax = subplots()
    ax.loglog(Ns, rmse_in, "o-", label="test, inside the training time window")
    ax.loglog(Ns, rmse_out, "s-", label="test, after the training time window")
    ax.loglog(Ns, rmse_train, "^:", alpha=0.6, label="training windows (noisy targets)")
    ax.axhline(lin_in, color="gray", ls="--", lw=1, label="constant-velocity extrapolation")
    ax.axhline(ref.noise, color="k", ls=":", lw=1, label=f"observation noise ({ref.noise:g} AU)")
    ax.axvline(kepler_observations, color="tab:red", lw=1, alpha=0.6)
    ax.text(kepler_observations * 1.1, ax.get_ylim()[1] * 0.5, "Kepler's\ndata", color="tab:red", fontsize=8, va="top")
    ax.set_xlabel("N, training observation windows")
    ax.set_ylabel("forecast RMSE (AU), one step ahead")
    ax.set_title(f"Sample efficiency of an {model.upper()} forecaster of the planets")
    ax.legend(fontsize=8)
    save_figure(fig, figs / "kepler_sample_efficiency.png")

    # per-planet errors inside vs after the window, at the largest N
    big = [r for r in rows if r["num_train"] == max(num_train)]
    names = [p.name for p in ref.planets]
    per_in = [np.mean([r.get(f"test/rmse/{p}", np.nan) for r in big]) for p in names]
    per_out = [np.mean([r.get(f"test_out/rmse/{p}", np.nan) for r in big]) for p in names]
    fig, ax = subplots()
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, per_in, 0.4, label=f"inside [0, {ref.t_train:g}) yr")
    ax.bar(xs + 0.2, per_out, 0.4, label=f"after: [{ref.t_train:g}, {ref.t_test_end:g}) yr")
    ax.set_xticks(xs, [f"{p}\nT={pl.period:.1f} yr" for p, pl in zip(names, ref.planets, strict=False)], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("forecast RMSE (AU)")
    ax.set_title(f"Inside vs after the observed time window (N = {max(num_train)})")
    ax.legend(fontsize=8)
    save_figure(fig, figs / "kepler_extrapolation.png")

    fig, ax = subplots()
    ax.semilogx(Ns, expo, "o-", label="implied by the network's rolled-out orbits")
    ax.axhline(1.5, color="k", ls="--", lw=1, label="Kepler's third law, x = 1.5")
    ax.set_xlabel("N, training observation windows")
    ax.set_ylabel("exponent x in T ~ a^x")
    ax.set_title("The law a trained forecaster implies")
    ax.legend(fontsize=8)
    save_figure(fig, figs / "kepler_exponent.png")

    i_small = int(np.argmin(np.abs(Ns - kepler_observations)))
    return {
        "model": model,
        "num_train": [int(n) for n in num_train],
        "seeds": [int(s) for s in seeds],
        "rmse_in_window": [float(v) for v in rmse_in],
        "rmse_in_window_sd": sd_over_seeds("test/rmse"),
        "rmse_after_window": [float(v) for v in rmse_out],
        "rmse_after_window_sd": sd_over_seeds("test_out/rmse"),
        "rmse_train": [float(v) for v in rmse_train],
        "implied_exponent": [float(v) for v in expo],
        "implied_exponent_sd": sd_over_seeds("implied_exponent"),
        "rmse_linear_extrapolation": lin_in,
        "noise_au": ref.noise,
        "rmse_at_kepler_N": float(rmse_in[i_small]),
        "rmse_at_max_N": float(rmse_in[-1]),
        "rmse_ratio_kepler_N_over_max_N": float(rmse_in[i_small] / rmse_in[-1]),
        "extrapolation_ratio_at_max_N": float(rmse_out[-1] / rmse_in[-1]),
        "implied_exponent_at_max_N": float(expo[-1]),
        "per_planet_rmse_at_max_N": {
            p: {"inside": float(a), "after": float(b)} for p, a, b in zip(names, per_in, per_out, strict=False)
        },
    }

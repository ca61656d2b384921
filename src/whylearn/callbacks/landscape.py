"""The loss landscape at the end of training, and linear regions and time to fit during it.

- :class:`LossLandscape`: at the end of fit, the 1D interpolation from the initial to the
  final parameters and a 2D slice through the final parameters along two filter-normalized
  random directions (Li et al. 2018), as figures and ``landscape.json`` in the run directory.
- :class:`LinearRegions`: every N steps, the exact number of linear regions of a ReLU network
  along segments between training inputs (Hanin & Rolnick 2019); at the end, the distinct
  activation patterns over the training and test sets and a picture of a 2D slice of input space.
- :class:`TimeToFit`: the first step at which training accuracy reaches a threshold.
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from whylearn.analysis import landscape as LS
from whylearn.analysis import regions as R
from whylearn.analysis.hessian import flatten_params
from whylearn.callbacks.sharpness import add_summary, datamodule_split, fixed_subset, network, run_dir, task_loss_fn
from whylearn.loggers import log_scalars

log = logging.getLogger("whylearn")


class LossLandscape(Callback):
    """At the end of fit: loss along init -> final, and on a 2D filter-normalized slice through the final parameters.

    Args:
        grid: points per axis of the 2D slice (int or [na, nb]); span: [a_min, a_max, b_min, b_max].
        alphas: number of interpolation points on [alpha_min, alpha_max] (default [-0.25, 1.25]).
        num_samples: seeded subset size of each split evaluated (None: the whole split).
        splits: datamodule splits to evaluate (``train``, ``val``, ``test``).
        method, points_per_batch, data_chunk: see :func:`whylearn.analysis.landscape.evaluate_points`.
        seed: seeds the directions and the subsets.
        surface_clip: clip the surface plot's loss at this value (None: no clipping).

    Writes ``figures/landscape_1d.png``, ``figures/landscape_2d_contour.png``,
    ``figures/landscape_2d_surface.png`` and ``landscape.json``; logs ``landscape/*`` scalars.
    """

    def __init__(self, grid=21, span=(-1.0, 1.0, -1.0, 1.0), alphas: int = 31, alpha_range=(-0.25, 1.25),
                 num_samples: int | None = 2000, splits=("train", "val"), method: str = "auto",
                 points_per_batch: int = 32, data_chunk: int | None = None, seed: int = 0,
                 surface_clip: float | None = None) -> None:
        LS.parse_grid(grid)
        if method not in LS.METHODS:
            raise ValueError(f"unknown method {method!r}; allowed: {list(LS.METHODS)}")
        self.grid, self.span, self.alphas, self.alpha_range = grid, tuple(span), alphas, tuple(alpha_range)
        self.num_samples, self.splits, self.method = num_samples, tuple(splits), method
        self.points_per_batch, self.data_chunk, self.seed, self.surface_clip = points_per_batch, data_chunk, seed, surface_clip
        self.init: torch.Tensor | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.init is None:
            self.init = flatten_params(network(pl_module)).clone()

    def state_dict(self) -> dict:
        return {"init": self.init.cpu()} if self.init is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self.init = state.get("init")

    def data(self, trainer) -> dict:
        return {s: fixed_subset(datamodule_split(trainer, s), self.num_samples, self.seed) for s in self.splits}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        model, loss_fn = network(pl_module), task_loss_fn(pl_module)
        theta = flatten_params(model)
        data = self.data(trainer)
        kw = dict(loss_fn=loss_fn, method=self.method, points_per_batch=self.points_per_batch, data_chunk=self.data_chunk)
        out_dir = run_dir(trainer)
        init = self.init.to(theta.device)
        interp = LS.interpolate(model, init, theta, data, np.linspace(*self.alpha_range, self.alphas),
                                labels=("init", "final"), **kw)
        sl = LS.slice_2d(model, data, theta, grid=self.grid, span=self.span, seed=self.seed, **kw)
        LS.plot_interpolation(interp, out_dir / "figures" / "landscape_1d.png", "Loss from initialization to solution")
        key = f"{self.splits[0]}/loss"
        LS.plot_contour(sl, out_dir / "figures" / "landscape_2d_contour.png", key)
        LS.plot_surface(sl, out_dir / "figures" / "landscape_2d_surface.png", key, clip=self.surface_clip)
        LS.save_json({"interpolation": interp.to_json(), "slice": sl.to_json()}, out_dir / "landscape.json")
        Z = sl.values[key]
        na, nb = Z.shape
        scalars = {
            "landscape/barrier_init_final": interp.barrier(key),
            "landscape/slice_centre": float(Z[na // 2, nb // 2]),
            "landscape/slice_min": float(Z.min()), "landscape/slice_max": float(Z.max()),
            "landscape/dist_init_final": float((theta - init).norm()),
        }
        if min(na, nb) >= 3 and np.isfinite(Z).all():
            rough = LS.surface_roughness(sl.a, sl.b, Z)
            scalars.update({f"landscape/slice_{k}": v for k, v in rough.items() if k != "centre"})
        log_scalars(pl_module, scalars)
        add_summary(pl_module, scalars)


class LinearRegions(Callback):
    """Count linear regions of a ReLU network during training and at its end.

    Args:
        every_n_steps: interval of the line counts (step 0 included); None: only at the end.
        num_pairs: segments between seeded random pairs of training inputs (the same pairs every time).
        plane_resolution: grid points per axis of the end-of-fit picture of the plane through three
            training inputs (span [-0.5, 1.5]^2 in the plane's coordinates).
        num_samples: seeded subset of train and test for the distinct-pattern count (None: all).

    Scalars: ``regions/line_total``, ``regions/line_layer<l>``, ``regions/line_density``; at the end
    ``regions/patterns_train``, ``regions/patterns_train_fraction``, ``regions/patterns_test``,
    ``regions/patterns_test_fraction``, ``regions/plane_total``.
    """

    whylearn_batch_hooks = "per_step"  # counted after exactly every_n_steps steps, also inside a chunk

    def __init__(self, every_n_steps: int | None = 500, num_pairs: int = 20, plane_resolution: int = 200,
                 num_samples: int | None = None, seed: int = 0, figure: bool = True) -> None:
        self.every_n_steps, self.num_pairs, self.plane_resolution = every_n_steps, num_pairs, plane_resolution
        self.num_samples, self.seed, self.figure = num_samples, seed, figure
        self._last = -1

    def on_fit_start(self, trainer, pl_module) -> None:
        R.check_relu_network(network(pl_module))

    def measure(self, trainer, pl_module) -> dict[str, float]:
        x = datamodule_split(trainer, "train").x
        return R.regions_along_pairs(network(pl_module), x, self.num_pairs, self.seed)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.every_n_steps
        if n and trainer.global_step // n != self._last:   # at each multiple of n
            self._last = trainer.global_step // n
            log_scalars(pl_module, self.measure(trainer, pl_module))

    def on_train_start(self, trainer, pl_module) -> None:
        if self.every_n_steps and trainer.global_step == 0:
            self._last = 0
            log_scalars(pl_module, self.measure(trainer, pl_module), step=0)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = network(pl_module)
        out = self.measure(trainer, pl_module)
        for name in ("train", "test"):
            x, _ = fixed_subset(datamodule_split(trainer, name), self.num_samples, self.seed)
            dp = R.distinct_patterns(model, x)
            out[f"regions/patterns_{name}"] = dp["total"]
            out[f"regions/patterns_{name}_fraction"] = dp["fraction"]
        x = datamodule_split(trainer, "train").x
        pr = R.regions_on_plane(model, x[0], x[1], x[2], self.plane_resolution)
        out["regions/plane_total"] = pr.total
        log_scalars(pl_module, out)
        add_summary(pl_module, out)
        if self.figure and trainer.is_global_zero:
            R.plot_plane(pr, run_dir(trainer) / "figures" / "regions_plane.png",
                         f"{pr.total} regions met on a {pr.resolution}^2 grid\n(plane through 3 training inputs)")


class TimeToFit(Callback):
    """Record the first optimizer step at which eval-mode training accuracy reaches ``threshold``.

    Checked every ``every_n_steps`` optimizer steps, on a seeded subset of ``num_samples``
    training points with the task's ``evaluate``. Summary: ``fit/steps_to_fit`` (None if never).
    """

    whylearn_batch_hooks = "per_step"  # checked after exactly every_n_steps steps, also inside a chunk

    def __init__(self, threshold: float = 0.99, every_n_steps: int = 100, num_samples: int | None = 2000,
                 seed: int = 0) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be an accuracy in (0, 1], got {threshold}")
        self.threshold, self.every_n_steps, self.num_samples, self.seed = threshold, every_n_steps, num_samples, seed
        self.step: int | None = None
        self._last = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.step is not None or trainer.global_step // self.every_n_steps == self._last:
            return
        self._last = trainer.global_step // self.every_n_steps
        x, y = fixed_subset(datamodule_split(trainer, "train"), self.num_samples, self.seed)
        acc = pl_module.evaluate(x, y)["acc"]
        if acc >= self.threshold:
            self.step = trainer.global_step
            log_scalars(pl_module, {"fit/steps_to_fit": self.step})

    def on_train_end(self, trainer, pl_module) -> None:
        add_summary(pl_module, {"fit/steps_to_fit": self.step, "fit/threshold": self.threshold})

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state.get("step")

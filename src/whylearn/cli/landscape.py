"""Post-hoc landscape instruments on checkpoints of whylearn runs.

    whylearn-landscape interpolate RUN_A/checkpoints/last.ckpt RUN_B/checkpoints/last.ckpt
    whylearn-landscape slice RUN/checkpoints/last.ckpt --grid 21 --span -1 1 -1 1
    whylearn-landscape sharpness RUN/checkpoints/last.ckpt --k 3 --trace 32
    whylearn-landscape regions RUN/checkpoints/last.ckpt --pairs 20 --resolution 300

A checkpoint is read together with the run's ``config.yaml`` (two folders up: ``RUN/config.yaml``), which
rebuilds the same data (same seeds, subsets and splits) and the same model. Figures and a JSON file go
to ``--out`` (default ``RUN/posthoc/``); the numbers are also printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from whylearn.analysis import hessian as H
from whylearn.analysis import landscape as LS
from whylearn.analysis import regions as R
from whylearn.analysis.losses import classification_loss
from whylearn.runs.checkpoints import load_checkpoint


class LoadedRun:
    """A run's model (weights from the checkpoint), datamodule and training loss, rebuilt from its config."""

    def __init__(self, ckpt: str | Path) -> None:
        from omegaconf import OmegaConf

        from whylearn import build  # start-up: Lightning, not needed for --help

        self.ckpt = Path(ckpt)
        if not self.ckpt.is_file():
            raise FileNotFoundError(f"checkpoint not found: {self.ckpt}")
        self.run_dir = self.ckpt.resolve().parent.parent
        cfg_path = self.run_dir / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found: a whylearn checkpoint lives in RUN/checkpoints/ "
                                    f"next to RUN/config.yaml")

        state = load_checkpoint(self.ckpt)["state_dict"]  # weights only; a clear error naming the file
        self.cfg = OmegaConf.load(cfg_path)
        self.dm = build.build_datamodule(self.cfg)
        self.model = build.build_model(self.cfg, self.dm)
        weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        self.model.load_state_dict(weights)
        self.model.eval()
        loss_name = self.cfg.task.get("loss", "cross_entropy")

        self.loss_fn = lambda out, y: classification_loss(loss_name, out, y)

    def data(self, splits, num_samples: int | None, seed: int = 0) -> dict:
        from whylearn.callbacks.sharpness import fixed_subset  # start-up: Lightning, not needed for --help

        return {s: fixed_subset(getattr(self.dm, s), num_samples, seed) for s in splits}


def _out(args, run: LoadedRun) -> Path:
    out = Path(args.out) if args.out else run.run_dir / "posthoc"
    out.mkdir(parents=True, exist_ok=True)
    return out


def cmd_interpolate(args) -> dict:
    a, b = LoadedRun(args.ckpt_a), LoadedRun(args.ckpt_b)
    same_data = a.cfg.data == b.cfg.data
    if not same_data:
        print(f"warning: the two runs were trained on different data configurations (e.g. data.seed "
              f"{a.cfg.data.get('seed')} vs {b.cfg.data.get('seed')}: different train/val splits); the losses are "
              f"measured on the first run's splits. Train both with the same data.seed and different seeds.",
              file=sys.stderr)
    ta, tb = H.flatten_params(a.model), H.flatten_params(b.model)
    data = a.data(args.splits, args.samples, args.seed)
    interp = LS.interpolate(a.model, ta, tb, data, np.linspace(args.alpha_min, args.alpha_max, args.alphas),
                            a.loss_fn, args.method, labels=(str(a.run_dir.name), str(b.run_dir.name)))
    out = _out(args, a)
    LS.plot_interpolation(interp, out / "interpolation.png", "Linear interpolation between two solutions")
    res = interp.to_json()
    res["distance"] = float((ta - tb).norm())
    res["same_data"] = bool(same_data)
    LS.save_json(res, out / "interpolation.json")
    return {"barriers": res["barriers"], "distance": res["distance"], "same_data": res["same_data"],
            "endpoints": {k: [v[int(np.abs(interp.alphas).argmin())], v[int(np.abs(interp.alphas - 1).argmin())]]
                          for k, v in res["values"].items()},
            "figure": str(out / "interpolation.png")}


def cmd_slice(args) -> dict:
    run = LoadedRun(args.ckpt)
    data = run.data(args.splits, args.samples, args.seed)
    sl = LS.slice_2d(run.model, data, grid=args.grid, span=tuple(args.span), seed=args.seed, loss_fn=run.loss_fn,
                     method=args.method, points_per_batch=args.points_per_batch)
    out = _out(args, run)
    key = f"{args.splits[0]}/loss"
    LS.plot_contour(sl, out / "slice_contour.png", key)
    LS.plot_surface(sl, out / "slice_surface.png", key)
    LS.save_json(sl.to_json(), out / "slice.json")
    Z = sl.values[key]
    return {"centre": float(Z[Z.shape[0] // 2, Z.shape[1] // 2]), "min": float(Z.min()), "max": float(Z.max()),
            "figures": [str(out / "slice_contour.png"), str(out / "slice_surface.png")]}


def cmd_sharpness(args) -> dict:
    run = LoadedRun(args.ckpt)
    x, y = run.data(["train"], args.samples, args.seed)["train"]
    res = H.top_eigenvalues(run.model, x, y, args.k, run.loss_fn, args.iters, args.tol, args.method, seed=args.seed)
    out = {"eigenvalues": res.values.tolist(), "iterations": res.iterations, "hvps": res.hvps,
           "converged": res.converged, "residual": res.residual}
    if args.trace:
        out["trace"], out["trace_se"] = H.hutchinson_trace(run.model, x, y, args.trace, run.loss_fn, args.method,
                                                           seed=args.seed)
    LS.save_json(out, _out(args, run) / "sharpness.json")
    return out


def cmd_regions(args) -> dict:
    run = LoadedRun(args.ckpt)
    x = run.dm.train.x
    out = R.regions_along_pairs(run.model, x, args.pairs, args.seed)
    for name in ("train", "test"):
        out[f"patterns_{name}"] = R.distinct_patterns(run.model, getattr(run.dm, name).x)
    pr = R.regions_on_plane(run.model, x[0], x[1], x[2], args.resolution)
    out["plane_total"], out["plane_per_layer"], out["plane_resolution"] = pr.total, pr.per_layer, pr.resolution
    d = _out(args, run)
    R.plot_plane(pr, d / "regions_plane.png")
    LS.save_json(out, d / "regions.json")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="whylearn-landscape", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, splits=True):
        sp.add_argument("--out", default=None, help="output folder (default RUN/posthoc)")
        sp.add_argument("--samples", type=int, default=2000, help="seeded subset size per split (0: all)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--method", default=None)
        if splits:
            sp.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val", "test"])

    sp = sub.add_parser("interpolate", help="loss along the segment between two checkpoints (barrier height)")
    sp.add_argument("ckpt_a")
    sp.add_argument("ckpt_b")
    sp.add_argument("--alphas", type=int, default=31)
    sp.add_argument("--alpha-min", type=float, default=-0.25)
    sp.add_argument("--alpha-max", type=float, default=1.25)
    common(sp)
    sp.set_defaults(func=cmd_interpolate, default_method="auto")

    sp = sub.add_parser("slice", help="2D slice along filter-normalized random directions")
    sp.add_argument("ckpt")
    sp.add_argument("--grid", type=int, nargs="+", default=[21])
    sp.add_argument("--span", type=float, nargs=4, default=[-1.0, 1.0, -1.0, 1.0])
    sp.add_argument("--points-per-batch", type=int, default=32)
    common(sp)
    sp.set_defaults(func=cmd_slice, default_method="auto")

    sp = sub.add_parser("sharpness", help="top Hessian eigenvalue(s) and trace of the training loss")
    sp.add_argument("ckpt")
    sp.add_argument("--k", type=int, default=1)
    sp.add_argument("--iters", type=int, default=100)
    sp.add_argument("--tol", type=float, default=1e-4, help="relative residual ||Hv - lambda v|| / |lambda| to reach")
    sp.add_argument("--trace", type=int, default=0, help="Hutchinson probes (0: no trace)")
    common(sp, splits=False)
    sp.set_defaults(func=cmd_sharpness, default_method="auto")

    sp = sub.add_parser("regions", help="linear regions along lines, on a plane, and patterns over the data")
    sp.add_argument("ckpt")
    sp.add_argument("--pairs", type=int, default=20)
    sp.add_argument("--resolution", type=int, default=300)
    sp.add_argument("--out", default=None)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_regions)
    return p


def run(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` (default: the command line), run the subcommand, print and return its result."""
    args = parser().parse_args(argv)
    if hasattr(args, "samples") and args.samples == 0:
        args.samples = None
    if getattr(args, "method", "x") is None:
        args.method = args.default_method
    if hasattr(args, "grid"):
        args.grid = args.grid[0] if len(args.grid) == 1 else tuple(args.grid[:2])
    result = args.func(args)
    json.dump(result, sys.stdout, indent=1, default=str)
    print()
    return result


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (returns None so that the exit status is 0)."""
    run(argv)


if __name__ == "__main__":
    main()

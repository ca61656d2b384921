"""Figures and tables across the runs of a Hydra multirun, for docs/experiments.md.

    PYTHONPATH=src python scripts/landscape_figures.py eos      MULTIRUN_DIR --out docs/figures/edge_of_stability.png
    PYTHONPATH=src python scripts/landscape_figures.py regions  MULTIRUN_DIR --out docs/figures/linear_regions.png
    PYTHONPATH=src python scripts/landscape_figures.py init     MULTIRUN_DIR --out docs/figures/init_scale.png
    PYTHONPATH=src python scripts/landscape_figures.py bslr     SWEEP_DIR    --out docs/figures/batch_size_lr.png
    PYTHONPATH=src python scripts/landscape_figures.py resnet   MULTIRUN_DIR --out docs/figures/resnet_mnist_landscapes.png
    PYTHONPATH=src python scripts/landscape_figures.py omnigrok MULTIRUN_DIR --out docs/figures/omnigrok_mnist.png

Each run folder of the multirun (0/, 1/, ...) holds config.yaml, summary.json and csv/metrics.csv.
Prints a Markdown table of the runs.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from whylearn.analysis.plotting import save_figure  # noqa: E402


def runs(multirun: Path) -> list[dict]:
    out = []
    for d in sorted((p for p in Path(multirun).iterdir() if (p / "summary.json").is_file()), key=lambda p: p.name):
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        summary = json.loads((d / "summary.json").read_text())
        series: dict[str, list[tuple[int, float]]] = {}
        with open(d / "csv" / "metrics.csv") as f:
            for row in csv.DictReader(f):
                for k, v in row.items():
                    if v not in ("", None) and k not in ("epoch", "step"):
                        series.setdefault(k, []).append((int(float(row["step"])), float(v)))
        out.append({"dir": d, "cfg": cfg, "summary": summary, "series": series})
    if not out:
        raise SystemExit(f"no finished runs (summary.json) under {multirun}")
    return out


def xy(run, key):
    pts = sorted(run["series"].get(key, []))
    return [p[0] for p in pts], [p[1] for p in pts]


def eos(rs, out: Path) -> None:
    rs = sorted(rs, key=lambda r: r["cfg"]["optimizer"]["lr"])
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4))
    print("| eta | 2/eta | sharpness at the end | mean over the last half | max | final train loss |")
    print("| --- | --- | --- | --- | --- | --- |")
    lrs = sorted({r["cfg"]["optimizer"]["lr"] for r in rs})
    seen = set()
    for r in rs:  # one colour per eta; its seeds share it
        lr = r["cfg"]["optimizer"]["lr"]
        c = f"C{lrs.index(lr)}"
        label = None if lr in seen else f"eta = {lr:g}"
        seen.add(lr)
        s, l = xy(r, "train/loss")
        a0.plot(s, l, color=c, lw=1, label=label)
        s, lam = xy(r, "sharpness/lambda_max")
        a1.plot(s, lam, color=c, lw=1.1, alpha=0.8, label=label)
        a1.axhline(2 / lr, color=c, ls="--", lw=1)
        half = [v for st, v in zip(s, lam, strict=False) if st >= s[-1] / 2]
        print(f"| {lr:g} | {2 / lr:.3g} | {lam[-1]:.3f} | {sum(half) / len(half):.3f} | {max(lam):.3f} | "
              f"{r['summary'].get('train/loss', float('nan')):.4f} |")
    a0.set_yscale("log")
    a0.set_xlabel("step (full-batch GD)")
    a0.set_ylabel("train loss (MSE)")
    a1.set_xlabel("step (full-batch GD)")
    a1.set_ylabel("sharpness (top Hessian eigenvalue)")
    a1.set_title("dashed: 2 / eta")
    for a in (a0, a1):
        a.legend(fontsize=8)
    n = len(rs) // max(len(lrs), 1)
    fig.suptitle(f"Edge of stability: tanh MLP, 1000 MNIST-1D samples ({n} seed{'s' * (n > 1)} per eta)")
    save_figure(fig, out)


def regions(rs, out: Path) -> None:
    rs = sorted(rs, key=lambda r: len(r["cfg"]["model"]["hidden"]))
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4))
    print(
        "| hidden | params | neurons | regions per line (init) | (end) | per layer (end) | patterns train / test (fraction) | plane (300^2 grid) | test acc |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, r in enumerate(rs):
        h = r["cfg"]["model"]["hidden"]
        s, v = xy(r, "regions/line_total")
        a0.plot(s, v, "o-", ms=3, color=f"C{i}", label=f"{h} ({sum(h)} neurons)")
        sm = r["summary"]
        layers = [sm.get(f"regions/line_layer{l}") for l in range(len(h))]
        print(
            f"| {h} | {sm['params']} | {sum(h)} | {v[0]:.1f} | {sm['regions/line_total']:.1f} | "
            f"{', '.join(f'{x:.1f}' for x in layers)} | {sm['regions/patterns_train']} ({sm['regions/patterns_train_fraction']:.3f}) / "
            f"{sm['regions/patterns_test']} ({sm['regions/patterns_test_fraction']:.3f}) | {sm['regions/plane_total']} | "
            f"{sm.get('test/acc', float('nan')):.3f} |"
        )
    depth = [len(r["cfg"]["model"]["hidden"]) for r in rs]
    a1.plot(depth, [r["summary"]["regions/line_total"] for r in rs], "o-", label="regions per line (end)")
    a1.plot(depth, [xy(r, "regions/line_total")[1][0] for r in rs], "s--", label="regions per line (init)")
    a1.plot(depth, [sum(r["cfg"]["model"]["hidden"]) for r in rs], "k:", label="number of neurons")
    a1.set_xlabel("depth (hidden layers), ~15.2k parameters each")
    a1.set_ylabel("count")
    a1.set_xticks(depth)
    a0.set_xlabel("optimizer step")
    a0.set_ylabel("regions per segment (mean of 20 pairs)")
    for a in (a0, a1):
        a.legend(fontsize=8)
    fig.suptitle("Linear regions of ReLU MLPs on MNIST-1D at a fixed parameter count")
    save_figure(fig, out)


def initial_norm(cfg) -> float:
    """||theta_0|| of the run's MLP, rebuilt with its seed (the norm concentrates: any seed gives about the same)."""
    import torch

    from whylearn.models import MLP

    torch.manual_seed(cfg["seed"])
    m = cfg["model"]
    net = MLP(40, 10, hidden=m["hidden"], init_scale=m["init_scale"])
    return float(torch.cat([p.detach().flatten() for p in net.parameters()]).norm())


def sweep_panels(x, xlabel: str, panels, title: str, out: Path, width: float) -> None:
    """One row of panels against a swept value x (log axis): ``panels`` = [(values, title, log_y), ...]."""
    fig, ax = plt.subplots(1, len(panels), figsize=(width, 3.6))
    for a, (vals, lab, logy) in zip(ax, panels, strict=False):
        a.plot(x, vals, "o-")
        a.set_xscale("log")
        if logy:
            a.set_yscale("log")
        a.set_xlabel(xlabel)
        a.set_title(lab)
    fig.suptitle(title)
    save_figure(fig, out)


def init(rs, out: Path) -> None:
    """The init-scale sweep, one row per scale: mean ± sd over its seeds (and each seed's value), and the figure."""
    import statistics

    by: dict[float, list[dict]] = {}
    for r in rs:
        by.setdefault(r["cfg"]["model"]["init_scale"], []).append(r)
    sc = sorted(by)

    def vals(k, scale):
        return [r["summary"].get(k) for r in by[scale] if r["summary"].get(k) is not None]

    def ms(v):
        return f"{statistics.fmean(v):.3g} ± {statistics.stdev(v):.2g}" if len(v) > 1 else (f"{v[0]:.3g}" if v else "-")

    print("| init scale | seeds | steps to 99% train acc | train acc | test acc | sharpness (init) | sharpness (end) "
          "| end converged | final ||theta|| |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for x in sc:
        s0 = [xy(r, "sharpness/lambda_max")[1][0] for r in by[x] if xy(r, "sharpness/lambda_max")[1]]
        print(f"| {x:g} | {sorted(r['cfg']['seed'] for r in by[x])} | {ms(vals('fit/steps_to_fit', x))} | "
              f"{ms(vals('train/acc', x))} | {ms(vals('test/acc', x))} | {ms(s0)} | {ms(vals('sharpness/lambda_max', x))} | "
              f"{sum(vals('sharpness/converged', x)):g} of {len(by[x])} | {ms(vals('weights/l2_total', x))} |")
    panels = [("fit/steps_to_fit", "steps to 99% train accuracy", True), ("test/acc", "test accuracy", False),
              ("sharpness/lambda_max", "sharpness at the end", True), ("weights/l2_total", "final weight norm ||theta||", True)]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.6))
    for ax, (key, title, logy) in zip(axes, panels, strict=True):
        for x in sc:
            ax.plot([x] * len(vals(key, x)), vals(key, x), ".", color="gray", alpha=0.6)
        means = [statistics.fmean(vals(key, x)) for x in sc]
        sds = [statistics.stdev(vals(key, x)) if len(vals(key, x)) > 1 else 0.0 for x in sc]
        ax.errorbar(sc, means, yerr=sds, fmt="o-", capsize=3)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("initialization scale (x default)")
        ax.set_title(title)
    n = sorted({len(v) for v in by.values()})
    fig.suptitle(f"Initialization scale sweep: MLP 40-100-100-10 on MNIST-1D, Adam (mean ± sd over {'/'.join(map(str, n))} "
                 f"seeds per scale, grey: each seed)")
    save_figure(fig, out)


def bslr(rs, out: Path) -> None:
    rs = sorted(rs, key=lambda r: r["cfg"]["data"]["batch_size"])
    B = [r["cfg"]["data"]["batch_size"] for r in rs]
    print(
        "| batch size B | lr | lr / B | steps | train acc | test acc | sharpness (end) | 2 / lr | tr(Sigma) per sample | noise tr(Sigma)/B | B_simple |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rs:
        sm, lr, b = r["summary"], r["cfg"]["optimizer"]["lr"], r["cfg"]["data"]["batch_size"]
        print(
            f"| {b} | {lr:g} | {lr / b:g} | {sm['steps']} | {sm['train/acc']:.3f} | {sm.get('test/acc', float('nan')):.3f} | "
            f"{sm.get('sharpness/lambda_max', float('nan')):.3g} | {2 / lr:.3g} | {sm.get('noise/trace_cov', float('nan')):.3g} | "
            f"{sm.get('noise/minibatch', float('nan')):.3g} | {sm.get('noise/simple_noise_scale', float('nan')):.3g} |"
        )
    def get(k):
        return [r["summary"].get(k) for r in rs]
    sweep_panels(B, "batch size B (lr = 0.001 B)",
                 [(get("test/acc"), "test accuracy", False), (get("sharpness/lambda_max"), "sharpness at the end", True),
                  (get("noise/minibatch"), "mini-batch gradient noise tr(Sigma)/B", True)],
                 "Batch size with the learning rate scaled: MLP on MNIST-1D, plain SGD, 20 epochs", out, width=13)


def resnet(rs, out: Path) -> None:
    """Li et al.'s comparison: the 2D train-loss slices of ResNets with and without shortcuts, on one colour scale."""
    import numpy as np

    from whylearn.analysis.landscape import surface_roughness

    rs = sorted(rs, key=lambda r: (r["cfg"]["model"]["depth"], not r["cfg"]["model"]["shortcut"]))
    def name(r):
        return f"ResNet-{r['cfg']['model']['depth']}{'' if r['cfg']['model']['shortcut'] else '-noshort'}"
    print(
        "| network | train acc | test acc | train loss at the centre | mean over the grid | mean on the border | "
        "local minima (interior) | non-convex fraction | mean |l_min/l_max| | monotone rays | sharpness | barrier init->final |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    slices = []
    for r in rs:
        js = json.loads((r["dir"] / "landscape.json").read_text())
        sl = js["slice"]
        a, b, Z = np.array(sl["a"]), np.array(sl["b"]), np.array(sl["values"]["train/loss"])
        rough, sm = surface_roughness(a, b, Z), r["summary"]
        slices.append((name(r), a, b, Z, js["interpolation"]))
        print(
            f"| {name(r)} | {sm['train/acc']:.3f} | {sm.get('test/acc', float('nan')):.3f} | {rough['centre']:.3g} | "
            f"{rough['mean']:.3g} | {rough['edge_mean']:.3g} | {rough['local_minima']} | {rough['nonconvex_fraction']:.2f} | "
            f"{rough['eig_ratio_mean']:.2f} | {rough['radial_monotone_fraction']:.2f} | "
            f"{sm.get('sharpness/lambda_max', float('nan')):.3g} | {js['interpolation']['barriers'].get('train/loss', float('nan')):.3g} |"
        )
    lo = min(np.log10(np.clip(s[3], 1e-6, None)).min() for s in slices)
    hi = max(np.log10(np.clip(s[3], 1e-6, None)).max() for s in slices)
    levels = np.linspace(lo, hi, 31)
    fig, ax = plt.subplots(1, len(slices) + 1, figsize=(4.2 * (len(slices) + 1), 3.8), layout="constrained")
    for k, (n, a, b, Z, interp) in enumerate(slices):
        cs = ax[k].contourf(a, b, np.log10(np.clip(Z, 1e-6, None)).T, levels=levels, cmap="viridis")
        ax[k].contour(a, b, np.log10(np.clip(Z, 1e-6, None)).T, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
        ax[k].plot([0], [0], "r*", ms=9)
        ax[k].set_title(n)
        ax[k].set_aspect("equal")
        ax[k].set_xlabel("direction 1")
        ax[-1].plot(interp["alphas"], interp["values"]["train/loss"], "o-", ms=2.5, label=n)
    ax[0].set_ylabel("direction 2 (filter-normalized)")
    fig.colorbar(cs, ax=ax[len(slices) - 1], label="log10 train loss")
    ax[-1].set_yscale("log")
    ax[-1].set_xlabel("alpha (0: init, 1: solution)")
    ax[-1].set_title("train loss, init -> solution")
    ax[-1].grid(alpha=0.3)
    ax[-1].legend(fontsize=8)
    fig.suptitle("Li et al. 2018 on MNIST: 2D slices through the solution (filter-normalized directions)")
    fig.savefig(out, dpi=72, bbox_inches="tight")


def first_step(steps, vals, pred):
    return next((s for s, v in zip(steps, vals, strict=False) if pred(v)), None)


def omnigrok(rs, out: Path) -> None:
    """Train/test accuracy (log step axis) and the weight norm of runs differing in model.init_scale."""
    rs = sorted(rs, key=lambda r: -r["cfg"]["model"]["init_scale"])
    print("| alpha | steps | train acc 100% at step | test acc >= 50% at step | test acc within 1 pt of final at step | "
          "test acc at 1e3 / 1e4 / end | final train acc | ||theta|| start / min / end | wall time (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    fig, ax = plt.subplots(1, len(rs), figsize=(6 * len(rs), 4), squeeze=False)
    for k, r in enumerate(rs):
        sm, al = r["summary"], r["cfg"]["model"]["init_scale"]
        st, tr = xy(r, "train_eval/acc")
        sv, va = xy(r, "val/acc")
        sn, wn = xy(r, "weights/l2_total")
        def at(step, sv=sv, va=va):
            return next((v for s, v in zip(sv, va, strict=False) if s >= step), float("nan"))
        fin = va[-1]
        print(
            f"| {al:g} | {sm['steps']} | {first_step(st, tr, lambda v: v >= 1.0)} | {first_step(sv, va, lambda v: v >= 0.5)} | "
            f"{first_step(sv, va, lambda v, fin=fin: v >= fin - 0.01)} | {at(1000):.3f} / {at(10000):.3f} / {fin:.3f} | {tr[-1]:.3f} | "
            f"{wn[0]:.1f} / {min(wn):.1f} / {wn[-1]:.1f} | {sm.get('fit_time_s', float('nan')):.0f} |"
        )
        a = ax[0, k]
        a.plot(st, tr, color="tab:red", label="train")
        a.plot(sv, va, color="tab:green", label="test")
        a.set_xscale("log")
        a.set_ylim(0, 1.02)
        a.set_xlabel("optimizer step")
        a.set_ylabel("accuracy")
        a.grid(alpha=0.3)
        a2 = a.twinx()
        a2.plot(sn, wn, color="tab:purple", label="weight norm")
        a2.set_ylabel("||theta||_2", color="tab:purple")
        h1, l1 = a.get_legend_handles_labels()
        h2, l2 = a2.get_legend_handles_labels()
        a.legend(h1 + h2, l1 + l2, fontsize=8, loc="center left")
        a.set_title(f"init scale alpha = {al:g}")
    fig.suptitle("Omnigrok on MNIST: MLP 784-200-200-10, 1k train images, MSE, AdamW")
    save_figure(fig, out, dpi=90, grid=False)  # the accuracy axes have their grid; the weight-norm twins do not


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["eos", "regions", "init", "bslr", "resnet", "omnigrok"])
    p.add_argument("multirun", type=Path, nargs="+", help="one or more multirun folders (their runs are pooled)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    {"eos": eos, "regions": regions, "init": init, "bslr": bslr, "resnet": resnet, "omnigrok": omnigrok}[a.kind](
        [r for m in a.multirun for r in runs(m)], a.out
    )
    print(f"\nfigure: {a.out}")


if __name__ == "__main__":
    main()

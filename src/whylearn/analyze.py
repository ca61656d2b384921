"""``whylearn-analyze``: tables and figures across the runs of a Hydra multirun.

    whylearn-analyze sweep outputs/double_descent_mnist1d_cpu/multiruns/<date> --x params
    whylearn-analyze sweep outputs/random_labels/multiruns/<date> --curve train/loss --x data.corruption
    whylearn-analyze fidelity outputs          (published beside measured over every run: whylearn.fidelity)

``sweep`` reads every job's ``summary.json`` (and the overrides Hydra recorded in
``.hydra/overrides.yaml``) into one table, ``sweep.csv`` and ``sweep.md``; draws a metric
against a swept parameter or the parameter count (``--x params``), with the interpolation
threshold marked: the measured point where the training error first reaches zero and, for
runs trained with the squared loss, parameters = training examples x classes (Belkin et al.
2019); and with ``--curve KEY`` overlays each job's logged series (e.g. ``train/loss``
against optimizer steps, from ``csv/metrics.csv``). Error columns ``<split>/err`` = 1 - acc
are added for every accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from whylearn import fidelity  # noqa: E402
from whylearn.analysis.plotting import save_figure  # noqa: E402

MAIN_KEYS = ("params", "train/err", "val/err", "test/err", "train/loss", "test/loss", "steps", "status")


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _overrides(job: Path) -> dict[str, Any]:
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("- "):
            key, _, value = line[2:].partition("=")
            out[key.lstrip("+~")] = _parse_value(value.strip().strip("'\""))
    return out


def _loss_name(job: Path) -> str | None:
    cfg = job / "config.yaml"
    if not cfg.is_file():
        return None
    from omegaconf import OmegaConf

    c = OmegaConf.load(cfg)
    return OmegaConf.select(c, "task.loss")


def load_sweep(root: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per job of the multirun under ``root``: its overrides and summary, plus error columns.

    Returns:
        (rows sorted by job number, the names of the swept parameters: overrides that differ between jobs).

    Raises:
        FileNotFoundError: no ``summary.json`` under ``root`` (names the folder).
    """
    root = Path(root)
    jobs = sorted({p.parent for p in root.rglob("summary.json")},
                  key=lambda p: (int(p.name) if p.name.isdigit() else math.inf, str(p)))
    if not jobs:
        raise FileNotFoundError(f"no summary.json under {root}: pass a multirun folder (outputs/<task>/multiruns/<date>)")
    rows = []
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        row = {"job": job.name, **_overrides(job)}
        for k, v in summary.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                row[k] = v
        for split in ("train", "val", "test"):
            if isinstance(row.get(f"{split}/acc"), (int, float)):
                row[f"{split}/err"] = 1.0 - row[f"{split}/acc"]
                if isinstance(row.get(f"{split}/acc_std"), (int, float)):
                    row[f"{split}/err_std"] = row[f"{split}/acc_std"]
        row["_loss"] = _loss_name(job)
        row["_dir"] = str(job)
        rows.append(row)
    keys = sorted({k for r in rows for k in _overrides(Path(r["_dir"]))})
    swept = [k for k in keys if len({repr(r.get(k)) for r in rows}) > 1]
    return rows, swept


def write_tables(rows: list[dict[str, Any]], swept: list[str], out: Path) -> tuple[Path, Path]:
    """``sweep.csv`` (every column) and ``sweep.md`` (the swept parameters and the main metrics)."""
    out.mkdir(parents=True, exist_ok=True)
    columns = ["job", *swept] + sorted({k for r in rows for k in r if not k.startswith("_")} - {"job", *swept})
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    main = ["job", *swept, *[k for k in MAIN_KEYS if any(k in r for r in rows)]]
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
    lines = ["| " + " | ".join(main) + " |", "|" + " --- |" * len(main)]
    for r in rows:
        cells = []
        for k in main:
            v = fmt(r.get(k))
            if isinstance(r.get(f"{k}_std"), float) and r[f"{k}_std"] > 0:
                v += f" ± {r[f'{k}_std']:.2g}"
            cells.append(v)
        lines.append("| " + " | ".join(cells) + " |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    return out / "sweep.csv", out / "sweep.md"


def interpolation_threshold(rows: list[dict[str, Any]], x: str, tol: float = 0.0) -> float | None:
    """The smallest ``x`` whose training error is <= ``tol`` (all seeds' mean), with every larger x also there.

    None if no run interpolates.
    """
    pts = sorted((r[x], r["train/err"]) for r in rows if isinstance(r.get(x), (int, float)) and "train/err" in r)
    threshold = None
    for xv, err in reversed(pts):
        if err <= tol + 1e-12:
            threshold = xv
        else:
            break
    return threshold


def describe_curve(rows: list[dict[str, Any]], x: str, metric: str, threshold: float | None) -> dict[str, Any]:
    """Peak, threshold, best-smaller and largest-model values of ``metric`` along ``x`` (for reports and tests)."""
    pts = sorted(
        (r[x], r[metric]) for r in rows if isinstance(r.get(x), (int, float)) and isinstance(r.get(metric), (int, float))
    )
    if not pts:
        return {}
    out: dict[str, Any] = {"x": x, "metric": metric, "peak_x": max(pts, key=lambda p: p[1])[0],
                           "peak": max(p[1] for p in pts), "largest_x": pts[-1][0], "largest": pts[-1][1]}
    if threshold is not None:
        at = [v for xv, v in pts if xv == threshold]
        smaller = [(xv, v) for xv, v in pts if xv < threshold]
        out.update({"threshold_x": threshold, "at_threshold": at[0] if at else None})
        if smaller:
            best = min(smaller, key=lambda p: p[1])
            out.update({"best_smaller_x": best[0], "best_smaller": best[1]})
    return out


def plot_sweep(rows: list[dict[str, Any]], x: str, metrics: list[str], path: Path, threshold: float | None,
               mse_threshold: tuple[float, str] | None = None, logx: bool = True, title: str | None = None) -> Path:
    """``metrics`` (with ± std bands when present) against ``x``, threshold lines marked."""
    numeric = all(isinstance(r.get(x), (int, float)) for r in rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for metric in metrics:
        pts = [(r.get(x), r.get(metric), r.get(f"{metric}_std") or 0.0) for r in rows if r.get(metric) is not None]
        if numeric:  # categories stay in the sweep's order
            pts.sort(key=lambda p: p[0])
        if not pts:
            continue
        xs = [p[0] for p in pts] if numeric else list(range(len(pts)))
        ys, sd = [p[1] for p in pts], [p[2] for p in pts]
        ax.plot(xs, ys, "o-" if numeric else "o", markersize=3 if numeric else 6, label=metric)
        if any(sd):
            ax.fill_between(
                xs, [a - b for a, b in zip(ys, sd, strict=False)], [a + b for a, b in zip(ys, sd, strict=False)], alpha=0.2
            )
        if not numeric:
            ax.set_xticks(xs, [str(p[0]) for p in pts], rotation=30)
    if numeric and threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"train error reaches 0 ({x}={threshold:g})")
    if numeric and mse_threshold is not None:
        ax.axvline(mse_threshold[0], color="gray", ls=":", lw=1, label=f"{mse_threshold[1]} ({mse_threshold[0]:g})")
    if numeric and logx:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(", ".join(metrics))
    ax.set_title(title or f"{', '.join(metrics)} against {x}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, grid=False)


def _read_series(job: Path, key: str) -> tuple[list[float], list[float]]:
    path = job / "csv" / "metrics.csv"
    if not path.is_file():
        return [], []
    xs, ys = [], []
    with open(path) as f:
        for row in csv.DictReader(f):
            if row.get(key) not in (None, ""):
                xs.append(float(row["step"]))
                ys.append(float(row[key]))
    return xs, ys


def plot_curves(rows: list[dict[str, Any]], swept: list[str], key: str, path: Path, logy: bool = False) -> Path:
    """Each job's logged ``key`` against optimizer steps, one line per job labelled by its swept values."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        xs, ys = _read_series(Path(r["_dir"]), key)
        if xs:
            label = ", ".join(f"{r.get(k)}" for k in swept) or r["job"]
            ax.plot(xs, ys, label=label, lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title=", ".join(swept) if swept else None)
    ax.set_title(f"{key} against steps")
    return save_figure(fig, path, grid=False)


def sweep(root: str | Path, x: str | None = None, metrics: list[str] | None = None, out: str | Path | None = None,
          curves: list[str] | None = None, logx: bool = True, tol: float = 0.0) -> dict[str, Any]:
    """Tables and figures of the multirun under ``root``; returns what was found (also printed by the CLI).

    Raises:
        FileNotFoundError: no runs found. ValueError: ``x`` is neither a swept parameter nor a summary key.
    """
    rows, swept = load_sweep(root)
    out = Path(out) if out is not None else Path(root)
    csv_path, md_path = write_tables(rows, swept, out)
    x = x or (swept[0] if swept else "params")
    if not any(x in r for r in rows):
        raise ValueError(
            f"--x {x!r} is not in the runs; allowed: {sorted(set(swept) | {k for r in rows for k in r if not k.startswith('_')})}"
        )
    metrics = metrics or [m for m in ("train/err", "test/err") if any(m in r for r in rows)]
    result: dict[str, Any] = {"runs": len(rows), "swept": swept, "csv": str(csv_path), "markdown": str(md_path), "figures": []}
    numeric = all(isinstance(r.get(x), (int, float)) for r in rows)
    threshold = interpolation_threshold(rows, x, tol) if numeric and any("train/err" in r for r in rows) else None
    mse = None  # the parameter count that can interpolate: n x classes (squared loss) or n (cross-entropy heuristic)
    if x == "params" and rows and rows[0].get("train_size"):
        n, c = rows[0]["train_size"], rows[0].get("num_classes") or 1
        mse = (float(n * c), "params = n x classes") if rows[0].get("_loss") == "mse" else (float(n), "params = n")
    if metrics:
        name = "sweep_" + "_".join(m.replace("/", "-") for m in metrics) + f"_vs_{x.replace('/', '-')}.png"
        result["figures"].append(str(plot_sweep(rows, x, metrics, out / name, threshold, mse, logx)))
        result["curve"] = describe_curve(rows, x, metrics[-1], threshold)
    for key in curves or []:
        result["figures"].append(str(plot_curves(rows, swept, key, out / f"curves_{key.replace('/', '-')}.png",
                                                 logy=key.endswith("loss"))))
    result["threshold"] = threshold
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="whylearn-analyze", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("sweep", help="table + figures of a multirun's summary.json files")
    sp.add_argument("root", help="the multirun folder (outputs/<task>/multiruns/<date>)")
    sp.add_argument("--x", default=None, help="swept parameter or summary key on the x axis (e.g. model.width, params)")
    sp.add_argument("--metric", action="append", default=None, help="summary key(s) to plot (default: train/err, test/err)")
    sp.add_argument("--curve", action="append", default=None, help="logged series to overlay per job (e.g. train/loss)")
    sp.add_argument("--out", default=None, help="output folder (default: the multirun folder)")
    sp.add_argument("--linear-x", action="store_true", help="linear instead of log x axis")
    sp.add_argument("--tol", type=float, default=0.0, help="training error counted as zero (interpolation)")
    fidelity.add_parser(sub)
    args = ap.parse_args(argv)
    if args.command == "fidelity":
        return fidelity.main(args)
    try:
        res = sweep(args.root, args.x, args.metric, args.out, args.curve, not args.linear_x, args.tol)
    except (FileNotFoundError, ValueError) as e:
        print(f"whylearn-analyze: {e}", file=sys.stderr)
        return 2
    print(Path(res["markdown"]).read_text())
    print(json.dumps({k: v for k, v in res.items()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

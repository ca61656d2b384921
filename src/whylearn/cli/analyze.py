"""``whylearn-analyze``: tables and figures across the runs of a Hydra multirun.

    whylearn-analyze sweep outputs/double_descent_mnist1d_cpu/multiruns/<date> --x params
    whylearn-analyze sweep outputs/random_labels/multiruns/<date> --curve train/loss --x data.corruption
    whylearn-analyze fidelity outputs          (published beside measured over every run: whylearn.studies.fidelity)

``sweep`` reads every job's ``summary.json`` (and the overrides Hydra recorded in
``.hydra/overrides.yaml``) into one table, ``sweep.csv`` and ``sweep.md``; a vectorized ensemble
run (``task=ensemble``, e.g. ``experiment=double_descent_mnist1d``) counts as one job per member,
its grid settings as swept parameters, so one ensemble run reads like the multirun it replaces; draws a metric
against a swept parameter or the parameter count (``--x params``), with the interpolation
threshold marked: the measured point where the training error first reaches zero and, for
runs trained with the squared loss, parameters = training examples x classes (Belkin et al.
2019); and with ``--curve KEY`` overlays each job's logged series (e.g. ``train/loss``
against optimizer steps, from ``csv/metrics.csv``). Error columns ``<split>/err`` = 1 - acc
are added for every accuracy. Runs that repeat a setting (seeds) are averaged: the figure shows
mean +- sd and ``sweep.md`` adds a table of mean +- sd (n) per setting.

``stats`` and ``compare`` (see :func:`stats_table` and :func:`compare`) give the mean and 95%
confidence interval per group and a two-sample comparison (Welch's t-test, bootstrap interval of
the difference), printed and drawn as error bars:

    whylearn-analyze stats outputs/double_descent_mnist1d/runs/<date> --by model.width --metric test/err
    whylearn-analyze compare outputs/double_descent_mnist1d/runs/<date> --metric test/err \
        --a model.width=40 --b model.width=18
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

from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.analysis.stats import compare_groups, mean_ci
from whylearn.runs.multirun import job_folders, job_overrides, parse_override_value
from whylearn.studies import fidelity  # noqa: E402

MAIN_KEYS = ("params", "train/err", "val/err", "test/err", "train/loss", "test/loss", "steps", "status")


def _loss_name(job: Path) -> str | None:
    cfg = job / "config.yaml"
    if not cfg.is_file():
        return None
    from omegaconf import OmegaConf

    c = OmegaConf.load(cfg)
    return OmegaConf.select(c, "task.loss")


def load_sweep(root: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per job of the multirun under ``root``: its overrides and summary, plus error columns.

    The jobs are :func:`whylearn.runs.multirun.job_folders` (any depth), their overrides
    :func:`whylearn.runs.multirun.job_overrides` (typed as Hydra types them: ``3e-1`` and ``0.3`` are one value).

    Returns:
        (rows sorted by job number, the names of the swept parameters: overrides that differ between jobs).

    Raises:
        FileNotFoundError: no ``summary.json`` under ``root`` (names the folder).
        ValueError: a job's ``.hydra/overrides.yaml`` is not a list of overrides (names the file and the item).
    """
    root = Path(root)
    jobs = job_folders(root)
    if not jobs:
        raise FileNotFoundError(f"no summary.json under {root}: pass a multirun folder (outputs/<task>/multiruns/<date>)")
    rows = []
    job_keys: set[str] = set()
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        overrides = job_overrides(job)
        job_keys.update(overrides)
        members = summary.get("members")
        if isinstance(members, list) and members and all(isinstance(m, dict) and "label" in m for m in members):
            labels = {m["label"] for m in members}
            own: dict[str, dict[str, Any]] = {lab: {} for lab in labels}  # "<key>/<label>": a member's own measurement
            for k, v in summary.items():
                key, _, lab = k.rpartition("/")
                if lab in labels and key and _scalar(v):
                    own[lab][key] = v
            per_member = {k for row in own.values() for k in row}
            shared = {k: v for k, v in summary.items() if _scalar(v) and not k.startswith(_MEMBER_PREFIXES)
                      and k.rpartition("/")[2] not in labels and k not in per_member
                      and not (k.endswith("_std") and k[:-4] in per_member)}
            for m in members:
                settings = m.get("settings", {})
                job_keys.update(settings)
                metrics = {**own[m["label"]], **{k: v for k, v in m.items() if k not in ("label", "settings") and _scalar(v)}}
                rows.append(_with_errors({"job": f"{job.name}/{m['label']}", **overrides, **shared, **settings, **metrics,
                                          "_loss": _loss_name(job), "_dir": str(job), "_member": m["label"]}))
            continue
        row = {"job": job.name, **overrides}
        for k, v in summary.items():
            if _scalar(v):
                row[k] = v
        row["_loss"] = _loss_name(job)
        row["_dir"] = str(job)
        rows.append(_with_errors(row))
    swept = [k for k in sorted(job_keys, key=lambda k: (k in REPLICATE_KEYS, k)) if len({_setting(r.get(k)) for r in rows}) > 1]
    return rows, swept


# summary keys of an ensemble run that are means over its members (each member row has its own)
_MEMBER_PREFIXES = ("train/", "val/", "test/", "gap/", "ensemble/", "double_descent/", "weights/")
# swept keys whose values are replicates of one setting: averaged over, never a group of their own
REPLICATE_KEYS = ("seed", "data.order_seed", "data.label_noise_seed")


def _setting(v: Any) -> str:
    """A value as a setting: a number whatever its spelling (``lr=1`` and ``lr=1.0``, an int and a float once
    Hydra typed them, are one learning rate); anything else by its repr (``True`` is not ``1``)."""
    return repr(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _with_errors(row: dict[str, Any]) -> dict[str, Any]:
    for split in ("train", "val", "test"):
        if isinstance(row.get(f"{split}/acc"), (int, float)):
            row[f"{split}/err"] = 1.0 - row[f"{split}/acc"]
            if isinstance(row.get(f"{split}/acc_std"), (int, float)):
                row[f"{split}/err_std"] = row[f"{split}/acc_std"]
    return row


def group_keys(swept: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
    """The swept keys that define a setting: all but the replicate axes (seeds) and ``exclude``."""
    return [k for k in swept if k not in REPLICATE_KEYS and k not in exclude]


def aggregate(rows: list[dict[str, Any]], by: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per distinct value of ``by`` (first-appearance order): each metric's mean, its sample
    standard deviation as ``<metric>_std`` and its count as ``<metric>_n``; other columns that agree
    within the group are kept (e.g. ``params``, ``train_size``)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(_setting(r.get(k)) for k in by), []).append(r)
    out = []
    for members in groups.values():
        agg = {k: v for k, v in members[0].items() if all(m.get(k) == v for m in members)}
        for metric in metrics:
            vals = [m[metric] for m in members if isinstance(m.get(metric), (int, float)) and not isinstance(m.get(metric), bool)]
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            agg[metric] = mean
            if len(vals) > 1:
                agg[f"{metric}_std"] = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
            elif f"{metric}_std" not in agg:
                agg[f"{metric}_std"] = None
            agg[f"{metric}_n"] = len(vals)
        agg["_rows"] = members
        out.append(agg)
    return out


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
    by = group_keys(swept)
    metrics = [k for k in MAIN_KEYS if k not in ("params", "steps", "status") and any(k in r for r in rows)]
    groups = aggregate(rows, by, metrics)
    if by and any((g.get(f"{m}_n") or 0) > 1 for g in groups for m in metrics):
        cols = [*by, *[k for k in ("params",) if any(k in g for g in groups)], *metrics]
        lines += ["", f"Mean ± sd over the runs of each setting (n runs; replicate keys averaged: "
                      f"{', '.join(k for k in swept if k in REPLICATE_KEYS) or 'none'}):", "",
                  "| " + " | ".join(cols) + " | n |", "|" + " --- |" * (len(cols) + 1)]
        for g in groups:
            cells = []
            for k in cols:
                v = fmt(g.get(k))
                if isinstance(g.get(f"{k}_std"), float):
                    v += f" ± {g[f'{k}_std']:.2g}"
                cells.append(v)
            n = max((g.get(f"{m}_n") or 0) for m in metrics) if metrics else len(g["_rows"])
            lines.append("| " + " | ".join(cells) + f" | {n} |")
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
               mse_threshold: tuple[float, str] | None = None, logx: bool = True, title: str | None = None,
               series: list[str] | None = None) -> Path:
    """``metrics`` (with ± std bands when present) against ``x``, threshold lines marked; one line per
    value of the ``series`` keys (e.g. the learning rate when x is the width)."""
    numeric = all(isinstance(r.get(x), (int, float)) and not isinstance(r.get(x), bool) for r in rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault(tuple((k, r.get(k)) for k in series or []), []).append(r)
    for metric, (key, line) in ((m, kv) for m in metrics for kv in lines.items()):
        pts = [(r.get(x), r.get(metric), r.get(f"{metric}_std") or 0.0) for r in line if r.get(metric) is not None]
        if numeric:  # categories stay in the sweep's order
            pts.sort(key=lambda p: p[0])
        if not pts:
            continue
        xs = [p[0] for p in pts] if numeric else list(range(len(pts)))
        ys, sd = [p[1] for p in pts], [p[2] for p in pts]
        label = metric + (" (" + ", ".join(f"{k}={v}" for k, v in key) + ")" if key else "")
        ax.plot(xs, ys, "o-" if numeric else "o", markersize=3 if numeric else 6, label=label)
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


def _determined_by(rows: list[dict[str, Any]], key: str, x: str) -> bool:
    """Whether each value of ``x`` comes with one value of ``key`` (e.g. the width, given params)."""
    seen: dict[str, str] = {}
    return all(seen.setdefault(_setting(r.get(x)), _setting(r.get(key))) == _setting(r.get(key)) for r in rows)


def _read_series(job: Path, key: str, member: str | None = None) -> tuple[list[float], list[float]]:
    """The logged series ``key`` of a job (of one member of an ensemble run: ``key/<member>``)."""
    key = f"{key}/{member}" if member else key
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
        xs, ys = _read_series(Path(r["_dir"]), key, r.get("_member"))
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
    numeric = all(isinstance(r.get(x), (int, float)) and not isinstance(r.get(x), bool) for r in rows)
    # one point per setting: runs that differ only in replicate keys (seeds) are averaged (mean, sd)
    by = [x, *group_keys(swept, exclude=(x,))] if x in swept else group_keys(swept) or [x]
    points = aggregate(rows, by, sorted({*metrics, "train/err"}))
    result["settings"] = len(points)
    threshold = interpolation_threshold(points, x, tol) if numeric and any("train/err" in r for r in points) else None
    mse = None  # the parameter count that can interpolate: n x classes (squared loss) or n (cross-entropy heuristic)
    if x == "params" and rows and rows[0].get("train_size"):
        n, c = rows[0]["train_size"], rows[0].get("num_classes") or 1
        mse = (float(n * c), "params = n x classes") if rows[0].get("_loss") == "mse" else (float(n), "params = n")
    if metrics:
        name = "sweep_" + "_".join(m.replace("/", "-") for m in metrics) + f"_vs_{x.replace('/', '-')}.png"
        series = [k for k in by if k != x and not _determined_by(points, k, x)]
        result["figures"].append(str(plot_sweep(points, x, metrics, out / name, threshold, mse, logx, series=series)))
        result["curve"] = describe_curve(points, x, metrics[-1], threshold)
    for key in curves or []:
        result["figures"].append(str(plot_curves(rows, swept, key, out / f"curves_{key.replace('/', '-')}.png",
                                                 logy=key.endswith("loss"))))
    result["threshold"] = threshold
    return result


# -- statistics: mean and confidence interval per group, two-sample comparison ----------------------
def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({k for r in rows for k in r if not k.startswith("_")})


def _select(rows: list[dict[str, Any]], conditions: list[str]) -> list[dict[str, Any]]:
    """The rows matching every ``key=value`` condition (the value typed as the job overrides are:
    :func:`whylearn.runs.multirun.parse_override_value`; ``3e-1`` selects ``0.3``)."""
    out = rows
    for cond in conditions:
        key, sep, value = cond.partition("=")
        if not sep:
            raise ValueError(f"a group is selected by key=value, got {cond!r}")
        if not any(key in r for r in rows):
            raise ValueError(f"{key!r} is not in the runs; allowed: {_columns(rows)}")
        try:
            want = parse_override_value(value)
        except ValueError as e:
            raise ValueError(f"group {cond!r}: {e}") from None
        out = [r for r in out if r.get(key) == want or str(r.get(key)) == value]
    return out


def _values(rows: list[dict[str, Any]], metric: str) -> list[float]:
    return [float(r[metric]) for r in rows if isinstance(r.get(metric), (int, float)) and not isinstance(r[metric], bool)]


def stats_table(root: str | Path, metrics: list[str], by: list[str] | None = None, confidence: float = 0.95,
                out: str | Path | None = None, logx: bool = True) -> dict[str, Any]:
    """Mean, sd and the ``confidence`` Student-t interval of each metric per group of runs.

    Groups: the distinct values of ``by`` (default: every swept key but the replicates, i.e. the
    seeds), over the members of an ensemble run or the jobs of a multirun alike. Writes ``stats.md``,
    ``stats.json`` and one error-bar figure per metric (``stats_<metric>_by_<key>.png``) under
    ``out`` (default: ``root``).

    Raises:
        FileNotFoundError: no runs. ValueError: an unknown metric or key, confidence outside (0, 1).
    """
    rows, swept = load_sweep(root)
    by = list(by) if by else group_keys(swept)
    known = {k for r in rows for k in r if not k.startswith("_")}
    for k in [*by, *metrics]:
        if k not in known:
            raise ValueError(f"{k!r} is not in the runs; allowed: {sorted(known)}")
    out = Path(out) if out is not None else Path(root)
    out.mkdir(parents=True, exist_ok=True)
    groups = aggregate(rows, by, [])
    try:  # numeric (or otherwise ordered) settings in order, not in the order the runs were found
        groups.sort(key=lambda g: tuple(g.get(k) for k in by))
    except TypeError:
        pass
    table = []
    for g in groups:
        entry = {k: g.get(k) for k in by}
        for metric in metrics:
            vals = _values(g["_rows"], metric)
            entry[metric] = mean_ci(vals, confidence) if vals else None
        table.append(entry)
    pct = f"{confidence:.0%}"
    lines = ["| " + " | ".join([*by, *[f"{m} (mean ± sd, {pct} CI, n)" for m in metrics]]) + " |",
             "|" + " --- |" * (len(by) + len(metrics))]
    for e in table:
        cells = [str(e[k]) for k in by]
        for m in metrics:
            c = e[m]
            if c is None:
                cells.append("")
            elif c["sd"] is None:
                cells.append(f"{c['mean']:.4g} (n=1)")
            else:
                cells.append(f"{c['mean']:.4g} ± {c['sd']:.2g}, [{c['ci_low']:.4g}, {c['ci_high']:.4g}], n={c['n']}")
        lines.append("| " + " | ".join(cells) + " |")
    (out / "stats.md").write_text("\n".join(lines) + "\n")
    (out / "stats.json").write_text(json.dumps({"by": by, "confidence": confidence, "groups": table}, indent=2, default=str))
    figures = []
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        pts = [(e, e[metric]) for e in table if e[metric] is not None]
        numeric = len(by) == 1 and all(isinstance(e[by[0]], (int, float)) and not isinstance(e[by[0]], bool) for e, _ in pts)
        xs = [e[by[0]] for e, _ in pts] if numeric else list(range(len(pts)))
        ys = [c["mean"] for _, c in pts]
        err = [c["half_width"] or 0.0 for _, c in pts]
        ax.errorbar(xs, ys, yerr=err, fmt="o-" if numeric else "o", capsize=3, ms=4, label=f"mean ± {pct} CI")
        log = numeric and logx and all(v > 0 for v in xs)
        span = (max(xs) - min(xs)) if xs else 1.0
        for (e, _), xv in zip(pts, xs, strict=False):  # the runs themselves, just right of their group's bar
            vals = _values([r for r in rows if all(r.get(k) == e[k] for k in by)], metric)
            shifted = xv * 1.06 if log else xv + 0.012 * (span or 1.0)
            ax.plot([shifted] * len(vals), vals, ".", color="gray", alpha=0.7, ms=4)
        if log:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(xs, [", ".join(str(e[k]) for k in by) for e, _ in pts], rotation=30, fontsize=7)
        ax.set_xlabel(", ".join(by) or "all runs")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: mean ± {pct} confidence interval per group; dots: the runs", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figures.append(str(save_figure(fig, out / f"stats_{metric.replace('/', '-')}_by_{'_'.join(by) or 'all'}.png",
                                       grid=False)))
    return {"by": by, "groups": table, "markdown": str(out / "stats.md"), "figures": figures}


def compare(root: str | Path, metric: str, a: list[str], b: list[str], confidence: float = 0.95,
            n_resamples: int = 10_000, seed: int = 0, out: str | Path | None = None) -> dict[str, Any]:
    """Two groups of runs (selected by ``key=value`` conditions) compared on ``metric``: Welch's t-test
    and a bootstrap interval of mean(a) - mean(b) (:func:`whylearn.analysis.stats.compare_groups`);
    drawn as both groups' runs with mean ± CI error bars and the difference with its interval
    (``compare_<metric>.png``), written to ``compare.json``.

    Raises:
        FileNotFoundError: no runs. ValueError: an unknown key or metric, a group with fewer than 2 runs.
    """
    rows, _ = load_sweep(root)
    if not any(metric in r for r in rows):
        raise ValueError(f"{metric!r} is not in the runs; allowed: {_columns(rows)}")
    va, vb = _values(_select(rows, a), metric), _values(_select(rows, b), metric)
    for name, cond, vals in (("a", a, va), ("b", b, vb)):
        if len(vals) < 2:
            raise ValueError(f"group {name} ({' '.join(cond)}) has {len(vals)} run(s) with {metric}; a t-test needs >= 2")
    res = compare_groups(va, vb, confidence, n_resamples, seed)
    res.update({"metric": metric, "a": a, "b": b, "values_a": va, "values_b": vb})
    out = Path(out) if out is not None else Path(root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(res, indent=2))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    for i, vals in enumerate((va, vb)):
        c = mean_ci(vals, confidence)
        ax.plot([i] * len(vals), vals, ".", color="gray", alpha=0.6)
        ax.errorbar([i + 0.15], [c["mean"]], yerr=[[c["half_width"]], [c["half_width"]]], fmt="o", capsize=4)
    ax.set_xticks([0, 1], [" ".join(a), " ".join(b)])
    ax.set_ylabel(metric)
    ax.set_title(f"runs and mean ± {confidence:.0%} CI")
    ax.grid(alpha=0.3)
    ax2.errorbar([0], [res["diff"]], yerr=[[res["diff"] - res["boot_low"]], [res["boot_high"] - res["diff"]]], fmt="o",
                 capsize=4, color="C3")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xticks([0], ["a - b"])
    ax2.set_title(f"Welch p = {res['p_value']:.3g}\nbootstrap {confidence:.0%} interval")
    ax2.grid(alpha=0.3)
    res["figure"] = str(save_figure(fig, out / f"compare_{metric.replace('/', '-')}.png", grid=False))
    return res


def _print_compare(res: dict[str, Any]) -> None:
    pct = f"{res['confidence']:.0%}"
    print(f"{res['metric']}: a = {' '.join(res['a'])}: mean {res['mean_a']:.4g} (n={res['n_a']}); "
          f"b = {' '.join(res['b'])}: mean {res['mean_b']:.4g} (n={res['n_b']})")
    print(f"difference a - b = {res['diff']:.4g}, bootstrap {pct} interval [{res['boot_low']:.4g}, {res['boot_high']:.4g}]")
    print(f"Welch's t-test: t = {res['t']:.4g}, df = {res['df']:.3g}, two-sided p = {res['p_value']:.4g}")
    print(f"figure: {res['figure']}")


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
    st = sub.add_parser("stats", help="mean ± confidence interval of metrics per group of runs (members or jobs)")
    st.add_argument("root", help="a multirun folder or an ensemble run folder")
    st.add_argument("--metric", action="append", required=True, help="summary key(s), e.g. test/err")
    st.add_argument("--by", action="append", default=None, help="group by these keys (default: the swept keys but seeds)")
    st.add_argument("--confidence", type=float, default=0.95)
    st.add_argument("--out", default=None)
    st.add_argument("--linear-x", action="store_true")
    cp = sub.add_parser("compare", help="Welch's t-test and bootstrap interval between two groups of runs")
    cp.add_argument("root", help="a multirun folder or an ensemble run folder")
    cp.add_argument("--metric", required=True, help="summary key, e.g. test/err")
    cp.add_argument("--a", action="append", required=True, help="key=value selecting group a (repeat to combine)")
    cp.add_argument("--b", action="append", required=True, help="key=value selecting group b (repeat to combine)")
    cp.add_argument("--confidence", type=float, default=0.95)
    cp.add_argument("--resamples", type=int, default=10_000)
    cp.add_argument("--seed", type=int, default=0, help="of the bootstrap")
    cp.add_argument("--out", default=None)
    fidelity.add_parser(sub)
    args = ap.parse_args(argv)
    if args.command == "fidelity":
        return fidelity.main(args)
    try:
        if args.command == "stats":
            res = stats_table(args.root, args.metric, args.by, args.confidence, args.out, not args.linear_x)
            print(Path(res["markdown"]).read_text())
            print("\n".join(f"figure: {f}" for f in res["figures"]))
            return 0
        if args.command == "compare":
            _print_compare(compare(args.root, args.metric, args.a, args.b, args.confidence, args.resamples, args.seed,
                                   args.out))
            return 0
        res = sweep(args.root, args.x, args.metric, args.out, args.curve, not args.linear_x, args.tol)
    except (FileNotFoundError, ValueError) as e:
        print(f"whylearn-analyze: {e}", file=sys.stderr)
        return 2
    print(Path(res["markdown"]).read_text())
    print(json.dumps({k: v for k, v in res.items()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

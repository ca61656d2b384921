"""The largest stable learning rate per arm of a learning-rate multirun: table and figure.

    python scripts/lr_stability_report.py outputs/batchnorm_lr_sweep/multiruns/<date> \
        --arm model.norm --out docs/figures/batchnorm_lr_sweep.png

Reads every job folder under the multirun folder (or under several multirun folders, one grid split by arm; or
under ``outputs/<task>/multiruns``, all of its multiruns) (``<n>_<overrides>/``: ``.hydra/overrides.yaml`` and
``summary.json``) as ``whylearn-analyze sweep`` reads them: the override values typed by Hydra's grammar
(``optimizer.lr=3e-1`` is the grid point 0.3). A job *trains* when it completed (a job whose training loss became NaN or infinite
failed with whylearn's ``NonFiniteLossError``: *diverged*) and its final training loss (``train/loss``
of summary.json: eval mode, the whole training split) is finite and below ``--threshold`` (default 2.0,
0.87 x ln 10, the loss of a 10-class classifier at chance). The largest stable learning rate of an arm is
the largest grid point at which every seed trains; the table also gives, per point, how many seeds
trained and the mean ± sd (over the seeds that completed) of the final training loss and test accuracy.
Used by docs/experiments.md for ``experiment=batchnorm_lr_sweep``.

Raises SystemExit naming the folder when it holds no job with a summary.json (or is one job's folder), and naming
the job when a job lacks the ``--arm`` or ``--x`` override, its ``--x`` value is not a number or its overrides.yaml
cannot be read.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from whylearn.analysis.plotting import save_figure, subplots
from whylearn.runs.multirun import job_folders, job_overrides


def _text(value: object) -> str:
    """An override value as the command line writes it (``true``, ``null``, ``0.3``): the arm's name."""
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def read_jobs(root: Path, arm_key: str, x_key: str, seed_key: str = "seed", allow_empty: bool = False) -> list[dict]:
    """One dict per job folder under ``root``: arm (text), x (float), seed, status, error, train/loss, test/acc.

    The jobs and their overrides are read as ``whylearn-analyze sweep`` reads them
    (:func:`whylearn.runs.multirun.job_folders`, :func:`~whylearn.runs.multirun.job_overrides`): values typed by
    Hydra's override grammar, so ``optimizer.lr=3e-1`` and ``optimizer.lr=0.3`` are one grid point and
    ``model.norm='batch'`` is the arm ``batch``.

    ``allow_empty``: a folder without finished jobs gives [] (one of several multiruns, still running).
    Raises SystemExit naming the folder (no job, or ``root`` is one job's own folder), the job and its overrides
    (no ``arm_key`` or ``x_key`` override, or an unreadable overrides.yaml), or the job and the value (an ``x_key``
    that is not a number)."""
    if (root / "summary.json").is_file():
        raise SystemExit(f"{root} holds no job folder with a summary.json: it is one job's folder "
                         "(pass the multirun folder above it, outputs/<task>/multiruns/<date>)")
    jobs = []
    for job in job_folders(root):
        try:
            overrides = job_overrides(job)
        except ValueError as e:
            raise SystemExit(f"job {job.name}: {e}") from None
        for key in (arm_key, x_key):
            if key not in overrides:
                raise SystemExit(f"job {job.name} has no override {key!r} (its overrides: {sorted(overrides)})")
        x = overrides[x_key]
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise SystemExit(f"job {job.name}: {x_key}={_text(x)!r} is not a number (--x is the swept learning "
                             "rate, a numeric override)")
        s = json.loads((job / "summary.json").read_text())
        jobs.append({"arm": _text(overrides[arm_key]), "x": float(x), "seed": overrides.get(seed_key),
                     "status": s.get("status"), "error": s.get("error"),
                     "loss": s.get("train/loss"), "acc": s.get("test/acc")})
    if not jobs and not allow_empty:
        raise SystemExit(f"{root} holds no job folder with a summary.json (expected a multirun folder)")
    return jobs


def trains(job: dict, threshold: float) -> bool:
    """Completed, and the final training loss is finite and below ``threshold``."""
    loss = job["loss"]
    return job["status"] == "completed" and loss is not None and math.isfinite(loss) and loss < threshold


def _mean_sd(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def table(jobs: list[dict], threshold: float) -> dict[str, dict[float, dict]]:
    """``{arm: {x: {n, trained, diverged, loss (mean, sd), acc (mean, sd)}}}`` and, per arm, ``largest``."""
    by = defaultdict(lambda: defaultdict(list))
    for j in jobs:
        by[j["arm"]][j["x"]].append(j)
    out = {}
    for arm, points in by.items():
        rows = {}
        for x, js in sorted(points.items()):
            done = [j for j in js if j["status"] == "completed" and j["loss"] is not None and math.isfinite(j["loss"])]
            rows[x] = {"n": len(js), "trained": sum(trains(j, threshold) for j in js),
                       "diverged": sum(j["status"] != "completed" for j in js),
                       "loss": _mean_sd([j["loss"] for j in done]), "acc": _mean_sd([j["acc"] for j in done])}
        stable = [x for x, r in rows.items() if r["trained"] == r["n"]]
        out[arm] = {"rows": rows, "largest": max(stable) if stable else None}
    return out


def _cell(mean: float, sd: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" if math.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, nargs="+", help="the multirun folder(s) (outputs/<task>/multiruns/<date>)")
    ap.add_argument("--arm", default="model.norm", help="the override that names an arm (one line per arm)")
    ap.add_argument("--x", default="optimizer.lr", help="the swept learning rate (log x axis)")
    ap.add_argument("--threshold", type=float, default=2.0, help="final training loss below which a run trains")
    ap.add_argument("--out", type=Path, help="figure path (PNG)")
    args = ap.parse_args()
    jobs = [j for root in args.root for j in read_jobs(root, args.arm, args.x, allow_empty=len(args.root) > 1)]
    if not jobs:
        raise SystemExit(f"no job folder with a summary.json in {', '.join(map(str, args.root))}")
    result = table(jobs, args.threshold)
    print(f"| {args.arm} | {args.x} | seeds trained | diverged (NaN/inf) | final train loss (mean ± sd) | test acc (mean ± sd) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for arm, res in result.items():
        for x, r in res["rows"].items():
            (lm, ls), (am, asd) = r["loss"], r["acc"]
            print(f"| {arm} | {x:g} | {r['trained']}/{r['n']} | {r['diverged']} | {_cell(lm, ls)} | {_cell(am, asd)} |")
    for arm, res in result.items():
        unstable = [x for x, r in res["rows"].items() if r["diverged"]]
        print(f"smallest {args.x} with a diverged seed ({arm}): {min(unstable) if unstable else 'none on the grid'}")
        print(f"largest stable {args.x} ({arm}): {res['largest'] if res['largest'] is not None else 'none on the grid'}")
    if args.out:
        fig, axes = subplots(ncols=2, width=5.0, height=3.8)
        for i, (arm, res) in enumerate(result.items()):
            xs = list(res["rows"])
            off = 1.0 + 0.04 * (i - 1)  # a small horizontal offset per arm, so the error bars do not overlap
            for ax, key in zip(axes, ("loss", "acc"), strict=True):
                m = [res["rows"][x][key][0] for x in xs]
                s = [0.0 if math.isnan(res["rows"][x][key][1]) else res["rows"][x][key][1] for x in xs]
                line = ax.errorbar([x * off for x in xs], m, yerr=s, marker="o", capsize=3, label=arm)
                # the points where a seed diverged: an x at the top of the panel, annotated k/n
                for x in xs:
                    r = res["rows"][x]
                    if math.isnan(r[key][0]):  # no seed completed: every one diverged
                        ax.plot([x * off], [0.97], marker="x", ms=8, color=line[0].get_color(),
                                transform=ax.get_xaxis_transform())
                    if r["trained"] < r["n"]:
                        ax.annotate(f"{r['n'] - r['trained']}/{r['n']}", (x * off, 1.0), xycoords=("data", "axes fraction"),
                                    textcoords="offset points", xytext=(0, -12 - 10 * i), ha="center", fontsize=7,
                                    color=line[0].get_color())
        grid = sorted({x for res in result.values() for x in res["rows"]})
        for ax in axes:
            ax.set_xlim(grid[0] / 1.6, grid[-1] * 1.6)
        axes[0].axhline(args.threshold, color="gray", ls="--", lw=1, label=f"threshold {args.threshold:g}")
        axes[0].axhline(math.log(10), color="gray", ls=":", lw=1, label="chance, ln 10")
        axes[0].set(xscale="log", xlabel=args.x, ylabel="final training loss (completed seeds)")
        axes[1].set(xscale="log", xlabel=args.x, ylabel="test accuracy (completed seeds)")
        axes[0].legend(fontsize=7)
        fig.suptitle("mean ± sd over the seeds that completed; k/n at the top: seeds that did not train (diverged or "
                     "above the threshold); x: every seed diverged (NaN)",
                     fontsize=8)
        print(f"figure: {save_figure(fig, args.out)}")


if __name__ == "__main__":
    main()

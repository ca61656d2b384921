"""Mean ± sd per arm of finished runs, and train/test curves of the arms side by side (one figure).

    python scripts/arms_report.py --arm "full batch=RUN_DIR,RUN_DIR,RUN_DIR" --arm "SGD=..." \
        --keys test/acc train/acc --curves val/acc train_eval/acc --log-curve noise/grad_norm_sq \
        --out docs/figures/fullbatch_vs_sgd.png

Each ``--arm`` is ``label=dir1,dir2,...`` (whylearn run directories, one per seed). The table reads each
run's summary.json; the curves read each run's csv/metrics.csv (mean over seeds, shaded ± sd, against the
step). Used by docs/experiments.md for the full-batch-vs-SGD and LayerNorm/warm-up grids.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import numpy as np

from whylearn.analysis.plotting import save_figure, subplots


def curve(run: Path, key: str) -> dict[int, float]:
    rows = csv.DictReader(open(run / "csv" / "metrics.csv"))
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key) not in (None, "")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", action="append", required=True, help="label=run_dir,run_dir,...")
    ap.add_argument("--keys", nargs="+", default=["test/acc"], help="summary.json keys for the table")
    ap.add_argument("--curves", nargs="*", default=[], help="metrics.csv columns, one panel each")
    ap.add_argument("--log-curve", nargs="*", default=[], help="metrics.csv columns drawn on a log y axis")
    ap.add_argument("--out", help="figure path (PNG)")
    args = ap.parse_args()
    arms = {}
    for spec in args.arm:
        label, _, dirs = spec.partition("=")
        arms[label] = [Path(d) for d in dirs.split(",") if d]
    print("| arm | seeds | " + " | ".join(args.keys) + " |")
    print("|---|---|" + "---|" * len(args.keys))
    for label, runs in arms.items():
        sums = [json.loads((r / "summary.json").read_text()) for r in runs]
        cells = []
        for k in args.keys:
            vals = [float(s[k]) for s in sums if s.get(k) is not None]
            sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
            cells.append(f"{statistics.mean(vals):.4g} ± {sd:.2g}" if vals else "-")
        print(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    panels = [(k, False) for k in args.curves] + [(k, True) for k in args.log_curve]
    if args.out and panels:
        fig, axes = subplots(ncols=len(panels), width=4.5, height=3.5)
        axes = np.atleast_1d(axes)
        for ax, (key, log) in zip(axes, panels, strict=True):
            for label, runs in arms.items():
                cs = [curve(r, key) for r in runs]
                steps = sorted(set.intersection(*(set(c) for c in cs)))
                if not steps:
                    continue
                v = np.array([[c[s] for s in steps] for c in cs])
                mean, sd = v.mean(0), v.std(0)
                ax.plot(steps, mean, label=label)
                low = np.maximum(mean - sd, mean / 10) if log else mean - sd   # a log axis cannot show <= 0
                ax.fill_between(steps, low, mean + sd, alpha=0.2)
            ax.set_xlabel("optimizer step")
            ax.set_title(key)
            if log:
                ax.set_yscale("log")
        axes[0].legend()
        print("figure:", save_figure(fig, args.out))


if __name__ == "__main__":
    main()

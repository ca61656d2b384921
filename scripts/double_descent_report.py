"""The double-descent result of the docs, from one command: run UDL notebook 8.3's full protocol, draw
the figure and write the measured section of docs/experiments.md and the row of docs/benchmarks.md.

    python scripts/double_descent_report.py --run --bench

``--run`` trains ``experiment=double_descent_mnist1d`` (28 widths x 3 seeds x 1000 epochs, one
vectorized run) with ``whylearn-train`` in a subprocess and times it; ``--run-dir DIR`` reports an
existing run instead. ``--bench`` also runs ``scripts/bench_sweep.py`` (speedup over sequential single
runs, fraction of the measured matmul peak). The text between the ``<!-- double-descent:... -->``
markers of the two docs is replaced; everything it states is computed from the run's summary.json
(mean ± sd over the seeds; Welch's t-test between the widths named).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.analysis.stats import compare_groups, describe_double_descent, mean_ci  # noqa: E402
from whylearn.cli.analyze import load_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# UDL Fig. 8.10b, read from its vector data (udlbook PDFFigures/UDLChap8PDF.zip, PerfDoubleDescent.pdf); approx.
BOOK = {"first_min": (29, 0.395), "peak": (69, 0.499), "threshold": 71, "largest": (400, 0.35)}


def replace_block(path: Path, name: str, text: str) -> None:
    doc = path.read_text()
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{path} has no <!-- {name}:begin --> ... <!-- {name}:end --> block")
    path.write_text(pattern.sub(lambda m: m.group(1) + text.rstrip() + "\n" + m.group(2), doc))


def per_width(rows: list[dict]) -> list[dict]:
    widths = sorted({r["model.width"] for r in rows})
    out = []
    for w in widths:
        mine = [r for r in rows if r["model.width"] == w]
        out.append({"width": w, "params": mine[0]["params"], "n": len(mine),
                    "train": [r["train/err"] for r in mine], "test": [r["test/err"] for r in mine],
                    "test_loss": [r["test/loss"] for r in mine]})
    return out


def _ms(values: list[float], digits: int = 3) -> str:
    c = mean_ci(values)
    return f"{c['mean']:.{digits}f}" + (f" ± {c['sd']:.{digits}f}" if c["sd"] is not None else "")


def figure(points: list[dict], d: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "width", "hidden width (two layers)"), (axes[1], "params", "parameters")):
        xs = [p[key] for p in points]
        for split, color in (("train", "C0"), ("test", "C3")):
            m = [mean_ci(p[split])["mean"] for p in points]
            sd = [mean_ci(p[split])["sd"] or 0.0 for p in points]
            ax.plot(xs, m, "o-", ms=3, color=color, label=f"{split} error (mean ± sd, {points[0]['n']} seeds)")
            ax.fill_between(xs, [a - b for a, b in zip(m, sd, strict=True)], [a + b for a, b in zip(m, sd, strict=True)],
                            color=color, alpha=0.2)
        by_width = {p["width"]: p[key] for p in points}
        if d.get("threshold_x") is not None:
            ax.axvline(by_width[d["threshold_x"]], color="k", ls="--", lw=1,
                       label=f"interpolation threshold (width {d['threshold_x']})")
        if key == "params":
            ax.axvline(4000, color="gray", ls=":", lw=1, label="parameters = 4000 training examples")
            ax.set_xscale("log")
        else:
            bw = [BOOK["first_min"][0], BOOK["peak"][0], BOOK["largest"][0]]
            be = [BOOK["first_min"][1], BOOK["peak"][1], BOOK["largest"][1]]
            ax.plot(bw, be, "kx", ms=8, mew=2, label="UDL Fig. 8.10b test error (first min, peak, width 400)")
        ax.set_xlabel(label)
        ax.set_ylabel("error")
        ax.set_ylim(0, min(1.0, max(mean_ci(p["test"])["mean"] for p in points) + 0.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Double descent, UDL notebook 8.3's protocol: MNIST-1D, 4000 training examples, 15% label noise")
    return save_figure(fig, path, grid=False)


def report(run_dir: Path, wall_s: float | None, bench: dict | None, figure_dir: Path) -> tuple[str, str]:
    summary = json.loads((run_dir / "summary.json").read_text())
    rows, _ = load_sweep(run_dir)
    points = per_width(rows)
    xs = [p["width"] for p in points]
    mean = {p["width"]: (mean_ci(p["train"])["mean"], mean_ci(p["test"])["mean"]) for p in points}
    d = describe_double_descent(xs, [mean[w][0] for w in xs], [mean[w][1] for w in xs])
    fig = figure(points, d, figure_dir / "double_descent_mnist1d.png")
    by = {p["width"]: p for p in points}
    lines = [f"**What whylearn measured** ({summary['ensemble/members']} networks in one run, "
             f"{summary['epochs']} epochs, {summary['steps']} optimizer steps each; mean ± sd over the "
             f"{points[0]['n']} seeds; test = the 4000 test examples):", "",
             "| width | params | train error | test error | test loss |", "| --- | --- | --- | --- | --- |"]
    for p in points:
        lines.append(f"| {p['width']} | {p['params']} | {_ms(p['train'])} | {_ms(p['test'])} | {_ms(p['test_loss'], 2)} |")
    lines += ["", f"![double descent on MNIST-1D, UDL notebook 8.3's protocol](figures/{Path(fig).name})", ""]
    t = d.get("threshold_x")
    if t is None:
        lines.append("- No width fits the noisy training set exactly (mean training error 0): no interpolation threshold.")
    else:
        lines.append(f"- Interpolation threshold: width {t} ({by[t]['params']} parameters, "
                     f"{by[t]['params'] / 4000:.1f} x the 4000 training examples) is the smallest width whose training "
                     f"error is 0 for the mean of the seeds and for every wider network (book: about width 71-75).")
    if d.get("first_min_x") is not None:
        f = d["first_min_x"]
        where = "below the threshold" if t is not None else "over all widths: none interpolates"
        lines.append(f"- First minimum of the test error ({where}): width {f}, {_ms(by[f]['test'])} "
                     f"(book: about 0.395 near width 29).")
    pk = d["peak_x"]
    lines.append(f"- Peak after it: width {pk} ({by[pk]['params']} parameters), {_ms(by[pk]['test'])} "
                 f"(book: about 0.499 near width 69)" + (f"; peak width / threshold width = {d['peak_over_threshold']:.2f}."
                                                          if d.get("peak_over_threshold") else "."))
    if d.get("first_min_x") not in (None, pk) and by[pk]["n"] > 1:
        c = compare_groups(by[pk]["test"], by[d["first_min_x"]]["test"])
        lines.append(f"- Peak minus first minimum: {c['diff']:+.3f} (bootstrap 95% interval [{c['boot_low']:+.3f}, "
                     f"{c['boot_high']:+.3f}], Welch's t-test p = {c['p_value']:.2g}).")
    if d.get("second_min_x") is not None and d.get("first_min_x") is not None:
        s, f = d["second_min_x"], d["first_min_x"]
        verdict = "below" if d["second_minus_first"] < 0 else "not below"
        text = (f"- Second descent: the lowest test error after the peak is {_ms(by[s]['test'])} at width {s}, "
                f"{verdict} the first minimum ({d['second_minus_first']:+.3f}")
        if by[s]["n"] > 1:
            c = compare_groups(by[s]["test"], by[f]["test"])
            text += f"; Welch's t-test p = {c['p_value']:.2g}, bootstrap 95% interval [{c['boot_low']:+.3f}, {c['boot_high']:+.3f}]"
        lines.append(text + f"). Width 400: {_ms(by[max(xs)]['test'])} (book: about 0.35).")
    ref = summary.get("reference")
    if isinstance(ref, list):
        lines += ["", "Reference verdicts (`reference:` of the experiment, in summary.json):", "",
                  "| quantity | published | measured | verdict |", "| --- | --- | --- | --- |"]
        for r in ref:
            lines.append(f"| {r.get('quantity')} | {r.get('published')} | {r.get('measured')} | {r.get('verdict')} |")
    fit_s = summary.get("fit_time_s")
    bench_lines = [f"Full protocol (`experiment=double_descent_mnist1d`: 28 widths x 3 seeds x 1000 epochs, one run): "
                   f"fit {fit_s / 60:.1f} min" + (f", {wall_s / 60:.1f} min wall for the whole command" if wall_s else "")
                   + f", {summary['ensemble/members'] * summary['steps'] / fit_s:.0f} seed-steps/s; load average "
                   f"{os.getloadavg()[0]:.1f} at the end."]
    if bench:
        bench_lines += ["", bench["table"]]
    return "\n".join(lines), "\n".join(bench_lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="train the full protocol now")
    ap.add_argument("--run-dir", default=None, help="report this finished run instead")
    ap.add_argument("--bench", action="store_true", help="also run scripts/bench_sweep.py")
    ap.add_argument("--overrides", nargs="*", default=[], help="extra whylearn-train overrides (e.g. for a smoke test)")
    ap.add_argument("--no-docs", action="store_true", help="print instead of writing the docs")
    args = ap.parse_args()
    wall = None
    if args.run:
        run_dir = ROOT / "outputs" / "double_descent_mnist1d" / "report" / time.strftime("%Y-%m-%d_%H-%M-%S")
        cmd = [sys.executable, "-m", "whylearn.cli.train", "experiment=double_descent_mnist1d", "logger=csv",
               f"hydra.run.dir={run_dir}", "progress=lines", *args.overrides]
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
    elif args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        raise SystemExit("give --run or --run-dir DIR")
    bench = None
    if args.bench:
        out = run_dir / "bench_sweep.json"
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_sweep.py"), "--json", str(out)], check=True,
                              capture_output=True, text=True)
        table = "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("|", "fp32", "sequential")))
        bench = {"table": "```bash\npython scripts/bench_sweep.py\n```\n\n" + table}
    text, bench_text = report(run_dir, wall, bench, run_dir if args.no_docs else ROOT / "docs" / "figures")
    if args.no_docs:
        print(text, "\n\n", bench_text)
        return
    replace_block(ROOT / "docs" / "experiments.md", "double-descent", text)
    replace_block(ROOT / "docs" / "benchmarks.md", "double-descent", bench_text)
    print(text, "\n\n", bench_text)


if __name__ == "__main__":
    main()

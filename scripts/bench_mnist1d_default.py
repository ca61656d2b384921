"""The default experiment's cost: ``mnist1d_mlp`` before and after it became MNIST-1D's own MLP baseline.

Before: MLP 40-100-100-10, SGD momentum 0.9, 200 epochs of 3600 samples (7200 steps). After: MLPBase
40-256-256-10 with the residual second layer, Adam, 6000 steps of 4000 samples. Both train through
``whylearn.experiment.run`` in this one process, alternating, so the ratio of their fit times does not depend
on the machine's load at one moment (docs/benchmarks.md).

    python scripts/bench_mnist1d_default.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

BEFORE = ["model.hidden=[100,100]", "model.residual=false", "optimizer=sgd", "optimizer.lr=0.01", "optimizer.momentum=0.9",
          "data.val_size=0.1", "data.shuffle=true", "trainer.max_steps=7200", "seed=0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from conftest import compose
    from whylearn.experiment import run

    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.repeats):
        for name, extra in (("before", BEFORE), ("after", [])):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = compose(["experiment=mnist1d_mlp", "logger=csv", "threads=1", *extra], Path(tmp))
                s = run(cfg)
                times[name].append(s["fit_time_s"])
                print(f"{name}: {s['steps']} steps, fit {s['fit_time_s']:.1f} s, test acc {s['test/acc']:.3f}", flush=True)
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"| before (7200 steps) | {b:.1f} s |\n| after (6000 steps) | {a:.1f} s |\n| ratio after / before | {a / b:.2f} |")


if __name__ == "__main__":
    main()

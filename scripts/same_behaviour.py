"""Same behaviour before and after a refactor: run four experiments with fixed seeds, compare their summary.json.

    python scripts/same_behaviour.py run  OUT_DIR [--data-dir ../shared/data] [--entry whylearn.cli.train:main]
    python scripts/same_behaviour.py compare BEFORE_DIR AFTER_DIR                # exit 1 on any difference

The runs (``logger=csv threads=1``, each experiment's own fixed seed): ``mnist1d_mlp`` (200 steps),
``perceptron_separable`` (as configured), ``knn`` (small sizes of every sweep) and ``kepler`` (N = 30 and 100,
one seed, 100 steps). ``compare`` flattens both summaries and requires every value to be equal, except the
fields that hold wall-clock times or paths (:data:`IGNORED_SUFFIXES`), and prints one line per run. A study
compared with its run from before the Study protocol may lack the fields of :data:`PLACEHOLDER_ONLY`;
``compare`` names the ones it dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

RUNS = {
    "mnist1d_mlp": ["experiment=mnist1d_mlp", "trainer.max_steps=200"],
    "perceptron_separable": ["experiment=perceptron_separable"],
    "knn": ["experiment=knn", "study.mnist_train_sizes=[100,300]", "study.mnist1d_train_sizes=[100,300]",
            "study.ks=[1,3]", "study.label_noise=[0.0,0.2]", "study.noise_dims=[0,10]",
            "study.base_train_size=300", "study.num_test=200"],
    "kepler": ["experiment=kepler", "study.num_train=[30,100]", "study.num_seeds=1", "study.max_steps=100"],
}
# Studies (knn, kepler) ran through Trainer.fit with a placeholder datamodule and model until the Study
# protocol (whylearn.studies.base): these fields described only that placeholder fit (a one-sample data set
# named "none", a model without parameters, one epoch of zero steps) and a study's summary no longer has
# them. ``compare`` accepts them missing from AFTER when BEFORE is such a run, and says so.
PLACEHOLDER_ONLY = ("dataset", "params", "epochs", "steps", "steps_per_s", "fit_time_s", "segments",
                    "weights/l2_total", "weights/dist_from_init", "weights/rel_dist_from_init")
# wall-clock times, paths and the command line: they differ between any two runs
IGNORED_SUFFIXES = ("time_s", "_time", "_per_s", "run_dir", "out_dir", "overrides", "wall_s", "seconds")


def ignored(key: str) -> bool:
    last = re.sub(r"\[\d+\]$", "", key.split("/")[-1].split(".")[-1])  # overrides[3] is an entry of `overrides`
    return any(last.endswith(s) for s in IGNORED_SUFFIXES) or ".segments" in key or key.startswith("segments")


def flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def train_entry() -> str:
    """``module:function`` of the installed ``whylearn-train`` console script."""
    from importlib.metadata import entry_points

    return next(iter(entry_points(group="console_scripts", name="whylearn-train"))).value


def run(out_dir: Path, data_dir: str, entry: str | None = None) -> None:
    module, function = (entry or train_entry()).split(":")
    launcher = f"import sys; from {module} import {function} as main; sys.argv[0] = 'whylearn-train'; main()"
    env = {**os.environ, "WANDB_MODE": "offline"}
    for name, args in RUNS.items():
        cmd = [sys.executable, "-c", launcher, *args, "logger=csv", "threads=1", f"paths.data_dir={data_dir}",
               f"hydra.run.dir={(out_dir / name).resolve()}"]
        print(" ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def placeholder_fit(summary: dict) -> bool:
    """The summary of a study that ran as a placeholder fit (before the Study protocol)."""
    return summary.get("dataset") == "none" and summary.get("params") == 0


def compare(before: Path, after: Path) -> int:
    failed = 0
    for name in RUNS:
        raw_a = json.loads((before / name / "summary.json").read_text())
        raw_b = json.loads((after / name / "summary.json").read_text())
        a, b = flatten(raw_a), flatten(raw_b)
        dropped = []
        if placeholder_fit(raw_a) and not placeholder_fit(raw_b):
            dropped = sorted(k for k in raw_a if k in PLACEHOLDER_ONLY and k not in raw_b)
            a = {k: v for k, v in a.items() if k.split(".")[0].split("[")[0] not in dropped}
        keys = sorted(k for k in set(a) | set(b) if not ignored(k))
        diff = [k for k in keys if a.get(k, "<missing>") != b.get(k, "<missing>")]
        print(f"{name}: {len(keys) - len(diff)} of {len(keys)} fields equal" + (f"; DIFFERENT: {diff[:8]}" if diff else ""))
        if dropped:
            print(f"    dropped (they described only the placeholder fit of a study, PLACEHOLDER_ONLY): {dropped}")
        for k in diff[:8]:
            print(f"    {k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}")
        failed += bool(diff)
    return 1 if failed else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out_dir", type=Path)
    r.add_argument("--data-dir", default="../shared/data")
    r.add_argument("--entry", help="module:function of whylearn-train (default: the installed console script's)")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = p.parse_args()
    if args.cmd == "run":
        run(args.out_dir, args.data_dir, args.entry)
    else:
        sys.exit(compare(args.before, args.after))


if __name__ == "__main__":
    main()

"""Aggregate adversarial-study runs made as separate processes: summary, reference verdicts, figures, table.

    python scripts/adversarial_report.py RUN_DIR [RUN_DIR ...] --out OUT_DIR \
        [--arms logistic mlp mlp_fgsm cnn cnn_pgd] [--label "cnn=CNN, 250 steps"] [--columns fgsm@0.1 pgd@0.3 ...]

Each RUN_DIR is a ``whylearn-train experiment=adversarial_*`` run (its ``runs/<arm>/seed<s>/summary.json``
and ``.hydra/config.yaml``), e.g. one per seed (``seed=<s> study.num_seeds=1``) or per arm
(``'~study.arms.<arm>'``). The per-seed results are aggregated with the study's own functions
(:func:`whylearn.studies.adversarial.aggregate` and :func:`~whylearn.studies.adversarial.draw`), so OUT_DIR
gets what one run of all the arms and seeds would leave: ``summary.json`` (means, sample sds and the
experiment's reference block with verdicts), ``figures/adversarial_accuracy.png`` (the published values
of the reference block drawn on it) and ``figures/adversarial_triptych.png``. A Markdown table of the
arms (mean ± sd) is printed. The arm labels, the title and the reference block come from the first
RUN_DIR's config that defines them. Used for the MNIST tables and figures of docs/experiments.md
("Adversarial examples").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from whylearn import reference
from whylearn.studies.adversarial import aggregate, draw, key, load_runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder for summary.json and figures/")
    ap.add_argument("--arms", nargs="*", help="arms in this order (default: as found)")
    ap.add_argument("--triptych", nargs="*", help="arms of the triptych (default: the configs' triptych arms)")
    ap.add_argument("--label", action="append", default=[], help="arm=legend text (default: the config's label)")
    ap.add_argument("--columns", nargs="*", default=["fgsm@0.1", "fgsm@0.2", "fgsm@0.25", "fgsm@0.3", "pgd@0.1",
                                                      "pgd@0.2", "pgd@0.25", "pgd@0.3"],
                    help="table columns, attack@epsilon")
    args = ap.parse_args(argv)
    results = load_runs(args.run_dirs, args.arms)
    labels, title, block, triptych = {}, "", None, []
    for d in args.run_dirs:
        cfg_path = d / ".hydra" / "config.yaml"
        if not cfg_path.exists():
            continue
        cfg = OmegaConf.load(cfg_path)
        an = cfg.study if "study" in cfg else cfg.task.analysis  # task.analysis: a run from before the Study protocol
        for arm, node in an.arms.items():
            labels.setdefault(arm, node.get("label", arm))
        title = title or an.get("title", "")
        triptych += [a for a in an.get("triptych") or [] if a in results and a not in triptych]
        if block is None and "reference" in cfg:
            block = reference.from_config(cfg)
    for spec in args.label:
        arm, sep, text = spec.partition("=")
        if not sep or arm not in results:
            ap.error(f"--label {spec!r}: expected arm=text with arm one of {list(results)}")
        labels[arm] = text
    epsilons = next(iter(results.values()))[0]["epsilons"]
    summary = aggregate(results, epsilons)
    summary["run_dirs"] = [str(d) for d in args.run_dirs]
    summary["reference"] = reference.evaluate(block, summary) if block is not None else None
    reference.activate(block)
    try:
        draw(summary, results, labels, args.out / "figures", title, args.triptych or triptych or None)
    finally:
        reference.activate(None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))

    def cell(arm: str, quantity: str) -> str:
        return f"{summary[f'{arm}/{quantity}']:.3f} ± {summary[f'{arm}/{quantity}_sd']:.3f}"

    cols = [c.split("@") for c in args.columns]
    print("| model (training) | seeds | clean acc | " + " | ".join(f"{a.upper()}, eps {e}" for a, e in cols) + " |")
    print("| --- " * (len(cols) + 3) + "|")
    for arm, rs in results.items():
        cells = [cell(arm, f"{a}_acc@{key(float(e))}") for a, e in cols]
        seeds = ", ".join(str(r["seed"]) for r in rs)
        print(f"| {labels.get(arm, arm)} | {seeds} | {cell(arm, 'clean_acc')} | " + " | ".join(cells) + " |")
    for row in summary["reference"] or []:
        if isinstance(row, dict):
            m = row["measured"]
            print(f"reference {row['quantity']}: published {row['published']}, measured "
                  f"{'-' if m is None else f'{m:.3f}'}, {row['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lottery tickets: iterative magnitude pruning with rewinding, winning tickets against random re-initialization.

Frankle & Carbin 2019 ("The lottery ticket hypothesis", ICLR 2019): LeNet-300-100 on MNIST (Adam 1.2e-3,
batch 60, 50K iterations; Fig. 2), pruned by magnitude 20% per round in the hidden layers and 10% in the
output layer, the survivors reset to their initial values each round. Sec. 2 and Figs. 3-4: a winning
ticket with Pm = 51.3% of the weights learns faster and reaches higher test accuracy than the dense
network, Pm = 21.1% faster still; below that learning slows, and at Pm = 3.6% the ticket is back at the
dense network's performance. The same masks with a new random initialization learn more slowly and lose
accuracy early. Abstract: winning tickets are "less than 10-20% of the size" of the networks. On MNIST-1D
(Greydanus 2020, mnist1d README and ``lottery-tickets.ipynb``) magnitude-pruned tickets of an MLP beat
the dense network and random tickets up to about 90% sparsity, and (against Frankle & Carbin) their masks
help even with new initial weights.

:func:`run_seed` runs the whole procedure for one seed (rounds 0..R, each a quiet Lightning fit of
:class:`~whylearn.tasks.ClassificationTask`, validation and test measured every ``eval_every`` steps) and
the random re-initialization control of every round; :func:`study` runs the seeds, aggregates by round,
and draws accuracy and early-stopping iteration against the fraction of weights remaining.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter

from whylearn.analysis.plotting import save_figure, subplots
from whylearn.analysis.pruning import apply_masks, fraction_remaining, layer_rates, masks, prune_by_magnitude, rewind
from whylearn.studies.common import (
    TrackSplits,
    build_datamodule,
    build_model,
    mean_sd,
    optimizer_factory,
    plain,
    quiet_trainer,
    seeds_of,
    write_json,
)
from whylearn.tasks.classification import ClassificationTask

log = logging.getLogger("whylearn")

REINIT_SEED_OFFSET = 100_003  # round r of seed s re-initializes with seed s + REINIT_SEED_OFFSET * r


class TrackValKeepBest(TrackSplits):
    """:class:`TrackSplits` on the validation split that also keeps a copy of the model's state at the evaluation
    with the lowest validation loss, so the test split is measured twice (there and at the end) instead of at
    every evaluation: the early-stopping point is chosen on validation only, as in Frankle & Carbin 2019, Sec. 2."""

    whylearn_batch_hooks = "per_step"  # reads the step count and evaluates: the fast loop calls it after every step

    def __init__(self, every: int) -> None:
        super().__init__(("val",), every)
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def measure(self, trainer, pl_module) -> None:
        super().measure(trainer, pl_module)
        row = self.rows[-1]
        if self.best is None or row["val_loss"] < self.best[0]:
            self.best = (row["val_loss"], row["step"], copy.deepcopy(pl_module.model.state_dict()))


def train_ticket(model: torch.nn.Module, dm, optimizer: Mapping[str, Any], max_steps: int, eval_every: int) -> dict[str, Any]:
    """Train ``model`` (pruned or not) for ``max_steps`` steps, measuring validation loss and accuracy every
    ``eval_every`` steps; return the early-stopping iteration (minimum validation loss; Frankle & Carbin 2019,
    Sec. 2), the test accuracy of the model as it was there and at the end, and the validation curve.
    The model is left in its final (not its early-stopped) state."""
    task = ClassificationTask(model, dm.num_classes, optimizer_factory(optimizer), log_every_n_steps=10**9)
    track = TrackValKeepBest(eval_every)
    trainer = quiet_trainer(max_steps, callbacks=[track])
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    bs = getattr(dm, "eval_batch_size", 4096)
    final_test = task.evaluate(dm.test.x, dm.test.y, batch_size=bs)
    final_state = copy.deepcopy(model.state_dict())
    best_loss, best_step, best_state = track.best
    model.load_state_dict(best_state)
    best_test = task.evaluate(dm.test.x, dm.test.y, batch_size=bs)
    model.load_state_dict(final_state)
    rows = track.rows
    return {"early_stop_step": best_step, "test_acc": best_test["acc"], "val_loss": best_loss,
            "final_test_acc": final_test["acc"], "steps": int(trainer.global_step),
            "fit_time_s": round(time.perf_counter() - t0, 2),
            "curve": {k: [r[k] for r in rows] for k in ("step", "val_loss", "val_acc")}}


def run_seed(cfg: Mapping[str, Any], seed: int, out_dir: Path | None = None) -> dict[str, Any]:
    """Iterative magnitude pruning with rewinding for one seed; a plain function of (config, seed).

    Args:
        cfg: ``data`` (a datamodule node with a validation split: validation picks the early-stopping
            iteration), ``model`` (a model node), ``optimizer`` (an optimizer node), ``max_steps`` (per
            training), ``eval_every`` (optimizer steps between measurements of validation and test),
            ``rounds`` (pruning rounds R after the dense training), ``hidden_rate`` and ``output_rate``
            (fraction of the remaining weights pruned per round in the hidden layers and the output layer)
            and ``reinit`` (also train the random re-initialization control of every round, default true).
        seed: seeds the data split and order and the initialization; the control of round r draws its
            initialization with seed ``seed + 100003 r``.
        out_dir: if given, this seed's ``summary.json`` is written there.

    Returns:
        ``rounds``: one entry per round 0..R with ``round``, ``fraction`` (weights remaining),
        ``winning`` (:func:`train_ticket`'s numbers for the rewound ticket; round 0 is the dense network)
        and ``reinit`` (the same masks, new initial weights; None for round 0 or without the control).
    """
    cfg = plain(cfg)
    dm = build_datamodule(cfg["data"], seed)
    model = build_model(cfg["model"], dm, seed)
    initial = copy.deepcopy(model.state_dict())
    rates = layer_rates(model, float(cfg["hidden_rate"]), float(cfg["output_rate"]))
    out_rounds = []
    for r in range(int(cfg["rounds"]) + 1):
        if r > 0:
            prune_by_magnitude(model, rates)  # by the magnitudes the last round trained
            rewind(model, initial)
        torch.manual_seed(int(seed))  # the same stream for the dense net, every ticket and its control
        winning = train_ticket(model, dm, cfg["optimizer"], int(cfg["max_steps"]), int(cfg["eval_every"]))
        reinit = None
        if r > 0 and cfg.get("reinit", True):
            control = build_model(cfg["model"], dm, int(seed) + REINIT_SEED_OFFSET * r)
            apply_masks(control, masks(model))
            torch.manual_seed(int(seed))
            reinit = train_ticket(control, dm, cfg["optimizer"], int(cfg["max_steps"]), int(cfg["eval_every"]))
        row = {"round": r, "fraction": fraction_remaining(model), "winning": winning, "reinit": reinit}
        log.info("lottery seed %d round %d: %.4f of the weights, ticket test acc %.4f at step %d%s", seed, r,
                 row["fraction"], winning["test_acc"], winning["early_stop_step"],
                 "" if reinit is None else f"; random reinit {reinit['test_acc']:.4f} at step {reinit['early_stop_step']}")
        out_rounds.append(row)
        out = {"seed": int(seed), "rates": rates, "rounds": out_rounds, "complete": r == int(cfg["rounds"])}
        if out_dir is not None:  # after every round: an interrupted run keeps the rounds it finished
            write_json(Path(out_dir) / "summary.json", out)
    return out


EARLY_FRACTION = 0.2  # "early in training": the first evaluation at or after 20% of a training's steps


def _early(curve: Mapping[str, list], key: str) -> float:
    """``curve[key]`` at the first evaluation at or after :data:`EARLY_FRACTION` of the curve's last step."""
    steps = curve["step"]
    i = next(j for j, st in enumerate(steps) if st >= EARLY_FRACTION * steps[-1])
    return float(curve[key][i])


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds, per round, of the fraction, each arm's early-stop test accuracy, early-stop
    step, final test accuracy, ``speedup`` (per seed, the dense network's early-stopping iteration over the arm's:
    Frankle & Carbin's "learns faster" is speedup > 1) and ``val_acc_early`` (validation accuracy at the first
    evaluation at or after 20% of the steps, e.g. step 200 of 1000: faster learning as in their Fig. 3)."""
    n_rounds = min(len(r["rounds"]) for r in results)
    agg: dict[str, list] = {"round": list(range(n_rounds)), "fraction": []}
    for arm in ("winning", "reinit"):
        for q in ("test_acc", "early_stop_step", "final_test_acc", "speedup", "val_acc_early"):
            agg[f"{arm}/{q}"], agg[f"{arm}/{q}_sd"] = [], []
    for i in range(n_rounds):
        agg["fraction"].append(float(np.mean([r["rounds"][i]["fraction"] for r in results])))
        for arm in ("winning", "reinit"):
            for q in ("test_acc", "early_stop_step", "final_test_acc"):
                vals = [r["rounds"][i][arm][q] for r in results if r["rounds"][i][arm] is not None]
                m, s = mean_sd(vals)
                agg[f"{arm}/{q}"].append(m)
                agg[f"{arm}/{q}_sd"].append(s)
            # validation accuracy early in training (the first evaluation at or after EARLY_FRACTION of the steps):
            # Frankle & Carbin's Fig. 3 "reaches higher accuracy faster", a speed that the budget does not cap
            early = [_early(r["rounds"][i][arm]["curve"], "val_acc") for r in results if r["rounds"][i][arm] is not None]
            m, s = mean_sd(early)
            agg[f"{arm}/val_acc_early"].append(m)
            agg[f"{arm}/val_acc_early_sd"].append(s)
            # per seed: the dense network's early-stopping iteration over this arm's (> 1: this arm learns faster)
            ratios = [r["rounds"][0]["winning"]["early_stop_step"] / max(r["rounds"][i][arm]["early_stop_step"], 1)
                      for r in results if r["rounds"][i][arm] is not None]
            m, s = mean_sd(ratios)
            agg[f"{arm}/speedup"].append(m)
            agg[f"{arm}/speedup_sd"].append(s)
    return agg


def smallest_matching_fraction(agg: Mapping[str, list], arm: str = "winning") -> float:
    """The smallest fraction of weights remaining at which the arm's mean early-stop test accuracy is at least
    the dense network's (round 0); 1.0 if no pruned round matches."""
    dense = agg["winning/test_acc"][0]
    ok = [f for f, a in zip(agg["fraction"][1:], agg[f"{arm}/test_acc"][1:], strict=True) if np.isfinite(a) and a >= dense]
    return float(min(ok)) if ok else 1.0


SETUP_KEYS = ("data", "model", "optimizer", "max_steps", "eval_every", "hidden_rate", "output_rate", "reinit")


def _setup(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a study's config that decides a seed's numbers: :data:`SETUP_KEYS`, the data's location excluded."""
    out = {k: plain(cfg.get(k)) for k in SETUP_KEYS}
    out["reinit"] = bool(True if out["reinit"] is None else out["reinit"])
    if isinstance(out["data"], Mapping):
        out["data"] = {k: v for k, v in out["data"].items() if k != "data_dir"}
    return out


def read_seed_runs(run_dirs: list[str | Path], seeds: list[int],
                   cfg: Mapping[str, Any]) -> dict[int, tuple[Path, dict[str, Any]]]:
    """The seeds of ``seeds`` that earlier runs of this study already trained with the same set-up, e.g. one run
    per seed launched in parallel (``seed=s study.num_seeds=1``) and combined by a last run.

    Args:
        run_dirs: run directories of earlier runs (each holds Hydra's ``.hydra/config.yaml`` and this study's
            ``runs/seed<s>/summary.json``).
        seeds: the seeds wanted. cfg: this run's set-up (see :func:`run_seed`).

    Returns:
        ``{seed: (summary path, run_seed's result)}`` for the wanted seeds found (the first directory wins) with at
        least ``cfg["rounds"]`` pruning rounds done (a longer or interrupted run's first rounds; the procedure is
        sequential, so they are what this run would train), cut to ``cfg["rounds"]``.

    Raises:
        FileNotFoundError: a directory is not a run directory of this study.
        ValueError: a directory's set-up (:data:`SETUP_KEYS`: all but the number of rounds and the data's location)
            differs from ``cfg``;
            the message names the first differing key and both values.
    """
    from omegaconf import OmegaConf

    ours, found = _setup(cfg), {}
    for d in map(Path, run_dirs):
        hydra_cfg = d / ".hydra" / "config.yaml"
        if not hydra_cfg.is_file() or not (d / "runs").is_dir():
            raise FileNotFoundError(f"study.reuse: {str(d)!r} is not a lottery run directory (needs .hydra/config.yaml "
                                    "and runs/seed<s>/summary.json)")
        saved = OmegaConf.load(hydra_cfg)  # task.analysis: a run made before the Study protocol (study:)
        node = saved.get("study") or saved.get("task", {}).get("analysis", {})
        theirs = _setup(OmegaConf.to_container(node, resolve=False) if node else {})
        for k in SETUP_KEYS:
            if theirs[k] != ours[k]:
                raise ValueError(f"study.reuse: {str(d)!r} ran {k}={theirs[k]!r}, this run has {k}={ours[k]!r}; "
                                 "only runs of the same set-up can be combined")
        for s in seeds:
            path = d / "runs" / f"seed{s}" / "summary.json"
            if s not in found and path.is_file():
                res = json.loads(path.read_text())
                if len(res["rounds"]) > int(cfg["rounds"]):  # the first rounds of a longer run are this run's rounds
                    found[s] = (path, {**res, "rounds": res["rounds"][: int(cfg["rounds"]) + 1]})
    return found


def study(out_dir: Path, data: Mapping[str, Any], model: Mapping[str, Any], optimizer: Mapping[str, Any], max_steps: int,
          eval_every: int, rounds: int, hidden_rate: float = 0.2, output_rate: float = 0.1, reinit: bool = True,
          report_rounds: list[int] | None = None, seed: int = 0, num_seeds: int = 3, title: str = "",
          smoke: bool = False, reuse: list[str] | None = None) -> dict[str, Any]:
    """Run :func:`run_seed` for seeds ``seed .. seed + num_seeds - 1``; aggregate; draw the figures.

    Args:
        out_dir: the run directory (figures in ``figures/``, per-seed summaries in ``runs/seed<s>/``).
        data, model, optimizer, max_steps, eval_every, rounds, hidden_rate, output_rate, reinit: see :func:`run_seed`.
        report_rounds: rounds whose numbers go into the summary as ``round<r>/...`` (default: every round).
        seed, num_seeds: the seeds. title: the figures' title prefix.
        smoke: a smoke test (``debug=fast_dev_run``): 2 rounds of 4 steps, one seed; the numbers mean nothing.
        reuse: run directories of earlier runs of the same set-up (:func:`read_seed_runs`); the seeds they hold
            are read (and copied into this run's ``runs/``), the others trained. Ignored in a smoke test.

    Returns:
        For summary.json: ``dense/test_acc`` and ``dense/early_stop_step``; per reported round r
        ``round<r>/fraction``, ``round<r>/winning/test_acc``, ``round<r>/reinit/test_acc``,
        ``round<r>/winning/early_stop_step``, ``round<r>/reinit/early_stop_step`` (means, and ``_sd``),
        ``round<r>/winning_minus_dense``, ``round<r>/winning_minus_reinit`` and
        ``round<r>/winning/val_acc_early`` and ``round<r>/reinit/val_acc_early`` (validation accuracy at step
        ``early_step``, 20% of the budget; ``dense/val_acc_early`` for the dense network),
        ``round<r>/val_acc_early_minus_dense`` (the ticket's minus the dense network's),
        ``round<r>/early_stop_speedup`` (per seed, the dense early-stop step over the ticket's; mean and ``_sd``)
        and ``round<r>/reinit/early_stop_speedup``;
        ``smallest_matching_fraction``; ``curves`` (every round's aggregates).
    """
    out_dir = Path(out_dir)
    seeds = seeds_of(seed, 1 if smoke else num_seeds)
    cfg = {"data": data, "model": model, "optimizer": optimizer, "max_steps": int(max_steps), "eval_every": int(eval_every),
           "rounds": int(rounds), "hidden_rate": hidden_rate, "output_rate": output_rate, "reinit": bool(reinit)}
    if smoke:
        cfg.update(max_steps=4, eval_every=2, rounds=2)
    done = {} if smoke or not reuse else read_seed_runs(list(reuse), seeds, cfg)  # checked before anything is trained
    results = []
    for s in seeds:
        if s in done:
            log.info("lottery seed %d: read from %s (not retrained)", s, done[s][0])
            write_json(out_dir / "runs" / f"seed{s}" / "summary.json", done[s][1])
            results.append(done[s][1])
        else:
            results.append(run_seed(cfg, s, out_dir / "runs" / f"seed{s}"))
    agg = aggregate(results)
    summary: dict[str, Any] = {"seeds": seeds, "rates": results[0]["rates"], "curves": agg,
                               "reused": {str(s): str(done[s][0]) for s in done},
                               "dense/test_acc": agg["winning/test_acc"][0], "dense/test_acc_sd": agg["winning/test_acc_sd"][0],
                               "dense/early_stop_step": agg["winning/early_stop_step"][0],
                               "dense/val_acc_early": agg["winning/val_acc_early"][0],
                               "early_step": int(_early(results[0]["rounds"][0]["winning"]["curve"], "step")),
                               "smallest_matching_fraction": smallest_matching_fraction(agg)}
    for r in (range(1, len(agg["round"])) if report_rounds is None else [int(x) for x in report_rounds]):
        if not 0 < r < len(agg["round"]):
            continue
        p = f"round{r}"
        summary[f"{p}/fraction"] = agg["fraction"][r]
        for arm in ("winning", "reinit"):
            for q in ("test_acc", "early_stop_step"):
                summary[f"{p}/{arm}/{q}"] = agg[f"{arm}/{q}"][r]
                summary[f"{p}/{arm}/{q}_sd"] = agg[f"{arm}/{q}_sd"][r]
        summary[f"{p}/winning_minus_dense"] = agg["winning/test_acc"][r] - agg["winning/test_acc"][0]
        summary[f"{p}/winning_minus_reinit"] = agg["winning/test_acc"][r] - agg["reinit/test_acc"][r]
        summary[f"{p}/winning/val_acc_early"] = agg["winning/val_acc_early"][r]
        summary[f"{p}/reinit/val_acc_early"] = agg["reinit/val_acc_early"][r]
        summary[f"{p}/val_acc_early_minus_dense"] = agg["winning/val_acc_early"][r] - agg["winning/val_acc_early"][0]
        summary[f"{p}/early_stop_speedup"] = agg["winning/speedup"][r]
        summary[f"{p}/early_stop_speedup_sd"] = agg["winning/speedup_sd"][r]
        summary[f"{p}/reinit/early_stop_speedup"] = agg["reinit/speedup"][r]
    plot_tickets(agg, results, out_dir / "figures" / "lottery_tickets.png", title)
    return summary


def plot_tickets(agg: Mapping[str, list], results: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Frankle & Carbin's Figs. 3-4 in one: test accuracy at early stop and the early-stopping iteration against
    the fraction of weights remaining (winning tickets vs random re-initialization, mean with +- sd error bars and
    band over seeds), and the validation accuracy of some winning tickets during training (the first seed)."""
    frac = 100 * np.asarray(agg["fraction"])
    fig, axes = subplots(3, 1, width=4.8, height=3.8)
    n = len(results)
    for ax, q, ylabel in ((axes[0], "test_acc", "test accuracy at early stop"),
                          (axes[1], "early_stop_step", "early-stopping iteration (min val loss)")):
        for arm, style, label in (("winning", "o-", "winning ticket (rewound to init)"),
                                  ("reinit", "s--", "same mask, random reinit")):
            mu, sd = np.asarray(agg[f"{arm}/{q}"], dtype=float), np.nan_to_num(np.asarray(agg[f"{arm}/{q}_sd"], dtype=float))
            keep = np.isfinite(mu)
            line = ax.errorbar(frac[keep], mu[keep], yerr=sd[keep], fmt=style, ms=4, capsize=2, label=label).lines[0]
            ax.fill_between(frac[keep], (mu - sd)[keep], (mu + sd)[keep], color=line.get_color(), alpha=0.2)
        ax.axhline(agg[f"winning/{q}"][0], color="k", ls=":", lw=1, label="dense network")
        ax.set_xscale("log")
        ticks = [t for t in (100, 50, 20, 10, 5, 2, 1) if frac.min() * 0.9 <= t <= 100]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FixedFormatter([f"{t:g}" for t in ticks]))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.set_title(f"{title + ': ' if title else ''}{ylabel}, {n} seed{'s' if n != 1 else ''}", fontsize=9)
    ax = axes[2]
    rounds = results[0]["rounds"]
    show = sorted({0, min(3, len(rounds) - 1), min(7, len(rounds) - 1), len(rounds) - 1})
    for i in show:
        c = rounds[i]["winning"]["curve"]
        ax.plot(c["step"], c["val_acc"], label=f"{100 * rounds[i]['fraction']:.1f}% remaining")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"winning tickets during training (seed {results[0]['seed']})", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)

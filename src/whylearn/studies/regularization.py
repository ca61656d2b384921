"""Explicit regularization is not what makes networks generalize (Zhang et al. 2017, Sec. 3, Tables 1-2).

Zhang, Bengio, Hardt, Recht & Vinyals 2017 ("Understanding deep learning requires rethinking
generalization") toggle the explicit regularizers of standard networks. Table 1 (CIFAR-10): Inception
reaches 89.05% test accuracy with random crops and weight decay, 89.31% with crops only, 86.03% with
weight decay only and 85.75% with neither (100% training accuracy in all four); the MLP 1x512 50.39% with
weight decay and 50.51% without, and it fits random labels (99.34% train, 10.61% test). Sec. 3: on
ImageNet (Table 2) turning every regularizer off costs 18 points of top-1 accuracy (59.80% remains,
chance is 0.1%), data augmentation alone gives 72.95%; with weight decay on, Inception and the MLPs still fit
random labels perfectly, and InceptionV3 with dropout and weight decay reaches 91.18% top-1 training accuracy
on random ImageNet labels. Regularizers help a few points on CIFAR-10; none decides whether the network
generalizes, and weight decay and dropout do not stop it from memorizing noise.

:func:`run_seed` trains one network with one set of regularizers (weight decay, dropout, data
augmentation: each on or off) on true or random labels for one seed and records training accuracy (eval
mode, the labels trained on), test accuracy and the step at which the training set is fitted;
:func:`study` runs every arm and seed and draws the comparison; :func:`report` aggregates the same way the
per-seed runs of several study directories (seeds run as separate processes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whylearn.analysis.plotting import save_figure, subplots
from whylearn.studies.common import (
    TrackSplits,
    build_datamodule,
    build_model,
    mean_sd,
    merge,
    optimizer_factory,
    plain,
    quiet_trainer,
    read_seed_summaries,
    seeds_of,
    write_json,
)
from whylearn.tasks.classification import ClassificationTask

log = logging.getLogger("whylearn")

LABELS = ("true", "random")


def run_seed(cfg: Mapping[str, Any], seed: int, out_dir: Path | None = None) -> dict[str, Any]:
    """Train one network with one set of regularizers on true or random labels; a plain function of (config, seed).

    Args:
        cfg: ``data`` (a node of a corruption-capable datamodule, e.g. ``CorruptedFashionMNISTDataModule``;
            ``corruption`` and ``augment`` are set from ``labels`` and ``augment``), ``model`` (a model node;
            ``dropout`` is set from ``dropout``), ``optimizer`` (an optimizer node; ``weight_decay`` is set from
            ``weight_decay``), ``labels`` (``true`` or ``random``), ``weight_decay`` (L2 coefficient, 0 = off),
            ``dropout`` (probability after each hidden layer, 0 = off), ``augment`` (random crops and flips of
            the training images, see :mod:`whylearn.data.augment`), ``max_steps``, ``eval_every`` (optimizer
            steps between measurements) and ``fit_threshold`` (training accuracy
            that counts as fitted, default 1.0).
        seed: seeds the subset, the random labels, the initialization, the data order and the augmentation.
        out_dir: if given, this seed's ``summary.json`` is written there.

    Returns:
        ``train_acc`` (eval mode, final, on the labels trained on), ``test_acc`` and ``test_loss`` (final),
        ``best_test_acc`` (the best measured), ``fit_step`` (first measured step with training accuracy
        >= fit_threshold, None if never), ``curve`` (step, train_acc, test_acc), ``steps``, ``fit_time_s``.

    Raises:
        ValueError: unknown ``labels``.
    """
    cfg = plain(cfg)
    labels = cfg.get("labels", "true")
    if labels not in LABELS:
        raise ValueError(f"unknown labels {labels!r}; allowed: {list(LABELS)}")
    data = {**cfg["data"], "corruption": labels, "augment": bool(cfg.get("augment", False))}
    dm = build_datamodule(data, seed)
    model = build_model({**cfg["model"], "dropout": float(cfg.get("dropout", 0.0))}, dm, seed)
    opt = optimizer_factory({**cfg["optimizer"], "weight_decay": float(cfg.get("weight_decay", 0.0))})
    task = ClassificationTask(model, dm.num_classes, opt, log_every_n_steps=10**9)
    track = TrackSplits(("train", "test"), int(cfg["eval_every"]))
    trainer = quiet_trainer(int(cfg["max_steps"]), out_dir, callbacks=[track])
    torch.manual_seed(int(seed))
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    fit_time = time.perf_counter() - t0
    rows = track.rows
    final_train = task.evaluate(dm.train.x, dm.train.y)
    final_test = task.evaluate(dm.test.x, dm.test.y)
    threshold = float(cfg.get("fit_threshold", 1.0))
    fit_step = next((r["step"] for r in rows if r["train_acc"] >= threshold), None)
    out = {"seed": int(seed), "labels": labels, "weight_decay": float(cfg.get("weight_decay", 0.0)),
           "dropout": float(cfg.get("dropout", 0.0)), "augment": bool(cfg.get("augment", False)),
           "train_acc": final_train["acc"], "train_loss": final_train["loss"], "test_acc": final_test["acc"],
           "test_loss": final_test["loss"], "best_test_acc": max([r["test_acc"] for r in rows] + [final_test["acc"]]),
           "fit_step": fit_step, "steps": int(trainer.global_step), "fit_time_s": round(fit_time, 2),
           "curve": {k: [r[k] for r in rows] for k in ("step", "train_acc", "test_acc")}}
    if out_dir is not None:
        write_json(Path(out_dir) / "summary.json", out)
    return out


def study(out_dir: Path, regularizers: Mapping[str, Mapping[str, Any]], data: Mapping[str, Any], model: Mapping[str, Any],
          optimizer: Mapping[str, Any], max_steps: int, eval_every: int, labels: Sequence[str] = LABELS,
          random_max_steps: int | None = None, fit_threshold: float = 1.0, seed: int = 0, num_seeds: int = 3,
          title: str = "", smoke: bool = False) -> dict[str, Any]:
    """Train every (regularizer set, labels) arm for seeds ``seed .. seed + num_seeds - 1``; aggregate; draw.

    Args:
        out_dir: the run directory (figures in ``figures/``, per-seed summaries in ``runs/<labels>_<set>/seed<s>``).
        regularizers: name -> ``{weight_decay: float, dropout: float, augment: bool}`` (missing keys are off),
            e.g. ``none``, ``weight_decay``, ``dropout``, ``augmentation``, ``all``; ``none`` is the baseline of
            the differences.
        data, model, optimizer, max_steps, eval_every, fit_threshold: see :func:`run_seed`.
        labels: which label sets to train on (``true``, ``random``).
        random_max_steps: steps for random labels (they take longer to fit; default ``max_steps``).
        seed, num_seeds: the seeds. title: the figures' title prefix.
        smoke: a smoke test (``debug=fast_dev_run``): 4 steps per arm, one seed; the numbers mean nothing.

    Returns:
        For summary.json: per arm ``<labels>/<set>/train_acc``, ``/test_acc``, ``/fit_step`` (mean over seeds,
        and ``_sd``) and ``/fitted`` (share of seeds that reached fit_threshold); for true labels
        ``true/<set>/test_acc_minus_none`` (the regularizer's effect on test accuracy, mean of the per-seed
        differences, and ``_sd``) and ``max_abs_test_acc_minus_none`` (the largest such effect in absolute value);
        ``min_random_train_acc`` and ``max_random_test_acc`` over the sets; ``min_true_test_acc``; with both label
        sets ``<set>/true_minus_random_test_acc`` (test accuracy on true labels minus that of the same arm trained
        on random labels, i.e. above chance, per seed, mean and ``_sd``). Per-seed results go to
        ``runs/<labels>_<set>/seed<s>/summary.json``; :func:`report` aggregates such directories run apart.

    Raises:
        ValueError: no regularizer sets, an unknown key in one, unknown labels, or no ``none`` set.
    """
    if not regularizers:
        raise ValueError("the study needs at least one regularizer set")
    if "none" not in regularizers:
        raise ValueError(f"the regularizer sets need a baseline named 'none' (all off); got {sorted(regularizers)}")
    for name, reg in regularizers.items():
        unknown = set(plain(reg) or {}) - {"weight_decay", "dropout", "augment"}
        if unknown:
            raise ValueError(f"regularizer set {name!r}: unknown key {sorted(unknown)[0]!r}; "
                             f"allowed: ['weight_decay', 'dropout', 'augment']")
    bad = [lb for lb in labels if lb not in LABELS]
    if bad:
        raise ValueError(f"unknown labels {bad}; allowed: {list(LABELS)}")
    out_dir = Path(out_dir)
    seeds = seeds_of(seed, 1 if smoke else num_seeds)
    base = {"data": data, "model": model, "optimizer": optimizer, "eval_every": int(eval_every), "fit_threshold": fit_threshold}
    results: dict[tuple[str, str], list[dict]] = {}
    for lb in labels:
        steps = int(max_steps if lb == "true" or random_max_steps is None else random_max_steps)
        for name, reg in regularizers.items():
            cfg = merge(base, {**plain(reg or {}), "labels": lb, "max_steps": 4 if smoke else steps})
            if smoke:
                cfg["eval_every"] = 2
            rs = []
            for s in seeds:
                r = run_seed(cfg, s, out_dir / "runs" / f"{lb}_{name}" / f"seed{s}")
                log.info("regularization %s labels, %s, seed %d: train acc %.4f, test acc %.4f, fitted at step %s (%.1f s)",
                         lb, name, s, r["train_acc"], r["test_acc"], r["fit_step"], r["fit_time_s"])
                rs.append(r)
            results[(lb, name)] = rs
    summary = summarize(results, list(regularizers), list(labels), seeds)
    summary["regularizers"] = {k: plain(v or {}) for k, v in regularizers.items()}
    plot_regularization(summary, results, list(regularizers), list(labels), out_dir / "figures" / "regularization.png", title)
    return summary


def summarize(results: Mapping[tuple[str, str], list[dict]], sets: Sequence[str], labels: Sequence[str],
              seeds: Sequence[int]) -> dict[str, Any]:
    """Mean and sd over seeds of every (labels, set) arm's per-seed results (:func:`run_seed`'s dicts, seeds in the
    same order in every arm); the keys :func:`study` documents.

    Raises:
        ValueError: an arm of ``labels`` x ``sets`` missing from ``results``, or arms with different numbers of seeds.
    """
    missing = [f"{lb}/{n}" for lb in labels for n in sets if (lb, n) not in results]
    if missing:
        raise ValueError(f"no runs for the arms {missing}; have {sorted(f'{lb}/{n}' for lb, n in results)}")
    counts = {len(results[(lb, n)]) for lb in labels for n in sets}
    if len(counts) != 1:
        raise ValueError(f"the arms have different numbers of seeds: {sorted(counts)}")
    summary: dict[str, Any] = {"seeds": [int(s) for s in seeds], "labels": list(labels), "sets": list(sets)}
    for lb in labels:
        for name in sets:
            rs, p = results[(lb, name)], f"{lb}/{name}"
            for q in ("train_acc", "test_acc", "best_test_acc"):
                summary[f"{p}/{q}"], summary[f"{p}/{q}_sd"] = mean_sd([r[q] for r in rs])
            steps_fit = [r["fit_step"] for r in rs if r["fit_step"] is not None]
            summary[f"{p}/fitted"] = len(steps_fit) / len(rs)
            summary[f"{p}/fit_step"], summary[f"{p}/fit_step_sd"] = mean_sd(steps_fit)
            if lb == "true" and name != "none" and "none" in sets:
                diffs = [r["test_acc"] - b["test_acc"] for r, b in zip(rs, results[("true", "none")], strict=True)]
                summary[f"{p}/test_acc_minus_none"], summary[f"{p}/test_acc_minus_none_sd"] = mean_sd(diffs)
    if "random" in labels:
        summary["min_random_train_acc"] = min(summary[f"random/{n}/train_acc"] for n in sets)
        summary["max_random_test_acc"] = max(summary[f"random/{n}/test_acc"] for n in sets)
    if "true" in labels:
        summary["min_true_test_acc"] = min(summary[f"true/{n}/test_acc"] for n in sets)
        effects = [abs(summary[f"true/{n}/test_acc_minus_none"]) for n in sets if n != "none" and "none" in sets]
        if effects:
            summary["max_abs_test_acc_minus_none"] = max(effects)
    if "true" in labels and "random" in labels:
        # how far the unregularized network generalizes above the same network trained on random labels (chance)
        for n in sets:
            diffs = [t["test_acc"] - r["test_acc"] for t, r in zip(results[("true", n)], results[("random", n)], strict=True)]
            summary[f"{n}/true_minus_random_test_acc"], summary[f"{n}/true_minus_random_test_acc_sd"] = mean_sd(diffs)
    return summary


def load_runs(study_dirs: Sequence[Path]) -> tuple[dict[tuple[str, str], list[dict]], list[int]]:
    """The per-seed summaries (``runs/<labels>_<set>/seed<s>/summary.json``) of one or more study directories, e.g.
    the three runs of ``whylearn-train experiment=regularization seed=<s> study.num_seeds=1``.

    Returns:
        (results, seeds): ``results[(labels, set)]`` is the list of :func:`run_seed` dicts ordered by seed.

    Raises:
        FileNotFoundError: a directory without per-seed summaries. ValueError: a seed found twice for one arm.
    """
    results = {tuple(arm.partition("_")[::2]): found
               for arm, found in read_seed_summaries(study_dirs, missing=FileNotFoundError).items()}
    seeds = sorted({s for arm in results.values() for s in arm})
    return {k: [v[s] for s in sorted(v)] for k, v in results.items()}, seeds


def report(out_dir: Path, study_dirs: Sequence[Path], title: str = "") -> dict[str, Any]:
    """Aggregate the per-seed runs of several study directories (seeds run as separate processes) exactly as
    :func:`study` aggregates one; write ``out_dir/summary.json`` and ``out_dir/figures/regularization.png``."""
    results, seeds = load_runs([Path(d) for d in study_dirs])
    labels = [lb for lb in LABELS if any(k[0] == lb for k in results)]
    order = ["none", "weight_decay", "dropout", "augmentation", "all"]
    names = sorted({k[1] for k in results}, key=lambda n: (order.index(n) if n in order else len(order), n))
    summary = summarize(results, names, labels, seeds)
    plot_regularization(summary, results, names, labels, Path(out_dir) / "figures" / "regularization.png", title)
    write_json(Path(out_dir) / "summary.json", summary)
    return summary


def plot_regularization(summary: Mapping[str, Any], results: Mapping[tuple[str, str], list[dict]], sets: list[str],
                        labels: list[str], path: Path, title: str = "") -> Path:
    """Left: final training and test accuracy per regularizer set, true and random labels (bars: mean, whiskers:
    sd over seeds). Right: training accuracy during training on random labels, one line per set (seed 0)."""
    fig, axes = subplots(2, 1, width=6.0, height=4.2)
    ax = axes[0]
    xs = np.arange(len(sets))
    width = 0.8 / (2 * len(labels))
    bars = [(lb, q) for lb in labels for q in ("train_acc", "test_acc")]
    colors = {("true", "train_acc"): "tab:blue", ("true", "test_acc"): "tab:cyan",
              ("random", "train_acc"): "tab:red", ("random", "test_acc"): "salmon"}
    for i, (lb, q) in enumerate(bars):
        mu = [summary[f"{lb}/{s}/{q}"] for s in sets]
        sd = [summary[f"{lb}/{s}/{q}_sd"] for s in sets]
        ax.bar(xs + (i - (len(bars) - 1) / 2) * width, mu, width, yerr=np.nan_to_num(sd), capsize=2,
               color=colors[(lb, q)], label=f"{lb} labels, {q.replace('_acc', '')}")
    ax.axhline(0.1, color="k", ls=":", lw=1, label="chance (10 classes)")
    ax.set_xticks(xs, [s.replace("_", "\n") for s in sets], fontsize=8)
    ax.set_ylabel("accuracy (final)")
    ax.set_ylim(0, 1.05)
    n = len(summary["seeds"])
    ax.set_title(f"{title + ': ' if title else ''}explicit regularizers, {n} seed{'s' if n != 1 else ''}", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[1]
    lb = "random" if "random" in labels else labels[0]
    for s in sets:
        c = results[(lb, s)][0]["curve"]
        ax.plot(c["step"], c["train_acc"], label=s)
    ax.axhline(0.1, color="k", ls=":", lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training accuracy on {lb} labels (eval mode)")
    ax.set_title(f"fitting {lb} labels with each regularizer (seed {summary['seeds'][0]})", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)

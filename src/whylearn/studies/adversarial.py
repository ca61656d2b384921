"""Adversarial examples: accuracy against the L-infinity budget, natural against adversarial training.

Goodfellow, Shlens & Szegedy 2015 (Sec. 4): the fast gradient sign method at epsilon = 0.25 gives a
shallow softmax classifier on MNIST a 99.9% error rate (average confidence 79.3%) and a maxout network
89.4% (97.6%); adversarial training with it (Sec. 6) brings the maxout network's error on adversarial
examples down to 17.9%. Madry et al. 2018 (Table 1): their PGD-trained MNIST network keeps 89.3% accuracy
against 100-step PGD with 20 restarts at epsilon = 0.3 (``mnist_challenge`` white-box leaderboard: 89.62%
for 100 steps and 50 restarts, 92.52% for one 100-step run), while naturally trained networks keep
almost none (their Fig. 4).

:func:`run_seed` trains one *arm* (a model and a training: natural, FGSM or PGD adversarial training,
:class:`~whylearn.tasks.adversarial.AdversarialTrainingTask`) for one seed through a quiet Lightning
Trainer, then measures its accuracy under FGSM and PGD for each budget on a fixed slice of the test set
(:func:`whylearn.analysis.adversarial.robust_accuracy`) and keeps one clean / perturbed / difference
example. :func:`study` runs the arms and seeds, writes ``runs/<arm>/seed<s>/summary.json``, and draws
the accuracy-epsilon curves (mean and sd over seeds) and the triptych.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whylearn.analysis.adversarial import (
    ATTACKS,
    adversarial_example,
    fgsm,
    mean_confidence_wrong,
    plot_accuracy_curves,
    plot_triptych,
    robust_accuracy,
)
from whylearn.studies.common import (
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
from whylearn.tasks.adversarial import AdversarialTrainingTask

log = logging.getLogger("whylearn")

EVALUATION_DEFAULTS = {"epsilons": [0.0, 0.1, 0.2, 0.3], "num_examples": 1000, "pgd_steps": 20, "pgd_step_size": None,
                       "pgd_restarts": 1, "example_epsilon": 0.3, "example_index": 0}


def key(eps: float) -> str:
    """How a budget appears in summary keys: ``pgd_acc@0.3``."""
    return f"{float(eps):g}"


def run_seed(cfg: Mapping[str, Any], seed: int, out_dir: Path | None = None) -> dict[str, Any]:
    """Train one arm with ``seed`` and attack it; a plain function of (config, seed).

    Args:
        cfg: ``data`` (a datamodule node, ``_target_`` and arguments), ``model`` (a model node; the data's
            shapes fill ``auto``), ``optimizer`` (e.g. ``{_target_: torch.optim.Adam, lr: 1e-3}``),
            ``training`` (arguments of :class:`~whylearn.tasks.adversarial.AdversarialTrainingTask`:
            ``attack``, ``epsilon``, ``steps``, ``step_size``, ``random_start``, ``clean_weight``),
            ``bounds`` (the valid input range, e.g. [0, 1], or None), ``max_steps`` and ``evaluation``
            (``epsilons``, ``num_examples``: the first N test examples, ``pgd_steps``, ``pgd_step_size``,
            ``pgd_restarts``, ``example_epsilon``, ``example_index``).
        seed: seeds the data order, the initialization and the attacks' random starts.
        out_dir: if given, ``summary.json`` of this seed is written there.

    Returns:
        ``clean_acc`` (whole test set), ``epsilons``, ``fgsm_acc`` and ``pgd_acc`` (one per epsilon, on the
        first ``num_examples`` test examples), ``fgsm_confidence_wrong`` (mean probability of the wrong
        prediction), ``example`` (x, x_adv, delta as lists; labels and predictions), ``steps``,
        ``fit_time_s``, ``attack_time_s``.
    """
    cfg = plain(cfg)
    ev = {**EVALUATION_DEFAULTS, **(cfg.get("evaluation") or {})}
    bounds = cfg.get("bounds")
    bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
    dm = build_datamodule(cfg["data"], seed)
    model = build_model(cfg["model"], dm, seed)
    task = AdversarialTrainingTask(model, dm.num_classes, optimizer_factory(cfg["optimizer"]), bounds=bounds,
                                   log_every_n_steps=10**9, **(cfg.get("training") or {"attack": "none"}))
    trainer = quiet_trainer(int(cfg["max_steps"]), out_dir)
    torch.manual_seed(int(seed))
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    fit_time = time.perf_counter() - t0
    model.eval()
    clean = task.evaluate(dm.test.x, dm.test.y)
    n = min(int(ev["num_examples"]), len(dm.test))
    x, y = dm.test.x[:n], dm.test.y[:n]
    eps = [float(e) for e in ev["epsilons"]]
    pgd_kwargs = {"steps": int(ev["pgd_steps"]), "step_size": ev["pgd_step_size"], "restarts": int(ev["pgd_restarts"]),
                  "bounds": bounds}
    t0 = time.perf_counter()
    torch.manual_seed(int(seed) + 1)
    fgsm_acc = robust_accuracy(model, x, y, eps, "fgsm", bounds=bounds)
    pgd_acc = robust_accuracy(model, x, y, eps, "pgd", **pgd_kwargs)
    conf = [mean_confidence_wrong(model, fgsm(model, x, y, e, bounds=bounds), y) if e > 0 else float("nan")
            for e in eps]
    i = int(ev["example_index"])
    example = adversarial_example(model, dm.test.x[i: i + 1], dm.test.y[i: i + 1], float(ev["example_epsilon"]), **pgd_kwargs)
    out = {
        "seed": int(seed), "steps": int(trainer.global_step), "fit_time_s": round(fit_time, 2),
        "attack_time_s": round(time.perf_counter() - t0, 2), "training": cfg.get("training") or {"attack": "none"},
        "clean_acc": clean["acc"], "clean_loss": clean["loss"], "num_examples": n, "epsilons": eps,
        "fgsm_acc": fgsm_acc, "pgd_acc": pgd_acc, "fgsm_confidence_wrong": conf,
        "example": example,
    }
    if out_dir is not None:
        write_json(Path(out_dir) / "summary.json", out)
    return out


def arm_config(arm: Mapping[str, Any], models: Mapping[str, Any], trainings: Mapping[str, Any], base: Mapping[str, Any]) -> dict:
    """The full per-seed config of one arm: ``base`` (data, optimizer, bounds, max_steps, evaluation) with the
    arm's model and training looked up by name and any other key of the arm merged over it.

    Raises:
        ValueError: the arm names a model or training that is not defined.
    """
    arm = plain(arm)
    if arm.get("model") not in models:
        raise ValueError(f"arm model {arm.get('model')!r} is not defined; allowed: {sorted(models)}")
    training = arm.get("training", "natural")
    if training not in trainings:
        raise ValueError(f"arm training {training!r} is not defined; allowed: {sorted(trainings)}")
    extra = {k: v for k, v in arm.items() if k not in ("model", "training", "label")}
    return merge({**plain(base), "model": plain(models[arm["model"]]), "training": plain(trainings[training])}, extra)


def study(out_dir: Path, arms: Mapping[str, Mapping[str, Any]], models: Mapping[str, Any], trainings: Mapping[str, Any],
          data: Mapping[str, Any], optimizer: Mapping[str, Any], max_steps: int, evaluation: Mapping[str, Any] | None = None,
          bounds: Sequence[float] | None = None, seed: int = 0, num_seeds: int = 3, triptych: Sequence[str] | None = None,
          title: str = "", smoke: bool = False) -> dict[str, Any]:
    """Train and attack every arm for seeds ``seed .. seed + num_seeds - 1``; figures and per-arm means.

    Args:
        out_dir: the run directory (figures in ``out_dir/figures``, per-seed summaries in ``out_dir/runs``).
        arms: name -> ``{model: <key of models>, training: <key of trainings>, label: str, max_steps: int, ...}``
            (keys besides model, training and label override the shared config for that arm).
        models: name -> model node; trainings: name -> AdversarialTrainingTask arguments
            (``{attack: none}`` is natural training).
        data, optimizer, max_steps, evaluation, bounds: the shared per-seed config (see :func:`run_seed`).
        seed, num_seeds: the seeds.
        triptych: the arms whose seed-``seed`` example is drawn as clean / perturbed / difference (default: all).
        title: prefix of the figure titles (e.g. "MNIST").
        smoke: a smoke test (``debug=fast_dev_run``): 2 steps per arm, one seed, 16 examples, 2 PGD steps;
            the numbers mean nothing.

    Returns:
        For summary.json: per arm ``<arm>/clean_acc``, ``<arm>/fgsm_acc@<eps>``, ``<arm>/pgd_acc@<eps>`` (means
        over seeds) and the same with ``_sd``; ``curves`` (all per-epsilon means and sds), ``seeds``, ``epsilons``.

    Raises:
        ValueError: no arms, an arm naming an unknown model or training, num_seeds < 1, an unknown triptych arm.
    """
    if not arms:
        raise ValueError("the study needs at least one arm")
    out_dir = Path(out_dir)
    seeds = seeds_of(seed, 1 if smoke else num_seeds)
    ev = {**EVALUATION_DEFAULTS, **plain(evaluation or {})}
    if smoke:
        max_steps = 2
        ev.update(num_examples=16, pgd_steps=2, epsilons=ev["epsilons"][:2] + ev["epsilons"][-1:])
    base = {"data": data, "optimizer": optimizer, "max_steps": int(max_steps), "evaluation": ev,
            "bounds": None if bounds is None else list(bounds)}
    configs = {name: arm_config(arm, models, trainings, base) for name, arm in arms.items()}
    if smoke:
        for c in configs.values():
            c["max_steps"] = 2
    triptych = list(arms) if triptych is None else list(triptych)
    unknown = [a for a in triptych if a not in arms]
    if unknown:
        raise ValueError(f"triptych names unknown arms {unknown}; allowed: {list(arms)}")
    results: dict[str, list[dict]] = {}
    for name, cfg in configs.items():
        results[name] = []
        for s in seeds:
            r = run_seed(cfg, s, out_dir / "runs" / name / f"seed{s}")
            log.info("adversarial %s seed %d: clean %.4f, FGSM %s, PGD %s (fit %.1f s, attacks %.1f s)", name, s,
                     r["clean_acc"], [round(a, 3) for a in r["fgsm_acc"]], [round(a, 3) for a in r["pgd_acc"]],
                     r["fit_time_s"], r["attack_time_s"])
            results[name].append(r)
    summary = aggregate(results, [float(e) for e in ev["epsilons"]])
    draw(summary, results, {n: plain(arms[n]).get("label", n) for n in arms}, out_dir / "figures", title, triptych)
    return summary


def aggregate(results: Mapping[str, Sequence[Mapping[str, Any]]], epsilons: Sequence[float]) -> dict[str, Any]:
    """Means and sample sds over seeds of :func:`run_seed`'s results, arm by arm.

    Args:
        results: arm -> its per-seed results (the dicts :func:`run_seed` returns or writes), in seed order.
        epsilons: the budgets every result was attacked at.

    Returns:
        ``seeds`` (of the first arm), ``epsilons``, ``arms``, ``curves`` (arm -> ``fgsm``, ``pgd``, their
        ``_sd`` and ``fgsm_confidence_wrong``, one value per epsilon) and the flat keys
        ``<arm>/clean_acc``, ``<arm>/<attack>_acc@<eps>`` with their ``_sd``, ``<arm>/fit_time_s``.

    Raises:
        ValueError: an arm without results, or a result attacked at other budgets than ``epsilons``.
    """
    eps = [float(e) for e in epsilons]
    for name, rs in results.items():
        if not rs:
            raise ValueError(f"arm {name!r} has no results")
        bad = [r.get("seed") for r in rs if [float(e) for e in r["epsilons"]] != eps]
        if bad:
            raise ValueError(f"arm {name!r}, seeds {bad}: attacked at other budgets than {eps}")
    first = next(iter(results.values()))
    summary: dict[str, Any] = {"seeds": [int(r["seed"]) for r in first], "epsilons": eps, "arms": list(results),
                               "curves": {}}
    for name, rs in results.items():
        m, sd = mean_sd([r["clean_acc"] for r in rs])
        summary[f"{name}/clean_acc"], summary[f"{name}/clean_acc_sd"] = m, sd
        curve: dict[str, list[float]] = {}
        for attack_name in ATTACKS:
            per_eps = [mean_sd([r[f"{attack_name}_acc"][j] for r in rs]) for j in range(len(eps))]
            curve[attack_name] = [v[0] for v in per_eps]
            curve[f"{attack_name}_sd"] = [v[1] for v in per_eps]
            for e, (mu, s_) in zip(eps, per_eps, strict=True):
                summary[f"{name}/{attack_name}_acc@{key(e)}"] = mu
                summary[f"{name}/{attack_name}_acc@{key(e)}_sd"] = s_
        conf = [mean_sd([r["fgsm_confidence_wrong"][j] for r in rs])[0] for j in range(len(eps))]
        curve["fgsm_confidence_wrong"] = conf
        summary["curves"][name] = curve
        summary[f"{name}/fit_time_s"] = float(np.mean([r["fit_time_s"] for r in rs]))
    return summary


def draw(summary: Mapping[str, Any], results: Mapping[str, Sequence[Mapping[str, Any]]], labels: Mapping[str, str],
         fig_dir: Path, title: str = "", triptych: Sequence[str] | None = None, prefix: str = "adversarial") -> list[Path]:
    """The accuracy-epsilon curves (``<prefix>_accuracy.png``: FGSM and PGD panels, mean ± sd over the seeds)
    and the clean / perturbed / difference triptych of the first seed of each arm in ``triptych``
    (``<prefix>_triptych.png``; default: every arm) in ``fig_dir``, from :func:`aggregate`'s ``summary``."""
    triptych = list(results) if triptych is None else list(triptych)
    n_seeds = min(len(rs) for rs in results.values())
    return [plot_accuracy_curves(summary["curves"], summary["epsilons"], labels, Path(fig_dir) / f"{prefix}_accuracy.png",
                                 title, n_seeds),
            plot_triptych([(labels.get(n, n), results[n][0]["example"]) for n in triptych],
                          Path(fig_dir) / f"{prefix}_triptych.png", title)]


def load_runs(run_dirs: Sequence[str | Path], arms: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The per-seed results of one or more study runs, read from their ``runs/<arm>/seed<s>/summary.json``.

    The arms or seeds of one study run as separate processes (``'~study.arms.<arm>'``, ``seed=<s>
    study.num_seeds=1``) give the per-seed results the whole study gives in one; this collects them
    for :func:`aggregate` and :func:`draw`. Arms come in the order of ``arms`` (default: as first found), seeds
    in increasing order.

    Raises:
        ValueError: a folder without per-seed summaries, an (arm, seed) found in two folders, or an arm of
            ``arms`` found in none.
    """
    found = read_seed_summaries(run_dirs)
    order = list(found) if arms is None else list(arms)
    missing = [a for a in order if a not in found]
    if missing:
        raise ValueError(f"arms {missing} are in none of {[str(d) for d in run_dirs]}; found: {sorted(found)}")
    return {a: [found[a][s] for s in sorted(found[a])] for a in order}

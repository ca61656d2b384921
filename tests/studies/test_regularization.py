"""Explicit regularization is not what makes networks generalize (issue 15, item 9; Zhang et al. 2017, Tables 1-2):
the same MLP with and without weight decay, dropout and data augmentation, on true and on random MNIST labels."""

from __future__ import annotations

import json

import pytest

from conftest import compose


def _cfg(data_dir, train_size: int, steps: int, labels: str, **reg) -> dict:
    return {"data": {"_target_": "whylearn.data.CorruptedMNISTDataModule", "data_dir": str(data_dir), "train_size": train_size,
                     "val_size": 5000, "batch_size": 50, "steps_per_chunk": 10, "crop_padding": 2, "hflip": False},
            "model": {"_target_": "whylearn.models.MLP", "hidden": [512]},
            "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.02, "momentum": 0.9},
            "max_steps": steps, "eval_every": steps, "fit_threshold": 0.99, "labels": labels, **reg}


def test_regularizers_do_not_decide_generalization_and_do_not_stop_memorization(shared_data, one_thread):
    """The qualitative outcome, reduced (200 digits, 200 steps of 50, one seed): without any explicit regularizer the MLP
    generalizes far above chance, with all three (weight decay, dropout, random crops) its test accuracy moves by a
    few points only; on random labels, with weight decay and dropout on (Zhang et al.'s ImageNet random-label row),
    it still fits every training label and tests at chance."""
    from whylearn.studies.regularization import run_seed

    none = run_seed(_cfg(shared_data, 200, 200, "true"), 0)
    every = run_seed(_cfg(shared_data, 200, 200, "true", weight_decay=5e-4, dropout=0.2, augment=True), 0)
    memorize = run_seed(_cfg(shared_data, 200, 200, "random", weight_decay=5e-4, dropout=0.2), 0)
    assert none["train_acc"] == 1.0 and none["test_acc"] > 0.7  # fits and generalizes with no regularizer at all
    assert abs(every["test_acc"] - none["test_acc"]) < 0.08     # the regularizers move it by a few points
    assert every["test_acc"] > 0.7
    assert memorize["train_acc"] >= 0.99                        # random labels are fitted with weight decay and dropout on
    assert memorize["test_acc"] < 0.2                           # and the test accuracy is at chance (0.1)


def test_study_aggregates_arms_and_seeds_and_report_rebuilds_it(shared_data, tmp_path, one_thread):
    from whylearn.studies.regularization import load_runs, report, study

    c = _cfg(shared_data, 100, 4, "true")
    regs = {"none": {}, "dropout": {"dropout": 0.5}}
    for name, bad, match in ((tmp_path / "x", {"dropout": {"dropout": 0.5}}, "baseline named 'none'"),
                             (tmp_path / "x", {"none": {}, "x": {"l1": 0.1}}, "unknown key 'l1'")):
        with pytest.raises(ValueError, match=match):
            study(name, bad, c["data"], c["model"], c["optimizer"], 4, 2)
    with pytest.raises(ValueError, match="unknown labels"):
        study(tmp_path / "x", regs, c["data"], c["model"], c["optimizer"], 4, 2, labels=["true", "noisy"])
    assert not (tmp_path / "x").exists()  # refused before anything is written
    a = study(tmp_path / "a", regs, c["data"], c["model"], c["optimizer"], 4, 2, labels=["true"], num_seeds=1)
    seed0 = {n: json.loads((tmp_path / "a" / "runs" / n / "seed0" / "summary.json").read_text())
             for n in ("true_none", "true_dropout")}
    assert seed0["true_dropout"]["dropout"] == 0.5 and seed0["true_dropout"]["labels"] == "true"
    assert seed0["true_none"]["steps"] == 4 and seed0["true_none"]["dropout"] == 0.0
    effect = seed0["true_dropout"]["test_acc"] - seed0["true_none"]["test_acc"]
    assert a["true/dropout/test_acc_minus_none"] == pytest.approx(effect)
    assert a["max_abs_test_acc_minus_none"] == pytest.approx(abs(effect))
    assert (tmp_path / "a" / "figures" / "regularization.png").stat().st_size > 5000
    # report rebuilds the study's numbers from the per-seed summaries it left (as for seeds run as separate processes)
    r = report(tmp_path / "ab", [tmp_path / "a"])
    results, seeds = load_runs([tmp_path / "a"])
    assert r["seeds"] == seeds == [0] and r["sets"] == ["none", "dropout"]
    assert set(r) == set(a) - {"regularizers"}
    for k in ("true/none/test_acc", "true/dropout/train_acc", "true/dropout/test_acc_minus_none", "max_abs_test_acc_minus_none"):
        assert r[k] == a[k]
    written = json.loads((tmp_path / "ab" / "summary.json").read_text())
    assert written["true/none/test_acc"] == results[("true", "none")][0]["test_acc"]
    with pytest.raises(ValueError, match="found twice"):
        load_runs([tmp_path / "a", tmp_path / "a"])


@pytest.mark.slow
def test_full_regularization(tmp_path, shared_data):
    """The experiment as configured (5 regularizer sets x true/random labels x 3 seeds, 1000 / 3000 steps; about
    10-15 minutes of one idle core, estimated from the CPU time of the measured runs): the entries
    docs/experiments.md reports as passing pass. The one it reports as failing, min_random_train_acc, is the
    random-label arms with random crops, not fitted in 300 epochs (Zhang et al.'s random-label rows have no
    augmentation): they are still far above chance on the training set."""
    from whylearn.experiment import run

    s = run(compose(["experiment=regularization", f"paths.data_dir={shared_data}", "logger=csv"], tmp_path))
    verdicts = {e["quantity"]: e["verdict"] for e in s["reference"]}
    assert {q: v for q, v in verdicts.items() if q != "min_random_train_acc"} == {
        "true/all/test_acc_minus_none": "pass", "max_abs_test_acc_minus_none": "pass",
        "none/true_minus_random_test_acc": "pass", "random/weight_decay/train_acc": "pass",
        "random/dropout/train_acc": "pass", "max_random_test_acc": "pass"}
    assert s["random/none/train_acc"] == 1.0 and s["random/augmentation/train_acc"] > 0.5

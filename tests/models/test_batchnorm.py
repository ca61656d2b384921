"""BatchNorm instruments and models (issue 15, item 4; Santurkar et al. 2018): building blocks only so far."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from whylearn.analysis.smoothness import batchnorm_mode_gap, gradient_step_variation
from whylearn.models.batchnorm import NoisyBatchNorm1d
from whylearn.models.mlp import MLP


def test_noisy_batchnorm_shifts_the_distribution_differently_at_every_step_and_averages_in_eval():
    torch.manual_seed(0)
    layer = NoisyBatchNorm1d(5, noise_mean=0.5, noise_std=1.5)
    plain = nn.BatchNorm1d(5)
    x = torch.randn(512, 5) * 3 + 2
    a, b = layer(x), layer(x)
    # batch statistics of the output: not zero-mean / unit-variance, and different at each call (step)
    assert (a.mean(0).abs() > 0.02).any() and not torch.allclose(a.mean(0), b.mean(0), atol=1e-3)
    assert not torch.allclose(a.var(0), torch.ones(5), atol=0.05)
    assert torch.allclose(plain(x).mean(0), torch.zeros(5), atol=1e-5)
    layer.eval()
    plain.load_state_dict(layer.state_dict())
    plain.eval()
    assert torch.allclose(layer(x), plain(x) * 1.25, atol=1e-6)       # E[s] = (1 + 1.5) / 2
    with pytest.raises(ValueError, match="noise_std"):
        NoisyBatchNorm1d(5, noise_std=0.5)


def test_mlp_norm_option_places_batchnorm_before_each_activation_and_refuses_unknown():
    m = MLP(input_size=40, num_classes=10, hidden=[16, 16], norm="batch")
    kinds = [type(mod).__name__ for mod in m.net]
    assert kinds[:3] == ["Linear", "BatchNorm1d", "ReLU"] and kinds.count("BatchNorm1d") == 2
    noisy = MLP(input_size=40, num_classes=10, hidden=[8], norm="noisy_batch")
    assert sum(isinstance(mod, NoisyBatchNorm1d) for mod in noisy.modules()) == 1
    with pytest.raises(ValueError, match="'layer'"):
        MLP(input_size=40, num_classes=10, hidden=[8], norm="layer")


def test_ensemble_refuses_batchnorm_members():
    from whylearn.models.ensemble import MemberEnsemble

    with pytest.raises(ValueError, match="BatchNorm"):
        MemberEnsemble([MLP(input_size=4, num_classes=2, hidden=[3], norm="batch") for _ in range(2)])


def test_gradient_step_variation_on_a_quadratic_gives_the_exact_curvature_and_is_pure():
    """For least squares L(w) = mean (Xw - y)^2 the gradient changes by exactly eta H g along -eta g, so the
    "effective beta-smoothness" is ||H g|| / ||g|| with H = 2 X^T X / N, and the loss at each step is known."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 3), torch.randn(64)
    model = nn.Linear(3, 1, bias=False)
    w0 = model.weight.detach().clone()
    rng = torch.get_rng_state()
    r = gradient_step_variation(model, x, y, [0.1, 0.3], loss_fn=lambda o, t: F.mse_loss(o.squeeze(-1), t))
    w = w0.reshape(-1)
    g = 2 * x.T @ (x @ w - y) / 64
    hess = 2 * x.T @ x / 64
    assert r["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-4)
    assert r["beta"] == pytest.approx(float((hess @ g).norm() / g.norm()), rel=1e-3)
    assert r["grad_changes"][1] == pytest.approx(0.3 * float((hess @ g).norm()), rel=1e-3)
    assert r["losses"][0] == pytest.approx(float(((x @ (w - 0.1 * g) - y) ** 2).mean()), rel=1e-4)
    assert torch.equal(model.weight, w0) and torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(ValueError, match="step_sizes"):
        gradient_step_variation(model, x, y, [], loss_fn=F.mse_loss)


def test_batchnorm_mode_gap_is_zero_without_batchnorm_and_restores_running_statistics():
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    plain = MLP(input_size=4, num_classes=2, hidden=[6])
    r = batchnorm_mode_gap(plain, x, y, batch_size=4)
    assert r["mode_gap"] == 0.0 and r["eval_acc"] == r["batch_stats_acc"]
    bn = MLP(input_size=4, num_classes=2, hidden=[6], norm="batch")
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    r = batchnorm_mode_gap(bn, x, y, batch_size=2)
    assert 0 <= r["eval_acc"] <= 1 and r["mode_gap"] == pytest.approx(r["batch_stats_acc"] - r["eval_acc"])
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())
    with pytest.raises(ValueError, match="batch_size"):
        batchnorm_mode_gap(bn, x, y, batch_size=1)


def test_batchnorm_experiment_runs_with_its_measurements(make_cfg):
    """The config and its two callbacks in a real (short) run: Santurkar et al.'s scalars and the mode gap land in
    summary.json; training is not perturbed by the measurement (same train loss with the callback removed)."""
    from whylearn.experiment import run

    base = ["experiment=batchnorm", "model.norm=noisy_batch", "logger=csv", "trainer.max_steps=20",
            "data.num_samples=1000", "data.batch_size=32", "callbacks.gradient_predictiveness.every_n_steps=10",
            "callbacks.gradient_predictiveness.num_samples=64", "trainer.check_val_every_n_epoch=1"]
    s = run(make_cfg(base, "with"))
    assert s["status"] == "completed" and s["steps"] == 20
    assert s["smooth/beta_mean"] > 0 and s["smooth/grad_norm_mean"] > 0 and s["smooth/loss_range_mean"] >= 0
    assert 0 <= s["bn/eval_acc"] <= 1 and s["bn/mode_gap"] == pytest.approx(s["bn/batch_stats_acc"] - s["bn/eval_acc"])
    without = run(make_cfg(base + ["callbacks.gradient_predictiveness=null"], "without"))
    assert without["train/loss"] == pytest.approx(s["train/loss"], rel=1e-6)


def test_batchnorm_and_noisy_batchnorm_train_where_the_plain_deep_mlp_is_still_stuck(make_cfg):
    """The experiment's qualitative outcome on its first 200 steps (seed 0): without BatchNorm the 6-layer MLP is
    still on the ln(10) plateau; with BatchNorm, and with noisy BatchNorm's shifting distributions, it trains
    (docs/experiments.md: at step 200 about 2.30 against 1.31 and 1.57; 3 seeds over 2000 steps in the docs)."""
    from whylearn.experiment import run

    loss = {}
    for norm in ("none", "batch", "noisy_batch"):
        s = run(make_cfg(["experiment=batchnorm", f"model.norm={norm}", "logger=csv", "seed=0", "trainer.max_steps=200",
                          "callbacks.gradient_predictiveness=null", "trainer.check_val_every_n_epoch=100"], norm))
        loss[norm] = s["train/loss"]
    assert loss["none"] > 2.2, loss                     # ln(10) = 2.303: chance level
    assert loss["batch"] < 1.8 and loss["noisy_batch"] < 1.9, loss


def test_batchnorm_trains_at_a_learning_rate_where_the_plain_deep_mlp_collapses(make_cfg):
    """The learning-rate sweep's outcome, reduced (1000 MNIST-1D samples, 100 steps, seed 0) at lr 3.0, 10x the largest
    learning rate at which the plain network trains in every seed (0.3; docs/experiments.md, 3 seeds x 7 learning
    rates): without BatchNorm the network collapses to a constant prediction (chance loss, ln 10 = 2.303) within
    100 steps, with BatchNorm it trains (2.31 against 1.49 at step 100)."""
    from whylearn.experiment import run

    loss = {}
    for norm in ("none", "batch"):
        s = run(make_cfg(["experiment=batchnorm_lr_sweep", f"model.norm={norm}", "optimizer.lr=3.0", "logger=csv",
                          "seed=0", "data.num_samples=1000", "trainer.max_steps=100",
                          "trainer.check_val_every_n_epoch=100"], norm))
        loss[norm] = s["train/loss"]
    assert loss["none"] > 2.25, loss
    assert loss["batch"] < 1.9, loss


@pytest.mark.slow
def test_batchnorm_full_run_smoother_steps_and_faster_training(make_cfg):
    """The documented 2000-step runs, seed 0: BatchNorm ends with a much lower training loss, and the loss varies
    less along the gradient step (Santurkar et al. Fig. 4a) with both BatchNorm variants."""
    from whylearn.experiment import run

    s = {norm: run(make_cfg(["experiment=batchnorm", f"model.norm={norm}", "logger=csv", "seed=0"], norm))
         for norm in ("none", "batch", "noisy_batch")}
    assert s["batch"]["train/loss"] < 0.5 * s["none"]["train/loss"]
    assert s["noisy_batch"]["train/loss"] < s["none"]["train/loss"]
    for norm in ("batch", "noisy_batch"):
        assert s[norm]["smooth/loss_range_mean"] < 0.6 * s["none"]["smooth/loss_range_mean"]


def _lr_report():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "lr_stability_report.py"
    spec = importlib.util.spec_from_file_location("lr_stability_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lr_stability_report_counts_diverged_and_untrained_seeds(tmp_path):
    """The sweep's report: a failed job (non-finite loss) and a completed one stuck at chance do not train; the
    largest stable learning rate is the largest grid point where every seed trains, whatever lies below it."""
    import json

    report = _lr_report()
    jobs = {  # (norm, lr, seed): (status, final train loss)
        ("none", 0.1, 0): ("completed", 0.9), ("none", 0.1, 1): ("completed", 1.1),
        ("none", 1.0, 0): ("completed", 1.5), ("none", 1.0, 1): ("failed", None),
        ("batch", 0.1, 0): ("completed", 2.1), ("batch", 0.1, 1): ("completed", 0.3),   # slow, not unstable
        ("batch", 1.0, 0): ("completed", 0.4), ("batch", 1.0, 1): ("completed", 0.5),
        ("batch", 10.0, 0): ("completed", 2.31), ("batch", 10.0, 1): ("completed", float("nan")),
    }
    for i, ((norm, lr, seed), (status, loss)) in enumerate(jobs.items()):
        d = tmp_path / f"{i}_model.norm={norm}__optimizer.lr={lr}__seed={seed}"
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- model.norm={norm}\n- optimizer.lr={lr}\n- seed={seed}\n"
                                                     "- experiment=batchnorm_lr_sweep\n")
        s = {"status": status, "train/loss": loss, "test/acc": 0.5}
        if status == "failed":
            s = {"status": "failed", "error": "NonFiniteLossError: training loss is nan at step 7"}
        (d / "summary.json").write_text(json.dumps(s))
    res = report.table(report.read_jobs(tmp_path, "model.norm", "optimizer.lr"), threshold=2.0)
    assert res["none"]["largest"] == 0.1 and res["batch"]["largest"] == 1.0
    assert res["none"]["rows"][1.0]["diverged"] == 1 and res["none"]["rows"][1.0]["trained"] == 1
    assert res["batch"]["rows"][10.0]["trained"] == 0 and res["batch"]["rows"][10.0]["diverged"] == 0
    assert res["batch"]["rows"][0.1]["loss"][0] == pytest.approx(1.2)
    with pytest.raises(SystemExit, match="no override 'data.batch_size'"):
        report.read_jobs(tmp_path, "data.batch_size", "optimizer.lr")
    with pytest.raises(SystemExit, match="holds no job folder"):
        report.read_jobs(tmp_path / "0_model.norm=none__optimizer.lr=0.1__seed=0", "model.norm", "optimizer.lr")


def test_lr_stability_report_reads_values_as_hydra_typed_them(tmp_path, capsys, monkeypatch):
    """The report reads the jobs as whylearn-analyze does: 3e-1 and 0.3 are one grid point, a quoted arm is the arm,
    every multirun under the folder is read (in job-number order), and a non-numeric --x value is named."""
    import json
    import sys

    report = _lr_report()
    jobs = [("2026-12-01", "batch", "0.3", 0.5), ("2026-12-02", "'batch'", "3e-1", 0.7),
            ("2026-12-01", "none", "1", 1.0), ("2026-12-02", "none", "1.0", 3.0)]
    for i, (date, norm, lr, loss) in enumerate(jobs):
        d = tmp_path / "multiruns" / date / f"{i}_job"
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- model.norm={norm}\n- optimizer.lr={lr}\n- seed={i}\n")
        (d / "summary.json").write_text(json.dumps({"status": "completed", "train/loss": loss, "test/acc": 0.5}))
    res = report.table(report.read_jobs(tmp_path / "multiruns" / "2026-12-01", "model.norm", "optimizer.lr")
                         + report.read_jobs(tmp_path / "multiruns" / "2026-12-02", "model.norm", "optimizer.lr"), threshold=2.0)
    assert list(res) == ["batch", "none"]
    assert res["batch"]["rows"][0.3]["n"] == 2 and res["batch"]["rows"][0.3]["loss"][0] == pytest.approx(0.6)
    assert res["none"]["rows"][1.0]["n"] == 2 and res["none"]["rows"][1.0]["trained"] == 1
    monkeypatch.setattr(sys, "argv", ["lr_stability_report.py", str(tmp_path / "multiruns")])
    report.main()
    out = capsys.readouterr().out
    assert "| batch | 0.3 | 2/2 | 0 | 0.600 ± 0.141 | 0.500 ± 0.000 |" in out
    assert "largest stable optimizer.lr (batch): 0.3" in out
    (d / ".hydra" / "overrides.yaml").write_text("- model.norm=none\n- optimizer.lr=fast\n")
    with pytest.raises(SystemExit, match=r"job 3_job: optimizer.lr='fast' is not a number"):
        report.read_jobs(tmp_path / "multiruns", "model.norm", "optimizer.lr")
    (d / ".hydra" / "overrides.yaml").write_text("- model.norm=none\n- optimizer.lr=1,2\n")
    with pytest.raises(SystemExit, match=r"job 3_job: .*overrides.yaml: 'optimizer.lr=1,2' is not one key=value"):
        report.read_jobs(tmp_path / "multiruns", "model.norm", "optimizer.lr")


def test_lr_sweep_config_is_the_batchnorm_run_without_its_landscape_callbacks(make_cfg):
    cfg = make_cfg(["experiment=batchnorm_lr_sweep"])
    base = make_cfg(["experiment=batchnorm"], "base")
    assert cfg.callbacks.gradient_predictiveness is None and cfg.callbacks.batchnorm_mode_gap is None
    for key in ("model", "optimizer", "data"):
        assert cfg[key] == base[key], key
    assert cfg.trainer.max_steps == base.trainer.max_steps == 2000

"""Adversarial examples: FGSM and PGD as stated (Goodfellow et al. 2015 Eq. 1; Madry et al. 2018 Eq. 2), the
adversarial-training task, the robustness callback and the study, and the qualitative outcome on MNIST-1D."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import compose
from whylearn.analysis import adversarial as A
from whylearn.models import MLP, ConvNet


def _linear(w: torch.Tensor, b: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    return lin


def test_fgsm_is_the_exact_worst_case_for_a_linear_two_class_model():
    # Goodfellow et al. Sec. 3: for a linear model the L-inf adversary moves the logit margin by eps * ||w||_1,
    # and sign(grad) is exactly the perturbation that does it
    # (float64: in float32 a very confident example's p_true rounds to 1 and the true class drops out of the gradient)
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(2, 30, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)
    model = _linear(w, b).double()
    x, y = torch.randn(16, 30, generator=g, dtype=torch.float64), torch.randint(0, 2, (16,), generator=g)
    eps = 0.07
    xa = A.fgsm(model, x, y, eps, bounds=None)
    assert torch.allclose((xa - x).abs(), torch.full_like(x, eps), atol=1e-6)  # every coordinate moves by eps
    sign = (2 * y - 1).float()  # margin of the true class: sign * (logit1 - logit0)
    margin = lambda inp: sign * (model(inp)[:, 1] - model(inp)[:, 0])  # noqa: E731
    drop = (margin(x) - margin(xa)).detach()
    assert torch.allclose(drop, torch.full_like(drop, eps * (w[1] - w[0]).abs().sum().item()), rtol=1e-4)
    # no perturbation in the ball does better than that: random sign vectors drop the margin less
    for _ in range(20):
        other = x + eps * torch.sign(torch.randn(x.shape, generator=g, dtype=torch.float64))
        assert bool(((margin(x) - margin(other)).detach() <= drop + 1e-5).all())


def _trained_mlp(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(256, 20, generator=g)
    y = (x[:, :10].sum(1) > x[:, 10:].sum(1)).long()
    torch.manual_seed(seed)
    model = MLP(20, 2, [32])
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y


def test_pgd_stays_in_the_ball_and_bounds_and_beats_fgsm():
    model, x, y = _trained_mlp()
    eps = 0.05
    xf = A.fgsm(model, x, y, eps, bounds=(0.0, 1.0))
    xp = A.pgd(model, x, y, eps, steps=20, bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(1))
    for xa in (xf, xp):
        assert float((xa - x).abs().max()) <= eps + 1e-6
        assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    with torch.no_grad():
        clean, lf, lp = (F.cross_entropy(model(v), y).item() for v in (x, xf, xp))
    assert lp > clean and lf > clean
    assert lp >= lf - 1e-6  # 20 projected steps find at least the loss of the single FGSM step
    acc = A.robust_accuracy(model, x, y, [0.0, eps], "pgd", steps=20, bounds=(0.0, 1.0))
    with torch.no_grad():
        assert acc[0] == pytest.approx((model(x).argmax(-1) == y).float().mean().item())
    assert acc[1] < acc[0]
    # restarts keep, per example, the worst perturbation found: the first start of a 3-restart run is the
    # 1-restart run (same generator), so every example it fools stays fooled
    one = A.pgd(model, x, y, 0.2, steps=2, bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(5))
    three = A.pgd(model, x, y, 0.2, steps=2, restarts=3, bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fooled_one, fooled_three = model(one).argmax(-1) != y, model(three).argmax(-1) != y
    assert bool((fooled_three | ~fooled_one).all()) and int(fooled_three.sum()) >= int(fooled_one.sum())


def test_attacks_leave_parameters_gradients_and_mode_alone():
    model, x, y = _trained_mlp()
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = [p.detach().clone() for p in model.parameters()]
    A.fgsm(model, x, y, 0.1)
    A.pgd(model, x, y, 0.1, steps=3)
    A.robust_accuracy(model, x, y, [0.1], "fgsm")
    assert model.training
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert all(torch.equal(p.grad, torch.full_like(p, 3.0)) for p in model.parameters())


def test_attack_errors_name_the_value():
    model, x, y = _trained_mlp()
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        A.fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        A.robust_accuracy(model, x, y, [0.1], "cw")
    with pytest.raises(ValueError, match="steps and restarts"):
        A.pgd(model, x, y, 0.1, steps=0)
    with pytest.raises(ValueError, match="bounds"):
        A.pgd(model, x, y, 0.1, bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="batch size"):
        A.fgsm(model, x, y[:-1], 0.1)


def test_convnet_shapes_and_madry_size():
    net = ConvNet((1, 28, 28), 10)  # Madry et al.'s MNIST model: 3,274,634 parameters
    assert sum(p.numel() for p in net.parameters()) == 3_274_634
    assert ConvNet((1, 28, 28), 10, (8, 16), 64)(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="expects images"):
        net(torch.rand(3, 784))
    with pytest.raises(ValueError, match="input_shape"):
        ConvNet((40,), 10)


def test_adversarial_training_task_options_and_objective():
    from whylearn.tasks import AdversarialTrainingTask

    model, x, y = _trained_mlp()
    opt = partial(torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="unknown training attack"):
        AdversarialTrainingTask(model, 2, opt, attack="cw")
    with pytest.raises(ValueError, match="clean_weight"):
        AdversarialTrainingTask(model, 2, opt, clean_weight=1.5)
    natural = AdversarialTrainingTask(model, 2, opt, attack="none")
    fgsm_task = AdversarialTrainingTask(model, 2, opt, attack="fgsm", epsilon=0.1, clean_weight=0.5, bounds=None)
    pgd_task = AdversarialTrainingTask(model, 2, opt, attack="pgd", epsilon=0.1, steps=5, bounds=None)
    clean_loss = natural.step_loss(x, y)[0].item()
    # Goodfellow et al. Eq. (3): alpha J(x) + (1 - alpha) J(x_fgsm)
    expected = 0.5 * clean_loss + 0.5 * F.cross_entropy(model(A.fgsm(model, x, y, 0.1, bounds=None)), y).item()
    assert fgsm_task.step_loss(x, y)[0].item() == pytest.approx(expected, rel=1e-5)
    loss, kept = pgd_task.step_loss(x, y)
    assert loss.item() > clean_loss  # Madry et al.: the loss at the PGD point
    assert set(pgd_task.step_scalars(kept)) == {"train/acc", "train/adv_loss", "train/adv_acc", "train/epsilon"}
    ramp = AdversarialTrainingTask(model, 2, opt, attack="pgd", epsilon=0.3, epsilon_warmup_steps=100)
    assert ramp.current_epsilon() == pytest.approx(0.003)  # no trainer yet: step 0 of the ramp


def _tsipras_data(n: int, d: int, p: float, eta: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Tsipras et al. 2019 (Sec. 2.1): x_1 = +-y (the label's sign, right with probability p; robust to any
    epsilon < 1), x_2..x_{d+1} ~ N(eta y, 1) (each weakly correlated with y, together enough for ~100% accuracy)."""
    y = torch.randint(0, 2, (n,), generator=g)
    s = (2 * y - 1).float()
    robust = s * torch.where(torch.rand(n, generator=g) < p, 1.0, -1.0)
    return torch.cat([robust[:, None], eta * s[:, None] + torch.randn(n, d, generator=g)], 1), y


def test_adversarial_training_trades_clean_accuracy_for_robustness(one_thread):
    """The qualitative outcome where it is a theorem (Tsipras et al. 2019, "Robustness may be at odds with
    accuracy", Sec. 2.1, Thm. 2.1): with eta = 4 / sqrt(d) a naturally trained linear classifier is ~100%
    accurate by pooling the weak features, and the budget epsilon = 2 eta flips all of them, so PGD takes it
    to ~0; PGD adversarial training (AdversarialTrainingTask, Madry et al.'s objective) must lean on the robust
    feature instead: robust accuracy near p = 0.9 at the cost of clean accuracy falling from ~1 to ~p.
    Fails if the training attack or the evaluation attack does nothing."""
    from whylearn.tasks import AdversarialTrainingTask

    d, p = 200, 0.9
    eta = 4 / d**0.5
    eps = 2 * eta
    g = torch.Generator().manual_seed(0)
    (xtr, ytr), (xte, yte) = _tsipras_data(2000, d, p, eta, g), _tsipras_data(2000, d, p, eta, g)
    acc = {}
    for training in ("none", "pgd"):
        torch.manual_seed(0)
        model = nn.Linear(d + 1, 2)
        opt = torch.optim.Adam(model.parameters(), 0.05)
        task = AdversarialTrainingTask(model, 2, partial(torch.optim.Adam, lr=0.05), attack=training, epsilon=eps,
                                       steps=5, bounds=None)
        for _ in range(100):
            opt.zero_grad()
            task.step_loss(xtr, ytr)[0].backward()
            opt.step()
        acc[training] = A.robust_accuracy(model, xte, yte, [0.0, eps], "pgd", steps=10, bounds=None)
    (nat_clean, nat_pgd), (adv_clean, adv_pgd) = acc["none"], acc["pgd"]
    assert nat_clean > 0.97 and nat_pgd < 0.05  # natural: accurate, and collapses under PGD
    assert adv_pgd > 0.8 and adv_pgd > nat_pgd + 0.7  # adversarial training restores robust accuracy ...
    assert adv_clean < nat_clean - 0.05 and adv_clean < p + 0.05  # ... at a cost in clean accuracy (to about p)


def _run_seed_cfg(training: dict, steps: int) -> dict:
    return {"data": {"_target_": "whylearn.data.MNIST1DDataModule", "val_size": 0, "batch_size": 100, "steps_per_chunk": 50},
            "model": {"_target_": "whylearn.models.MLP", "hidden": [100, 100]},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 3e-3}, "bounds": None, "max_steps": steps,
            "training": training,
            "evaluation": {"epsilons": [0.0, 0.2], "num_examples": 500, "pgd_steps": 10, "example_epsilon": 0.2}}


def test_adversarial_training_restores_robust_accuracy_on_mnist1d(one_thread):
    """The qualitative outcome, reduced: on MNIST-1D a naturally trained MLP loses most of its accuracy to
    10-step PGD at epsilon 0.2 (input std 1); the same MLP trained with 3-step PGD at 0.2 keeps far more."""
    from whylearn.studies.adversarial import run_seed

    natural = run_seed(_run_seed_cfg({"attack": "none"}, 600), 0)
    robust = run_seed(_run_seed_cfg({"attack": "pgd", "epsilon": 0.2, "steps": 3}, 600), 0)
    assert natural["clean_acc"] > 0.5 and natural["pgd_acc"][0] == pytest.approx(natural["fgsm_acc"][0])
    assert natural["pgd_acc"][1] < 0.5 * natural["pgd_acc"][0]  # most of the accuracy is gone
    assert robust["pgd_acc"][1] > natural["pgd_acc"][1] + 0.1  # adversarial training restores part of it
    assert robust["pgd_acc"][1] <= robust["fgsm_acc"][1] + 0.02  # PGD is the stronger attack


def test_study_writes_seed_summaries_and_figures_and_refuses_bad_arms(tmp_path, one_thread):
    from whylearn.studies.adversarial import aggregate, load_runs, study

    base = _run_seed_cfg({"attack": "none"}, 4)
    trainings = {"natural": {"attack": "none"}, "fgsm": {"attack": "fgsm", "epsilon": 0.1}}
    kwargs = {"models": {"mlp": base["model"]}, "trainings": trainings,
              "data": base["data"], "optimizer": base["optimizer"], "max_steps": 4, "evaluation": base["evaluation"]}
    arms = {"mlp": {"model": "mlp"}, "mlp_fgsm": {"model": "mlp", "training": "fgsm", "label": "FGSM-trained"}}
    s = study(tmp_path, arms, num_seeds=2, **kwargs)
    assert s["seeds"] == [0, 1] and set(s["curves"]) == {"mlp", "mlp_fgsm"}
    assert 0.0 <= s["mlp/pgd_acc@0.2"] <= s["mlp/pgd_acc@0"] + 1e-9 and s["mlp/clean_acc_sd"] >= 0
    seed_summary = json.loads((tmp_path / "runs" / "mlp_fgsm" / "seed1" / "summary.json").read_text())
    assert seed_summary["training"]["attack"] == "fgsm" and len(seed_summary["pgd_acc"]) == 2
    assert all((tmp_path / "figures" / f).stat().st_size > 5000 for f in ("adversarial_accuracy.png", "adversarial_triptych.png"))
    # the per-seed summaries on disk aggregate to the study's own summary (arms or seeds run as separate processes)
    again = aggregate(load_runs([tmp_path], ["mlp_fgsm", "mlp"]), s["epsilons"])
    assert again["arms"] == ["mlp_fgsm", "mlp"] and again["seeds"] == [0, 1]
    assert all(again[k] == pytest.approx(v, nan_ok=True) for k, v in s.items() if "/" in k)
    with pytest.raises(ValueError, match="arm 'mlp' seed 0 is in two folders"):
        load_runs([tmp_path, tmp_path])
    with pytest.raises(ValueError, match=r"arms \['cnn'\] are in none"):
        load_runs([tmp_path], ["cnn"])
    with pytest.raises(ValueError, match="arm model 'cnn' is not defined"):
        study(tmp_path, {"x": {"model": "cnn"}}, **kwargs)
    with pytest.raises(ValueError, match="arm training 'trades' is not defined"):
        study(tmp_path, {"x": {"model": "mlp", "training": "trades"}}, **kwargs)


def _verdicts(summary: dict) -> dict[str, str]:
    return {e["quantity"]: e["verdict"] for e in summary["reference"]}


@pytest.mark.slow
def test_full_adversarial_mnist_mlps_match_goodfellow(tmp_path, shared_data):
    """The MNIST MLP arms as measured in docs/experiments.md (3 seeds, 1500 steps; about 30 minutes on one
    busy core): natural models fall to ~0 accuracy at epsilon 0.25, FGSM training restores FGSM accuracy near
    Goodfellow et al.'s 82.1% but not PGD accuracy."""
    from whylearn.experiment import run

    s = run(compose(["experiment=adversarial_mnist", f"paths.data_dir={shared_data}", "logger=csv",
                     "study.max_steps=1500", "study.evaluation.num_examples=500",
                     "~study.arms.cnn", "~study.arms.cnn_pgd", "study.triptych=[mlp,mlp_fgsm]"],
                    tmp_path))
    v = _verdicts(s)
    assert v["logistic/fgsm_acc@0.25"] == "pass" and v["mlp_fgsm/fgsm_acc@0.25"] == "pass"
    assert s["mlp/fgsm_acc@0.25"] < 0.05 and s["mlp/pgd_acc@0.3"] < 0.05
    assert s["mlp_fgsm/fgsm_acc@0.25"] > s["mlp/fgsm_acc@0.25"] + 0.5
    assert s["mlp_fgsm/pgd_acc@0.25"] < 0.1  # FGSM training does not survive PGD (Madry et al.)


@pytest.mark.slow
def test_full_adversarial_mnist_natural_cnn_falls_to_pgd(tmp_path, shared_data):
    """The natural CNN as measured in docs/experiments.md: near 0 under PGD at 0.3 (Madry et al. Fig. 4)."""
    from whylearn.experiment import run

    s = run(compose(["experiment=adversarial_mnist", f"paths.data_dir={shared_data}", "logger=csv",
                     "study.max_steps=1000", "study.evaluation.num_examples=500",
                     "~study.arms.logistic", "~study.arms.mlp", "~study.arms.mlp_fgsm",
                     "~study.arms.cnn_pgd", "study.triptych=[cnn]"], tmp_path))
    assert _verdicts(s)["cnn/pgd_acc@0.3"] == "pass" and s["cnn/clean_acc"] > 0.97


@pytest.mark.slow
def test_full_adversarial_mnist_pgd_trained_cnn(tmp_path, shared_data):
    """The CNN pair as measured in docs/experiments.md (3 seeds, 250 steps, 7-step PGD training at epsilon 0.3;
    about 30 minutes of one idle core): the natural CNN falls to ~0 under PGD at 0.3 (Madry et al. Fig. 4),
    the PGD-trained one keeps far more of its accuracy there, at a cost in clean accuracy (Madry et al. Table 1)."""
    from whylearn.experiment import run

    s = run(compose(["experiment=adversarial_mnist", f"paths.data_dir={shared_data}", "logger=csv",
                     "study.max_steps=250", "study.evaluation.num_examples=500",
                     "~study.arms.logistic", "~study.arms.mlp", "~study.arms.mlp_fgsm",
                     "study.trainings.pgd.steps=7", "study.trainings.pgd.epsilon_warmup_steps=75",
                     "study.triptych=[cnn,cnn_pgd]"], tmp_path))
    assert _verdicts(s)["cnn/pgd_acc@0.3"] == "pass" and s["cnn/clean_acc"] > 0.9
    assert s["cnn_pgd/pgd_acc@0.3"] > s["cnn/pgd_acc@0.3"] + 0.2
    assert s["cnn_pgd/clean_acc"] < s["cnn/clean_acc"]


@pytest.mark.slow
def test_full_adversarial_mnist1d(tmp_path):
    """The MNIST-1D experiment as measured (3 arms x 3 seeds, 1000 steps): PGD training keeps more at epsilon 0.2."""
    from whylearn.experiment import run

    s = run(compose(["experiment=adversarial_mnist1d", "logger=csv", "study.max_steps=1000"], tmp_path))
    assert s["mlp/pgd_acc@0.2"] < 0.5 * s["mlp/clean_acc"]
    assert s["mlp_pgd/pgd_acc@0.2"] > s["mlp/pgd_acc@0.2"] + 0.1

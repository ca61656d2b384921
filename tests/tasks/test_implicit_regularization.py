"""Full batch vs SGD and implicit gradient regularization (issue 15, item 3).

Barrett & Dherin 2021 (Eq. 1-2), Smith et al. 2021 (Eq. 2-4), Geiping et al. 2022 (Sec. 3);
whylearn.tasks.GradientPenaltyTask, experiment ``fullbatch_vs_sgd``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from whylearn.tasks.gradient_penalty import subbatch_gradient_penalty


def _net(seed: int = 0, norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 8)] + ([nn.BatchNorm1d(8)] if norm else []) + [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def _data(n: int = 37, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_penalty_is_the_mean_squared_norm_of_the_sub_batch_gradients():
    model, (x, y) = _net(), _data()
    b = 8                                   # 4 full sub-batches and a remainder of 5
    expected = []
    for s in range(0, x.shape[0], b):
        g = torch.autograd.grad(F.cross_entropy(model(x[s:s + b]), y[s:s + b]), list(model.parameters()))
        expected.append(sum(gi.pow(2).sum() for gi in g))
    expected = torch.stack(expected).mean()
    for method in ("vmap", "loop", "auto"):
        got = subbatch_gradient_penalty(model, F.cross_entropy, x, y, b, method)
        assert float(got) == pytest.approx(float(expected), rel=1e-5), method
    # its gradient (double backward) is the same by both methods
    grads = {}
    for method in ("vmap", "loop"):
        pen = subbatch_gradient_penalty(model, F.cross_entropy, x, y, b, method)
        grads[method] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(pen, list(model.parameters()))])
    assert torch.allclose(grads["vmap"], grads["loop"], rtol=1e-4, atol=1e-7)
    # the whole batch (m = 1) is ||grad L||^2
    full = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    assert float(subbatch_gradient_penalty(model, F.cross_entropy, x, y, 1000)) == pytest.approx(
        float(sum(g.pow(2).sum() for g in full)), rel=1e-5)


def test_penalty_refuses_bad_arguments():
    model, (x, y) = _net(), _data()
    with pytest.raises(ValueError, match="sub_batch"):
        subbatch_gradient_penalty(model, F.cross_entropy, x, y, 0)
    with pytest.raises(ValueError, match="'nope'"):
        subbatch_gradient_penalty(model, F.cross_entropy, x, y, 4, "nope")


def test_gradient_descent_follows_the_modified_loss_of_barrett_and_dherin():
    """One GD step of size h stays O(h^3) close to the gradient flow of L + (h/4)||grad L||^2 but only O(h^2)
    close to the flow of L itself (Barrett & Dherin 2021, Theorem 3.1): full batch has an implicit regularizer
    too, and the penalty's coefficient h/4 is the one that makes it so (h/2 or 0 are measurably worse)."""
    torch.manual_seed(0)
    model, (x, y) = _net(), _data()
    params = list(model.parameters())
    w0 = [p.detach().clone() for p in params]

    def grad(coef: float) -> list[torch.Tensor]:
        loss = F.cross_entropy(model(x), y)
        if coef == 0:
            return list(torch.autograd.grad(loss, params))
        g = torch.autograd.grad(loss, params, create_graph=True)
        total = loss + coef * sum(gi.pow(2).sum() for gi in g)
        return list(torch.autograd.grad(total, params))

    def set_(ws):
        with torch.no_grad():
            for p, w in zip(params, ws, strict=True):
                p.copy_(w)

    h = 0.5
    set_(w0)
    gd = [w - h * g for w, g in zip(w0, grad(0.0), strict=True)]

    def flow(coef: float, n: int = 400) -> list[torch.Tensor]:
        set_(w0)
        for _ in range(n):                  # Euler with 400 sub-steps: its own error is far below h^3
            ws = [p.detach() - (h / n) * g for p, g in zip(params, grad(coef), strict=True)]
            set_(ws)
        return [p.detach().clone() for p in params]

    def dist(a, b):
        return float(torch.sqrt(sum((ai - bi).pow(2).sum() for ai, bi in zip(a, b, strict=True))))

    err_modified, err_plain, err_double = dist(gd, flow(h / 4)), dist(gd, flow(0.0)), dist(gd, flow(h / 2))
    set_(w0)
    assert err_modified < 0.25 * err_plain, (err_modified, err_plain)
    assert err_modified < 0.5 * err_double, (err_modified, err_double)


def test_task_with_zero_penalty_is_plain_classification_and_the_penalty_lowers_the_gradient_term(make_cfg):
    """The task's objective is L + (lambda/4) mean_k ||grad L_k||^2: lambda = 0 trains exactly as plain
    classification; with lambda > 0 the same number of full-batch steps ends with a smaller mini-batch gradient
    term (what the penalty is there to reduce)."""
    from whylearn.experiment import run

    base = ["experiment=fullbatch_vs_sgd", "logger=csv", "trainer.max_steps=60", "trainer.val_check_interval=30",
            "callbacks.model_checkpoint.every_n_train_steps=30", "callbacks.gradient_noise.every_n_steps=30",
            "data.num_samples=1200", "data.train_size=200", "data.batch_size=200", "task.penalty_batch_size=25"]
    plain = run(make_cfg(base + ["task.grad_penalty=0"], "plain"))
    classif = run(make_cfg(base + ["task._target_=whylearn.tasks.ClassificationTask", "~task.grad_penalty",
                                   "~task.penalty_batch_size", "~task.penalty_method"], "classif"))
    assert plain["train/loss"] == pytest.approx(classif["train/loss"], rel=1e-6)
    assert plain["test/acc"] == classif["test/acc"]

    pen = run(make_cfg(base + ["task.grad_penalty=2.0"], "pen"))
    assert pen["status"] == "completed" and pen["steps"] == 60

    def subbatch_term(s):       # E_k ||grad L_k||^2 over sub-batches of 25 = ||grad L||^2 + tr(Sigma) / 25
        return s["noise/grad_norm_sq"] + s["noise/trace_cov"] / 25

    assert subbatch_term(pen) < 0.8 * subbatch_term(plain), (subbatch_term(pen), subbatch_term(plain))


def test_full_batch_and_sgd_both_reach_zero_training_error(make_cfg):
    """The seed's "even full batch, and it still gets to the bottom", reduced (200 training examples, 300 steps of
    lr 0.25, seed 0): full-batch gradient descent fits every training example, as SGD (batch 16) does. Whether SGD
    then tests higher is a difference of a few points: only the slow test and the docs' 3 seeds claim it."""
    from whylearn.experiment import run

    base = ["experiment=fullbatch_vs_sgd", "logger=csv", "seed=0", "trainer.max_steps=300",
            "trainer.val_check_interval=100", "callbacks.model_checkpoint.every_n_train_steps=100",
            "callbacks.gradient_noise=null", "data.num_samples=1200", "data.train_size=200"]
    for batch in (200, 16):
        s = run(make_cfg(base + [f"data.batch_size={batch}"], f"b{batch}"))
        assert s["steps"] == 300 and s["train/acc"] == 1.0, (batch, s["train/acc"])
        assert s["test/acc"] < 0.6, s["test/acc"]      # it fits; it does not generalize from 200 examples


@pytest.mark.slow
def test_full_experiment_gd_and_sgd_fit_and_sgd_generalizes_better(make_cfg):
    """The experiment as documented, seed 0 (about 5 minutes on an idle core): full-batch GD and SGD both reach
    zero training error on MNIST-1D, and SGD's test accuracy is above GD's; GD + the explicit penalty also fits
    and ends no worse than GD (docs/experiments.md: over 3 seeds it closes only part of the gap)."""
    from whylearn.experiment import run

    base = ["experiment=fullbatch_vs_sgd", "logger=csv", "seed=0"]
    gd = run(make_cfg(base, "gd"))
    sgd = run(make_cfg(base + ["data.batch_size=16"], "sgd"))
    pen = run(make_cfg(base + ["task.grad_penalty=0.25"], "pen"))
    assert gd["train/acc"] == 1.0 and sgd["train/acc"] == 1.0 and pen["train/acc"] == 1.0
    assert sgd["test/acc"] > gd["test/acc"] + 0.01, (sgd["test/acc"], gd["test/acc"])
    assert pen["test/acc"] >= gd["test/acc"], (pen["test/acc"], gd["test/acc"])

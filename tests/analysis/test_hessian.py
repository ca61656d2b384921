"""Sharpness by power iteration against the exact eigenvalues of small models' full Hessians."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from whylearn.analysis import hessian as H
from whylearn.models import MLP
from whylearn.tasks.classification import classification_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def full_hessian_eigenvalues(model: nn.Module, x, y, loss_fn) -> torch.Tensor:
    """Every eigenvalue of the Hessian of the mean loss, from the n x n matrix itself (float64)."""
    model = model.double()
    spec = H.ParamSpec(model)
    theta = H.flatten_params(model)

    def f(t):
        return loss_fn(functional_call(model, spec.unflatten(t), (x.double(),)), y)

    Hm = hessian(f)(theta)
    return torch.linalg.eigvalsh((Hm + Hm.T) / 2)


def linear_with_spectrum(eigs, seed=0):
    """Least squares on a linear model whose Hessian, 2 X^T X / n, has exactly the eigenvalues ``eigs``."""
    g = torch.Generator().manual_seed(seed)
    d = len(eigs)
    n = 4 * d
    U, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    s = torch.tensor(eigs, dtype=torch.float64).mul(n / 2).sqrt()
    x = U @ torch.diag(s) @ V.T
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    return model, x, y, lambda out, t: (out - t).pow(2).mean()


def test_close_top_eigenvalues_are_read_to_the_tolerance():
    """Top two eigenvalues 3% apart: stopping when the Rayleigh quotient stops moving reads ~2% low;
    the residual criterion reads the top eigenvalue to 1e-3 and says how far it got."""
    eigs = [1.0, 0.97, 0.9, 0.6] + [0.3] * 16
    model, x, y, loss = linear_with_spectrum(eigs)
    exact = full_hessian_eigenvalues(model, x, y, loss)
    assert float(exact[-1]) == pytest.approx(1.0, rel=1e-9)
    res = H.top_eigenvalues(model, x, y, 1, loss, iters=500, tol=1e-3, seed=0)
    assert abs(res.top - 1.0) <= 1e-3, res.top
    assert res.converged and res.iterations > 20
    assert abs(res.top - 1.0) <= res.residual * abs(res.top) + 1e-12  # the reported residual bounds the error
    # a budget too small says so instead of reporting a converged value
    short = H.top_eigenvalues(model, x, y, 1, loss, iters=5, tol=1e-3, seed=0)
    assert not short.converged and short.iterations == 5 and short.residual > 1e-3


def test_sharpness_of_a_small_mlp_matches_its_full_hessian():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = torch.randint(0, 3, (64,))
    model = MLP(5, 3, hidden=[8, 8], activation="tanh")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(200):  # near a minimum, where the top eigenvalue is the largest in magnitude
        opt.zero_grad()
        classification_loss("cross_entropy", model(x), y).backward()
        opt.step()
    model = model.double()
    exact = full_hessian_eigenvalues(model, x, y, lambda o, t: classification_loss("cross_entropy", o, t))
    top = float(exact[exact.abs().argmax()])
    res = H.top_eigenvalues(model, x.double(), y, 1, lambda o, t: classification_loss("cross_entropy", o, t),
                            iters=1000, tol=1e-4, seed=1)
    assert res.converged
    assert res.top == pytest.approx(top, rel=1e-4)
    top3 = H.top_eigenvalues(model, x.double(), y, 3, lambda o, t: classification_loss("cross_entropy", o, t),
                             iters=2000, tol=1e-4, seed=1)
    expected = exact[exact.abs().argsort(descending=True)][:3]
    assert top3.converged and top3.values.tolist() == pytest.approx(expected.tolist(), rel=1e-3)


def test_bad_budgets_are_refused():
    model, x, y, loss = linear_with_spectrum([1.0, 0.5])
    with pytest.raises(ValueError, match="iters and min_iters must be >= 1"):
        H.top_eigenvalues(model, x, y, 1, loss, iters=0)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        H.top_eigenvalues(model, x, y, 1, loss, tol=-1.0)


def test_the_sharpness_callback_reports_its_convergence_and_matches_the_full_hessian(make_cfg, tmp_path):
    from whylearn.callbacks.sharpness import fixed_subset
    from whylearn.experiment import run
    from whylearn.runs.checkpoints import load_checkpoint

    cfg = make_cfg(["experiment=mnist1d_mlp", "data.num_samples=600", "model.hidden=[8,8]", "trainer.max_steps=160",
                    "data.steps_per_chunk=40", "logger=csv", "+callbacks.sharpness._target_=whylearn.callbacks.Sharpness",
                    "+callbacks.sharpness.every_n_steps=40", "+callbacks.sharpness.num_samples=200",
                    "+callbacks.sharpness.tol=1e-4", "+callbacks.sharpness.iters=2000"])
    summary = run(cfg)
    assert summary["sharpness/converged"] == 1.0 and summary["sharpness/not_converged"] == 0
    assert 0 < summary["sharpness/residual"] <= 1e-4
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")) if r.get("sharpness/iterations")]
    assert [int(float(r["step"])) for r in rows] == [0, 40, 80, 120, 160]
    assert all(int(float(r["sharpness/iterations"])) >= 2 for r in rows)
    # the final measurement against every eigenvalue of the 418 x 418 Hessian of the same loss
    from whylearn import build

    dm = build.build_datamodule(cfg)
    model = build.build_model(cfg, dm)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    x, y = fixed_subset(dm.train, 200, 0)
    exact = full_hessian_eigenvalues(model, x, y, lambda o, t: classification_loss("cross_entropy", o, t))
    top = float(exact[exact.abs().argmax()])
    assert summary["sharpness/lambda_max"] == pytest.approx(top, rel=2e-4)

"""The classic machines (issue 8): perceptron and Novikoff's bound, the XOR wall, LMS, Hopfield memories."""

from __future__ import annotations

import json
import math

import pytest
import torch

from whylearn.analysis.classic import growth_decades, lms_stream, lms_sweep, xor_ensemble
from whylearn.data.toy import (
    ToyDataModule,
    binary_images,
    circles,
    corrupt,
    gaussian_regression,
    noisy_xor,
    random_patterns,
    separable,
    spirals,
    xor_points,
)
from whylearn.models import MLP
from whylearn.models.adaline import (
    Adaline,
    lms_bounds,
    lms_excess_mse_theory,
    lms_mean_square_edge,
    lms_mean_square_rate,
    run_lms,
)
from whylearn.models.hopfield import Hopfield, overlap
from whylearn.models.perceptron import Perceptron, linearly_separable, novikoff_bound, train_perceptron

# small models on a shared 2-core machine: one intra-op thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


# -- data ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d,gamma,offset", [(2, 0.1, 0.0), (10, 0.05, 0.2), (100, 0.3, -0.1)])
def test_separable_data_have_the_prescribed_margin_and_radius(d, gamma, offset):
    data = separable(300, d, gamma, radius=2.0, offset=offset, seed=3)
    x, y, w, b = data["x"], data["y"], data["w_star"], float(data["b_star"])
    assert x.shape == (300, d) and set(y.tolist()) == {-1, 1}
    assert float(x.norm(dim=1).max()) <= 2.0 + 1e-9
    signed = y.double() * (x @ w + b)
    assert float(signed.min()) >= gamma - 1e-9
    assert torch.equal(separable(300, d, gamma, 2.0, offset, seed=3)["x"], x)  # seeded


def test_toy_generators_shapes_and_errors():
    x, y = xor_points()
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and y.tolist() == [0, 1, 1, 0]
    for fn in (noisy_xor, circles, spirals):
        xs, ys = fn(64, seed=1)
        assert xs.shape == (64, 2) and set(ys.tolist()) <= {0, 1}
    imgs, names = binary_images(["T", "O"])
    assert imgs.shape == (2, 100) and set(imgs.unique().tolist()) == {-1.0, 1.0} and names == ["T", "O"]
    p = random_patterns(5, 50, seed=0)
    c = corrupt(p, 0.1, seed=0)
    assert ((c != p).sum(1) == 5).all()
    with pytest.raises(ValueError, match="allowed"):
        ToyDataModule(kind="moons")
    with pytest.raises(ValueError, match="allowed"):
        binary_images(["Q"])
    with pytest.raises(ValueError, match="margin"):
        separable(10, 2, gamma=1.5, radius=1.0)


def test_mnist_4_vs_9_at_20x20_binarized(shared_data):
    from whylearn.data import MNISTDataModule

    dm = MNISTDataModule(data_dir=str(shared_data), download=False, resize=20, binarize=True, classes=[4, 9],
                         normalize=False, flatten=True, val_size=1000)
    dm.setup()
    assert dm.input_shape == (400,) and dm.num_classes == 2
    assert set(dm.train.x.unique().tolist()) == {0.0, 1.0}
    assert set(dm.train.y.unique().tolist()) == {0, 1}
    assert len(dm.train) + len(dm.val) == 5842 + 5949  # the 4s and 9s of MNIST's training set


# -- perceptron -------------------------------------------------------------------------------------
def _max_margin_with_bias(x: torch.Tensor, y: torch.Tensor, start: torch.Tensor) -> float:
    """The largest margin of a hyperplane through the origin of the augmented inputs (x, 1), by scipy's SLSQP.

    Independent of whylearn: the hard-margin SVM min |w|^2 / 2 s.t. y_i w.(x_i, 1) >= 1 (the bias
    inside the norm, as in Novikoff's theorem for a perceptron with bias), from a feasible start.
    Returns the margin min_i y_i w.(x_i, 1) / |w| of the solution (valid for any separating w).
    """
    import numpy as np
    from scipy.optimize import minimize

    a = (y.double()[:, None] * torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)).numpy()
    w0 = start.numpy() / (a @ start.numpy()).min()
    res = minimize(lambda w: 0.5 * w @ w, w0, jac=lambda w: w, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda w: a @ w - 1.0, "jac": lambda w: a}],
                   options={"maxiter": 500, "ftol": 1e-12})
    assert res.success, res.message
    assert (a @ res.x).min() > 1 - 1e-6
    return float((a @ res.x).min() / np.linalg.norm(res.x))


def test_perceptron_mistakes_within_an_independently_computed_novikoff_bound():
    """Novikoff (1962): mistakes <= (R / gamma*)^2, gamma* the best margin, from an exact max-margin solve (scipy)."""
    runs = 0
    for gamma in (0.05, 0.1, 0.3):
        for d in (2, 5, 50):
            for seed in range(5):
                data = separable(100, d, gamma, radius=1.0, offset=0.1 * (seed % 3 - 1), seed=seed)
                x, y = data["x"], data["y"]
                p = Perceptron(d).double()
                per_epoch = train_perceptron(p, x, y, max_epochs=10_000)
                assert per_epoch[-1] == 0, (gamma, d, seed)
                assert bool((p.predict(x) == y).all())
                w_star_aug = torch.cat([data["w_star"], data["b_star"].reshape(1)])
                best = _max_margin_with_bias(x, y, w_star_aug)
                radius = float(torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1).norm(dim=1).max())
                assert sum(per_epoch) <= (radius / best) ** 2, (gamma, d, seed, sum(per_epoch), (radius / best) ** 2)
                # whylearn's bound uses w*'s margin, which the best margin can only beat
                ours = novikoff_bound(x, y, data["w_star"], float(data["b_star"]))
                assert ours["gamma"] <= best + 1e-9 and ours["R"] == pytest.approx(radius)
                runs += 1
    assert runs == 45


def test_linear_separability_check():
    data = separable(200, 5, 0.05, seed=2)
    assert linearly_separable(data["x"], data["y"])
    x, y = xor_points()
    assert not linearly_separable(x, y)
    xs, ys = circles(100, seed=0)
    assert not linearly_separable(xs, ys)


def test_perceptron_rule_updates_on_mistakes_only():
    p = Perceptron(2)
    assert p.perceptron_update(torch.tensor([1.0, 2.0]), 1)  # w = 0 scores 0: a mistake
    assert p.weight.tolist() == [1.0, 2.0] and float(p.bias) == 1.0
    assert not p.perceptron_update(torch.tensor([1.0, 0.0]), 1)  # right: nothing moves
    assert p.weight.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="-1 or \\+1"):
        p.perceptron_update(torch.tensor([1.0, 0.0]), 0)


def test_perceptron_never_exceeds_three_quarters_on_xor():
    x, y = xor_points()
    p = Perceptron(2)
    accs = []
    for _ in range(200):  # epochs: after every one, the accuracy of the current weights
        per_epoch = train_perceptron(p, x, y, max_epochs=1)
        accs.append(float((p.predict(x) == 2 * y - 1).float().mean()))
        assert per_epoch[0] > 0  # never an epoch without mistakes
    assert max(accs) <= 0.75
    # nor does any other linear threshold unit, nor least squares: 10,000 random hyperplanes
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10_000, 3, generator=g)
    pred = (x @ w[:, :2].T + w[:, 2]) > 0
    assert float((pred == (y[:, None] == 1)).float().mean(0).max()) <= 0.75
    xa = torch.cat([x, torch.ones(4, 1)], 1)
    ls = torch.linalg.lstsq(xa, (2 * y - 1).float()[:, None]).solution
    assert float((((xa @ ls).squeeze(1) > 0) == (y == 1)).float().mean()) <= 0.75


# -- XOR by backpropagation -------------------------------------------------------------------------
def test_sigmoid_mlp_solves_xor_for_most_seeds():
    r = xor_ensemble(2, "sigmoid", range(20), steps=3000, lr=0.5, momentum=0.9)  # 14 of 20 succeed
    assert float((r["acc"] == 1.0).float().mean()) > 0.5


def test_step_activation_gets_zero_hidden_gradient():
    r = xor_ensemble(2, "step", range(8), steps=3)
    assert float(r["hidden_grad_norm"].max()) == 0.0
    s = xor_ensemble(2, "sigmoid", range(8), steps=3)
    assert float(s["hidden_grad_norm"].min()) > 0.0


def test_xor_ensemble_member_equals_mlp_trained_alone():
    x, y = xor_points()
    torch.manual_seed(7)
    m = MLP(2, 2, hidden=[3], activation="tanh")
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9)
    for _ in range(25):
        opt.zero_grad()
        loss = (m(x) - torch.nn.functional.one_hot(y, 2).float()).pow(2).mean()
        loss.backward()
        opt.step()
    ens = xor_ensemble(3, "tanh", [5, 7, 9], steps=25, lr=0.5, momentum=0.9)
    assert ens["loss"][1].item() == pytest.approx(
        float((m(x) - torch.nn.functional.one_hot(y, 2).float()).pow(2).mean()), rel=1e-5
    )


# -- Widrow-Hoff LMS --------------------------------------------------------------------------------
def test_lms_batch_one_equals_sgd_on_half_squared_error():
    data = gaussian_regression(200, [1.0, 2.0, 3.0, 0.5, 4.0], seed=1)
    x, y = data["x"], data["y"]
    mu = 0.05
    ours = run_lms(x, y, mu, epochs=3, batch_size=1, seed=11)["weight"]
    lin = torch.nn.Linear(5, 1, bias=False).double()
    torch.nn.init.zeros_(lin.weight)
    opt = torch.optim.SGD(lin.parameters(), lr=mu)
    g = torch.Generator().manual_seed(11)
    for _ in range(3):
        for i in torch.randperm(200, generator=g).tolist():  # the same data order as run_lms
            opt.zero_grad()
            (0.5 * (y[i] - lin(x[i : i + 1]).squeeze()) ** 2).backward()
            opt.step()
    assert torch.allclose(ours, lin.weight.detach().squeeze(0), rtol=1e-12, atol=1e-12)
    assert float((ours - data["w_star"]).norm()) < 0.05  # and it learned the target


def test_full_batch_lms_edge_is_two_over_lambda_max():
    data = gaussian_regression(400, torch.logspace(0, 1, 20).tolist(), seed=0)
    x, y = data["x"], data["y"]
    edge = lms_bounds(x)["mu_max_mean"]
    res = lms_sweep(x, y, [0.9 * edge, 1.1 * edge], data["corr"], data["w_star"], 0.1, steps=400, seeds=[0],
                    full_steps=200)
    below, above = res["rows"]
    assert not below["full_diverged"] and below["full_mse"] < 0.1  # steepest descent converges below 2/lambda_max
    assert above["full_diverged"]  # ... and diverges above it


def test_mean_square_edge_is_where_the_exact_second_moment_operator_reaches_one():
    """The closed form (Feuer & Weinstein 1985) against the full d^2 x d^2 operator built from R directly."""
    g = torch.Generator().manual_seed(0)
    lam = torch.tensor([5.0, 2.0, 1.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    R = (q * lam) @ q.T
    eye = torch.eye(6, dtype=torch.float64)
    vec_r = R.reshape(-1, 1)

    def radius(mu):  # K -> E[(I - mu x x^T) K (I - mu x x^T)] for x ~ N(0, R), by Isserlis' theorem, on vec(K)
        op = (torch.kron(eye, eye) - mu * (torch.kron(eye, R) + torch.kron(R, eye))
              + mu**2 * (2 * torch.kron(R, R) + vec_r @ vec_r.T))
        return float(torch.linalg.eigvals(op).abs().max())

    edge = lms_mean_square_edge(lam)
    assert radius(edge) == pytest.approx(1.0, abs=1e-9)
    assert radius(0.98 * edge) < 1 < radius(1.02 * edge)
    assert lms_mean_square_rate(lam, edge) == pytest.approx(1.0, abs=1e-9)
    tr = float(lam.sum())
    assert 2 / (3 * tr) <= edge < 2 / tr  # 2/(3 trace) sufficient, 2/trace necessary
    # Isserlis' fourth moment, the step the derivation rests on, by Monte Carlo
    x = torch.randn(400_000, 6, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(R).T
    K = torch.randn(6, 6, generator=g, dtype=torch.float64)
    K = K @ K.T
    mc = torch.einsum("ni,nj,jk,nk,nl->il", x, x, K, x, x) / x.shape[0]
    exact = 2 * R @ K @ R + torch.trace(R @ K) * R
    assert float((mc - exact).norm() / exact.norm()) < 0.03
    with pytest.raises(ValueError, match="positive"):
        lms_mean_square_edge([1.0, 0.0])


def test_excess_mse_recursion_equals_the_full_matrix_recursion():
    data = gaussian_regression(10, [4.0, 1.0, 0.3], seed=2)
    R, c = data["corr"], -data["w_star"]
    mu, noise_var = 0.07, 0.01
    K = torch.outer(c, c)
    full = []
    for _ in range(30):
        K = K - mu * (R @ K + K @ R) + mu**2 * (2 * R @ K @ R + torch.trace(R @ K) * R) + mu**2 * noise_var * R
        full.append(float(torch.trace(R @ K)))
    ours = lms_excess_mse_theory(R, c, [mu], 30, noise_var)[0]
    assert ours == pytest.approx(full, rel=1e-10)


def test_single_sample_lms_on_both_sides_of_the_exact_edge():
    """Issue 16: 0.9x the exact mean-square edge converges, 1.1x diverges; 2/trace is not a stability limit."""
    from whylearn.data.toy import RegressionDataModule

    dm = RegressionDataModule(d=20, condition=10.0, n_train=200)
    dm.setup()
    edge = lms_mean_square_edge(torch.linalg.eigvalsh(dm.corr))
    tr = float(torch.trace(dm.corr))
    assert edge == pytest.approx(0.8700 * 2 / tr, rel=1e-3)
    mus = [0.9 * edge, 1.1 * edge, 0.97 * 2 / tr]
    res = lms_sweep(dm.train.x, dm.train.y, mus, dm.corr, dm.w_star, dm.noise, steps=10_000, seeds=range(8))
    below, above, near_trace = res["rows"]
    assert below["lms_runs_diverged"] == 0.0 and not below["lms_ms_diverged"] and below["lms_lyapunov"] < 0
    # the measured steady-state excess MSE is the exact recursion's
    assert below["lms_excess_mse"] == pytest.approx(below["lms_excess_mse_theory"], rel=0.25)
    assert above["lms_runs_diverged"] == 1.0 and above["lms_ms_diverged"] and above["lms_lyapunov"] > 0
    assert near_trace["lms_runs_diverged"] == 1.0  # below 2/trace, yet every run diverges
    assert res["lms/edge_bracketed"] and res["lms/ms_edge_bracketed"]


def test_lms_stream_runs_the_adaline_rule():
    import numpy as np

    data = gaussian_regression(10, [3.0, 1.0, 0.5, 0.25], seed=1)
    mu, steps = 0.05, 60
    sim = lms_stream(data["corr"], data["w_star"], 0.1, [mu], steps, [7], record_every=steps)
    rng = np.random.default_rng(7)  # the stream lms_stream draws for seed 7
    z = rng.standard_normal((steps, 5))
    xs = torch.as_tensor(z[:, :4] @ np.linalg.cholesky(data["corr"].numpy()).T)
    ys = xs @ data["w_star"] + 0.1 * torch.as_tensor(z[:, 4])
    model = Adaline(4)
    for t in range(steps):
        model.lms_update(xs[t : t + 1], ys[t : t + 1], mu)
    c = model.weight.detach() - data["w_star"]
    assert float(sim["excess"][0, 0, -1]) == pytest.approx(float(c @ data["corr"] @ c), rel=1e-9)


def test_growth_decades_tells_slow_divergence_from_a_high_floor():
    import numpy as np

    rng = np.random.default_rng(0)
    flat_high = 50.0 * np.exp(0.5 * rng.standard_normal(200))  # settled, high, noisy
    slow = 1e-3 * 1.02 ** np.arange(200) * np.exp(0.5 * rng.standard_normal(200))  # grows 0.86 decades per 100 records
    assert abs(float(growth_decades(flat_high))) < 0.5
    assert float(growth_decades(slow)) == pytest.approx(100 * np.log10(1.02), abs=0.3)
    assert float(growth_decades(np.r_[np.ones(150), np.inf * np.ones(50)])) == np.inf


def test_adaline_shape_error():
    with pytest.raises(ValueError, match="expects 3 features"):
        Adaline(3)(torch.zeros(2, 4))


# -- Hopfield ----------------------------------------------------------------------------------------
def test_hopfield_energy_never_increases():
    for n, p in ((50, 3), (100, 20), (64, 40)):  # below and far above capacity
        net = Hopfield(n)
        xi = random_patterns(p, n, seed=n)
        net.store(xi)
        s = corrupt(xi, 0.3, seed=1)
        energies = [net.energy(s)]
        g = torch.Generator().manual_seed(0)
        for _ in range(5):
            s, _ = net.sweep(s, g, energies)
        e = torch.stack(energies)  # (updates + 1, P)
        assert bool((e[1:] <= e[:-1] + 1e-5).all())
        assert bool((e[-1] < e[0]).any())


def test_hopfield_collapse_lies_between_0_10_and_0_17_of_n():
    """Amit, Gutfreund & Sompolinsky (1985): retrieval collapses near P = 0.138 N. N = 400, 4 networks per load."""
    from whylearn.analysis.classic import half_recall_load, hopfield_capacity

    rows = hopfield_capacity(400, [0.10, 0.17], trials=4, corruption=0.1, seed=0)
    below, above = rows
    assert below["recalled"] >= 0.9 and below["overlap"] > 0.99  # 40 patterns: recalled
    assert above["recalled"] < 0.5  # 68 patterns: most lost
    assert 0.10 < half_recall_load(rows) < 0.17


def test_hopfield_stores_images_and_rejects_bad_patterns():
    imgs, _ = binary_images(["T", "H", "O", "L"])
    net = Hopfield(100)
    net.store(imgs)
    out, _ = net.settle(corrupt(imgs, 0.1, seed=2))
    assert float(overlap(out, imgs).min()) > 0.9
    with pytest.raises(ValueError, match="-1, \\+1"):
        net.store(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="100 neurons"):
        net.energy(torch.ones(1, 99))


# -- through whylearn-train -------------------------------------------------------------------------
def _run(make_cfg, overrides, sub):
    from whylearn.experiment import run

    cfg = make_cfg(overrides + ["logger=csv"], sub=sub)
    summary = run(cfg)
    out = cfg.paths.output_dir
    assert json.loads(open(f"{out}/summary.json").read())["status"] == "completed"
    return summary, out


def test_perceptron_experiment_runs(make_cfg):
    import os

    s, out = _run(make_cfg, ["experiment=perceptron_separable", "data.n_train=200"], "perc")
    assert s["separated"] and s["train/acc"] == 1.0 and s["mistakes_total"] <= s["novikoff/bound"]
    assert s["linearly_separable"] and s["novikoff/applies"] and s["novikoff/mistakes_over_bound"] <= 1.0
    assert {"decision_boundary.png", "mistakes_per_epoch.png"} <= set(os.listdir(f"{out}/figures"))
    s, _ = _run(make_cfg, ["experiment=xor_perceptron", "trainer.max_epochs=20"], "xorp")
    assert not s["separated"] and s["train/acc"] <= 0.75 and s["epochs_run"] == 20
    assert not s["linearly_separable"] and s["novikoff/applies"] is False
    s, out = _run(make_cfg, ["experiment=xor_mlp", "trainer.max_steps=300"], "xorm")
    assert s["steps"] == 300 and "decision_boundary.png" in os.listdir(f"{out}/figures")


def test_perceptron_on_non_separable_data_completes_without_a_novikoff_bound(make_cfg):
    """Issue 16: with 5% label noise the run used to crash in summary_metrics (novikoff_bound raised)."""
    s, _ = _run(make_cfg, ["experiment=perceptron_separable", "data.label_noise=0.05", "data.n_train=200",
                           "trainer.max_epochs=15"], "noisy")
    assert s["noisy_labels"] == 10
    assert s["separated"] is False and s["linearly_separable"] is False
    assert s["novikoff/applies"] is False and "not linearly separable" in s["novikoff/reason"]
    assert "novikoff/bound" not in s and "novikoff/within_bound" not in s
    assert len(s["mistakes_per_epoch"]) == s["epochs_run"] == 15 and min(s["mistakes_per_epoch"]) > 0


def test_decision_boundary_refuses_data_that_are_not_2d(make_cfg):
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=perceptron_separable", "data.d=3", "logger=csv"], sub="d3")
    with pytest.raises(ValueError, match="2-D data; these inputs have 3 features"):
        run(cfg)


def test_sweep_experiments_run(make_cfg):
    import os

    s, out = _run(make_cfg, ["experiment=xor_sweep", "study.widths=[2]", "study.num_seeds=6", "study.steps=300"], "xor")
    assert {r["activation"] for r in s["rows"]} == {"step", "sigmoid", "tanh", "relu"}
    assert "xor_success.png" in os.listdir(f"{out}/figures")
    s, out = _run(make_cfg, ["experiment=lms_sweep", "study.num_mu=4", "study.steps=2000", "study.num_seeds=4",
                             "study.data.n_train=300"], "lms")
    assert s["full/edge_bracketed"] and s["lms/mu_diverge_over_edge"] >= 1.0
    assert s["lms/seeds"] == [0, 1, 2, 3] and "lms_mu_sweep.png" in os.listdir(f"{out}/figures")
    assert {e["quantity"] for e in s["reference"]} >= {"lms/mu_stable_over_edge", "full/mu_diverge_over_edge"}
    assert all(e["verdict"] in ("pass", "fail") for e in s["reference"])  # every quantity was measured
    s, out = _run(make_cfg, ["experiment=hopfield_capacity", "study.num_neurons=[60]", "study.loads=[0.05,0.3]",
                             "study.trials=1"], "hop")
    assert s["rows"][0]["recalled"] > s["rows"][1]["recalled"]
    s, out = _run(make_cfg, ["experiment=perceptron_margin_sweep", "study.gammas=[0.2]", "study.dims=[2,5]",
                             "study.num_seeds=2", "study.n=50"], "margin")
    assert s["all_separated"] and s["all_within_bound"]
    s, out = _run(make_cfg, ["experiment=hopfield_images", "data.eval_batch_size=3"], "img")  # 4 probes, 2 batches
    assert s["test/overlap"] > 0.95 and "hopfield_images.png" in os.listdir(f"{out}/figures")
    assert not math.isnan(s["test/overlap_start"])


def test_sweeps_derive_their_seeds_from_seed(make_cfg):
    """Issue 16: seed s runs seeds s .. s + n - 1 (before, xor_sweep and perceptron_margin_sweep always ran 0 .. n - 1)."""
    from whylearn.analysis.classic import hopfield_capacity, perceptron_margin_sweep, xor_sweep

    xor = ["experiment=xor_sweep", "study.widths=[2]", "study.activations=[tanh]", "study.num_seeds=6", "study.steps=200"]
    margin = ["experiment=perceptron_margin_sweep", "study.gammas=[0.1]", "study.dims=[5]", "study.num_seeds=3", "study.n=60"]
    hop = ["experiment=hopfield_capacity", "study.num_neurons=[50]", "study.loads=[0.2]", "study.trials=3"]
    lms = ["experiment=lms_sweep", "study.num_mu=0", "study.edge_factors=[0.5]", "study.steps=400", "study.num_seeds=2",
           "study.data.n_train=100"]
    runs = {}
    for name, overrides in (("xor", xor), ("margin", margin), ("hop", hop), ("lms", lms)):
        for seed in (13, 271):
            runs[name, seed], _ = _run(make_cfg, overrides + [f"seed={seed}"], f"{name}{seed}")
    for name in ("xor", "margin", "hop"):
        assert runs[name, 13]["rows"] != runs[name, 271]["rows"], name
    assert runs["lms", 13]["lms/seeds"] == [13, 14] and runs["lms", 271]["lms/seeds"] == [271, 272]
    assert runs["lms", 13]["rows"][0]["lms_excess_mse"] != runs["lms", 271]["rows"][0]["lms_excess_mse"]
    # and seed 13 is exactly the sweep of seeds 13, 14, ...
    assert runs["xor", 13]["rows"][0]["mean_acc"] == xor_sweep([2], ["tanh"], range(13, 19), steps=200, lr=0.5)[0]["mean_acc"]
    direct = perceptron_margin_sweep([0.1], [5], range(13, 16), n=60, max_epochs=100_000)
    assert [r["seed"] for r in runs["margin", 13]["rows"]] == [13, 14, 15]
    assert [r["mistakes"] for r in runs["margin", 13]["rows"]] == [r["mistakes"] for r in direct]
    assert runs["hop", 13]["rows"][0]["recalled"] == hopfield_capacity(50, [0.2], trials=3, seed=13)[0]["recalled"]


CLASSIC_AND_HIGHDIM = ["lms_sweep", "xor_sweep", "xor_perceptron", "xor_mlp", "perceptron_separable",
                       "perceptron_margin_sweep", "perceptron_mnist49", "hopfield_capacity", "hopfield_images",
                       "distance_concentration", "knn", "pca", "kernels", "kepler", "kepler_lstm", "kepler_mlp",
                       "circles_mlp", "spirals_mlp", "noisy_xor_mlp"]


@pytest.mark.parametrize("name", CLASSIC_AND_HIGHDIM)
def test_experiment_declares_its_published_reference(make_cfg, name):
    """Issue 16 / COMMON.md: every experiment states the published number (or why there is none)."""
    from whylearn import reference

    block = reference.from_config(make_cfg([f"experiment={name}"]))  # raises on a malformed block
    if isinstance(block, dict):
        assert set(block) == {"none"} and len(block["none"]) > 20
        return
    assert block, name
    for item in block:
        assert len(item["source"]) > 10 and any(ch.isdigit() for ch in item["source"]), item  # cites a year

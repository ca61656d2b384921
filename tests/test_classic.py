"""The classic machines (issue 8): perceptron and Novikoff's bound, the XOR wall, LMS, Hopfield memories."""

from __future__ import annotations

import json
import math

import pytest
import torch

from whylearn.analysis.classic import hopfield_recall, lms_sweep, xor_ensemble
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
from whylearn.models.adaline import Adaline, lms_bounds, run_lms
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
def test_perceptron_separates_within_novikoff_bound_over_seeds_dims_margins():
    runs = 0
    for gamma in (0.05, 0.1, 0.3):
        for d in (2, 5, 50):
            for seed in range(5):
                data = separable(100, d, gamma, radius=1.0, offset=0.1 * (seed % 3 - 1), seed=seed)
                p = Perceptron(d).double()
                per_epoch = train_perceptron(p, data["x"], data["y"], max_epochs=10_000)
                bound = novikoff_bound(data["x"], data["y"], data["w_star"], float(data["b_star"]))["bound"]
                assert per_epoch[-1] == 0, (gamma, d, seed)
                assert bool((p.predict(data["x"]) == data["y"]).all())
                assert sum(per_epoch) <= bound, (gamma, d, seed, sum(per_epoch), bound)
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


def test_lms_stability_bounds():
    data = gaussian_regression(400, torch.logspace(0, 1, 20).tolist(), seed=0)
    x, y = data["x"], data["y"]
    b = lms_bounds(x)
    assert b["lambda_max"] < b["trace"] / 5  # the two bounds are far apart here
    mu_mean, mu_lms = b["mu_max_mean"], b["mu_max_lms"]
    res = lms_sweep(x, y, [0.9 * mu_mean, 1.1 * mu_mean, 0.2 * mu_lms, 5 * mu_lms], epochs=5)
    below, above, small, large = res["rows"]
    assert not below["full_diverged"] and below["full_mse"] < 0.1  # steepest descent converges below 2/lambda_max
    assert above["full_diverged"]  # ... and diverges above it
    assert not small["lms_diverged"] and small["lms_mse"] < 0.1  # single-sample LMS converges well below 2/trace
    assert large["lms_diverged"]  # ... and diverges well above it, where the full-batch form still converges
    assert not large["full_diverged"]


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


def test_hopfield_recalls_at_low_load_and_fails_at_high_load():
    n = 200
    low = hopfield_recall(n, int(0.05 * n), corruption=0.1, seed=0)
    high = hopfield_recall(n, int(0.3 * n), corruption=0.1, seed=0)
    assert low["recalled"] == 1.0 and low["overlap"] > 0.99
    assert high["recalled"] < 0.2 and high["overlap"] < 0.8


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
    from whylearn.train import run

    cfg = make_cfg(overrides + ["logger=csv"], sub=sub)
    summary = run(cfg)
    out = cfg.paths.output_dir
    assert json.loads(open(f"{out}/summary.json").read())["status"] == "completed"
    return summary, out


def test_perceptron_experiment_runs(make_cfg):
    import os

    s, out = _run(make_cfg, ["experiment=perceptron_separable", "data.n_train=200"], "perc")
    assert s["separated"] and s["train/acc"] == 1.0 and s["mistakes_total"] <= s["novikoff/bound"]
    assert s["linearly_separable"]
    assert {"decision_boundary.png", "mistakes_per_epoch.png"} <= set(os.listdir(f"{out}/figures"))
    s, _ = _run(make_cfg, ["experiment=xor_perceptron", "trainer.max_epochs=20"], "xorp")
    assert not s["separated"] and s["train/acc"] <= 0.75 and s["epochs_run"] == 20
    assert not s["linearly_separable"]
    s, out = _run(make_cfg, ["experiment=xor_mlp", "trainer.max_steps=300"], "xorm")
    assert s["steps"] == 300 and "decision_boundary.png" in os.listdir(f"{out}/figures")


def test_decision_boundary_refuses_data_that_are_not_2d(make_cfg):
    from whylearn.train import run

    cfg = make_cfg(["experiment=perceptron_separable", "data.d=3", "logger=csv"], sub="d3")
    with pytest.raises(ValueError, match="2-D data; these inputs have 3 features"):
        run(cfg)


def test_sweep_experiments_run(make_cfg):
    import os

    s, out = _run(make_cfg, ["experiment=xor_sweep", "task.widths=[2]", "task.num_seeds=6", "task.steps=300"], "xor")
    assert {r["activation"] for r in s["rows"]} == {"step", "sigmoid", "tanh", "relu"}
    assert "xor_success.png" in os.listdir(f"{out}/figures")
    s, out = _run(make_cfg, ["experiment=lms_sweep", "task.num_mu=6", "task.epochs=2", "data.n_train=300"], "lms")
    assert s["mu_stable_full"] < s["mu_max_mean"] * 1.3 and "lms_mu_sweep.png" in os.listdir(f"{out}/figures")
    s, out = _run(make_cfg, ["experiment=hopfield_capacity", "task.num_neurons=[60]", "task.loads=[0.05,0.3]",
                             "task.trials=1"], "hop")
    assert s["rows"][0]["recalled"] > s["rows"][1]["recalled"]
    s, out = _run(make_cfg, ["experiment=perceptron_margin_sweep", "task.gammas=[0.2]", "task.dims=[2,5]",
                             "task.num_seeds=2", "task.n=50"], "margin")
    assert s["all_separated"] and s["all_within_bound"]
    s, out = _run(make_cfg, ["experiment=hopfield_images", "data.eval_batch_size=3"], "img")  # 4 probes, 2 batches
    assert s["test/overlap"] > 0.95 and "hopfield_images.png" in os.listdir(f"{out}/figures")
    assert not math.isnan(s["test/overlap_start"])

"""The landscape instruments: Hessian-vector products, power iteration, filter normalization,
linear regions, interpolation and 2D slices (whylearn.analysis.hessian / landscape / regions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from whylearn.analysis import hessian as H
from whylearn.analysis import landscape as LS
from whylearn.analysis import regions as R
from whylearn.models import MLP


def _data(n=200, d=8, c=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, c, (n,), generator=g)


def _grad(model, x, y, theta):
    f = H.make_loss_of_params(model, x, y)
    return torch.func.grad(f)(theta)


@pytest.mark.parametrize("method", H.HVP_METHODS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_hvp_matches_finite_differences_of_gradients(method, activation):
    torch.manual_seed(0)
    x, y = _data()
    model = MLP(8, 3, hidden=[16, 16], activation=activation).double()
    theta = H.flatten_params(model)
    v = torch.randn_like(theta)
    hv = H.HVP(model, x, y, method=method)(v)
    eps = 1e-5
    fd = (_grad(model, x, y, theta + eps * v) - _grad(model, x, y, theta - eps * v)) / (2 * eps)
    assert torch.allclose(hv, fd, rtol=1e-5, atol=1e-7 * fd.abs().max())
    # chunked evaluation of the mean loss gives the same product
    hv_chunked = H.HVP(model, x, y, method=method, chunk_size=64)(v)
    assert torch.allclose(hv, hv_chunked, rtol=1e-9, atol=1e-12)
    # and vmap over several vectors equals one at a time
    V = torch.randn(3, theta.numel(), dtype=theta.dtype)
    op = H.HVP(model, x, y, method=method)
    assert torch.allclose(op.batch(V), torch.stack([op(u) for u in V]), rtol=1e-9, atol=1e-12)


class Quadratic(nn.Module):
    """L(theta) = 0.5 theta^T A theta: its Hessian is A whatever theta is."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A)
        self.theta = nn.Parameter(torch.randn(A.shape[0], dtype=A.dtype))

    def forward(self, x):
        return 0.5 * self.theta @ self.A @ self.theta


def _quadratic(eigs, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ Q.T
    return Quadratic((A + A.T) / 2), Q


def test_power_iteration_finds_top_eigenvalue_of_known_hessian():
    eigs = [7.5, 3.0, 2.0] + list(np.linspace(-1.0, 1.0, 37))
    model, Q = _quadratic(eigs)
    x, y = torch.zeros(1, 1), torch.zeros(1)
    def loss(out, _y):
        return out
    res = H.top_eigenvalues(model, x, y, k=1, loss_fn=loss, iters=500, tol=1e-10)
    assert res.converged
    assert res.top == pytest.approx(7.5, rel=1e-6)
    assert abs(float(res.vectors[0] @ Q[:, 0])) == pytest.approx(1.0, abs=1e-4)
    top3 = H.top_eigenvalues(model, x, y, k=3, loss_fn=loss, iters=500, tol=1e-10)
    assert top3.values.tolist() == pytest.approx([7.5, 3.0, 2.0], rel=1e-5)
    for m in H.HVP_METHODS:
        assert H.sharpness(model, x, y, loss_fn=loss, method=m, iters=500, tol=1e-10) == pytest.approx(7.5, rel=1e-6)
    tr, se = H.hutchinson_trace(model, x, y, num_samples=200, loss_fn=loss)
    assert abs(tr - sum(eigs)) < 4 * se + 1e-9


def test_power_iteration_rejects_bad_arguments():
    model, _ = _quadratic([1.0, 2.0])
    with pytest.raises(ValueError, match="k must be"):
        H.top_eigenvalues(model, torch.zeros(1, 1), torch.zeros(1), k=5, loss_fn=lambda o, y: o)
    with pytest.raises(ValueError, match="unknown HVP method 'exact'"):
        H.HVP(model, torch.zeros(1, 1), torch.zeros(1), method="exact")


def test_filter_normalized_direction_matches_filter_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
                          nn.LayerNorm(5), nn.Linear(5, 3))
    theta = H.flatten_params(model)
    d = LS.filter_normalized_direction(model, torch.Generator().manual_seed(1))
    assert d.shape == theta.shape
    dn, wn = LS.filter_norms(model, d), LS.filter_norms(model, theta)
    assert set(dn) == {"0.weight", "4.weight", "6.weight"}
    for name in dn:
        assert torch.allclose(dn[name], wn[name], rtol=1e-5), name
    parts = H.ParamSpec(model).unflatten(d)
    for name in ("0.bias", "1.weight", "1.bias", "4.bias", "5.weight", "5.bias", "6.bias"):
        assert parts[name].abs().max() == 0, name          # biases and norm parameters are left out
    d2 = LS.filter_normalized_direction(model, torch.Generator().manual_seed(2))
    assert not torch.allclose(d, d2)                        # a new random direction, not a rescaled copy of theta
    assert abs(float(d @ theta) / float(d.norm() * theta.norm())) < 0.5


def _one_hidden(weights, biases):
    net = MLP(1, 1, hidden=[len(weights)]).double()
    with torch.no_grad():
        net.net[0].weight.copy_(torch.tensor(weights, dtype=torch.float64)[:, None])
        net.net[0].bias.copy_(torch.tensor(biases, dtype=torch.float64))
    return net


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_hidden_layer_line_regions_equal_distinct_breakpoints_plus_one(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(40, generator=g, dtype=torch.float64)
    b = torch.randn(40, generator=g, dtype=torch.float64) * 2
    # shared breakpoints: units 1-3 switch where unit 0 does; units 4, 5 outside the segment
    b[1:4] = -(-b[0] / w[0]) * w[1:4]
    b[4], b[5] = -10.0 * w[4], 7.0 * w[5]
    lo, hi = -3.0, 3.0
    bp = (-b / w).numpy()
    inside = bp[(bp > lo) & (bp < hi)]
    expected = len(np.unique(np.round(inside, 9))) + 1
    net = _one_hidden(w.tolist(), b.tolist())
    res = R.regions_on_segment(net, torch.tensor([lo]), torch.tensor([hi]))
    assert res.total == expected
    assert res.per_layer == [expected]
    assert np.allclose(np.sort(res.breakpoints), (np.unique(np.round(inside, 9)) - lo) / (hi - lo), atol=1e-9)
    assert expected < 41  # the shared and outside breakpoints were really dropped


def test_deep_line_regions_agree_with_a_fine_grid():
    torch.manual_seed(0)
    net = MLP(2, 3, hidden=[12, 12, 12]).double()
    x0, x1 = torch.tensor([-2.0, -1.0]), torch.tensor([2.5, 1.5])
    res = R.regions_on_segment(net, x0, x1)
    t = torch.linspace(0, 1, 100_001, dtype=torch.float64)[:, None]
    pats = torch.cat(R.patterns(net, x0.double() + t * (x1 - x0).double()), 1)
    grid_total = int((pats[1:] != pats[:-1]).any(1).sum()) + 1
    assert res.total == grid_total
    assert res.total == len(res.breakpoints) + 1
    assert len(res.per_layer) == 3 and all(1 <= c <= res.total for c in res.per_layer)


@pytest.mark.parametrize("arch,shortcut", [("cifar", True), ("cifar", False), ("preact18", True)])
def test_resnet_line_regions_see_every_relu_and_agree_with_a_fine_grid(arch, shortcut):
    from whylearn.models import ResNet

    torch.manual_seed(0)
    net = ResNet(1, 3, arch=arch, depth=8 if arch == "cifar" else 18, width=2, shortcut=shortcut).double().eval()
    # one pattern layer per ReLU call: stem or final + two per block (3 blocks at depth 8, 8 in preact18)
    blocks = 3 if arch == "cifar" else 8
    assert R.check_relu_network(net) == 1 + 2 * blocks
    x0 = torch.randn(1, 8, 8, dtype=torch.float64)
    x1 = x0 + 0.5 * torch.randn(1, 8, 8, dtype=torch.float64)
    res = R.regions_on_segment(net, x0, x1)
    assert len(res.per_layer) == 1 + 2 * blocks
    t = torch.linspace(0, 1, 100_001, dtype=torch.float64)[:, None, None, None]  # closest breakpoints: 5e-5 apart
    pats = torch.cat(R.patterns(net, x0 + t * (x1 - x0)), 1)
    grid_total = int((pats[1:] != pats[:-1]).any(1).sum()) + 1
    assert res.total > 1 and res.total == grid_total


def test_plane_and_dataset_patterns():
    torch.manual_seed(0)
    net = MLP(2, 2, hidden=[6])
    angles = torch.arange(6) * math.pi / 6 + 0.1
    with torch.no_grad():   # 6 lines at distinct angles, offsets in [2, 4]: all crossings within |x| < 20
        net.net[0].weight.copy_(torch.stack([angles.cos(), angles.sin()], 1))
        net.net[0].bias.copy_(torch.linspace(2.0, 4.0, 6) * torch.tensor([1, -1, 1, -1, 1, -1.0]))
    e = torch.eye(2)
    pr = R.regions_on_plane(net, torch.zeros(2), e[0], e[1], resolution=500, span=(-25, 25, -25, 25))
    # 6 lines in general position cut the plane into 1 + 6 + 15 = 22 regions; a wide window sees all of them
    assert pr.total == 22 and pr.per_layer == [22]
    coarse = R.regions_on_plane(net, torch.zeros(2), e[0], e[1], resolution=100, span=(-1, 1, -1, 1))
    assert coarse.total < 22   # a small window sees fewer
    x = torch.randn(500, 2)
    dp = R.distinct_patterns(net, x)
    assert 1 <= dp["total"] <= 22 and dp["fraction"] == dp["total"] / 500
    with pytest.raises(ValueError, match="Tanh"):
        R.regions_on_segment(MLP(2, 2, hidden=[4], activation="tanh"), torch.zeros(2), torch.ones(2))


def test_interpolation_endpoints_reproduce_the_two_losses():
    x, y = _data(300, 8, 3, seed=1, dtype=torch.float32)
    xv, yv = _data(100, 8, 3, seed=2, dtype=torch.float32)
    torch.manual_seed(0)
    a, b = MLP(8, 3, hidden=[32]), MLP(8, 3, hidden=[32])
    ta, tb = H.flatten_params(a), H.flatten_params(b)
    data = {"train": (x, y), "val": (xv, yv)}
    interp = LS.interpolate(a, ta, tb, data, alphas=np.linspace(0, 1, 11), method="vmap")
    loop = LS.interpolate(a, ta, tb, data, alphas=np.linspace(0, 1, 11), method="loop")
    with torch.no_grad():
        for split, (xs, ys) in data.items():
            la, lb = (nn.functional.cross_entropy(m(xs), ys).item() for m in (a, b))
            vals = interp.values[f"{split}/loss"]
            assert vals[0] == pytest.approx(la, rel=1e-5) and vals[-1] == pytest.approx(lb, rel=1e-5)
            assert np.allclose(vals, loop.values[f"{split}/loss"], rtol=1e-5)
            acc_b = (b(xs).argmax(-1) == ys).float().mean().item()
            assert interp.values[f"{split}/acc"][-1] == pytest.approx(acc_b)
    assert torch.equal(H.flatten_params(a), ta)  # the model is left as it was
    # the barrier is measured against the chord between the endpoints
    assert LS.barrier_height(np.linspace(0, 1, 5), np.array([1.0, 2.0, 3.0, 2.0, 0.0])) == pytest.approx(2.5)
    assert LS.barrier_height(np.linspace(0, 1, 3), np.array([1.0, 0.5, 0.0])) == pytest.approx(0.0)


def test_slice_2d_centre_is_the_model_and_vmap_equals_loop():
    x, y = _data(200, 8, 3, seed=3, dtype=torch.float32)
    torch.manual_seed(0)
    model = MLP(8, 3, hidden=[16, 16])
    sl = LS.slice_2d(model, {"train": (x, y)}, grid=(5, 3), points_per_batch=4, method="vmap")
    sl_loop = LS.slice_2d(model, {"train": (x, y)}, grid=(5, 3), method="loop")
    assert sl.values["train/loss"].shape == (5, 3)
    with torch.no_grad():
        centre = nn.functional.cross_entropy(model(x), y).item()
    assert sl.values["train/loss"][2, 1] == pytest.approx(centre, rel=1e-5)
    assert np.allclose(sl.values["train/loss"], sl_loop.values["train/loss"], rtol=1e-5)
    assert sl.values["train/loss"].max() > centre  # the directions move the loss
    with pytest.raises(ValueError, match="grid"):
        LS.slice_2d(model, {"train": (x, y)}, grid=1)
    with pytest.raises(ValueError, match="unknown method 'fast'"):
        LS.slice_2d(model, {"train": (x, y)}, grid=3, method="fast")


def test_gradient_noise_matches_explicit_per_sample_gradients():
    from whylearn.callbacks.noise import gradient_noise

    x, y = _data(40, 8, 3, seed=4)
    torch.manual_seed(0)
    model = MLP(8, 3, hidden=[8]).double()
    gs = []
    for i in range(40):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        gs.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    G = torch.stack(gs)
    s = gradient_noise(model, x, y, nn.functional.cross_entropy, chunk=16)
    assert s["grad_norm_sq"] == pytest.approx(float(G.mean(0).pow(2).sum()), rel=1e-8)
    assert s["trace_cov"] == pytest.approx(float(G.var(0, unbiased=True).sum()), rel=1e-8)


def test_surface_roughness_tells_a_bowl_from_a_rough_surface():
    a = np.linspace(-1, 1, 21)
    b = np.linspace(-1, 1, 21)
    A, B = np.meshgrid(a, b, indexing="ij")
    bowl = LS.surface_roughness(a, b, 1.0 + 3 * A**2 + B**2 + 0.5 * A * B)
    assert bowl["local_minima"] == 1 and bowl["nonconvex_fraction"] == 0.0 and bowl["eig_ratio_mean"] == 0.0
    assert bowl["radial_monotone_fraction"] == 1.0
    assert bowl["centre"] == pytest.approx(1.0) and bowl["edge_mean"] > bowl["mean"] > bowl["centre"]
    # the same bowl with ripples (a chaotic surface in miniature): many minima, non-convex in places
    rough = LS.surface_roughness(a, b, 1.0 + 3 * A**2 + B**2 + 0.5 * A * B + 0.3 * np.sin(9 * A) * np.cos(11 * B))
    assert rough["local_minima"] >= 4
    assert 0.2 < rough["nonconvex_fraction"] < 1.0 and rough["eig_ratio_mean"] > 0.1
    assert rough["radial_monotone_fraction"] < 1.0
    # a saddle is non-convex everywhere with |lambda_min / lambda_max| = 1
    saddle = LS.surface_roughness(a, b, A**2 - B**2)
    assert saddle["nonconvex_fraction"] == 1.0 and saddle["eig_ratio_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        LS.surface_roughness(a, b[:5], A)
    with pytest.raises(ValueError, match="non-finite"):
        LS.surface_roughness(a, b, np.where(A > 0.5, np.nan, A))

"""The landscape callbacks inside a real (tiny) whylearn-train run, the post-hoc command on its checkpoint,
and (slow) the edge-of-stability outcome of Cohen et al. 2021."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict


def test_callbacks_in_a_run_and_posthoc_on_its_checkpoint(make_cfg, tmp_path):
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=edge_of_stability", "logger=csv", "trainer.max_steps=30", "data.train_size=200",
                    "data.num_samples=1000", "data.batch_size=50", "callbacks.sharpness.every_n_steps=null",
                    "callbacks.sharpness.iters=200", "callbacks.sharpness.tol=1e-6", "trainer.check_val_every_n_epoch=4"])
    with open_dict(cfg):
        cfg.callbacks.landscape = OmegaConf.create({"_target_": "whylearn.callbacks.LossLandscape", "grid": 5,
                                                    "alphas": 5, "alpha_range": [0.0, 1.0], "num_samples": 100})
        cfg.callbacks.fit = OmegaConf.create({"_target_": "whylearn.callbacks.TimeToFit", "threshold": 0.01,
                                              "every_n_steps": 5})
    summary = run(cfg)
    out = tmp_path / "run"
    assert summary["status"] == "completed" and summary["steps"] == 30
    assert summary["sharpness/lambda_max"] > 0 and summary["sharpness/two_over_lr"] == pytest.approx(2.0)
    assert summary["fit/steps_to_fit"] is not None
    for name in ("sharpness", "landscape_1d", "landscape_2d_contour", "landscape_2d_surface"):
        assert (out / "figures" / f"{name}.png").is_file(), name
    land = json.loads((out / "landscape.json").read_text())
    interp = land["interpolation"]
    # alpha = 1 is the final model: its train loss is the slice's centre
    sl = np.array(land["slice"]["values"]["train/loss"])
    assert interp["values"]["train/loss"][-1] == pytest.approx(sl[2, 2], rel=1e-5)
    assert interp["values"]["train/loss"][0] > interp["values"]["train/loss"][-1]   # training lowered the loss
    assert summary["landscape/dist_init_final"] > 0
    # the slice's roughness numbers; the trained solution is the lowest point of its 5x5 slice
    assert summary["landscape/slice_local_minima"] >= 0 and 0 <= summary["landscape/slice_nonconvex_fraction"] <= 1
    assert summary["landscape/slice_edge_mean"] > summary["landscape/slice_centre"] == pytest.approx(sl.min())
    # every_n_steps=null: the sharpness is measured once, at the end of training
    import csv

    rows = [r for r in csv.DictReader(open(out / "csv" / "metrics.csv")) if r.get("sharpness/lambda_max")]
    assert [int(r["step"]) for r in rows] == [30]

    from whylearn.cli import landscape as posthoc

    ckpt = str(out / "checkpoints" / "last.ckpt")
    s = posthoc.run(["sharpness", ckpt, "--samples", "0", "--iters", "200", "--tol", "1e-6"])
    assert s["eigenvalues"][0] == pytest.approx(summary["sharpness/lambda_max"], rel=0.02)
    same = posthoc.run(["interpolate", ckpt, ckpt, "--alphas", "3", "--samples", "100"])
    assert abs(same["barriers"]["train/loss"]) < 1e-6 and same["distance"] == 0
    sl2 = posthoc.run(["slice", ckpt, "--grid", "3", "--samples", "100", "--splits", "train"])
    assert sl2["min"] <= sl2["centre"] <= sl2["max"]


def test_linear_regions_callback_and_posthoc(make_cfg, tmp_path):
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=linear_regions", "logger=csv", "trainer.max_steps=40", "data.num_samples=600",
                    "model.hidden=[16,16]", "callbacks.regions.every_n_steps=20", "callbacks.regions.num_pairs=3",
                    "callbacks.regions.plane_resolution=50", "data.steps_per_chunk=10"])
    summary = run(cfg)
    out = tmp_path / "run"
    assert summary["regions/line_total"] >= 1 and summary["regions/plane_total"] >= 1
    assert 0 < summary["regions/patterns_train_fraction"] <= 1
    assert (out / "figures" / "regions_plane.png").is_file()
    from whylearn.cli import landscape as posthoc

    r = posthoc.run(["regions", str(out / "checkpoints" / "last.ckpt"), "--pairs", "3", "--resolution", "50"])
    assert r["regions/line_total"] == pytest.approx(summary["regions/line_total"])
    assert r["patterns_train"]["total"] == summary["regions/patterns_train"]


def test_regions_callback_rejects_non_relu(make_cfg):
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=linear_regions", "logger=csv", "trainer.max_steps=2", "data.num_samples=300",
                    "model.activation=tanh", "model.hidden=[8]"])
    with pytest.raises(ValueError, match="Tanh"):
        run(cfg)


@pytest.mark.slow
def test_edge_of_stability_sharpness_settles_near_two_over_eta():
    """Cohen et al. 2021: full-batch GD at step size eta; the sharpness rises to about 2/eta and stays there."""
    from whylearn.analysis.hessian import top_eigenvalues
    from whylearn.data import make_mnist1d
    from whylearn.models import MLP
    from whylearn.tasks.classification import classification_loss

    torch.manual_seed(0)
    d = make_mnist1d()["train"]
    x, y = d.x[:1000], d.y[:1000]
    def loss(o, t):
        return classification_loss("mse", o, t)
    for lr in (1.0, 2.0):
        torch.manual_seed(0)
        m = MLP(40, 10, hidden=[100, 100], activation="tanh")
        opt = torch.optim.SGD(m.parameters(), lr=lr)
        lam0 = top_eigenvalues(m, x, y, 1, loss, iters=50).top
        lams = []
        for step in range(800):
            if step >= 600 and step % 20 == 0:
                lams.append(top_eigenvalues(m, x, y, 1, loss, iters=30).top)
            opt.zero_grad()
            loss(m(x), y).backward()
            opt.step()
        assert lam0 < 0.6 * (2 / lr) or lr > 1.5          # it started well below the threshold (eta = 1)
        assert 0.85 * (2 / lr) < float(np.mean(lams)) < 1.25 * (2 / lr), (lr, lams)

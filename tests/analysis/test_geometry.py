"""High-dimensional geometry (UDL Sec. 8.4, notebook 8.4): near-orthogonality, the skin of a ball, the
vanishing ball in its cube; each Monte Carlo estimate against its analytic value."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from whylearn.analysis import geometry as G


def test_random_vectors_are_nearly_orthogonal_with_spread_one_over_sqrt_d():
    rng = np.random.default_rng(0)
    sds = {}
    for d in (10, 100, 1000):
        a = G.random_angles(d, 4000, rng)
        assert abs(a.mean() - 90.0) < 3 * a.std() / math.sqrt(a.size)  # centred at 90 degrees
        sds[d] = a.std()
        assert abs(sds[d] / G.angle_sd_exact(d) - 1) < 0.05
    # the spread shrinks like 1/sqrt(d): 100x the dimension, a tenth of the spread
    assert 9.0 < sds[10] / sds[1000] < 11.0
    assert abs(G.angle_sd_exact(1000) / G.angle_sd_approx(1000) - 1) < 0.01
    assert G.angle_sd_exact(2) == pytest.approx(180 / math.sqrt(12), rel=1e-4)  # uniform on [0, 180] in the plane
    assert sds[1000] < 2.0 and G.random_angles(2, 4000, rng).std() > 45


def test_ball_sampler_is_uniform_and_the_volume_sits_in_the_skin():
    rng = np.random.default_rng(1)
    r = np.linalg.norm(G.uniform_ball(50_000, 3, rng), axis=1)
    assert r.max() <= 1.0 and abs((r <= 0.5).mean() - 0.5**3) < 0.01  # P(r <= 1/2) = (1/2)^d
    frac = G.shell_fraction_mc(300, [0.01, 0.1], 20_000, rng)
    assert abs(frac[0] - G.shell_fraction(300, 0.01)) < 0.01 and frac[0] > 0.9  # UDL nb 8.4: 95% in the outer 1%
    assert frac[1] > 0.999
    low = G.shell_fraction_mc(2, [0.01], 20_000, rng)[0]
    assert abs(low - G.shell_fraction(2, 0.01)) < 0.005 and low < 0.05


def test_ball_over_cube_goes_to_zero_and_both_estimators_find_it():
    rng = np.random.default_rng(2)
    assert 10 ** G.log10_ball_cube_ratio(2) == pytest.approx(math.pi / 4)
    assert 10 ** G.log10_ball_cube_ratio(10) == pytest.approx(0.00249, abs=1e-5)  # UDL notebook 8.4, diameter-1 ball
    assert G.ball_cube_ratio_plain(5, 200_000, rng) == pytest.approx(10 ** G.log10_ball_cube_ratio(5), rel=0.05)
    for d in (5, 100, 1000):
        est = G.ball_cube_ratio_tilted(d, 4000, rng)
        assert abs(est["log10"] - G.log10_ball_cube_ratio(d)) < max(0.05, 5 * est["log10_se"])
    assert G.log10_ball_cube_ratio(1000) < -1000


def test_bad_geometry_arguments_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="positive integer"):
        G.shell_fraction(0, 0.1)
    with pytest.raises(ValueError, match=r"eps must be .* got 1.5"):
        G.shell_fraction(3, 1.5)
    with pytest.raises(ValueError, match="d >= 2"):
        G.random_angles(1, 10, rng)
    with pytest.raises(ValueError, match="dims must be >= 2"):
        G.high_dimensional_geometry(out_dir=None, dims=[1, 2])


def test_high_dim_geometry_experiment_runs_through_whylearn_train(make_cfg, tmp_path):
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=high_dim_geometry", "logger=csv", "study.dims=[2,10,300]",
                    "study.num_pairs=1000", "study.num_points=5000", "study.num_cube_points=20000",
                    "study.num_tilted=2000", "study.histogram_dims=[2,300]"])
    assert run(cfg)["status"] == "completed"
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert abs(saved["shell/eps0.01/fraction_mc/d300"] - 0.951) < 0.02
    assert abs(saved["angle/mean_deg/d300"] - 90) < 1 and saved["angle/sd_deg/d300"] < 4
    assert saved["ball_cube/ratio_plain_mc/d10"] == pytest.approx(0.00249, abs=0.002)
    assert len(saved["angle/sd_deg"]) == 3 and len(saved["seeds"]) == 3
    for name in ("geometry_angles", "geometry_shell", "geometry_ball_cube"):
        assert (tmp_path / "run" / "figures" / f"{name}.png").is_file()


@pytest.mark.slow
def test_full_high_dim_geometry_run_passes_its_reference_block(make_cfg, tmp_path):
    """The documented run (d = 2..1000, 3 Monte Carlo seeds, about 1.5 minutes)."""
    from whylearn import reference
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=high_dim_geometry", "logger=csv"])
    assert run(cfg)["status"] == "completed"
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    block = reference.evaluate(reference.from_config(cfg), s)
    assert [e["verdict"] for e in block] == ["pass"] * 5, block
    assert max(abs(a - b) for a, b in zip(s["ball_cube/log10_ratio_mc"], s["ball_cube/log10_ratio"], strict=True)) < 0.05

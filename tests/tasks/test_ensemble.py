"""Vectorized sweeps (issue 17): members that differ in every axis equal their single runs, the grid
expands as configured, the fused training path and lanes change nothing, the layout planner, the
statistics against scipy, UDL notebook 8.3's data, labels and initialization, and a reduced
double-descent run through whylearn-train read back by whylearn-analyze."""

from __future__ import annotations

import json
import math
import random
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from conftest import compose
from whylearn.data import MNIST1DDataModule, apply_label_noise
from whylearn.models import MLP
from whylearn.models.ensemble import MemberEnsemble, mlp_step_flops, plan_buckets
from whylearn.tasks import ClassificationTask, EnsembleClassificationTask
from whylearn.tasks.ensemble import expand_grid, fused_member_losses, member_label, member_losses, plan_lanes

STEPS = 30


def _trainer(steps=STEPS):
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def _dm(**kw):
    base = dict(num_samples=600, val_size=0, batch_size=50, steps_per_chunk=8, seed=0, label_noise=0.2)
    return MNIST1DDataModule(**{**base, **kw})


def _mlp(width=12, init_scale=1.0):
    return MLP(40, 10, width=width, depth=2, init_scale=init_scale)


def _factory(**o):
    return _mlp(**o)


BASE_OPT = dict(lr=0.05, momentum=0.9, weight_decay=0.0)

# axis -> (two values, how a single run with that value is configured)
AXES = {
    "seed": ([3, 4], lambda v: ({"seed": v}, {}, {}, {})),
    "model.width": ([7, 16], lambda v: ({}, {"width": v}, {}, {})),
    "model.init_scale": ([0.5, 2.0], lambda v: ({}, {"init_scale": v}, {}, {})),
    "optimizer.lr": ([0.02, 0.1], lambda v: ({}, {}, {"lr": v}, {})),
    "optimizer.weight_decay": ([0.0, 0.05], lambda v: ({}, {}, {"weight_decay": v}, {})),
    "optimizer.momentum": ([0.0, 0.9], lambda v: ({}, {}, {"momentum": v}, {})),
    "data.order_seed": ([11, 12], lambda v: ({}, {}, {}, {"order_seed": v})),
    "data.label_noise_seed": ([5, 6], lambda v: ({}, {}, {}, {"label_noise_seed": v})),
    "data.label_noise": ([0.0, 0.3], lambda v: ({}, {}, {}, {"label_noise": v})),
    "data.label_noise_mode": (["other", "uniform"], lambda v: ({}, {}, {}, {"label_noise_mode": v})),
}


def _single(seed=0, model_kw=None, opt_kw=None, data_kw=None):
    torch.manual_seed(seed)  # what whylearn-train seed=<seed> does before building the model
    task = ClassificationTask(_mlp(**(model_kw or {})), 10, partial(torch.optim.SGD, **{**BASE_OPT, **(opt_kw or {})}),
                              log_every_n_steps=10)
    dm = _dm(**(data_kw or {}))
    _trainer().fit(task, datamodule=dm)
    return task, dm


@pytest.mark.parametrize("axis", list(AXES))
def test_every_member_equals_its_single_run(axis, one_thread):
    values, configure = AXES[axis]
    grid = {axis: values} if axis == "seed" else {axis: values, "seed": [0]}
    ens = EnsembleClassificationTask(_mlp(), 10, partial(torch.optim.SGD, **BASE_OPT), grid=grid, model_factory=_factory,
                                     log_every_n_steps=10)
    dm = _dm()
    _trainer().fit(ens, datamodule=dm)
    members = ens.evaluate_members(dm.test.x, dm.test.y)
    for i, v in enumerate(values):
        seed_kw, model_kw, opt_kw, data_kw = configure(v)
        single, sdm = _single(seed_kw.get("seed", 0), model_kw, opt_kw, data_kw)
        alone = single.evaluate(sdm.test.x, sdm.test.y)
        assert alone["loss"] == pytest.approx(float(members["loss"][i]), rel=1e-5, abs=1e-6), (axis, v)
        assert alone["acc"] == pytest.approx(float(members["acc"][i]), abs=1e-9)
        curve = single.history.series("train/loss")[1]
        mine = ens.history.series(f"train/loss/{ens.labels[i]}")[1]
        assert len(curve) == len(mine) == STEPS // 10 and np.allclose(curve, mine, rtol=1e-5, atol=1e-6)
        for a, b in zip(ens.model.member(i).parameters(), single.model.parameters(), strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    # the two members really differ (the axis does something)
    assert not torch.allclose(members["loss"][0], members["loss"][1])


def test_adam_members_with_their_own_lr_and_weight_decay_equal_single_runs(one_thread):
    for cls in (torch.optim.Adam, torch.optim.AdamW):
        opt = partial(cls, lr=0.003, weight_decay=0.01)
        ens = EnsembleClassificationTask(_mlp(), 10, opt, grid={"optimizer.lr": [0.001, 0.01],
                                                                "optimizer.weight_decay": [0.0, 0.1], "seed": [2]})
        _trainer().fit(ens, datamodule=_dm())
        for i, m in enumerate(ens.members):
            torch.manual_seed(2)
            single = ClassificationTask(_mlp(), 10, partial(cls, lr=m["optimizer.lr"], weight_decay=m["optimizer.weight_decay"]))
            _trainer().fit(single, datamodule=_dm())
            for a, b in zip(ens.model.member(i).parameters(), single.model.parameters(), strict=True):
                assert torch.allclose(a, b, atol=1e-5), (cls.__name__, m)


def test_data_order_member_gives_each_model_its_own_recorded_stream(one_thread):
    ens = EnsembleClassificationTask(_mlp(), 10, partial(torch.optim.SGD, **BASE_OPT),
                                     grid={"model.width": [5, 9], "seed": [0, 1]}, data_order="member",
                                     model_factory=_factory, log_every_n_steps=10)
    order_seeds = [m["data.order_seed"] for m in ens.members]
    assert len(set(order_seeds)) == 4  # every model its own order
    assert order_seeds == [m["data.order_seed"] for m in expand_grid({"model.width": [5, 9], "seed": [0, 1]}, None, 0,
                                                                       "member")[0]]  # stable
    dm = _dm()
    _trainer().fit(ens, datamodule=dm)
    m = ens.members[3]
    single, sdm = _single(m["seed"], {"width": m["model.width"]}, None, {"order_seed": m["data.order_seed"]})
    assert single.evaluate(sdm.test.x, sdm.test.y)["loss"] == pytest.approx(
        float(ens.evaluate_members(dm.test.x, dm.test.y)["loss"][3]), rel=1e-5)


def test_grid_expands_as_configured():
    members, keys = expand_grid({"model": {"width": [2, 4, 8]}, "optimizer.lr": [0.1, 0.01], "seed": [0, 1, 2]}, None, 7)
    assert keys == ["model.width", "optimizer.lr", "seed"] and len(members) == 18
    assert members[0] == {"model.width": 2, "optimizer.lr": 0.1, "seed": 0}
    assert members[1] == {"model.width": 2, "optimizer.lr": 0.1, "seed": 1}  # the last key fastest
    assert members[3]["optimizer.lr"] == 0.01 and members[6]["model.width"] == 4
    assert [member_label(m, keys) for m in members[:2]] == ["width2_lr0.1_seed0", "width2_lr0.1_seed1"]
    # dotted and nested keys are the same grid; seeds become the last axis, counted from the run's seed
    dotted, _ = expand_grid({"model.width": [2, 4]}, 3, 10)
    nested, _ = expand_grid({"model": {"width": [2, 4]}}, [10, 11, 12], 0)
    assert dotted == nested and [m["seed"] for m in dotted] == [10, 11, 12] * 2
    assert expand_grid(None, 2, 5)[0] == [{"seed": 5}, {"seed": 6}]
    ens = EnsembleClassificationTask(_mlp(), 10, partial(torch.optim.SGD, lr=0.1), seeds=[3, 4])
    assert ens.labels == ["seed3", "seed4"]  # seed-only ensembles keep their metric names
    for grid, seeds, match in [({"trainer.max_epochs": [1, 2]}, None, "cannot vary 'trainer.max_epochs'"),
                               ({"data.batch_size": [10, 20]}, None, "cannot vary"),
                               ({"model.width": [4, 4]}, None, "repeats"),
                               ({"model.width": []}, None, "empty"),
                               ({"seed": [0, 1]}, 3, "seeds given twice")]:
        with pytest.raises(ValueError, match=match):
            expand_grid(grid, seeds, 0)
    with pytest.raises(ValueError, match="model_factory"):
        EnsembleClassificationTask(_mlp(), 10, partial(torch.optim.SGD, lr=0.1), grid={"model.width": [3, 5]})
    with pytest.raises(ValueError, match="momentum"):
        EnsembleClassificationTask(_mlp(), 10, partial(torch.optim.Adam, lr=0.1), grid={"optimizer.momentum": [0, 0.9]})


def test_padded_groups_keep_their_extra_units_at_zero_and_match_exact_groups(one_thread):
    torch.manual_seed(0)
    members = [MLP(40, 10, width=w, depth=2) for w in (3, 6, 10, 10, 24)]
    padded = MemberEnsemble(members, layout="padded", buckets=[10, 24])
    exact = MemberEnsemble(members, layout="exact")
    assert [g["hidden"] for g in padded.describe()] == [[10, 10], [24, 24]]
    assert len(exact.groups) == 4
    x, y = torch.randn(5, 32, 40), torch.randint(0, 10, (5, 32))
    for ens in (padded, exact):
        opt = torch.optim.SGD(ens.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        for _ in range(5):
            loss = member_losses("cross_entropy", ens(x, per_member=True), y).mean(1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    w = padded.groups[0].stacked["net__2__weight_t"]  # (3, 10, 10): members of widths 3, 6, 10
    assert w[0, 3:].abs().max() == 0 and w[0, :, 3:].abs().max() == 0 and w[1, 6:].abs().max() == 0
    assert w[0, :3, :3].abs().max() > 0
    for i in range(5):
        for a, b in zip(padded.member(i).parameters(), exact.member(i).parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="sigmoid"):
        MemberEnsemble([MLP(4, 2, width=3, depth=1, activation="sigmoid")], layout="padded")
    with pytest.raises(ValueError, match="leave out"):
        MemberEnsemble(members, layout="padded", buckets=[10])


def test_layout_planner_trades_group_overhead_against_padding():
    widths, counts = [2, 4, 8, 100, 400], [3] * 5

    def flops(w):
        return mlp_step_flops([40, w, w, 10], 100)

    free = plan_buckets(widths, counts, flops, overhead_s=0.0)
    assert free == [[0], [1], [2], [3], [4]]  # no cost per group: never pad
    costly = plan_buckets(widths, counts, flops, overhead_s=10.0)
    assert costly == [[0, 1, 2, 3, 4]]  # groups cost more than any padding
    mid = plan_buckets(widths, counts, flops, overhead_s=4e-4, flops_per_s=4e10)
    assert [0, 1, 2] in mid and [4] in mid  # the small widths share a group, the widest stays exact
    # FLOPs of one step: forward + weight gradients + input gradients but the first layer's
    assert mlp_step_flops([40, 5, 10], 2) == 2 * 2 * (2 * (200 + 50) + 50)


def test_fused_path_and_lanes_give_autograds_gradients(one_thread):
    torch.manual_seed(1)
    members = [MLP(40, 10, width=w, depth=2) for w in (12, 3, 7, 12, 30)]  # groups not contiguous
    for layout in ("exact", "padded"):
        ens = MemberEnsemble(members, layout=layout)
        assert layout == "padded" or ens._slices is None
        for per_member, loss in ((True, "cross_entropy"), (False, "mse")):
            x = torch.randn(5, 16, 40) if per_member else torch.randn(16, 40)
            y = torch.randint(0, 10, (5, 16) if per_member else (16,))
            ref = member_losses(loss, ens(x, per_member=per_member), y).mean(1)
            ref.sum().backward()
            want = [p.grad.clone() for p in ens.parameters()]
            for lanes in (None, plan_lanes(ens, 2, 16)):
                for p in ens.parameters():
                    p.grad = None
                got, logits = fused_member_losses(ens, x, y, loss, per_member, lanes)
                assert torch.allclose(got, ref.detach(), atol=1e-6)
                assert torch.allclose(logits, ens(x, per_member=per_member), atol=1e-6)
                got.sum().backward()
                for a, b in zip(ens.parameters(), want, strict=True):
                    assert torch.allclose(a.grad, b, atol=1e-6)
            for p in ens.parameters():
                p.grad = None


def test_lanes_train_exactly_like_one_thread(one_thread):
    def train(lanes):
        ens = EnsembleClassificationTask(_mlp(), 10, partial(torch.optim.SGD, **BASE_OPT),
                                         grid={"model.width": [3, 20, 40], "seed": [0, 1]}, model_factory=_factory,
                                         data_order="member", lanes=lanes)
        _trainer().fit(ens, datamodule=_dm())
        return [p.detach().clone() for p in ens.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(train(1), train(2), strict=True))


# -- statistics against scipy ---------------------------------------------------------------------
def test_mean_ci_and_welch_and_bootstrap_against_scipy():
    from scipy import stats

    from whylearn.analysis.stats import compare_groups, mean_ci

    c = mean_ci([1, 2, 3, 4, 5])
    assert c["mean"] == 3 and c["sd"] == pytest.approx(math.sqrt(2.5))
    lo, hi = stats.t.interval(0.95, 4, loc=3, scale=math.sqrt(2.5) / math.sqrt(5))
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((lo, hi)) and c["ci_low"] == pytest.approx(1.0367568, abs=1e-6)
    assert mean_ci([0.5])["ci_low"] is None and mean_ci([0.5])["mean"] == 0.5
    a, b = [0.52, 0.55, 0.49, 0.58], [0.41, 0.44, 0.40]
    r = compare_groups(a, b, n_resamples=2000, seed=1)
    # Welch's statistic and Satterthwaite's degrees of freedom by hand, the p-value from the t distribution
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    assert r["t"] == pytest.approx(t) and r["df"] == pytest.approx(df)
    assert r["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), df))
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert r["p_value"] == pytest.approx(ref.pvalue) and r["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    boot = stats.bootstrap((np.array(a), np.array(b)), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), n_resamples=2000,
                           method="percentile", vectorized=True, random_state=np.random.default_rng(1))
    assert (r["boot_low"], r["boot_high"]) == pytest.approx((boot.confidence_interval.low, boot.confidence_interval.high))
    assert r["boot_low"] < r["diff"] < r["boot_high"] and r["p_value"] < 0.01
    with pytest.raises(ValueError, match="at least 2"):
        compare_groups([1.0], [1.0, 2.0])


def test_double_descent_landmarks():
    from whylearn.analysis.stats import describe_double_descent

    xs = [2, 4, 8, 16, 32, 64, 128]
    train = [0.6, 0.4, 0.2, 0.05, 0.0, 0.0, 0.0]
    test = [0.62, 0.45, 0.41, 0.47, 0.52, 0.43, 0.36]
    d = describe_double_descent(xs, train, test)
    assert d["threshold_x"] == 32 and d["first_min_x"] == 8 and d["first_min"] == 0.41
    assert d["peak_x"] == 32 and d["second_min_x"] == 128
    assert d["second_minus_first"] == pytest.approx(-0.05) and d["peak_minus_first"] == pytest.approx(0.11)
    flat = describe_double_descent([1, 2, 3], [0.5, 0.4, 0.3], [0.5, 0.4, 0.3])
    assert flat["threshold_x"] is None and flat["first_min_x"] == 3 and flat["second_min"] is None
    with pytest.raises(ValueError, match="ascending"):
        describe_double_descent([2, 1], [0, 0], [0, 0])


# -- UDL notebook 8.3's data, labels and initialization ---------------------------------------------
def test_notebook_data_and_noisy_labels_are_the_notebooks_own():
    """The notebook: get_dataset_args with its four changes, make_dataset (via get_dataset(regenerate=True)),
    then `if random.random() < 0.15: y = int(random.random() * 10)` for each training label, with
    Python's random as make_dataset leaves it."""
    import mnist1d.data

    state = random.getstate()
    try:
        args = mnist1d.data.get_dataset_args()
        args.num_samples, args.train_split, args.corr_noise_scale, args.iid_noise_scale = 8000, 0.5, 0.25, 2e-2
        data = mnist1d.data.make_dataset(args)
        y = np.array(data["y"])
        for c in range(len(y)):
            if random.random() < 0.15:
                y[c] = int(random.random() * 10)
    finally:
        random.setstate(state)
    dm = MNIST1DDataModule(num_samples=8000, train_split=0.5, generator_args={"corr_noise_scale": 0.25,
                           "iid_noise_scale": 0.02}, val_size=0, label_noise=0.15, label_noise_mode="uniform",
                           label_noise_seed=42)
    dm.setup()
    assert len(dm.train) == len(dm.test) == 4000
    assert np.allclose(dm.train.x.numpy(), data["x"]) and np.allclose(dm.test.x.numpy(), data["x_test"])
    assert np.array_equal(dm.train.y.numpy(), y)  # the notebook's noisy labels, draw for draw
    changed = int((dm.train.y != dm.clean_train_targets).sum())
    assert 0.11 * 4000 < changed < 0.16 * 4000 < dm.noisy_indices.numel() + 120  # some redraws hit the true class
    assert dm.describe()["wrong_labels"] == changed


def test_uniform_and_other_label_noise_rules():
    y = torch.arange(10).repeat(1000)
    other, idx = apply_label_noise(y, 0.2, 10, torch.Generator().manual_seed(0))
    assert idx.numel() == 2000 and bool((other[idx] != y[idx]).all())  # exactly 20%, all wrong
    uni, idx = apply_label_noise(y, 0.2, 10, 3, mode="uniform")
    assert 1800 < idx.numel() < 2200  # each label with probability 0.2
    kept = (uni[idx] == y[idx]).float().mean().item()
    assert 0.06 < kept < 0.14  # a uniform redraw keeps the true class 1 time in 10
    assert torch.equal(uni, apply_label_noise(y, 0.2, 10, 3, mode="uniform")[0])
    with pytest.raises(ValueError, match="allowed"):
        apply_label_noise(y, 0.2, 10, 3, mode="flip")
    # the default rule of every other experiment is unchanged: one generator, drawn after the split
    dm = _dm(label_noise=0.15)
    dm.setup()
    g = torch.Generator().manual_seed(0)
    g.set_state(dm._noise_state)
    assert torch.equal(dm.train.y, apply_label_noise(dm.clean_train_targets, 0.15, 10, g)[0])


def test_he_uniform_mlp_is_the_notebooks_model():
    from torch import nn

    def notebook_model(n_hidden):  # UDL notebook 8.3, get_model + weights_init
        model = nn.Sequential(nn.Linear(40, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_hidden), nn.ReLU(),
                              nn.Linear(n_hidden, 10))

        def weights_init(layer_in):
            if isinstance(layer_in, nn.Linear):
                nn.init.kaiming_uniform_(layer_in.weight)
                layer_in.bias.data.fill_(0.0)

        model.apply(weights_init)
        return model

    for width in (2, 45, 400):
        torch.manual_seed(width)
        ref = notebook_model(width)
        torch.manual_seed(width)
        mine = MLP(40, 10, width=width, depth=2, init="he_uniform")
        for a, b in zip(mine.parameters(), ref.parameters(), strict=True):
            assert torch.equal(a, b)
        bound = math.sqrt(6 / 40)  # He uniform: sqrt(6 / fan_in), gain sqrt(2)
        assert mine.net[0].weight.abs().max() <= bound and mine.net[0].weight.abs().max() > 0.9 * bound
    with pytest.raises(ValueError, match="allowed"):
        MLP(40, 10, width=3, depth=1, init="xavier")


# -- a reduced double descent through whylearn-train and whylearn-analyze ----------------------------------
REDUCED = ["experiment=double_descent_mnist1d", "ensemble.grid.model.width=[4,40]", "ensemble.grid.seed=[0,1]",
           "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "threads=1", "data.steps_per_chunk=8"]


@pytest.fixture(scope="module")
def reduced_dd(tmp_path_factory):
    from whylearn.experiment import run

    tmp = tmp_path_factory.mktemp("dd")
    cfg = compose(REDUCED + ["logger=csv"], tmp)
    return cfg, run(cfg), Path(cfg.paths.output_dir)


def test_reduced_double_descent_members_equal_whylearn_train_single_runs(reduced_dd, tmp_path):
    from whylearn.experiment import run

    cfg, summary, out = reduced_dd
    assert summary["ensemble/members"] == 4 and summary["steps"] == 80
    assert [m["label"] for m in summary["members"]] == ["width4_seed0", "width4_seed1", "width40_seed0", "width40_seed1"]
    m = summary["members"][3]
    assert m["params"] == 40 * 40 + 40 + 40 * 40 + 40 + 40 * 10 + 10 and m["settings"]["model.width"] == 40
    # the same member as an ordinary run: its settings as overrides, the plain classification task
    single = run(compose(["experiment=double_descent_mnist1d", "task=classification", "model.width=40", "seed=1",
                          f"data.order_seed={m['settings']['data.order_seed']}", "trainer.max_epochs=2",
                          "trainer.check_val_every_n_epoch=1", "threads=1", "data.steps_per_chunk=8", "logger=csv"],
                         tmp_path))
    assert single["params"] == m["params"]
    for key in ("train/loss", "train/acc", "test/loss", "test/acc"):
        assert single[key] == pytest.approx(m[key], rel=1e-4, abs=1e-5), key
    # per-member results in metrics.csv and summary.json; the landmarks along the width
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/acc/width40_seed1", "train/loss/width4_seed0", "train/acc_epoch/width40_seed0"} <= set(header)
    assert summary["test/acc/width40_seed1"] == m["test/acc"]
    assert summary["double_descent/x"] == "model.width" and summary["double_descent/largest_x"] == 40
    assert summary["label_noise_mode"] == "uniform" and summary["train_size"] == summary["test_size"] == 4000
    ref = {r["quantity"]: r for r in summary["reference"]}  # the experiment's published landmarks, evaluated
    assert ref["double_descent/first_min"]["measured"] == summary["double_descent/first_min"]
    assert ref["double_descent/first_min"]["verdict"] in ("pass", "fail") and "Fig. 8.10b" in ref["double_descent/peak"]["source"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["members"] == json.loads(json.dumps(summary["members"]))


def test_analyze_reads_an_ensemble_run_like_a_multirun(reduced_dd, tmp_path, capsys):
    from whylearn.cli.analyze import compare, load_sweep, main, stats_table, sweep

    cfg, summary, out = reduced_dd
    rows, swept = load_sweep(out)
    assert len(rows) == 4 and swept == ["model.width", "data.order_seed", "seed"]
    assert rows[2]["model.width"] == 40 and rows[2]["test/err"] == pytest.approx(1 - summary["members"][2]["test/acc"])
    res = sweep(out, x="params", curves=["train/loss"], out=tmp_path / "a")
    assert res["runs"] == 4 and res["settings"] == 2
    assert "| 40 | 3690 |" in (tmp_path / "a" / "sweep.md").read_text()  # mean ± sd over the 2 seeds
    assert all(Path(f).stat().st_size > 5000 for f in res["figures"])
    st = stats_table(out, ["test/err"], out=tmp_path / "b")
    errs = [summary["members"][i]["test/acc"] for i in (2, 3)]
    g40 = next(g for g in st["groups"] if g["model.width"] == 40)["test/err"]
    assert g40["n"] == 2 and g40["mean"] == pytest.approx(1 - np.mean(errs))
    c = compare(out, "test/err", ["model.width=40"], ["model.width=4"], out=tmp_path / "c")
    assert c["n_a"] == c["n_b"] == 2 and Path(c["figure"]).is_file()
    assert main(["compare", str(out), "--metric", "test/err", "--a", "model.width=40", "--b", "model.width=4",
                 "--out", str(tmp_path / "d")]) == 0
    assert "Welch's t-test" in capsys.readouterr().out
    assert main(["stats", str(out), "--metric", "test/nothing", "--out", str(tmp_path / "e")]) == 2


@pytest.mark.slow
def test_full_notebook_protocol_shows_double_descent(tmp_path):
    """The full protocol (28 widths x 3 seeds x 1000 epochs; about 15-30 minutes on 2 idle cores)."""
    from whylearn.experiment import run

    s = run(compose(["experiment=double_descent_mnist1d", "logger=csv"], tmp_path))
    assert s["ensemble/members"] == 84 and s["epochs"] == 1000
    assert s["double_descent/threshold_x"] is not None
    assert s["double_descent/peak_minus_first"] > 0.03  # a bump at the threshold
    assert s["double_descent/second_min"] < s["double_descent/peak"] - 0.03  # and a second descent


def test_members_reach_wandb_as_keys_and_a_table(tmp_path):
    from whylearn.experiment import run

    s = run(compose(["experiment=double_descent_mnist1d", "ensemble.grid.model.width=[4,8]", "ensemble.grid.seed=[0]",
                     "trainer.max_steps=3", "threads=1", "logger=wandb"], tmp_path))
    tables = list(Path(s["run_dir"]).rglob("members_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["label", "model.width", "seed"] and [r[0] for r in table["data"]] == ["width4_seed0",
                                                                                                       "width8_seed0"]
    assert table["data"][1][table["columns"].index("test/acc")] == pytest.approx(s["test/acc/width8_seed0"])


def _bench_sweep():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_sweep", Path(__file__).resolve().parents[2] / "scripts" / "bench_sweep.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_sweep_times_the_fast_loop():
    """scripts/bench_sweep.py's clock callback must not make the timed fits fall back to Lightning's own
    loop (it did: an on_train_batch_end without whylearn_batch_hooks), or it times another loop than
    whylearn-train runs."""
    from whylearn.tasks.base import FastTask
    from whylearn.tasks.loop import lightning_loop_reasons

    bench = _bench_sweep()
    task = EnsembleClassificationTask(_mlp(), 10, partial(torch.optim.SGD, **BASE_OPT), seeds=2)
    assert lightning_loop_reasons(bench._trainer(10, bench.SteadyClock()), task, FastTask) == []
    reasons = lightning_loop_reasons(bench._trainer(10, bench.LightningLoopClock()), task, FastTask)
    assert reasons and "LightningLoopClock" in reasons[0]  # the comparison row: Lightning's own loop, named


def test_bench_sweep_times_one_step_function_for_every_path():
    """scripts/bench_sweep.py's timed step (sgd_step: every timing of --ablation and --efficiency) trains the members:
    the fused loss and autograd through the ensemble take the same steps, torch's fused and foreach SGD alike; and
    cpu_s_per_call calls the function n times."""
    bench = _bench_sweep()
    x, y = torch.randn(4, 100, 40), torch.randint(0, 10, (4, 100))
    params = []
    for fused_loss, fused_sgd in ((True, True), (False, True), (True, False), (False, False)):
        ens = MemberEnsemble(bench.seeded_members([4, 8], [0, 1]), layout="exact")
        before = [p.detach().clone() for p in ens.parameters()]
        step = bench.sgd_step(ens, x, y, fused_loss=fused_loss, fused_sgd=fused_sgd)
        for _ in range(3):
            step()
        params.append([p.detach() for p in ens.parameters()])
        assert not any(torch.equal(a, b) for a, b in zip(before, params[-1], strict=True))
    for other in params[1:]:
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params[0], other, strict=True))
    calls = []
    assert bench.cpu_s_per_call(lambda: calls.append(1), 7) >= 0 and len(calls) == 7


def test_bench_sweep_efficiency_levels_and_bound():
    """--efficiency's table: every level timed; the bound row is matmuls plus the optimizer step alone."""
    bench = _bench_sweep()
    threads = torch.get_num_threads()
    try:
        res = bench.efficiency([6, 8], [0], steps=2, rounds=1, gemm_n=64, lightning_steps=0)
    finally:
        torch.set_num_threads(threads)
    rows = {r["level"]: r for r in res["rows"]}
    assert list(rows) == ["matmuls", "kernels", "optimizer", "bound: matmuls + optimizer", "step"]
    assert rows["bound: matmuls + optimizer"]["cpu_ms_per_step"] == pytest.approx(
        rows["matmuls"]["cpu_ms_per_step"] + rows["optimizer"]["cpu_ms_per_step"])
    assert rows["optimizer"]["fraction_of_peak"] is None and rows["step"]["fraction_of_peak"] > 0

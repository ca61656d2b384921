"""Catastrophic forgetting (McCloskey & Cohen 1989; Kirkpatrick et al. 2017): task sequences, the Fisher
diagonal of EWC, its penalty, the rehearsal buffer, and the outcome on a reduced benchmark."""

from __future__ import annotations

import functools
import json
import logging

import pytest
import torch
import torch.nn.functional as F

from whylearn.analysis.fisher import fisher_diagonal
from whylearn.data.base import Split
from whylearn.data.continual import permuted_tasks, split_tasks
from whylearn.models import MLP
from whylearn.tasks.continual import ContinualClassificationTask


def _per_sample_grads(model, x, y, allowed=None):
    """Squared gradients of log p(y_n | x_n), one sample at a time with plain autograd: (N, ...) per parameter."""
    out = {n: [] for n, _ in model.named_parameters()}
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        logits = model(xi[None])
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        F.log_softmax(logits, -1)[0, yi].backward()
        for n, p in model.named_parameters():
            out[n].append(p.grad.detach().clone() ** 2)
    return {n: torch.stack(v) for n, v in out.items()}


def test_fisher_diagonal_matches_autograd_one_sample_at_a_time():
    torch.manual_seed(0)
    model = MLP(5, 3, hidden=[4])
    x, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    emp = fisher_diagonal(model, x, y, labels="empirical", batch_size=7)
    ref = _per_sample_grads(model, x, y)
    for n in ref:
        torch.testing.assert_close(emp[n], ref[n].mean(0), rtol=1e-5, atol=1e-7)
    # the true Fisher: E over y ~ p(y|x); exact by enumerating the 3 classes, vs labels drawn from the model
    with torch.no_grad():
        probs = F.softmax(model(x), -1)
    per_class = [_per_sample_grads(model, x, torch.full((30,), c)) for c in range(3)]
    exact = {n: sum(probs[:, c].reshape(-1, *[1] * (per_class[c][n].ndim - 1)) * per_class[c][n] for c in range(3)).mean(0)
             for n in ref}
    sampled = fisher_diagonal(model, x.repeat(400, 1), generator=torch.Generator().manual_seed(1))
    for n in ref:
        torch.testing.assert_close(sampled[n], exact[n], rtol=0.1, atol=1e-4)
    with pytest.raises(ValueError, match="allowed"):
        fisher_diagonal(model, x, labels="observed")
    with pytest.raises(ValueError, match="needs the data's labels"):
        fisher_diagonal(model, x, labels="empirical")


def test_fisher_of_a_task_head_ignores_the_other_classes():
    torch.manual_seed(0)
    model = MLP(5, 4, hidden=[])  # one linear layer: row c of the weight serves class c
    allowed = torch.tensor([True, True, False, False])
    fisher = fisher_diagonal(model, torch.randn(50, 5), allowed=allowed)
    w = fisher["net.0.weight"]
    assert (w[2:] == 0).all() and (w[:2] > 0).all()  # masked classes' weights carry no information


def test_permuted_and_split_task_sequences():
    x, y = torch.randn(100, 12), torch.arange(100) % 10
    xt, yt = torch.randn(40, 12), torch.arange(40) % 10
    tasks = permuted_tasks(Split(x, y), Split(xt, yt), 3, seed=0)
    assert len(tasks) == 3 and all(torch.equal(t.train.y, y) for t in tasks)
    for t in tasks:  # one fixed permutation per task, the same for train and test
        perm = [int((x - t.train.x[:, [j]]).abs().sum(0).argmin()) for j in range(12)]
        assert sorted(perm) == list(range(12))
        assert torch.equal(xt[:, perm], t.test.x)
    assert not torch.equal(tasks[0].train.x, tasks[1].train.x)
    with pytest.raises(ValueError, match="flat inputs"):
        permuted_tasks(Split(x.view(100, 3, 4), y), Split(xt.view(40, 3, 4), yt), 2)
    split = split_tasks(Split(x, y), Split(xt, yt), classes_per_task=2)
    assert [t.classes for t in split] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert all(set(t.train.y.tolist()) == set(t.classes) for t in split) and sum(len(t.train) for t in split) == 100
    with pytest.raises(ValueError, match="must divide"):
        split_tasks(Split(x, y), Split(xt, yt), classes_per_task=3)


def test_merged_penalty_has_the_gradient_of_eq3_summed_over_tasks():
    torch.manual_seed(0)
    model = MLP(6, 3, hidden=[5])
    task = ContinualClassificationTask(model, 3, functools.partial(torch.optim.SGD, lr=0.1), ewc_lambda=3.0, l2_lambda=0.5)
    anchors = []
    for _ in range(3):  # three finished tasks, each with its own theta* and Fisher
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        theta = {n: p.detach().clone() for n, p in model.named_parameters()}
        fisher = {n: torch.rand_like(p) for n, p in theta.items()}
        anchors.append((theta, fisher))
        task.anchors.append((theta, fisher))
        for n, th in theta.items():
            w_new = 3.0 * fisher[n] + 0.5
            if n in task.quadratic:
                w_old, c_old = task.quadratic[n]
                task.quadratic[n] = (w_old + w_new, (w_old * c_old + w_new * th) / (w_old + w_new))
            else:
                task.quadratic[n] = (w_new, th)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    merged = torch.autograd.grad(task.penalty(), list(model.parameters()))
    explicit = sum((0.5 * (3.0 * f[n] + 0.5) * (p - th[n]) ** 2).sum() for th, f in anchors
                   for n, p in model.named_parameters())
    direct = torch.autograd.grad(explicit, list(model.parameters()))
    for a, b in zip(merged, direct, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=">= 0"):
        ContinualClassificationTask(model, 3, functools.partial(torch.optim.SGD, lr=0.1), ewc_lambda=-1.0)


def test_heads_of_the_task_and_class_incremental_scenarios():
    masks = [torch.tensor([True, True, False, False]), torch.tensor([True, True, True, True])]
    opt = functools.partial(torch.optim.SGD, lr=0.1)
    own = ContinualClassificationTask(MLP(3, 4, hidden=[]), 4, opt, allowed=masks, own_heads=True)
    shared = ContinualClassificationTask(MLP(3, 4, hidden=[]), 4, opt, allowed=masks, own_heads=False)
    for t in (own, shared):
        t.start_task(1, seed=0)
    ids = torch.tensor([0, 1])
    assert torch.equal(own.allowed(ids), torch.stack(masks))  # each sample with its own task's classes
    assert torch.equal(shared.allowed(ids), masks[1])  # every sample with the classes seen so far
    assert ContinualClassificationTask(MLP(3, 4, hidden=[]), 4, opt).allowed(0) is None  # permuted: all classes


def test_plain_sgd_forgets_ewc_and_replay_keep_it(make_cfg, tmp_path, caplog):
    """Reduced benchmark (split MNIST-1D, task-incremental, 5 tasks of 300 steps, 1 seed): plain SGD loses
    accuracy on the earlier tasks as the later ones are trained; EWC and a 50-example-per-task rehearsal
    buffer keep most of it."""
    from whylearn.experiment import run

    caplog.set_level(logging.WARNING, logger="whylearn")
    cfg = make_cfg(["experiment=forgetting_split_mnist1d", "logger=csv", "study.steps_per_task=300", "study.eval_every=100",
                    "study.seeds=1", "~study.methods.l2"])
    assert run(cfg)["status"] == "completed"
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["sgd/task1_after_task1"] > 0.9  # it learned task 1 (0 vs 1) ...
    assert s["sgd/avg_forgetting"] > 0.05  # ... and the early tasks lose accuracy to the later ones
    for kept in ("ewc", "replay"):
        assert s[f"{kept}/avg_forgetting"] < 0.5 * s["sgd/avg_forgetting"], kept
        assert s[f"{kept}/task1_final"] > s["sgd/task1_final"] + 0.03, kept
    assert (tmp_path / "run" / "figures" / "forgetting_split.png").is_file()
    assert (tmp_path / "run" / "runs" / "ewc_seed0" / "summary.json").is_file()
    # each task is a new fit, not a resume: no warning about skipping the rest of a chunk (300 steps per task
    # end inside a chunk of the 8-step epochs)
    assert not [r for r in caplog.records if "inside a chunk" in r.getMessage()]


def test_permuted_mnist_sgd_forgets_task_a_ewc_keeps_it(make_cfg, tmp_path, shared_data):
    """Reduced permuted MNIST (3 tasks of 200 steps, 1 seed, SGD and EWC only): plain SGD's accuracy on task A
    falls once B and C are trained (0.074 when written); EWC keeps it (0.015) (Kirkpatrick et al. 2017, Fig. 2A)."""
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=forgetting_permuted_mnist", "logger=csv", f"paths.data_dir={shared_data}",
                    "study.steps_per_task=200", "study.eval_every=200", "study.eval_size=1000", "study.seeds=1",
                    "study.fisher_samples=200",
                    "~study.methods.l2", "~study.methods.replay"])
    assert run(cfg)["status"] == "completed"
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["sgd/task1_after_task1"] > 0.85  # it learned task A ...
    assert s["sgd/forgetting_task1"] > 0.04  # ... and lost part of it to B and C
    assert s["ewc/forgetting_task1"] < 0.5 * s["sgd/forgetting_task1"]
    assert s["ewc/last_task_final"] > 0.8  # EWC still learns task C


def test_bad_study_arguments_are_refused(make_cfg):
    from whylearn.experiment import run

    with pytest.raises(Exception, match="scenario 'task' does not fit benchmark 'permuted'"):
        run(make_cfg(["experiment=forgetting_split_mnist1d", "logger=csv", "study.benchmark=permuted"]))
    with pytest.raises(Exception, match=r"method 'x' has unknown keys \['lambda'\]"):
        run(make_cfg(["experiment=forgetting_split_mnist1d", "logger=csv", "+study.methods.x={lambda: 1.0}"]))


def _check_reference(cfg, summary):
    from whylearn import reference

    block = reference.evaluate(reference.from_config(cfg), summary)
    if isinstance(block, list):
        assert all(e["verdict"] == "pass" for e in block), block


@pytest.mark.slow
def test_split_mnist1d_full_run_forgets_with_sgd_only(make_cfg, tmp_path):
    """The documented split MNIST-1D run (3 seeds, about 3 minutes)."""
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=forgetting_split_mnist1d", "logger=csv"])
    assert run(cfg)["status"] == "completed"
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["sgd/avg_forgetting"] > 0.1 and s["sgd/avg_final"] < 0.8
    for kept in ("ewc", "replay"):
        assert s[f"{kept}/avg_forgetting"] < 0.05 and s[f"{kept}/avg_final"] > s["sgd/avg_final"] + 0.08
    assert s["l2/avg_forgetting"] < s["sgd/avg_forgetting"]


@pytest.mark.slow
def test_permuted_mnist_full_run_reproduces_fig_2a(make_cfg, tmp_path, shared_data):
    """The documented permuted MNIST run (3 seeds, about 10 minutes): both reference entries pass."""
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=forgetting_permuted_mnist", "logger=csv", f"paths.data_dir={shared_data}"])
    assert run(cfg)["status"] == "completed"
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    _check_reference(cfg, s)
    assert s["sgd/forgetting_task1"] > 0.1 and s["ewc/forgetting_task1"] < 0.02 and s["replay/forgetting_task1"] < 0.05
    assert s["l2/last_task_final"] > 0.9  # every method still learns the last task

"""Chunking is invisible: every Lightning feature gives the same result with the default steps_per_chunk,
with steps_per_chunk=1, and in Lightning's own loop (automatic optimization, one mini-batch per batch).

Each case trains the same small classifier (Blobs: 240 training samples, batch 10, 24 steps an epoch, 2
epochs; K=5 makes chunks of 5, 5, 5, 5, 4) three ways and compares, exactly (CPU floats): the final
parameters, every logged (step, key, value), the hook calls and the checkpoint files. Where the fast loop
cannot honour a feature it must say so and run Lightning's loop; where it can, it must have run the fast
loop. Each case also checks the feature's meaning on its own (e.g. a checkpoint every 10 steps exists at
steps 10, 20, 30, 40), so that a loop that is wrong the same way for every K still fails.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning_probe import (
    STEP_HOOKS,
    BatchCounter,
    DeclaredBatchCounter,
    ModuleHookTask,
    StepHookCounter,
    fit,
    make_task,
    same_params,
)

K = 5
STEPS = 48  # 2 epochs of 24 steps


class ForceLightningLoop(Callback):
    """A user callback with a per-batch hook: its fit runs Lightning's own loop (the reference)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pass


def three_ways(tmp_path: Path, make_callbacks=list, make_task_=make_task, **kw):
    """Fit with K=5, with K=1 and in Lightning's own loop; return the three results."""
    out = {}
    for arm, k, extra in (("chunks", K, []), ("k1", 1, []), ("lightning", K, [ForceLightningLoop()])):
        out[arm] = fit(tmp_path / arm, k, callbacks=make_callbacks() + extra, task=make_task_(), **kw)
    return out


def three_ways_recorded(tmp_path: Path, recorder: type[Callback], **kw) -> tuple[dict, list[Callback]]:
    """:func:`three_ways` with a fresh ``recorder`` callback in each fit: the three results and the three recorders
    (chunks, k1, lightning: the order of the fits)."""
    made: list[Callback] = []

    def callbacks() -> list[Callback]:
        made.append(recorder())
        return [made[-1]]

    return three_ways(tmp_path, callbacks, **kw), made


def assert_each_step_seen_once(made: list) -> None:
    """Batch-hook recorders (chunks, k1, lightning): called once per optimizer step with that step's mini-batch,
    in the same order in the three fits."""
    assert [s for h, s, _, _ in made[0].calls if h == "end"] == list(range(1, STEPS + 1))
    assert [i for h, _, i, _ in made[0].calls if h == "start"] == list(range(24)) * 2  # batch_idx in the epoch
    assert {b for *_, b in made[0].calls} == {10}  # each call sees one mini-batch
    assert made[0].calls == made[1].calls == made[2].calls


def assert_same(runs: dict, skip_keys: tuple[str, ...] = ()) -> None:
    """The three ways agree exactly (checked after each test's own checks of the feature's meaning)."""
    ref = runs["lightning"]
    assert ref["task"].automatic_optimization  # the reference really is Lightning's loop
    for arm in ("chunks", "k1"):
        r = runs[arm]
        assert r["steps"] == ref["steps"], (arm, r["steps"], ref["steps"])
        assert same_params(r["params"], ref["params"]), f"{arm}: parameters differ from Lightning's loop"
        got, want = r["recorder"].triples(skip_keys), ref["recorder"].triples(skip_keys)
        assert got == want, f"{arm}: logged rows differ, first: {sorted(set(got) ^ set(want))[:6]}"


def logged(run: dict, key: str) -> dict[int, float]:
    return {s: m[key] for s, m in run["recorder"].rows if key in m}


# -- natively in the fast loop ------------------------------------------------------------------------
def test_plain_fit_same_parameters_and_rows(tmp_path):
    runs = three_ways(tmp_path)
    assert sorted(logged(runs["chunks"], "train/loss")) == list(range(1, STEPS + 1))
    assert not runs["chunks"]["task"].automatic_optimization  # the fast loop ran
    assert_same(runs)


def test_per_step_hooks_of_callbacks_and_module_once_per_step(tmp_path):
    runs, (chunks, k1, ref) = three_ways_recorded(tmp_path, StepHookCounter, make_task_=lambda: make_task(ModuleHookTask))
    for hook in STEP_HOOKS:  # once per optimizer step, each seeing the steps taken before it
        assert [s for h, s in chunks.calls if h == hook] == list(range(STEPS)), hook
        assert runs["chunks"]["task"].module_calls[hook] == STEPS, hook
    assert chunks.calls == k1.calls == ref.calls  # the same order, hook by hook
    assert not runs["chunks"]["task"].automatic_optimization
    assert_same(runs)


def test_logged_lr_is_the_lr_of_that_step_under_cosine(tmp_path):
    def task():
        return make_task(scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS))

    runs = three_ways(tmp_path, make_task_=task)
    lr = logged(runs["chunks"], "lr")
    want = {s: 0.025 * (1 + math.cos(math.pi * (s - 1) / STEPS)) for s in range(1, STEPS + 1)}
    assert len(set(lr.values())) == STEPS
    assert all(math.isclose(lr[s], want[s], rel_tol=1e-6, abs_tol=1e-9) for s in want)
    assert_same(runs)


def test_learning_rate_monitor_logs_every_optimizer_step(tmp_path):
    def task():
        return make_task(scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS))

    runs = three_ways(tmp_path, lambda: [LearningRateMonitor(logging_interval="step")], task)
    monitor, ours = logged(runs["chunks"], "lr-SGD"), logged(runs["chunks"], "lr")
    # Lightning's rows use the steps taken before the step (0, 1, ...), whylearn's the steps after it
    assert sorted(monitor) == list(range(STEPS))
    assert all(monitor[s] == ours[s + 1] for s in monitor)
    assert not runs["chunks"]["task"].automatic_optimization  # honoured natively: called at every step
    assert_same(runs)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed-scaler", "64-true"])
def test_precision_plugins(tmp_path, precision):
    from lightning.pytorch.plugins import MixedPrecision

    plugins = []

    def kw():
        if precision != "16-mixed-scaler":
            return {"precision": precision}
        plugins.append(MixedPrecision("16-mixed", "cpu"))  # what precision="16-mixed" builds on a GPU
        return {"plugins": [plugins[-1]]}

    runs = {}
    for arm, k, extra in (("chunks", K, []), ("k1", 1, []), ("lightning", K, [ForceLightningLoop()])):
        runs[arm] = fit(tmp_path / arm, k, callbacks=extra, task=make_task(dropout=0.0), **kw())
    if plugins:  # the scaler was used at every step, as in Lightning's loop: same scale, same growth
        states = [p.scaler.state_dict() for p in plugins]
        assert states[0]["scale"] != 65536.0 or states[0]["_growth_tracker"] == STEPS
        assert states[0] == states[1] == states[2]
    assert not runs["chunks"]["task"].automatic_optimization
    assert_same(runs)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_trainer_gradient_clipping_is_the_tasks_clipping(tmp_path, algorithm):
    runs = three_ways(tmp_path, gradient_clip_val=0.05, gradient_clip_algorithm=algorithm)
    assert not runs["chunks"]["task"].automatic_optimization  # honoured in the fast loop
    assert_same(runs)
    task_clip = fit(tmp_path / "task", K, task=make_task(gradient_clip_val=0.05, gradient_clip_algorithm=algorithm))
    assert same_params(task_clip["params"], runs["chunks"]["params"])
    no_clip = fit(tmp_path / "none", K)
    assert not same_params(no_clip["params"], runs["chunks"]["params"])  # the clipping did something
    assert runs["chunks"]["trainer"].gradient_clip_val == 0.05  # given back after the fit


def test_max_steps_inside_a_chunk(tmp_path):
    runs = three_ways(tmp_path, max_steps=13, max_epochs=-1)
    assert runs["chunks"]["steps"] == 13
    assert sorted(logged(runs["chunks"], "train/loss")) == list(range(1, 14))
    assert_same(runs)


def test_a_second_fit_of_the_same_task_does_not_warn_that_it_resumes_inside_a_chunk(tmp_path, caplog):
    """A fit cut inside a chunk (max_steps=13 with K=5) marks the task; a later fit of the same module from
    scratch (as the forgetting study does) restores no checkpoint and must not warn that it resumes inside a chunk."""
    task = make_task()
    first = fit(tmp_path / "first", K, task=task, max_steps=13, max_epochs=-1)
    assert first["steps"] == 13 and task._stopped_inside_chunk
    with caplog.at_level(logging.WARNING, logger="whylearn"):
        second = fit(tmp_path / "second", K, task=task, max_steps=10, max_epochs=-1)
    assert second["steps"] == 10
    assert "inside a chunk" not in caplog.text
    assert not task._stopped_inside_chunk  # (10 steps end at a chunk boundary)


def test_declared_per_step_callback_is_called_at_every_step_in_the_fast_loop(tmp_path):
    runs, made = three_ways_recorded(tmp_path, DeclaredBatchCounter)
    assert_each_step_seen_once(made)
    assert not runs["chunks"]["task"].automatic_optimization
    assert_same(runs)


# -- through Lightning's own loop, said in one log line ------------------------------------------------
def _fallback_line(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if "runs Lightning's own loop" in r.getMessage()]
    assert lines, "no log line said the fit runs Lightning's own loop"
    return lines[0]


@pytest.mark.parametrize("every", [10])
def test_checkpoint_every_n_train_steps(tmp_path, caplog, every):
    caplog.set_level(logging.INFO, logger="whylearn")
    files = {}
    for arm, k in (("chunks", K), ("k1", 1)):
        ckpt = ModelCheckpoint(dirpath=tmp_path / arm / "ckpt", every_n_train_steps=every, save_top_k=-1,
                               filename="{step}")
        fit(tmp_path / arm, k, callbacks=[ckpt])
        files[arm] = sorted(p.name for p in (tmp_path / arm / "ckpt").glob("*.ckpt"))
    assert files["chunks"] == files["k1"] == [f"step={s}.ckpt" for s in (10, 20, 30, 40)]
    assert "ModelCheckpoint(every_n_train_steps=10)" in _fallback_line(caplog)
    for name in files["chunks"]:  # the same weights in each file
        a = torch.load(tmp_path / "chunks" / "ckpt" / name, weights_only=False)["state_dict"]
        b = torch.load(tmp_path / "k1" / "ckpt" / name, weights_only=False)["state_dict"]
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_checkpoint_train_time_interval_saves(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="whylearn")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", train_time_interval=timedelta(seconds=0), save_top_k=-1,
                           filename="{step}")
    fit(tmp_path, K, callbacks=[ckpt])
    steps = sorted(int(p.stem.split("=")[1]) for p in (tmp_path / "ckpt").glob("step=*.ckpt"))
    assert steps == list(range(1, STEPS + 1))  # an interval of 0 s: after every optimizer step
    assert "train_time_interval" in _fallback_line(caplog)


def test_integer_val_check_interval_counts_steps(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="whylearn")
    runs = three_ways(tmp_path, val_check_interval=6)
    assert sorted(logged(runs["chunks"], "val/loss")) == [6, 12, 18, 24, 30, 36, 42, 48]
    assert "val_check_interval=6" in _fallback_line(caplog)
    assert_same(runs)


def test_integer_limit_train_batches_counts_steps(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="whylearn")
    runs = three_ways(tmp_path, limit_train_batches=7)
    assert runs["chunks"]["steps"] == 14
    assert sorted(logged(runs["chunks"], "train/loss_epoch")) == [7, 14]
    assert "limit_train_batches=7" in _fallback_line(caplog)
    assert_same(runs)


def test_user_callback_with_batch_hooks_sees_every_step(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="whylearn")
    runs, made = three_ways_recorded(tmp_path, BatchCounter)
    assert_each_step_seen_once(made)
    assert runs["chunks"]["task"].automatic_optimization  # Lightning's own loop ran
    assert "callback BatchCounter" in _fallback_line(caplog)
    assert_same(runs)


def test_accumulate_grad_batches_through_lightnings_loop(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="whylearn")
    runs = three_ways(tmp_path, accumulate_grad_batches=2)
    assert runs["chunks"]["steps"] == STEPS // 2
    assert "accumulate_grad_batches=2" in _fallback_line(caplog)
    assert_same(runs)


# -- batches that are not chunks -------------------------------------------------------------------------
def test_plain_dataloader_is_one_step_per_batch(tmp_path):
    import lightning as L
    import torch.nn.functional as F
    from lightning_probe import Blobs
    from torch.utils.data import DataLoader, TensorDataset

    dm = Blobs()
    dm.setup()
    loader = DataLoader(TensorDataset(dm.train.x, dm.train.y), batch_size=10)
    task = make_task(dropout=0.0)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(task, train_dataloaders=loader)
    assert trainer.global_step == 2 * len(loader) == STEPS
    # the same as a plain PyTorch loop over the same batches
    ref = make_task(dropout=0.0).model
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        for x, y in loader:
            loss = F.cross_entropy(ref(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), task.model.parameters(), strict=True))


def test_a_batch_that_is_neither_names_what_the_task_expects(tmp_path):
    import lightning as L

    class Dicts(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {"x": torch.zeros(4, 8), "y": torch.zeros(4, dtype=torch.long)}

    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    with pytest.raises(TypeError, match=r"dict with keys \['x', 'y'\].*Chunk\(xs, ys\).*DataLoader\(TensorDataset"):
        trainer.fit(make_task(), train_dataloaders=torch.utils.data.DataLoader(Dicts(), batch_size=None))


# -- one home for Lightning's internals ----------------------------------------------------------------
def test_every_lightning_internal_the_loop_uses_exists():
    """Fails loudly, naming each one, if a Lightning or torchmetrics upgrade moves a private internal."""
    from whylearn.tasks.loop import LightningInternals

    assert LightningInternals.check() == []


def test_tasks_callbacks_and_analysis_import_logging_from_the_logging_layer():
    import ast

    src = Path(__file__).resolve().parents[2] / "src" / "whylearn"
    offenders = []
    for folder in ("callbacks", "analysis"):
        for path in (src / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("whylearn.tasks"):
                    names = {a.name for a in node.names}
                    if names & {"History", "get_history", "log_scalars", "flush_logs", "count_steps"}:
                        offenders.append(f"{path.name}: from {node.module} import {sorted(names)}")
    assert not offenders
    from whylearn.loggers import History, get_history, log_scalars
    from whylearn.tasks import History as H2
    from whylearn.tasks import get_history as g2
    from whylearn.tasks import log_scalars as l2

    assert (History, get_history, log_scalars) == (H2, g2, l2)  # still importable from whylearn.tasks


# -- 2-process CPU DDP (gloo): hooks and precision -----------------------------------------------------
def test_ddp_hooks_once_per_step_and_fp16_scaler(tmp_path):
    """One DDP job (tests/tasks/lightning_probe.py launched as a script, which Lightning starts twice): the per-step
    hooks of callbacks and of the module once per optimizer step on each rank, and fp16 mixed precision with
    a GradScaler trains with finite losses to the parameters of one process with the same global batch."""
    import json
    import os
    import subprocess
    import sys

    probe = Path(__file__).with_name("lightning_probe.py")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    done = subprocess.run([sys.executable, str(probe), str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for res in ranks:
        hooks = res["hooks"]
        assert hooks["steps"] == STEPS
        assert hooks["callback"] == {h: STEPS for h in STEP_HOOKS}
        assert hooks["module"] == {h: STEPS for h in STEP_HOOKS}
        assert hooks["steps_at_calls"] == list(range(STEPS))
        fp16 = res["fp16"]
        assert fp16["steps"] == STEPS and fp16["losses_finite"]
    assert ranks[0]["fp16"]["params"] == ranks[1]["fp16"]["params"]  # the ranks agree
    assert ranks[0]["fp16"]["n_losses"] == STEPS  # rank 0 logs every step
    # one process with the global batch (2 x 5 = 10) and the same scaler ends where DDP ends, up to fp16 rounding:
    # the distance between them is small next to the distance both travelled from the initialization
    from lightning.pytorch.plugins import MixedPrecision

    one = fit(tmp_path / "one", K, task=make_task(dropout=0.0), plugins=[MixedPrecision("16-mixed", "cpu")])
    init = dict(make_task(dropout=0.0).named_parameters())
    flat = [torch.cat([t.flatten() for t in ts]) for ts in (
        [torch.tensor(v) for v in ranks[0]["fp16"]["params"].values()], list(one["params"].values()),
        [init[n].detach() for n in one["params"]])]
    ddp, single, start = flat
    assert (ddp - single).norm() < 0.1 * (single - start).norm()


# -- task.compile --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["eager", pytest.param("aot_eager", marks=pytest.mark.slow),
                                     pytest.param(True, marks=pytest.mark.slow)])
def test_compile_trains_like_eager(tmp_path, backend):
    """task.compile: torch.compile of the model. The default suite uses the ``eager`` backend (TorchDynamo's
    graph capture, seconds); ``aot_eager`` (plus AOTAutograd) and ``True`` (TorchInductor, C++ code generation:
    about a minute for this MLP on a loaded CPU) are marked slow."""
    eager = fit(tmp_path / "eager", K, task=make_task(dropout=0.0))
    compiled = fit(tmp_path / "compiled", K, task=make_task(dropout=0.0, compile=backend))
    assert compiled["task"]._compiled
    assert compiled["params"].keys() == eager["params"].keys()  # nn.Module.compile: the same names in checkpoints
    for name, value in eager["params"].items():
        assert torch.allclose(compiled["params"][name], value, rtol=1e-4, atol=1e-5), name
    with pytest.raises(ValueError, match="unknown torch.compile backend compile='inductr'; allowed: .*inductor"):
        make_task(compile="inductr")

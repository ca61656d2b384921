"""The language-model task end to end: whylearn-train on a small text, no-decay groups, whylearn-sample."""

from __future__ import annotations

import json
import math

import torch

from whylearn.models import GPT
from whylearn.tasks.language_model import LanguageModelTask, split_decay

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n") * 40


def test_no_decay_groups_cover_every_parameter_once():
    model = GPT(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16)
    decay, no_decay = split_decay(model)
    ids = [id(p) for p in decay + no_decay]
    assert len(ids) == len(set(ids)) == len({id(p) for p in model.parameters()})
    assert all(p.ndim == 2 for p in decay)  # linear weights only
    nd = {id(p) for p in no_decay}
    assert id(model.wte.weight) in nd and id(model.wpe.weight) in nd  # embeddings (tied head) not decayed
    assert all(p.ndim == 1 for p in no_decay if p is not model.wte.weight and p is not model.wpe.weight)
    task = LanguageModelTask(model, optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1))
    opt = task.configure_optimizers()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_train_text_end_to_end_then_sample(make_cfg, tmp_path, capsys):
    from whylearn.cli.sample import main as sample_main
    from whylearn.experiment import run

    path = tmp_path / "input.txt"
    path.write_text(TEXT)
    cfg = make_cfg([
        "experiment=shakespeare_char_cpu", f"data.path={path}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.block_size=16", "data.batch_size=8", "data.steps_per_epoch=60", "data.steps_per_chunk=20",
        "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "trainer.max_steps=120",
        "scheduler.warmup_steps=10", "optimizer.lr=0.01", "task.log_every_n_steps=20", "task.sample_tokens=20",
        "logger=csv", "callbacks.attention_maps.prompt=To be",
    ])
    summary = run(cfg)
    out = tmp_path / "run"
    assert summary["status"] == "completed" and summary["steps"] == 120
    V = summary["vocab_size"]
    assert summary["val/loss"] < math.log(V) - 1.0  # learned well below the uniform guess
    assert abs(summary["val/bits_per_char"] - summary["val/loss"] / math.log(2)) < 1e-9  # char tokens
    assert summary["tokens_per_s"] > 0 and len(summary["sample"]) == 21  # prompt "\n" + 20 tokens
    assert (out / "figures" / "attention.png").is_file() and (out / "figures" / "loss.png").is_file()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["val/loss"] == summary["val/loss"]
    # scripts/eval_val_windows.py: every validation window (here fewer than the 240 of the config, so the
    # run's own validation used all of them too) -> the same loss as the run's summary
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "eval_val_windows", Path(__file__).resolve().parents[2] / "scripts" / "eval_val_windows.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    res = ev.evaluate_run(str(out))
    assert res["global_step"] == 120 and res["windows"] == summary["val_windows"] < 240
    assert abs(res["val_loss_all_windows"] - summary["val/loss"]) < 1e-5
    assert res["predicted_tokens"] == res["windows"] * 16 and res["window_loss_sd"] > 0
    sample_main([str(out), "--prompt", "To be", "--max-new-tokens", "30", "--seed", "1"])
    printed = capsys.readouterr().out
    assert printed.startswith("To be") and len(printed.rstrip("\n")) >= 30


def test_grokking_config_trains_through_whylearn_train(make_cfg, tmp_path):
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=grokking", "data.p=23", "data.steps_per_chunk=50", "trainer.max_steps=200",
                    "logger=csv", "callbacks.attention_maps.prompt=[3,5,23]"])
    summary = run(cfg)
    out = tmp_path / "run"
    assert summary["status"] == "completed" and summary["train/acc"] == 1.0  # memorized its 30%
    assert summary["weights/l2_total"] > 0
    for name in ("grokking_accuracy", "grokking_weight_norm", "attention"):
        assert (out / "figures" / f"{name}.png").is_file(), name


import pytest  # noqa: E402

# small models on a shared 2-core machine: one intra-op thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_device_peak_flops_unknown_on_cpu():
    from whylearn.tasks.language_model import device_peak_flops

    assert device_peak_flops(torch.device("cpu"), "32-true") is None


def test_decay_embeddings_follows_nanogpts_rule():
    """decay_embeddings=True decays exactly the parameters with dim >= 2 (nanoGPT's configure_optimizers):
    every linear weight, the tied token embedding / output layer and the position embedding."""
    model = GPT(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=False)
    decay, no_decay = split_decay(model, decay_embeddings=True)
    params = {id(p): p for p in model.parameters()}
    assert {id(p) for p in decay} == {i for i, p in params.items() if p.ndim >= 2}
    assert {id(p) for p in no_decay} == {i for i, p in params.items() if p.ndim < 2}  # LayerNorm gains
    assert any(p is model.wte.weight for p in decay) and any(p is model.wpe.weight for p in decay)
    assert model.lm_head.weight is model.wte.weight  # the tied head is decayed with it, once
    default_decay, _ = split_decay(model)
    assert len(decay) == len(default_decay) + 2  # the default leaves out exactly the two embeddings
    task = LanguageModelTask(model, optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1),
                             decay_embeddings=True)
    opt = task.configure_optimizers()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert any(p is model.wte.weight for p in opt.param_groups[0]["params"])


def test_warmup_cosine_nanogpt_style_and_errors():
    import pytest

    from whylearn.optim import warmup_cosine

    def lrs(style, steps=2001):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        sched = warmup_cosine(opt, total_steps=2000, warmup_steps=100, min_lr_ratio=0.1, warmup_style=style)
        out = []
        for _ in range(steps):  # the LR used by step t, t = 0..2000
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    nano, lin = lrs("nanogpt"), lrs("linear")
    # nanoGPT's get_lr: lr (t+1)/(W+1) while t < W, then min + (max - min)(1 + cos(pi (t-W)/(D-W)))/2
    assert math.isclose(nano[0], 1e-3 / 101) and math.isclose(nano[99], 1e-3 * 100 / 101)
    assert math.isclose(lin[0], 1e-3 / 100) and math.isclose(lin[99], 1e-3)
    assert math.isclose(nano[100], 1e-3) and math.isclose(nano[1050], 1e-4 + 0.5 * 9e-4)
    assert math.isclose(nano[2000], 1e-4) and nano[100:] == lin[100:]
    with pytest.raises(ValueError, match="warmup_style 'cosine'.*nanogpt"):
        warmup_cosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 10, warmup_style="cosine")


def test_shakespeare_char_cpu_builds_nanogpts_optimizer_and_schedule(make_cfg, tmp_path):
    """The nanoGPT configs build nanoGPT's recipe: embeddings decayed, AdamW (0.9, 0.99) wd 0.1, warm-up
    lr (t+1)/101 over 100 steps, cosine to 1e-4 at step 2000."""
    from whylearn import build

    path = tmp_path / "input.txt"
    path.write_text(TEXT)
    cfg = make_cfg(["experiment=shakespeare_char_cpu", f"data.path={path}", f"data.cache_dir={tmp_path / 'cache'}",
                    "data.block_size=16"])
    dm = build.build_datamodule(cfg)
    model = build.build_model(cfg, dm)
    task = build.build_task(cfg, model, dm)
    conf = task.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    decayed = opt.param_groups[0]
    assert decayed["weight_decay"] == 0.1 and decayed["betas"] == (0.9, 0.99)
    assert any(p is model.wte.weight for p in decayed["params"]) and any(p is model.wpe.weight for p in decayed["params"])
    assert [sched.lr_lambdas[0](t) for t in (0, 99, 100)] == [1 / 101, 100 / 101, 1.0]
    assert math.isclose(sched.lr_lambdas[0](2000), 0.1)

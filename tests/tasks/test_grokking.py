"""Grokking as Nanda et al. 2023 set it up: their model, split, schedule and progress measures."""

from __future__ import annotations

import csv
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from whylearn.analysis import grokking as G
from whylearn.data.modular import ModularArithmeticDataModule, modular_table
from whylearn.models import GPT

pytestmark = pytest.mark.usefixtures("one_thread")

P = 113


def nanda_model(gpt: GPT) -> nn.Module:
    """Nanda et al.'s 1-layer Transformer (transformers.py: Embed, PosEmbed, Attention, MLP, Unembed with
    use_ln=False), written from their code, with its weights copied from a whylearn GPT (no LayerNorm)."""
    d, H = gpt.n_embd, gpt.n_head
    dh = d // H
    blk = gpt.blocks[0]
    Wq, Wk, Wv = blk.attn.c_attn.weight.detach().split(d, dim=0)  # (d, d) each: rows = head-major outputs

    class Nanda(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_E = gpt.wte.weight.detach().T                    # (d_model, d_vocab)
            self.W_pos = gpt.wpe.weight.detach()                    # (n_ctx, d_model)
            self.W_Q, self.W_K, self.W_V = (w.view(H, dh, d) for w in (Wq, Wk, Wv))  # (heads, d_head, d_model)
            self.W_O = blk.attn.c_proj.weight.detach()              # (d_model, d_head * heads)
            self.W_in, self.b_in = blk.mlp.c_fc.weight.detach(), blk.mlp.c_fc.bias.detach()
            self.W_out, self.b_out = blk.mlp.c_proj.weight.detach(), blk.mlp.c_proj.bias.detach()
            self.W_U = gpt.lm_head.weight.detach().T                # (d_model, p)

        def forward(self, x):
            h = torch.einsum("dbp -> bpd", self.W_E[:, x]) + self.W_pos[: x.shape[-1]]
            k = torch.einsum("ihd,bpd->biph", self.W_K, h)
            q = torch.einsum("ihd,bpd->biph", self.W_Q, h)
            v = torch.einsum("ihd,bpd->biph", self.W_V, h)
            scores = torch.einsum("biph,biqh->biqp", k, q)
            T = x.shape[-1]
            mask = torch.tril(torch.ones(T, T))
            scores = torch.tril(scores) - 1e10 * (1 - mask)
            attn = F.softmax(scores / math.sqrt(dh), dim=-1)
            z = torch.einsum("biph,biqp->biqh", v, attn)
            z = z.permute(0, 2, 1, 3).reshape(x.shape[0], T, H * dh)
            h = h + torch.einsum("df,bqf->bqd", self.W_O, z)
            m = F.relu(torch.einsum("md,bpd->bpm", self.W_in, h) + self.b_in)
            h = h + torch.einsum("dm,bpm->bpd", self.W_out, m) + self.b_out
            return h @ self.W_U

    return Nanda()


def nanda_gpt(**kw) -> GPT:
    return GPT(vocab_size=P + 1, block_size=3, n_layer=1, n_head=4, n_embd=128, d_mlp=512, norm="none",
               activation="relu", tie_weights=False, num_classes=P, last_token_only=True, init="nanda", bias=True,
               attn_bias=False, **kw)


def test_the_grokking_model_is_nandas_architecture():
    torch.manual_seed(0)
    gpt = nanda_gpt()
    assert gpt.blocks[0].attn.c_attn.bias is None and gpt.blocks[0].attn.c_proj.bias is None  # no attention biases
    assert gpt.blocks[0].mlp.c_fc.bias is not None and gpt.blocks[0].mlp.c_proj.bias is not None
    assert not [m for m in gpt.modules() if isinstance(m, nn.LayerNorm)]
    with torch.no_grad():  # biases non-zero so that they are compared too
        gpt.blocks[0].mlp.c_fc.bias.normal_()
        gpt.blocks[0].mlp.c_proj.bias.normal_()
    x, y, _ = modular_table(P, "+")
    seqs = torch.stack([x, y, torch.full_like(x, P)], 1)[::7]
    ref = nanda_model(gpt)(seqs)[:, -1]
    torch.testing.assert_close(gpt(seqs), ref, atol=2e-4, rtol=1e-4)


def test_the_grokking_model_has_nandas_initialization():
    torch.manual_seed(1)
    gpt = nanda_gpt()
    d = 128
    stds = {
        "token embedding": (gpt.wte.weight, 1 / math.sqrt(d)),
        "position embedding": (gpt.wpe.weight, 1 / math.sqrt(d)),
        "Q, K, V": (gpt.blocks[0].attn.c_attn.weight, 1 / math.sqrt(d)),
        "W_O": (gpt.blocks[0].attn.c_proj.weight, 1 / math.sqrt(d)),
        "MLP W_in": (gpt.blocks[0].mlp.c_fc.weight, 1 / math.sqrt(d)),
        "MLP W_out (randn / sqrt(d_model), not / sqrt(d_mlp))": (gpt.blocks[0].mlp.c_proj.weight, 1 / math.sqrt(d)),
        "unembedding (randn / sqrt(d_vocab))": (gpt.lm_head.weight, 1 / math.sqrt(P + 1)),
    }
    for name, (w, std) in stds.items():
        assert w.std().item() == pytest.approx(std, rel=0.05), name
        assert abs(w.mean().item()) < 0.1 * std, name
    assert float(gpt.blocks[0].mlp.c_fc.bias.detach().abs().max()) == 0.0


def test_nandas_split_and_warmup():
    dm = ModularArithmeticDataModule(p=P, train_fraction=0.3, split="nanda", seed=0)
    dm.setup()
    pairs = [(i, j, P) for i in range(P) for j in range(P)]  # their gen_train_test
    random.seed(0)
    random.shuffle(pairs)
    train = sorted(pairs[: int(0.3 * len(pairs))])
    assert len(dm.train) == 3830
    assert sorted(tuple(r) for r in dm.train.x.tolist()) == train
    assert len(dm.test) == P * P - 3830
    with pytest.raises(ValueError, match=r"unknown split 'nanada'; allowed: \['seeded', 'nanda'\]"):
        ModularArithmeticDataModule(p=P, split="nanada")
    # their LambdaLR(min(step / 10, 1)): the first step has learning rate 0
    from whylearn.optim import warmup_cosine

    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = warmup_cosine(opt, total_steps=100, warmup_steps=10, min_lr_ratio=1.0, warmup_style="nanda")
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-3 * min(t / 10, 1) for t in range(12)])


# -- the progress measures --------------------------------------------------------------------------------------------
def _fourier_logits(p: int, freqs, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, c = modular_table(p, "+")
    cs = torch.arange(p, dtype=torch.float64)
    s = (x + y).double()[:, None]
    logits = sum(scale * torch.cos(2 * math.pi * k * (s - cs[None]) / p) for k in freqs)
    return logits, c


def test_restricted_and_excluded_loss_on_a_pure_fourier_algorithm():
    p, freqs = 31, [3, 7, 11]
    logits, labels = _fourier_logits(p, freqs)
    idx = torch.arange(p * p)
    full = G.loss_on(logits, labels)
    # the logits are sums of cos(w (x + y - c)): keeping the key frequencies keeps everything
    assert G.loss_on(G.restricted_logits(logits, p, freqs), labels) == pytest.approx(full, rel=1e-9)
    # removing them leaves a constant: the loss of a uniform guess
    assert G.loss_on(G.excluded_logits(logits, p, freqs), labels) == pytest.approx(math.log(p), rel=1e-9)
    # restricted to other frequencies: nothing of the algorithm is left, only each answer's mean (uniform)
    assert G.loss_on(G.restricted_logits(logits, p, [1, 2]), labels) == pytest.approx(math.log(p), rel=1e-9)
    # logits without any Fourier structure: the key directions hold almost nothing of them
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(p * p, p, generator=g, dtype=torch.float64)
    m = G.progress_measures(noise, labels, idx[::2], idx[1::2], p, freqs)
    assert m["restricted_loss"] == pytest.approx(math.log(p), abs=0.05)
    assert m["excluded_loss"] == pytest.approx(G.loss_on(noise, labels, idx[::2]), rel=0.02)
    with pytest.raises(ValueError, match=r"shape \(p\^2, p\)"):
        G.restricted_logits(logits[:10], p, freqs)


def test_key_frequencies_of_a_fourier_embedding_and_gini():
    p = 113
    x = torch.arange(p, dtype=torch.float64)
    key = [14, 35, 41, 42, 52]  # Nanda et al.'s run
    g = torch.Generator().manual_seed(0)
    cols = [f(2 * math.pi * k * x / p) for k in key for f in (torch.cos, torch.sin)]
    W = torch.stack(cols, 1) @ torch.randn(len(cols), 128, generator=g, dtype=torch.float64)
    W = W + 0.02 * torch.randn(p, 128, generator=g, dtype=torch.float64)
    norms = G.embedding_fourier_norms(torch.cat([W, torch.randn(1, 128, dtype=torch.float64)]), p)  # + the "=" row
    assert norms.shape == (56,)
    assert sorted(G.key_frequencies(norms)) == key
    assert G.gini(norms) > 0.85
    assert sorted(G.key_frequencies(norms, fraction=0.1)) == key
    random_norms = G.embedding_fourier_norms(torch.randn(p, 128, generator=g), p)
    assert len(G.key_frequencies(random_norms, fraction=0.1, max_count=56)) > 40 and G.gini(random_norms) < 0.2
    assert G.gini(torch.ones(10)) == pytest.approx(0.0) and G.gini(torch.tensor([0.0] * 9 + [1.0])) == pytest.approx(0.9)


def test_phase_steps_read_from_series():
    steps = list(range(0, 20000, 100))
    test_loss = [min(5 + s / 100, 19) if s <= 1400 else max(19 - (s - 1400) / 600, 0.01) for s in steps]
    excluded = [0.01 + 5 * min(max(s - 1400, 0) / 8000, 1) for s in steps]
    acc = [0.01 if s < 12600 else 1.0 for s in steps]
    ph = G.phase_steps(steps, test_loss, excluded, acc)
    assert ph == {"memorization_end": 1400, "circuit_formation_end": 8600, "cleanup_end": 12600}
    assert G.phase_steps([], [], [], [])["cleanup_end"] is None


# -- in a run ------------------------------------------------------------------------------------------------------------
def test_grokking_run_logs_the_progress_measures(make_cfg, tmp_path):
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=grokking", "data.p=23", "data.train_fraction=0.5", "data.steps_per_chunk=50",
                    "trainer.max_steps=300", "logger=csv", "callbacks.attention_maps.prompt=[3,5,23]",
                    "callbacks.progress_measures.every_n_steps=50"])
    summary = run(cfg)
    out = tmp_path / "run"
    assert summary["grok/memorization_end_step"] is not None and summary["grok/num_key_frequencies"] >= 1
    assert len(summary["grok/key_frequencies"]) == summary["grok/num_key_frequencies"]
    rows = list(csv.DictReader(open(out / "csv" / "metrics.csv")))
    logged = {int(float(r["step"])) for r in rows if r.get("grok/excluded_loss")}
    assert logged == set(range(0, 301, 50))
    assert (out / "figures" / "progress_measures.png").stat().st_size > 20000
    ref = {e["quantity"]: e for e in json.loads((out / "summary.json").read_text())["reference"]}
    assert "grok/memorization_end_step" not in ref  # Nanda's phase steps are for 30% of the pairs only
    assert ref["test/acc"]["measured"] == summary["test/acc"]
    # the logged test loss is the loss of the model at that step: the last one equals the run's final test loss
    last = max((r for r in rows if r.get("grok/test_loss")), key=lambda r: float(r["step"]))
    assert float(last["grok/test_loss"]) == pytest.approx(summary["test/loss"], rel=1e-4)


def test_progress_measures_refuse_other_operations(make_cfg):
    from whylearn.experiment import run

    cfg = make_cfg(["experiment=grokking", "data.p=23", "data.op=*", "trainer.max_steps=50", "data.steps_per_chunk=50",
                    "logger=csv", "callbacks.attention_maps.prompt=[3,5,23]"])
    with pytest.raises(ValueError, match="ProgressMeasures measures x \\+ y mod p"):
        run(cfg)


def test_nandas_split_leaves_the_global_random_state_alone():
    random.seed(123)
    before = random.random()
    random.seed(123)
    ModularArithmeticDataModule(p=23, split="nanda", seed=0).setup()
    assert random.random() == before


def test_first_reach_reads_the_first_step_at_the_threshold():
    from whylearn.callbacks import FirstReach
    from whylearn.tasks.base import get_history

    class Module:  # anything that holds a History and an extra_summary
        pass

    m = Module()
    hist = get_history(m)
    for step, acc in [(0, 0.01), (100, 0.5), (200, 0.989), (300, 0.99), (400, 0.95), (500, 1.0)]:
        hist.add({"val/acc": acc}, step)
    FirstReach("val/acc", 0.99, name="grok/val_acc_99_step").on_train_end(None, m)
    FirstReach("val/acc", 1.01).on_train_end(None, m)
    assert m.extra_summary == {"grok/val_acc_99_step": 300, "val/acc_reaches_1.01_step": None}


def test_logits_in_float64_for_the_loss():
    torch.manual_seed(0)
    a = nanda_gpt()
    torch.manual_seed(0)
    b = nanda_gpt(logits_dtype="float64")
    x = torch.tensor([[3, 5, P], [7, 9, P]])
    assert b(x).dtype == torch.float64 and a(x).dtype == torch.float32
    torch.testing.assert_close(b(x), a(x).double())
    with pytest.raises(ValueError, match=r"unknown logits_dtype 'half'"):
        nanda_gpt(logits_dtype="half")

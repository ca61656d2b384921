"""The GPT model: causality, initial loss, fitting one batch, generation, attention maps, shortcuts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from whylearn.models import GPT


def small(**kw):
    args = dict(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    args.update(kw)
    torch.manual_seed(0)
    return GPT(**args)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_causal_changing_future_tokens_leaves_past_logits_unchanged(norm):
    model = small(norm=norm).eval()
    x = torch.randint(0, 37, (3, 16))
    for t in (0, 5, 14):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randint(0, 37, (3, 15 - t))
        assert not torch.equal(x, x2)
        a, b = model(x), model(x2)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-5, rtol=1e-5)
        assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-4  # the future does change the future


def test_fresh_model_loss_is_near_ln_vocab():
    V = 65
    model = GPT(vocab_size=V, block_size=64, n_layer=4, n_head=4, n_embd=128)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (16, 64), generator=g)
    y = torch.randint(0, V, (16, 64), generator=g)
    loss = F.cross_entropy(model(x).view(-1, V), y.view(-1)).item()
    assert abs(loss - math.log(V)) < 0.1, (loss, math.log(V))


def test_small_model_overfits_one_batch():
    model = small()
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 37, (4, 16), generator=g)
    y = torch.randint(0, 37, (4, 16), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss = F.cross_entropy(model(x).view(-1, 37), y.view(-1))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 3.0 and loss.item() < 0.05, (first, loss.item())


@pytest.mark.parametrize("top_k,temperature", [(None, 1.0), (5, 0.8), (None, 0.0)])
def test_generate_returns_requested_length_beyond_block_size(top_k, temperature):
    model = small().eval()
    idx = torch.randint(0, 37, (2, 3))
    out = model.generate(idx, 20, temperature=temperature, top_k=top_k, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 23)
    assert torch.equal(out[:, :3], idx)
    assert int(out.min()) >= 0 and int(out.max()) < 37


def test_generate_greedy_is_argmax_and_top1_is_greedy():
    model = small().eval()
    idx = torch.randint(0, 37, (1, 4))
    greedy = model.generate(idx, 5, temperature=0.0)
    top1 = model.generate(idx, 5, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy, top1)
    assert greedy[0, 4].item() == model(idx)[0, -1].argmax().item()


def test_attention_maps_shape_rows_sum_to_one_and_causal():
    model = small().eval()
    maps = model.attention_maps(torch.randint(0, 37, (2, 10)))
    assert maps.shape == (2, 2, 2, 10, 10)  # (layer, batch, head, query, key)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 2, 10))
    assert maps.triu(diagonal=1).abs().max() == 0


def test_attention_weights_match_the_fused_kernel():
    model = small().eval()
    x = model.embed(torch.randint(0, 37, (2, 10)))
    attn = model.blocks[0].attn
    A = attn.weights(x)
    _, _, v = attn._heads(x)
    manual = (A @ v).transpose(1, 2).reshape(2, 10, 32)
    torch.testing.assert_close(attn.c_proj(manual), attn(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_last_token_only_equals_last_position_of_full_model(norm):
    full = small(norm=norm, tie_weights=False, num_classes=11)
    last = small(norm=norm, tie_weights=False, num_classes=11, last_token_only=True)
    x = torch.randint(0, 37, (5, 7))
    torch.testing.assert_close(last(x), full(x)[:, -1], atol=1e-5, rtol=1e-5)


def test_tied_weights_and_gpt2_init():
    model = GPT(vocab_size=50, block_size=8, n_layer=3, n_head=2, n_embd=64)
    assert model.lm_head.weight is model.wte.weight
    std = model.blocks[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(6)) < 0.002
    assert abs(model.blocks[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002


def test_bad_arguments_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="norm"):
        GPT(10, 8, norm="sandwich")
    with pytest.raises(ValueError, match="divisible"):
        GPT(10, 8, n_head=3, n_embd=32)
    with pytest.raises(ValueError, match="tie_weights"):
        GPT(10, 8, num_classes=5)
    model = small()
    with pytest.raises(ValueError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(17, dtype=torch.long))


def test_flops_per_token_formula():
    model = GPT(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False)
    n = model.num_params()
    assert n == sum(p.numel() for p in model.parameters()) - 64 * 128
    assert model.flops_per_token() == 6 * n + 12 * 4 * 4 * 32 * 64


# small models on a shared 2-core machine: one intra-op thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")

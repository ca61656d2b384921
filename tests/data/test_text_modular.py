"""Text and modular-arithmetic data: tokenizers round-trip, cache, windows, the split of all pairs."""

from __future__ import annotations

import pytest
import torch

from whylearn.data import BPETokenizer, CharTokenizer, ModularArithmeticDataModule, TextDataModule, modular_table
from whylearn.data.text import windows

SAMPLE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 20


def test_char_tokenizer_round_trips_and_names_unknown_characters(tmp_path):
    tok = CharTokenizer.fit(SAMPLE)
    assert tok.vocab_size == len(set(SAMPLE))
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    tok.save(tmp_path / "t.json")
    from whylearn.data.text import load_tokenizer

    assert load_tokenizer(tmp_path / "t.json").decode(tok.encode("Speak")) == "Speak"
    with pytest.raises(KeyError, match="'Z'"):
        tok.encode("Zebra")


def test_bpe_tokenizer_round_trips_any_text_and_compresses(tmp_path):
    tok = BPETokenizer.fit(SAMPLE, vocab_size=300)
    assert 256 < tok.vocab_size <= 300
    ids = tok.encode(SAMPLE)
    assert tok.decode(ids) == SAMPLE
    assert len(ids) < len(SAMPLE) / 1.5  # merges learned
    unseen = "Zebras & émigrés — 1234\ttabs\n"
    assert tok.decode(tok.encode(unseen)) == unseen  # byte-level: nothing is unknown
    tok.save(tmp_path / "bpe.json")
    assert BPETokenizer.from_file(tmp_path / "bpe.json").encode(SAMPLE) == ids


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_text_datamodule_split_cache_and_windows(tmp_path, kind):
    path = tmp_path / "input.txt"
    path.write_text(SAMPLE)
    dm = TextDataModule(str(path), tokenizer=kind, bpe_vocab_size=280, cache_dir=str(tmp_path / "cache"),
                        block_size=8, batch_size=3, steps_per_epoch=5, steps_per_chunk=2)
    dm.prepare_data()
    dm.setup()
    cut = int(len(SAMPLE) * 0.9)
    assert dm.tokenizer.decode(dm.train_tokens.tolist()) == SAMPLE[:cut]
    assert dm.tokenizer.decode(dm.val_tokens.tolist()) == SAMPLE[cut:]
    cached = list((tmp_path / "cache").glob("*/train.bin"))
    assert len(cached) == 1
    # a second datamodule reads the cache (memory-mapped) and gets the same ids
    dm2 = TextDataModule(str(path), tokenizer=kind, bpe_vocab_size=280, cache_dir=str(tmp_path / "cache"), block_size=8)
    dm2.setup()
    assert torch.equal(dm2.train_tokens, dm.train_tokens)
    chunks = list(dm.train_dataloader())
    assert [c[0].shape for c in chunks] == [(2, 3, 8), (2, 3, 8), (1, 3, 8)]  # 5 steps in chunks of 2
    x, y = chunks[0]
    assert torch.equal(x[..., 1:], y[..., :-1])  # targets are inputs shifted by one
    text = dm.tokenizer.decode(torch.cat([x[0, 0], y[0, 0, -1:]]).tolist())
    assert text in SAMPLE[:cut]  # windows of block_size + 1 consecutive training tokens
    vx, vy = next(iter(dm.val_dataloader()))
    assert vx.shape[1] == 8 and torch.equal(vx[:, 1:], vy[:, :-1])
    assert dm.vocab_size == dm.tokenizer.vocab_size and dm.input_shape == (8,)


def test_text_datamodule_bad_input(tmp_path):
    with pytest.raises(ValueError, match="tokenizer"):
        TextDataModule(str(tmp_path / "x.txt"), tokenizer="word")
    with pytest.raises(FileNotFoundError, match="tinyshakespeare"):
        TextDataModule(str(tmp_path / "missing.txt")).prepare_data()


def test_windows_are_views_of_consecutive_tokens():
    t = torch.arange(21)
    s = windows(t, 5)
    assert s.x.shape == (4, 5) and torch.equal(s.x[1], torch.arange(5, 10)) and torch.equal(s.y[1], torch.arange(6, 11))


def test_tiny_shakespeare_char_split_matches_nanogpt(shared_data, tmp_path):
    dm = TextDataModule(str(shared_data / "tinyshakespeare" / "input.txt"), cache_dir=str(tmp_path))
    dm.setup()
    assert dm.vocab_size == 65
    assert (dm.train_tokens.shape[0], dm.val_tokens.shape[0]) == (1_003_854, 111_540)


@pytest.mark.parametrize("op,p", [("+", 113), ("-", 13), ("*", 13), ("/", 97)])
def test_modular_split_covers_every_pair_exactly_once(op, p):
    dm = ModularArithmeticDataModule(p=p, op=op, train_fraction=0.3, seed=3)
    dm.setup()
    x = torch.cat([dm.train.x, dm.test.x])
    c = torch.cat([dm.train.y, dm.test.y])
    n = p * p if op != "/" else p * (p - 1)
    assert x.shape == (n, 3)
    codes = x[:, 0] * p + x[:, 1]
    assert codes.unique().numel() == n  # every pair once: no pair in both splits, none missing
    assert len(dm.train) == round(0.3 * n)
    assert (x[:, 2] == p).all()  # the "=" token
    a, b = x[:, 0], x[:, 1]
    if op == "+":
        assert torch.equal(c, (a + b) % p)
    elif op == "-":
        assert torch.equal(c, (a - b) % p)
    elif op == "*":
        assert torch.equal(c, (a * b) % p)
    else:
        assert (b != 0).all() and torch.equal((c * b) % p, a)  # c = a / b  <=>  c b = a


def test_modular_seeded_formats_and_full_batch():
    a = ModularArithmeticDataModule(p=7, seed=1)
    b = ModularArithmeticDataModule(p=7, seed=1)
    c = ModularArithmeticDataModule(p=7, seed=2)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    pw = ModularArithmeticDataModule(p=7, format="power", batch_size=4, steps_per_chunk=2)
    pw.setup()
    assert pw.train.x.shape[1] == 4 and (pw.train.x[:, 1] == 8).all() and pw.vocab_size == 9
    full = ModularArithmeticDataModule(p=7, steps_per_chunk=5, chunks_per_epoch=2)
    xs, ys = next(iter(full.train_dataloader()))
    assert xs.shape == (5, len(full.train), 3) and len(full.train_dataloader()) == 2
    with pytest.raises(ValueError, match="op"):
        modular_table(7, "^")
    with pytest.raises(ValueError, match="prime"):
        modular_table(9, "/")

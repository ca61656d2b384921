"""Text for next-token prediction: tokenize once, cache the ids on disk, batch random windows in memory.

The protocol of nanoGPT's ``shakespeare_char`` (and of GPT-2's training in general):
the text is cut at 90% of its characters into a training and a validation part,
a tokenizer is fit on the training part only (characters, or a byte-level BPE,
Radford et al. 2019, Sec. 2.2, trained with the ``tokenizers`` library), both parts
are encoded once and cached as uint16/uint32 ``.bin`` files that later runs read
memory-mapped, and a training mini-batch is B windows of ``block_size + 1``
consecutive tokens at uniformly random offsets: inputs are the first
``block_size`` tokens of each window, targets the last ``block_size``.

As every whylearn datamodule, the token ids live on the training device as one
tensor and the training loader yields chunks of ``steps_per_chunk`` mini-batches,
gathered by one index operation, for :class:`~whylearn.tasks.base.FastTask`.

The cache is checked before use: its ``meta.json`` records the format, the token counts and the
SHA-256 of each ``.bin`` file, and a cache that disagrees with it (a truncated or edited file, a
missing tokenizer, one written by another version of whylearn) is rebuilt from the text, with a
warning naming it. A cache is built in a temporary folder and renamed into place, so a run killed
while tokenizing leaves nothing half-written behind. A text too short for ``block_size`` is refused
before anything is written, with the minimum length in the message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor

from whylearn.data.base import Chunk, Split, TrainerPlacement
from whylearn.data.integrity import cache_root

log = logging.getLogger(__name__)

TOKENIZERS = ("char", "bpe")
CACHE_FORMAT = 2  # meta.json with token counts and SHA-256 of each .bin file


class UnknownCharacterError(KeyError):
    """Characters outside a character tokenizer's vocabulary; the message names each one and its code point."""

    def __str__(self) -> str:  # KeyError would show the message quoted, as a key
        return str(self.args[0])


def describe_char(c: str) -> str:
    """``'é' (U+00E9)``: a character as it is, with its code point (control characters escaped by repr)."""
    return f"{c!r} (U+{ord(c):04X})"


class CharTokenizer:
    """Characters as tokens: id = rank of the character in the sorted set of the training text's characters.

    Raises:
        UnknownCharacterError: (a ``KeyError``) on encoding characters that are not in the vocabulary;
            the message names each of them, with its code point and first position.
    """

    kind = "char"

    def __init__(self, chars: list[str]) -> None:
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = {}
            for i, c in enumerate(text):
                if c not in self.stoi:
                    unknown.setdefault(c, i)
            listed = ", ".join(f"{describe_char(c)} at position {i}" for c, i in unknown.items())
            raise UnknownCharacterError(
                f"{'character' if len(unknown) == 1 else 'characters'} {listed} not in the vocabulary of "
                f"{self.vocab_size} characters seen in the training text") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"kind": "char", "chars": self.chars}))


class BPETokenizer:
    """Byte-level BPE (GPT-2's tokenizer family), trained or loaded with the ``tokenizers`` library.

    Byte-level: every string can be encoded (no unknown tokens) and decoding returns it exactly.
    """

    kind = "bpe"

    def __init__(self, tok) -> None:
        self.tok = tok

    @classmethod
    def fit(cls, text: str, vocab_size: int = 512) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=[], show_progress=False)
        tok.train_from_iterator(_pieces(text), trainer=trainer, length=None)
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file {path} not found (expected a `tokenizers` JSON file)")
        return cls(Tokenizer.from_file(str(path)))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def save(self, path: Path) -> None:
        self.tok.save(str(path))


class StaleCacheError(Exception):
    """A token cache that is missing, incomplete or disagrees with its meta.json (it is rebuilt)."""


def min_text_length(block_size: int, val_fraction: float) -> int:
    """The fewest characters whose training and validation parts both hold ``block_size + 1`` characters."""
    need = block_size + 1
    # a lower bound to start from: the validation part n - floor((1 - f) n) is at most f n + 1, the training part
    # at most (1 - f) n
    n = max(need, int((need - 1) / val_fraction), int(need / (1 - val_fraction))) - 1
    while not (int(n * (1 - val_fraction)) >= need and n - int(n * (1 - val_fraction)) >= need):
        n += 1
    return n


def _pieces(text: str, size: int = 1 << 16) -> Iterator[str]:
    for i in range(0, len(text), size):
        yield text[i : i + size]


def load_tokenizer(path: str | Path):
    """A tokenizer saved by :meth:`CharTokenizer.save` or :meth:`BPETokenizer.save`."""
    data = json.loads(Path(path).read_text())
    if data.get("kind") == "char":
        return CharTokenizer(data["chars"])
    return BPETokenizer.from_file(path)


def read_text(path: str | None = None, hf_dataset: str | None = None, data_files: str | None = None,
              hf_split: str = "train", text_field: str = "text") -> str:
    """The raw text: a local file (``path``), or an HF ``datasets`` source joined by newlines.

    ``hf_dataset="text", data_files=...`` reads local files through ``datasets``; a hub id
    (e.g. ``"tiny_shakespeare"``) needs a connection the first time.

    Raises:
        FileNotFoundError: ``path`` does not exist (with where to get Tiny Shakespeare).
        ValueError: neither or both of path and hf_dataset given.
    """
    if (path is None) == (hf_dataset is None):
        raise ValueError(f"give exactly one of path or hf_dataset, got path={path!r} hf_dataset={hf_dataset!r}")
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(
                f"text file {p} not found. For Tiny Shakespeare download "
                f"https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt "
                f"to <paths.data_dir>/tinyshakespeare/input.txt")
        return p.read_text(encoding="utf-8")
    from datasets import load_dataset

    ds = load_dataset(hf_dataset, data_files=data_files, split=hf_split)
    return "\n".join(ds[text_field])


class WindowLoader:
    """Training chunks: ``steps`` mini-batches of random windows, grouped ``steps_per_chunk`` at a time.

    Yields ``(x, y)`` of shape (K, B, T): for each of K x B uniformly random offsets i,
    x = tokens[i : i + T] and y = tokens[i + 1 : i + T + 1]. Offsets come from a generator
    seeded with (seed, epoch), so a run is reproducible.
    """

    def __init__(self, tokens: Tensor, block_size: int, batch_size: int, steps: int, steps_per_chunk: int,
                 seed: int, epoch_fn=lambda: 0) -> None:
        self.tokens, self.T, self.B = tokens, block_size, batch_size
        self.steps, self.K, self.seed, self.epoch_fn = steps, steps_per_chunk, seed, epoch_fn
        self.offsets = torch.arange(block_size + 1, device=tokens.device)

    def __len__(self) -> int:
        return math.ceil(self.steps / self.K)

    def __iter__(self) -> Iterator[Chunk]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch_fn())
        high = self.tokens.shape[0] - self.T
        for c in range(len(self)):
            k = min(self.K, self.steps - c * self.K)
            start = torch.randint(high, (k, self.B), generator=g).to(self.tokens.device)
            w = self.tokens[start[..., None] + self.offsets]  # (k, B, T + 1)
            yield Chunk(w[..., :-1], w[..., 1:])


class EvalWindows:
    """Validation batches: fixed windows (N, T) of a token tensor, ``batch_size`` at a time."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def __iter__(self):
        for i in range(0, self.x.shape[0], self.batch_size):
            yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]


def windows(tokens: Tensor, block_size: int, stride: int | None = None) -> Split:
    """All windows of ``tokens`` (N,) at offsets 0, stride, 2 stride, ...: x (M, T) and y (M, T) shifted by one.

    A strided view of the tensor (no copy) where the stride permits.
    """
    stride = block_size if stride is None else stride
    if tokens.shape[0] < block_size + 1:
        raise ValueError(f"need more than block_size={block_size} tokens, got {tokens.shape[0]}")
    x = tokens[:-1].unfold(0, block_size, stride)
    y = tokens[1:].unfold(0, block_size, stride)
    return Split(x, y)


class TextDataModule(TrainerPlacement, L.LightningDataModule):
    """Next-token prediction on one text (e.g. Tiny Shakespeare), character- or BPE-tokenized.

    Args:
        path: a local UTF-8 text file; or ``hf_dataset`` (+ ``data_files``, ``hf_split``,
            ``text_field``): an HF ``datasets`` source.
        tokenizer: ``char`` or ``bpe`` (byte-level BPE trained on the training part).
        bpe_vocab_size: vocabulary size of a trained BPE.
        tokenizer_file: load this ``tokenizers`` JSON file instead of training a BPE.
        cache_dir: where the token ids and the tokenizer are cached (default: ``~/.cache/whylearn/text``,
            or ``$XDG_CACHE_HOME/whylearn/text``);
            the cache key hashes the text and the tokenizer settings.
        val_fraction: the last fraction of the text's characters is the validation part (0.1: 90/10).
        block_size: T, the context length of the windows.
        batch_size: B, windows per training mini-batch.
        steps_per_epoch: optimizer steps between validations (one Lightning epoch).
        steps_per_chunk: K, optimizer steps per Lightning training step.
        eval_batch_size: windows per validation batch.
        max_eval_windows: validate on this many seeded non-overlapping validation windows
            (null: all of them, i.e. the exact loss on the whole validation part).
        seed: seeds the training windows and the validation subset.

    Attributes after ``setup``: ``tokenizer``, ``vocab_size``, ``block_size``, ``train_tokens``,
    ``val_tokens`` (1-D int64), ``train`` and ``val`` (:class:`Split` of non-overlapping windows,
    views), ``chars_per_token`` of the validation part.
    """

    name = "text"

    def __init__(
        self,
        path: str | None = None,
        hf_dataset: str | None = None,
        data_files: str | None = None,
        hf_split: str = "train",
        text_field: str = "text",
        tokenizer: str = "char",
        bpe_vocab_size: int = 512,
        tokenizer_file: str | None = None,
        cache_dir: str | None = None,
        val_fraction: float = 0.1,
        block_size: int = 64,
        batch_size: int = 12,
        steps_per_epoch: int = 250,
        steps_per_chunk: int = 50,
        eval_batch_size: int = 256,
        max_eval_windows: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {tokenizer!r}; allowed: {list(TOKENIZERS)}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if block_size < 1 or batch_size < 1 or steps_per_epoch < 1 or steps_per_chunk < 1:
            raise ValueError(f"block_size, batch_size, steps_per_epoch and steps_per_chunk must be >= 1, got "
                             f"{block_size}, {batch_size}, {steps_per_epoch}, {steps_per_chunk}")
        self.path, self.hf_dataset, self.data_files = path, hf_dataset, data_files
        self.hf_split, self.text_field = hf_split, text_field
        self.tokenizer_kind, self.bpe_vocab_size, self.tokenizer_file = tokenizer, int(bpe_vocab_size), tokenizer_file
        self.cache_dir, self.val_fraction = cache_dir, float(val_fraction)
        self.block_size, self.batch_size = int(block_size), int(batch_size)
        self.steps_per_epoch, self.steps_per_chunk = int(steps_per_epoch), int(steps_per_chunk)
        self.eval_batch_size, self.max_eval_windows, self.seed = int(eval_batch_size), max_eval_windows, int(seed)
        self.tokenizer = None
        self.train_tokens: Tensor | None = None
        self.val_tokens: Tensor | None = None
        self.train: Split | None = None
        self.val: Split | None = None
        self._eval_val: Split | None = None

    # -- tokenize once, cache ---------------------------------------------------------------
    def _cache_paths(self, text: str) -> dict[str, Path]:
        settings = {"tokenizer": self.tokenizer_kind, "bpe_vocab_size": self.bpe_vocab_size,
                    "tokenizer_file": str(self.tokenizer_file), "val_fraction": self.val_fraction}
        h = hashlib.sha256(text.encode("utf-8"))
        h.update(json.dumps(settings, sort_keys=True).encode())
        if self.cache_dir is not None:
            base = Path(self.cache_dir)
        else:  # not beside the text: data folders are often read-only
            base = cache_root() / "text"
        d = base / f"{self.tokenizer_kind}-{h.hexdigest()[:16]}"
        return {"dir": d, "train": d / "train.bin", "val": d / "val.bin", "tokenizer": d / "tokenizer.json",
                "meta": d / "meta.json"}

    def _read(self) -> str:
        return read_text(self.path, self.hf_dataset, self.data_files, self.hf_split, self.text_field)

    @property
    def _source(self) -> str:
        return f"text file {self.path}" if self.path is not None else f"text of {self.hf_dataset}"

    def _check_length(self, train_tokens: int, val_tokens: int) -> None:
        """Both parts need block_size + 1 tokens (one window); else an error with the minimum length."""
        need = self.block_size + 1
        if train_tokens >= need and val_tokens >= need:
            return
        raise ValueError(
            f"the {self._source} is too short for block_size={self.block_size}: its training part has "
            f"{train_tokens} tokens and its validation part (the last {self.val_fraction:g} of the characters) "
            f"{val_tokens}; each needs at least block_size + 1 = {need}. With val_fraction={self.val_fraction:g} "
            f"that takes at least {min_text_length(self.block_size, self.val_fraction)} characters"
            f"{' (more with BPE, whose tokens span several characters)' if self.tokenizer_kind == 'bpe' else ''}. "
            f"Use a longer text or a smaller data.block_size.")

    def _build_cache(self, text: str, paths: dict[str, Path]) -> None:
        """Tokenize ``text`` and write the cache into a temporary folder, then rename it into place."""
        log.info("tokenizing the %s into the token cache %s (caches are keyed by the text's SHA-256 and the tokenizer "
                 "settings: a changed text gets a new one)", self._source, paths["dir"])
        n = len(text)
        if n == 0:
            raise ValueError(f"the {self._source} is empty; a language model needs at least "
                             f"{min_text_length(self.block_size, self.val_fraction)} characters with "
                             f"block_size={self.block_size} and val_fraction={self.val_fraction:g}")
        cut = int(n * (1 - self.val_fraction))
        train_text, val_text = text[:cut], text[cut:]
        if self.tokenizer_kind == "char":
            self._check_length(len(train_text), len(val_text))  # before fitting anything
            tok = CharTokenizer.fit(train_text)
            val_text = "".join(c for c in val_text if c in tok.stoi)  # characters unseen in training are dropped
        elif self.tokenizer_file is not None:
            tok = BPETokenizer.from_file(self.tokenizer_file)
        else:
            tok = BPETokenizer.fit(train_text, self.bpe_vocab_size)
        dtype = np.dtype(np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32)
        ids = {"train": np.asarray(tok.encode(train_text), dtype=dtype), "val": np.asarray(tok.encode(val_text), dtype=dtype)}
        self._check_length(len(ids["train"]), len(ids["val"]))
        final = paths["dir"]
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        try:
            tok.save(tmp / "tokenizer.json")
            meta = {"format": CACHE_FORMAT, "dtype": dtype.name, "vocab_size": tok.vocab_size,
                    "train_chars": len(train_text), "val_chars": len(val_text), "tokenizer": self.tokenizer_kind}
            for name, arr in ids.items():
                (tmp / f"{name}.bin").write_bytes(arr.tobytes())
                meta[f"{name}_tokens"] = int(arr.shape[0])
                meta[f"{name}_sha256"] = hashlib.sha256(arr.tobytes()).hexdigest()
            (tmp / "meta.json").write_text(json.dumps(meta))
            if final.exists():  # a stale cache (the caller found it wrong)
                shutil.rmtree(final)
            try:
                tmp.rename(final)
            except OSError:  # another process put a cache there meanwhile: keep theirs
                if not (final / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _load_cache(self, paths: dict[str, Path]) -> tuple[object, dict, np.ndarray, np.ndarray]:
        """(tokenizer, meta, train ids, val ids) from the cache after checking it against its meta.

        Raises:
            StaleCacheError: the cache is missing, incomplete or disagrees with its meta (the reason says how).
        """
        d = paths["dir"]
        if not paths["meta"].is_file():
            raise StaleCacheError(f"no token cache in {d} yet")
        try:
            meta = json.loads(paths["meta"].read_text())
        except ValueError as e:
            raise StaleCacheError(f"{paths['meta']} is not valid JSON ({e})") from None
        if meta.get("format") != CACHE_FORMAT:
            raise StaleCacheError(f"{paths['meta']} is format {meta.get('format', 1)}, this whylearn writes "
                                  f"format {CACHE_FORMAT}")
        dtype = np.dtype(meta["dtype"])
        parts = {}
        for name in ("train", "val"):
            p = paths[name]
            if not p.is_file():
                raise StaleCacheError(f"{p} is missing")
            raw = p.read_bytes()
            if len(raw) != meta[f"{name}_tokens"] * dtype.itemsize:
                raise StaleCacheError(f"{p} holds {len(raw)} bytes, its meta says {meta[f'{name}_tokens']} "
                                      f"{dtype.name} tokens")
            if hashlib.sha256(raw).hexdigest() != meta[f"{name}_sha256"]:
                raise StaleCacheError(f"{p} differs from the SHA-256 in its meta")
            parts[name] = np.frombuffer(raw, dtype=dtype)
        try:
            tok = load_tokenizer(paths["tokenizer"])
        except (OSError, ValueError, KeyError) as e:
            raise StaleCacheError(f"the tokenizer {paths['tokenizer']} cannot be loaded ({type(e).__name__}: {e})") from None
        if tok.vocab_size != meta["vocab_size"]:
            raise StaleCacheError(f"the tokenizer has {tok.vocab_size} tokens, the meta says {meta['vocab_size']}")
        top = max((int(a.max()) for a in parts.values() if a.size), default=-1)
        if top >= tok.vocab_size:
            raise StaleCacheError(f"token id {top} is outside the vocabulary of {tok.vocab_size}")
        return tok, meta, parts["train"], parts["val"]

    def prepare_data(self) -> None:
        """Tokenize and cache the text unless a valid cache exists (a stale one is rebuilt)."""
        text = self._read()
        paths = self._cache_paths(text)
        try:
            self._load_cache(paths)
        except StaleCacheError as e:
            if paths["meta"].is_file() or paths["dir"].exists():
                log.warning("rebuilding the token cache %s: %s", paths["dir"], e)
            self._build_cache(text, paths)

    def setup(self, stage: str | None = None) -> None:
        if self.train_tokens is not None:
            return
        text = self._read()
        paths = self._cache_paths(text)
        try:
            tok, meta, train, val = self._load_cache(paths)
        except StaleCacheError as e:
            if paths["dir"].exists():
                log.warning("rebuilding the token cache %s: %s", paths["dir"], e)
            self._build_cache(text, paths)
            tok, meta, train, val = self._load_cache(paths)
        self._check_length(len(train), len(val))
        self.tokenizer, self.meta = tok, meta
        self.train_tokens = torch.from_numpy(train.astype(np.int64))
        self.val_tokens = torch.from_numpy(val.astype(np.int64))
        self.chars_per_token = meta["val_chars"] / max(self.val_tokens.shape[0], 1)
        self._make_splits()

    def _make_splits(self) -> None:
        self.train = windows(self.train_tokens, self.block_size)
        self.val = windows(self.val_tokens, self.block_size)
        val = self.val
        if self.max_eval_windows is not None and self.max_eval_windows < len(val):
            g = torch.Generator().manual_seed(self.seed)
            val = val.subset(torch.randperm(len(val), generator=g)[: self.max_eval_windows].sort().values)
        self._eval_val = val

    # -- facts the model is sized from ----------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        self.setup()
        return self.tokenizer.vocab_size

    @property
    def num_classes(self) -> int:
        return self.vocab_size

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.block_size,)

    # -- loaders ------------------------------------------------------------------------------
    def _to_device(self) -> None:
        device = self._device()
        if self.train_tokens.device != device:
            self.train_tokens, self.val_tokens = self.train_tokens.to(device), self.val_tokens.to(device)
            self._make_splits()

    def train_dataloader(self) -> WindowLoader:
        self.setup()
        self._to_device()
        _, rank, _ = self._placement()
        return WindowLoader(self.train_tokens, self.block_size, self.batch_size, self.steps_per_epoch,
                            self._steps_per_batch(self.steps_per_chunk), self.seed + 7919 * rank, self._epoch)

    def val_dataloader(self) -> EvalWindows:
        self.setup()
        self._to_device()
        return EvalWindows(self._eval_val.x, self._eval_val.y, self.eval_batch_size)

    def test_dataloader(self) -> EvalWindows:
        return self.val_dataloader()

    def describe(self) -> dict:
        self.setup()
        return {"dataset": self.name, "source": self.path or self.hf_dataset, "tokenizer": self.tokenizer_kind,
                "vocab_size": self.vocab_size, "block_size": self.block_size,
                "train_tokens": int(self.train_tokens.shape[0]), "val_tokens": int(self.val_tokens.shape[0]),
                "val_windows": len(self._eval_val), "chars_per_token": round(self.chars_per_token, 4)}

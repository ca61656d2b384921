"""A GPT-style decoder-only transformer, written to be read as its specification.

Sources:
  - Vaswani et al. 2017, "Attention is all you need", Sec. 3.2 (scaled dot-product
    attention, softmax(QK^T / sqrt(d_k)) V, multi-head attention) and Sec. 3.3 (the
    position-wise MLP); post-LayerNorm residual blocks: x = LN(x + sublayer(x)).
  - Radford et al. 2018/2019 (GPT, GPT-2): learned position embeddings, GELU MLP of
    width 4 d, pre-LayerNorm blocks x = x + sublayer(LN(x)) with a final LayerNorm,
    weights tied between the token embedding and the output layer, and the GPT-2
    initialization N(0, 0.02) with residual output projections scaled by
    1/sqrt(2 n_layer) (GPT-2 paper, Sec. 2.3).
  - Nanda et al. 2023 ("Progress measures for grokking"; their code: transformers.py of
    github.com/mechanistic-interpretability-grokking/progress-measures-paper): the 1-layer
    grokking model has no LayerNorm (``norm="none"``), a ReLU MLP with biases, attention
    without biases (``attn_bias=False``), untied embeddings, and every weight drawn from
    N(0, 1/d_model) except the unembedding, N(0, 1/d_vocab) (``init="nanda"``).

Shapes: B batch, T sequence length (<= block_size), C = n_embd, H = n_head,
D = C / H (head size), V = vocab_size. Input: token ids (B, T), int64.
Output: logits (B, T, num_classes) with num_classes = V by default (next-token
prediction), or (B, num_classes) at the last position only if ``last_token_only``
(the answer token of the modular-arithmetic set-ups).

Nothing here knows about training: no Lightning, no optimizer, no data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("pre", "post", "none")
ACTIVATIONS = ("gelu", "relu")
INITS = ("gpt2", "fan_in", "nanda")


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (Vaswani et al. 2017, Sec. 3.2.2).

    For each head h: A_h = softmax(Q_h K_h^T / sqrt(D) + M) with M[i, j] = -inf for j > i
    (a position attends only to itself and earlier positions); out = concat_h(A_h V_h) W_O.

    (B, T, C) -> (B, T, C).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # Q, K, V of all heads in one matrix
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)  # W_O
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        shape = (B, T, self.n_head, C // self.n_head)
        return tuple(t.view(shape).transpose(1, 2) for t in (q, k, v))  # each (B, H, T, D)

    def forward(self, x: Tensor, last_only: bool = False) -> Tensor:
        """``last_only``: compute the output of the last position only, (B, 1, C): it attends to
        every position, so this equals the last row of the full output (a shortcut for the final block
        of a model that reads only the last position)."""
        B, T, C = x.shape
        q, k, v = self._heads(x)
        if last_only:
            q = q[:, :, -1:]  # the last query attends to all keys: no mask needed
        y = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only and T > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, q.shape[2], C)  # concatenate the heads
        return self.resid_dropout(self.c_proj(y))

    def weights(self, x: Tensor) -> Tensor:
        """The attention weights A (B, H, T, T) of input x (B, T, C): rows sum to 1, zero above the diagonal.

        The explicit (slower) computation of what ``scaled_dot_product_attention`` fuses.
        """
        q, k, _ = self._heads(x)
        T = x.shape[1]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    """Position-wise feed-forward network (Vaswani et al. 2017, Sec. 3.3): W_2 act(W_1 x + b_1) + b_2.

    (B, T, C) -> (B, T, C); hidden width ``d_mlp`` (4 C in GPT).
    """

    def __init__(self, n_embd: int, d_mlp: int, dropout: float = 0.0, bias: bool = True, activation: str = "gelu") -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, d_mlp, bias=bias)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.c_proj = nn.Linear(d_mlp, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block: attention then MLP, each in a residual branch.

    norm="pre"  (GPT-2):        x = x + attn(LN_1(x));  x = x + mlp(LN_2(x))
    norm="post" (Vaswani 2017): x = LN_1(x + attn(x));  x = LN_2(x + mlp(x))
    norm="none" (Nanda 2023):   x = x + attn(x);        x = x + mlp(x)

    (B, T, C) -> (B, T, C).
    """

    def __init__(self, n_embd: int, n_head: int, d_mlp: int, dropout: float, bias: bool, norm: str, activation: str,
                 attn_bias: bool | None = None) -> None:
        super().__init__()
        self.norm = norm
        make_norm = (lambda: nn.LayerNorm(n_embd, bias=bias)) if norm != "none" else nn.Identity
        self.ln_1, self.ln_2 = make_norm(), make_norm()
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias if attn_bias is None else attn_bias)
        self.mlp = MLP(n_embd, d_mlp, dropout, bias, activation)

    def forward(self, x: Tensor, last_only: bool = False) -> Tensor:
        """``last_only``: the output of the last position only, (B, 1, C) (see CausalSelfAttention)."""
        res = x[:, -1:] if last_only else x
        if self.norm == "post":
            x = self.ln_1(res + self.attn(x, last_only))
            return self.ln_2(x + self.mlp(x))
        x = res + self.attn(self.ln_1(x), last_only)
        return x + self.mlp(self.ln_2(x))

    def attention_weights(self, x: Tensor) -> Tensor:
        """Attention weights (B, H, T, T) of this block's attention on its input x (B, T, C)."""
        return self.attn.weights(x if self.norm == "post" else self.ln_1(x))


class GPT(nn.Module):
    """Decoder-only transformer: embeddings, ``n_layer`` causal blocks, a linear read-out.

        h_0 = W_te[idx] + W_pe[0..T-1]          token + learned position embeddings (B, T, C)
        h_l = Block_l(h_{l-1}),  l = 1..n_layer
        logits = LN_f(h_L) W_out                 (B, T, num_classes); W_out = W_te^T if tied

    Args:
        vocab_size: V, number of input token ids.
        block_size: the longest sequence (context length) the position embedding covers.
        n_layer, n_head, n_embd: depth, heads per layer, width C (must be divisible by n_head).
        d_mlp: hidden width of each MLP (default 4 C).
        dropout: on the embeddings, the attention weights and each residual branch.
        bias: biases in the linear layers and LayerNorms.
        attn_bias: biases in the attention's Q, K, V and output projections; None: as ``bias``
            (Nanda et al.'s model: ``bias=True, attn_bias=False``, biases in the MLP only).
        logits_dtype: ``float64`` returns the logits in double precision, so that the loss is computed in it:
            Nanda et al. do (helpers.py ``cross_entropy_high_precision``: float32's log-softmax "can only return
            multiples of 1.2e-7 ... This leads to loss spikes"; the TransformerLens grokking demo's ``loss_fn``);
            None keeps the parameters' dtype.
        norm: ``pre`` | ``post`` | ``none`` (see :class:`Block`); ``pre`` adds a final LayerNorm.
        activation: ``gelu`` | ``relu`` of the MLP.
        tie_weights: share the token embedding with the output layer (needs num_classes == V).
        num_classes: size of the output layer (default V: next-token prediction).
        last_token_only: return the logits of the last position only, (B, num_classes).
        init: ``gpt2`` (N(0, 0.02), residual projections N(0, 0.02/sqrt(2 n_layer)), zero biases),
            ``fan_in`` (every weight N(0, 1/fan_in), embeddings N(0, 1/C)), or ``nanda`` (Nanda et al.
            2023, transformers.py: embeddings, Q/K/V/O and both MLP weights N(0, 1/C), so the MLP's
            output weights too, not 1/d_mlp; the unembedding N(0, 1/V); zero biases).

    Raises:
        ValueError: an unknown norm/activation/init, n_embd not divisible by n_head, or tied
            weights with num_classes != vocab_size; in forward, input that is not (B, T) with
            1 <= T <= block_size.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        d_mlp: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        norm: str = "pre",
        activation: str = "gelu",
        tie_weights: bool = True,
        num_classes: int | None = None,
        last_token_only: bool = False,
        init: str = "gpt2",
        attn_bias: bool | None = None,
        logits_dtype: str | None = None,
    ) -> None:
        super().__init__()
        for name, value, allowed in (("norm", norm, NORMS), ("activation", activation, ACTIVATIONS), ("init", init, INITS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {list(allowed)}")
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        if logits_dtype not in (None, "float32", "float64"):
            raise ValueError(f"unknown logits_dtype {logits_dtype!r}; allowed: [None, 'float32', 'float64']")
        self.logits_dtype = getattr(torch, logits_dtype) if logits_dtype else None
        num_classes = vocab_size if num_classes in (None, "auto") else int(num_classes)
        if tie_weights and num_classes != vocab_size:
            raise ValueError(f"tie_weights needs num_classes == vocab_size, got {num_classes} and {vocab_size}; "
                             f"set tie_weights=false")
        self.vocab_size, self.block_size, self.num_classes = int(vocab_size), int(block_size), num_classes
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.last_token_only, self.tie_weights = last_token_only, tie_weights
        d_mlp = 4 * n_embd if d_mlp is None else d_mlp

        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, d_mlp, dropout, bias, norm, activation, attn_bias)
                                    for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias) if norm == "pre" else nn.Identity()
        self.lm_head = nn.Linear(n_embd, num_classes, bias=False)
        if tie_weights:
            self.lm_head.weight = self.wte.weight
        self._init_weights(init)

    # -- initialization -------------------------------------------------------------------
    def _init_weights(self, init: str) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if init == "gpt2":
                    std = 0.02 / math.sqrt(2 * self.n_layer) if name.endswith("c_proj") else 0.02
                elif init == "nanda":  # transformers.py: randn / sqrt(d_model), the unembedding / sqrt(d_vocab)
                    std = 1.0 / math.sqrt(self.vocab_size if m is self.lm_head else self.n_embd)
                else:
                    std = 1.0 / math.sqrt(m.in_features)
                if not (self.tie_weights and m is self.lm_head):
                    nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02 if init == "gpt2" else 1.0 / math.sqrt(self.n_embd))

    # -- the forward pass -------------------------------------------------------------------
    def _check(self, idx: Tensor) -> None:
        if idx.ndim != 2 or not 1 <= idx.shape[1] <= self.block_size:
            raise ValueError(f"GPT expects token ids of shape (B, T) with 1 <= T <= block_size={self.block_size}, "
                             f"got shape {tuple(idx.shape)}")

    def embed(self, idx: Tensor) -> Tensor:
        """Token + position embeddings (B, T, C) of token ids (B, T)."""
        self._check(idx)
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def forward(self, idx: Tensor) -> Tensor:
        """Logits (B, T, num_classes), or (B, num_classes) if ``last_token_only``, of token ids (B, T)."""
        x = self.embed(idx)
        for i, block in enumerate(self.blocks):
            # with last_token_only the final block computes the last position only (same result, less work)
            x = block(x, last_only=self.last_token_only and i == self.n_layer - 1)
        if self.last_token_only:
            x = x[:, -1]
        logits = self.lm_head(self.ln_f(x))
        return logits if self.logits_dtype is None else logits.to(self.logits_dtype)

    @torch.no_grad()
    def attention_maps(self, idx: Tensor) -> Tensor:
        """Attention weights of every layer and head: (n_layer, B, n_head, T, T), for figures.

        Runs the blocks once, reading each block's attention weights on its own input
        (explicit softmax, not the fused kernel); dropout is not applied to the weights.
        """
        x = self.embed(idx)
        maps = []
        for block in self.blocks:
            maps.append(block.attention_weights(x))
            x = block(x)
        return torch.stack(maps)

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Extend token ids (B, T0) by ``max_new_tokens`` sampled tokens: returns (B, T0 + max_new_tokens).

        Each step feeds the last ``block_size`` tokens, takes the logits of the last position,
        divides them by ``temperature`` (0 means greedy, argmax), keeps the ``top_k`` largest
        (if set) and samples from the softmax. Call ``model.eval()`` first to turn dropout off.

        Raises:
            ValueError: max_new_tokens < 0, temperature < 0, top_k < 1, or a model with last_token_only
                whose outputs are not token ids (num_classes != vocab_size).
        """
        if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError(f"need max_new_tokens >= 0, temperature >= 0, top_k >= 1 or None; got "
                             f"{max_new_tokens}, {temperature}, {top_k}")
        if self.num_classes != self.vocab_size:
            raise ValueError(f"generate needs outputs over the vocabulary (num_classes {self.num_classes} != "
                             f"vocab_size {self.vocab_size})")
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.block_size:])
            logits = logits if logits.ndim == 2 else logits[:, -1]
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx

    # -- counting ---------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters; ``non_embedding`` leaves out the position embedding (and the token
        embedding unless it is tied to the output layer, where it does compute), as in Kaplan et al. 2020."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token, 6 N + 12 L H D T (forward + backward; PaLM, Chowdhery et al. 2022, App. B)."""
        T = self.block_size if seq_len is None else seq_len
        return 6 * self.num_params() + 12 * self.n_layer * self.n_head * (self.n_embd // self.n_head) * T

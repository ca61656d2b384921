"""Nanda et al.'s progress measures for grokking on x + y mod p, as pure functions of tensors.

Nanda, Chan, Lieberum, Smith & Steinhardt 2023 ("Progress measures for grokking via mechanistic
interpretability", ICLR; Sec. 4-5, code: transformers.py and helpers.py of
github.com/mechanistic-interpretability-grokking/progress-measures-paper) reverse-engineer the
1-layer transformer trained on x + y mod p: it embeds each operand on a few *key frequencies* w
(cos(w x), sin(w x), w = 2 pi k / p), and its logits for answer c are sums of cos(w (x + y - c)).
Their progress measures:

- the key frequencies, where the embedding W_E (p, C) has its Fourier norm: the 1D discrete
  Fourier basis over the p operand tokens (:func:`fourier_basis`), the norm of W_E's cos k and
  sin k components together for each frequency k = 1 .. (p-1)/2 (:func:`embedding_fourier_norms`,
  their Fig. 3); their sparsity as a Gini coefficient (:func:`gini`, their Fig. 7);
- the **restricted loss**: the loss of the logits kept only along cos(w_k (x + y)) and
  sin(w_k (x + y)) for the key frequencies (the logits over the p^2 inputs projected, for each
  answer c, on those 2K directions of R^(p^2)), plus the mean logit of each answer (their bias
  correction) (:func:`restricted_logits`);
- the **excluded loss**: the training loss of the logits with exactly those directions removed
  (:func:`excluded_logits`): it rises as the model comes to rely on the Fourier circuit.

Phases (their Sec. 5.2, approx. on their run: memorization to ~1.4k steps, circuit formation to
~9.4k, clean-up to ~13k), read here from measured series by :func:`phase_steps`.

Shapes: logits over all pairs (p^2, p), rows in row-major (x, y) order (x = row // p, y = row % p),
as ``whylearn.data.modular.modular_table`` makes them; labels (p^2,) = (x + y) mod p.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The orthonormal 1D Fourier basis of R^p: rows [1, cos 1, sin 1, ..., cos K, sin K] / norms, (p, p) for odd p.

    Row 2k - 1 is cos(2 pi k x / p), row 2k is sin(2 pi k x / p), k = 1 .. K = (p - 1) / 2 (Nanda et al.,
    ``make_fourier_basis``).

    Raises:
        ValueError: p even or < 3 (the basis would need the alternating cos(pi x) term).
    """
    if p < 3 or p % 2 == 0:
        raise ValueError(f"the Fourier progress measures need an odd p >= 3, got {p}")
    x = torch.arange(p, dtype=dtype)
    rows = [torch.ones(p, dtype=dtype)]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True)


def embedding_fourier_norms(W_E: Tensor, p: int) -> Tensor:
    """Norm of the embedding's frequency-k component for k = 1 .. (p-1)/2: ((p-1)/2,).

    W_E (p, C) (or more rows: the first p, the operand tokens, are used). The component of
    frequency k is the projection of each embedding dimension (a function of the token x) on
    cos(2 pi k x / p) and sin(2 pi k x / p); its norm is sqrt(|cos part|^2 + |sin part|^2) over C.
    """
    W = W_E[:p].detach().to(torch.float64)
    coeffs = fourier_basis(p) @ W                   # (p, C): row j = component along basis row j
    sq = coeffs[1:].pow(2).sum(-1)                  # (p - 1,) cos 1, sin 1, cos 2, ...
    return (sq[0::2] + sq[1::2]).sqrt()


def key_frequencies(norms: Tensor, fraction: float | None = None, max_count: int = 20) -> list[int]:
    """The key frequencies k (1-based) of an embedding's Fourier norms, largest first.

    Default: the frequencies above the largest gap of the sorted squared norms (the k that maximizes
    sq[k-1] / sq[k] among the ``max_count`` largest): a trained grokking model has a handful of frequencies
    far above the rest (Nanda et al.: 5 on their run, {14, 35, 41, 42, 52}). With ``fraction``: every
    frequency whose squared norm is at least that fraction of the largest (up to ``max_count``).
    """
    sq = norms.detach().to(torch.float64).pow(2)
    order = torch.argsort(sq, descending=True)
    if fraction is not None:
        return [int(i) + 1 for i in order if sq[i] >= fraction * sq.max()][:max_count]
    top = sq[order[: max_count + 1]]
    ratios = top[:-1] / top[1:].clamp_min(1e-300)
    k = int(torch.argmax(ratios)) + 1
    return [int(i) + 1 for i in order[:k]]


def gini(values: Tensor) -> float:
    """Gini coefficient of non-negative values (0: all equal; near 1: all mass in one)."""
    v = values.detach().to(torch.float64).flatten().sort().values
    n = v.numel()
    if n == 0 or float(v.sum()) == 0.0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * i - n - 1) * v).sum() / (n * v.sum()))


def xpy_directions(p: int, freqs: Sequence[int], dtype: torch.dtype = torch.float64) -> Tensor:
    """Unit vectors of R^(p^2) along cos(w (x + y)) and sin(w (x + y)) for each k in ``freqs``: (2K, p^2).

    Equal to Nanda et al.'s (cos x cos y - sin x sin y) / sqrt 2 and (sin x cos y + cos x sin y) / sqrt 2
    of the 2D Fourier basis (``get_component_cos_xpy``, ``get_component_sin_xpy``).
    """
    x = torch.arange(p, dtype=dtype)
    s = (x[:, None] + x[None, :]).flatten()        # x + y over the row-major grid
    rows = []
    for k in freqs:
        rows += [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]
    if not rows:
        return torch.zeros(0, p * p, dtype=dtype)
    D = torch.stack(rows)
    return D / D.norm(dim=1, keepdim=True)


def _check(logits: Tensor, p: int) -> Tensor:
    if logits.shape != (p * p, p):
        raise ValueError(f"logits over all pairs must have shape (p^2, p) = ({p * p}, {p}), got {tuple(logits.shape)}")
    return logits.detach().to(torch.float64)


def restricted_logits(logits: Tensor, p: int, freqs: Sequence[int]) -> Tensor:
    """The logits kept only along the key-frequency directions of x + y, plus each answer's mean logit (p^2, p)."""
    L = _check(logits, p)
    D = xpy_directions(p, freqs)
    trig = D.T @ (D @ L)
    return trig + (L - trig).mean(0, keepdim=True)   # Nanda et al.'s bias correction


def excluded_logits(logits: Tensor, p: int, freqs: Sequence[int]) -> Tensor:
    """The logits with the key-frequency directions of x + y removed (p^2, p)."""
    L = _check(logits, p)
    D = xpy_directions(p, freqs)
    return L - D.T @ (D @ L)


def loss_on(logits: Tensor, labels: Tensor, index: Tensor | None = None) -> float:
    """Mean cross-entropy of (N, p) logits against labels (N,), optionally on the rows ``index``."""
    if index is not None:
        logits, labels = logits[index], labels[index]
    return float(F.cross_entropy(logits.to(torch.float64), labels))


def progress_measures(logits: Tensor, labels: Tensor, train_index: Tensor, test_index: Tensor, p: int,
                      freqs: Sequence[int]) -> dict[str, float]:
    """Train and test loss and accuracy, the restricted loss (over all pairs, as Nanda et al.'s ``calculate_trig_loss``,
    and over the test pairs) and the excluded loss (training pairs, all key frequencies removed at once) of one model."""
    r = restricted_logits(logits, p, freqs)
    e = excluded_logits(logits, p, freqs)
    L = logits.detach().to(torch.float64)
    return {
        "train_loss": loss_on(L, labels, train_index), "test_loss": loss_on(L, labels, test_index),
        "train_acc": float((L[train_index].argmax(-1) == labels[train_index]).double().mean()),
        "test_acc": float((L[test_index].argmax(-1) == labels[test_index]).double().mean()),
        "restricted_loss": loss_on(r, labels), "restricted_loss_test": loss_on(r, labels, test_index),
        "excluded_loss": loss_on(e, labels, train_index),
    }


def phase_steps(steps: Sequence[int], test_loss: Sequence[float], excluded_loss: Sequence[float],
                test_acc: Sequence[float], plateau: float = 0.9, generalized: float = 0.99) -> dict[str, int | None]:
    """The ends of Nanda et al.'s three phases, read from measured series (whylearn's operational definitions).

    - memorization ends where the test loss peaks (it rises while the training set is memorized);
    - circuit formation ends where the excluded loss first reaches ``plateau`` x its maximum (it rises
      while the Fourier circuit forms and plateaus during clean-up, Nanda et al. Sec. 5.2);
    - clean-up ends where the test accuracy first reaches ``generalized``.

    Returns ``{"memorization_end": step, "circuit_formation_end": step, "cleanup_end": step}`` (None where
    the series never gets there).
    """
    if not steps:
        return {"memorization_end": None, "circuit_formation_end": None, "cleanup_end": None}
    i_mem = max(range(len(steps)), key=lambda i: test_loss[i])
    top = max(excluded_loss)
    i_circ = next((i for i in range(i_mem, len(steps)) if excluded_loss[i] >= plateau * top), None)
    i_clean = next((i for i in range(len(steps)) if test_acc[i] >= generalized), None)
    return {"memorization_end": int(steps[i_mem]),
            "circuit_formation_end": int(steps[i_circ]) if i_circ is not None else None,
            "cleanup_end": int(steps[i_clean]) if i_clean is not None else None}

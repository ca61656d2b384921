"""Attention maps: the weights of every head of every layer for one input, as one figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from whylearn.analysis.plotting import save_figure  # noqa: E402


def plot_attention(maps: Tensor, labels: list[str], path: str | Path, title: str = "Attention weights") -> Path:
    """Draw attention weights (n_layer, n_head, T, T) as a grid: one row per layer, one column per head.

    Row i of each panel is the distribution over the positions j <= i that position i attends to
    (query on the y axis, key on the x axis). ``labels`` (T,) name the tokens on both axes.

    Raises:
        ValueError: maps not 4-D square, or len(labels) != T.
    """
    if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must have shape (n_layer, n_head, T, T), got {tuple(maps.shape)}")
    L, H, T, _ = maps.shape
    if len(labels) != T:
        raise ValueError(f"need one label per position: T={T}, got {len(labels)} labels")
    maps = maps.detach().float().cpu()
    size = max(1.6, min(0.18 * T, 3.5))
    fig, axes = plt.subplots(L, H, figsize=(size * H + 0.6, size * L + 0.6), squeeze=False)
    shown = [repr(s)[1:-1] for s in labels]
    for l in range(L):
        for h in range(H):
            ax = axes[l][h]
            ax.imshow(maps[l, h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {l} head {h}", fontsize=7)
            fs = 7 if T <= 16 else 4
            if T <= 40:
                ax.set_xticks(range(T), shown, fontsize=fs, rotation=90)
                ax.set_yticks(range(T), shown, fontsize=fs)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(f"{title} (query: rows, key: columns)", fontsize=9)
    return save_figure(fig, path, grid=False)


@torch.no_grad()
def attention_figure(model, ids: list[int], labels: list[str], path: str | Path, title: str = "Attention weights") -> Path:
    """Run ``model.attention_maps`` on token ids (T,) and draw them with :func:`plot_attention`."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    maps = model.attention_maps(torch.tensor([ids], dtype=torch.long, device=device))[:, 0]
    model.train(was)
    return plot_attention(maps, labels, path, title)

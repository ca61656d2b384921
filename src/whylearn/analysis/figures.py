"""Figures of a run, drawn from its logged scalars (a :class:`~whylearn.loggers.History`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from whylearn.analysis.plotting import save_figure  # noqa: E402
from whylearn.loggers import History  # noqa: E402

# figure name -> (title, y label, [(key, label), ...], log-y)
RUN_FIGURES = {
    "loss": (
        "Loss",
        "loss",
        [("train/loss", "train (per step)"), ("train_eval/loss", "train (eval mode)"), ("val/loss", "validation")],
        True,
    ),
    "accuracy": (
        "Accuracy",
        "accuracy",
        [
            ("train/acc", "train (per step)"),
            ("train/acc_epoch", "train (per epoch)"),
            ("train_eval/acc", "train (eval mode)"),
            ("val/acc", "validation"),
        ],
        False,
    ),
    "generalization_gap": (
        "Generalization gap",
        "gap",
        [("gap/loss", "val loss - train loss"), ("gap/acc", "train acc - val acc")],
        False,
    ),
    "weight_norms": (
        "Weight norms",
        "L2 norm",
        [("weights/l2_total", "||theta||"), ("weights/dist_from_init", "||theta - theta_0||")],
        False,
    ),
}


def plot_series(history: History, keys: Iterable[tuple[str, str]], title: str, ylabel: str, path: Path,
                logy: bool = False, logx: bool = False) -> Path | None:
    """Plot the given scalar series against optimizer steps; None if none of them was logged."""
    drawn = False
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in keys:
        steps, values = history.series(key)
        if steps:
            style = "-" if len(steps) > 30 else "o-"
            ax.plot(steps, values, style, label=label, markersize=3, alpha=0.9)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy and all(v > 0 for k, _ in keys for v in history.series(k)[1]):
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path, dpi=110, grid=False)  # also draws the run's published values for this figure


def plot_run(history: History, figures_dir: str | Path) -> list[Path]:
    """Draw the standard figures of a run (loss, accuracy, gap, weight norms) as PNG files."""
    out = []
    for name, (title, ylabel, keys, logy) in RUN_FIGURES.items():
        p = plot_series(history, keys, title, ylabel, Path(figures_dir) / f"{name}.png", logy=logy)
        if p is not None:
            out.append(p)
    return out

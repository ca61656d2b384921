"""Small matplotlib helpers shared by the analysis instruments (Agg backend, small PNGs)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from whylearn import reference  # noqa: E402


def subplots(ncols: int = 1, nrows: int = 1, width: float = 6.0, height: float = 4.0):
    """A figure of ``nrows`` x ``ncols`` axes, each about ``width`` x ``height`` inches."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=True)


def save_figure(fig, path: str | Path, dpi: int = 100, grid: bool = True, references: list | None = None) -> Path:
    """Save ``fig`` as a PNG (creating the folder), close it, return the path; ``grid`` adds a light grid to every axis.

    Published values are drawn first: the entries of ``references`` (a ``reference`` block, see
    :mod:`whylearn.reference`), or else those of the current run's block, that name this figure
    (``figure: <file stem>``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if references is not None:
        reference.draw_entries(fig, reference.validate(references), path.stem)
    else:
        reference.draw_active(fig, path.stem)
    for ax in fig.axes if grid else ():
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

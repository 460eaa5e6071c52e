"""Figures with matplotlib (Agg backend, no display needed): image grids with captions, gradient-flow plots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    from pyramidal.restore import write_atomic

    path = Path(path)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi, bbox_inches="tight"))
    _pyplot().close(fig)
    return path


def image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str | os.PathLike,
    column_titles: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
    tile_inches: float = 1.9,
) -> Path:
    """A grid of uint8 H×W×3 tiles, one row per image, with column titles and a caption (e.g. PSNR) under each."""
    plt = _pyplot()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(tile_inches * n_cols, (tile_inches + 0.35) * n_rows + 0.4),
                             dpi=100, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row) or row[j] is None:
                ax.axis("off")
                continue
            ax.imshow(row[j], interpolation="nearest")
            if i == 0 and column_titles:
                ax.set_title(column_titles[j], fontsize=9)
            if captions and captions[i][j]:
                ax.set_xlabel(captions[i][j], fontsize=8)
            if j == 0 and row_titles:
                ax.set_ylabel(row_titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def line_plot(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logy: bool = False,
) -> Path:
    """One line per named (x, y) curve, optional log y axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker=".", markersize=3, linewidth=1.2, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)

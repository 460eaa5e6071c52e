"""Figures with matplotlib (Agg backend, no display needed): image grids with captions, gradient-flow plots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pyramidal.io import atomic_write


def tile_grid(images: np.ndarray, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """B×C×H×W floats in [0, 1] → one C×H'×W' picture, `nrow` tiles a row with white `pad`-px gaps (TensorBoard)."""
    b, c, h, w = images.shape
    nrow = max(1, min(nrow, b))
    rows = -(-b // nrow)
    grid = np.ones((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, exclusive: bool = False) -> Path:
    """Write `fig` as a PNG, atomically; `exclusive`: only if no file is there (`io.atomic_write`)."""
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi, bbox_inches="tight"),
                     exclusive=exclusive)
    finally:
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
    exclusive: bool = False,
) -> Path:
    """A grid of uint8 H×W×3 tiles, one row per image, with column titles and a caption (e.g. PSNR) under each;
    `exclusive`: written only if no file is at `path` (`io.atomic_write`)."""
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
    return _save(fig, path, exclusive)


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), so a figure shows different photographs, not one."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})


def file_suffix(label: str) -> str:
    """A setting label as part of a file name: 'sigma=25' → '_sigma25', '' → ''."""
    return ("_" + label.replace("=", "").replace(", ", "_")) if label else ""


def comparison_figure(
    path: str | os.PathLike,
    clean: Sequence[np.ndarray],
    columns: Sequence[tuple[str, Sequence[np.ndarray], Sequence[float]]],
    *,
    names: Sequence[str] | None = None,
    rows: int = 4,
    title: str | None = None,
    exclusive: bool = False,
) -> Path:
    """Ground truth, then one column per method, for `rows` images spread over the set; PSNR under each tile.

    `columns`: (column title, images, PSNR in dB per image) for each method, the damaged input first.
    `names` captions the ground-truth tiles (e.g. the photographs' names).
    """
    grid, captions = [], []
    for i in spread(len(clean), rows):
        grid.append([clean[i]] + [images[i] for _, images, _ in columns])
        captions.append([names[i] if names else ""] + [f"{scores[i]:.2f} dB" for _, _, scores in columns])
    titles = ["ground truth"] + [column_title for column_title, _, _ in columns]
    return image_grid(grid, path, column_titles=titles, captions=captions, title=title, exclusive=exclusive)


def line_plot(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logy: bool = False,
    exclusive: bool = False,
) -> Path:
    """One line per named (x, y) curve, optional log y axis; `exclusive`: written only if no file is at `path`."""
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
    return _save(fig, path, exclusive)

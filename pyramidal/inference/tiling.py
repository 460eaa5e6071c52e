"""Tiles: where they go over an image, and the weights that blend their overlaps."""

from __future__ import annotations

import math

import numpy as np


def tile_layout(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """The side and start offsets of the fewest tiles that cover a length, spread evenly.

    Args:
        length: the image side in px.
        tile: the largest tile side in px.
        overlap: the least number of px neighbouring tiles share.
        multiple: round the side up to this (a model that pads its input to a multiple of 2**levels does the
            same work for any side up to the next multiple), never above `tile`.

    Returns:
        (side, offsets): the side is as small as the tile count allows, so no tile runs far past its
        neighbour (a fixed-stride layout ends with a tile that mostly repeats the one before it); the first
        offset is 0 and the last tile ends exactly at `length`.
    """
    if length <= tile:
        return length, [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    side = math.ceil((length + (count - 1) * overlap) / count)
    side = min(tile, math.ceil(side / multiple) * multiple)
    # Integer steps of floor or ceil((length - side) / (count - 1)), never more than side - overlap.
    return side, [i * (length - side) // (count - 1) for i in range(count)]


def blend_ramp(size: int, overlap: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    """Blend weights along one axis: raised-cosine ramps over `overlap` px at edges shared with a neighbour."""
    w = np.ones(size, dtype=np.float32)
    n = min(overlap, size)
    if n > 0:
        # Strictly positive, so every pixel has some weight even where only one tile covers it.
        r = np.sin(0.5 * math.pi * (np.arange(n) + 0.5) / n) ** 2
        if fade_start:
            w[:n] *= r
        if fade_end:
            w[size - n:] *= r[::-1]
    return w

"""The restore options' defaults and their one check, free of torch so that `--help` can show them.

Every face that restores (the `restore`, `evaluate` and `bench` commands, `pyramidal.restore`, the web page)
takes its tiling from here.
"""

from __future__ import annotations

import numbers

from pyramidal.errors import option_error

# One image at a time (restore, the Python API, the web page, bench). Measured on 2 cores, 12 MP
# (docs/performance.md): 512-px tiles do 15 % less work than 256-px ones (less overlap), run as fast per
# pixel and score as well (closer to the whole image at once); one tile per pass with one pass per CPU
# thread keeps the peak RSS of a 12 MP restore near 1.2 GB.
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
DEFAULT_BATCH_SIZE = 1
# Many images of one size (evaluate, `inference.restore_images`): crops up to 256 px go through whole, four
# to a forward pass; the published scores were measured so.
MANY_IMAGES_TILE = 256
MANY_IMAGES_BATCH_SIZE = 4


def check_tiling(tile: int | None, overlap: int | None, batch_size: int = 1) -> tuple[int | None, int]:
    """Validate the tiling options once, before any model runs; returns (tile or None for whole images, overlap).

    Raises OptionError naming the parameter (the CLI words it as the flag): a negative tile, a negative overlap, or an overlap that is not
    smaller than the tile. Without tiling (None or 0) the overlap does not matter.
    """
    for name, value in (("tile", tile), ("overlap", overlap), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise option_error(f"{{{name}}}: must be a whole number", **{name: value})
    if batch_size < 1:
        raise option_error("{batch_size}: must be at least 1", batch_size=batch_size)
    if tile is not None and tile < 0:
        raise option_error("{tile}: must be 0 (the whole image at once) or a positive size in px", tile=tile)
    if overlap is not None and overlap < 0:
        raise option_error("{overlap}: must be 0 or more", overlap=overlap)
    if not tile:
        return None, 0
    if overlap is None:
        return int(tile), min(DEFAULT_OVERLAP, int(tile) // 2)
    if overlap >= tile:
        raise option_error("{overlap}: must be smaller than {tile}", overlap=overlap, tile=tile)
    return int(tile), int(overlap)

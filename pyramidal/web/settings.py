"""What `pyramidal serve` is started with: the weights offered, the restore options, the limits and the host names
answered, fixed for the server's life.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyramidal.options import RestoreOptions
from pyramidal.web.engine import WeightsChoice

# The names this computer answers to; the --host given and --allow-host names are added (`ServeConfig.hosts`).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
TILE_RANGE = (64, 2048)


@dataclass
class ServeConfig:
    """Everything the app needs to know, fixed when the server starts."""

    weights: Sequence[WeightsChoice] = ()
    options: RestoreOptions = RestoreOptions()  # device, precision and the default tile; a request sets its own
    max_pixels: int = 50_000_000
    max_upload_bytes: int = 100 * 2**20
    queue_size: int = 4
    keep_results: int = 16  # finished jobs kept for download, newest first
    result_ttl: float = 600.0  # seconds a finished job stays downloadable
    slow_baselines: bool = False  # BM3D in sample scores (tens of seconds per image on a CPU)
    decode_slots: int = 2  # uploads decoded at once (each up to max_pixels × 3 bytes)
    hosts: Sequence[str] = LOCAL_HOSTS  # Host header values answered (any port); others get 400

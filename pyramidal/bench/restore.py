"""`pyramidal bench --mode restore`: `pyramidal restore` of one photo, timed end to end (read, tiled restore, write)."""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from pyramidal.bench.config import BenchConfig
from pyramidal.bench.measure import (
    MatmulProbe,
    PeakMemory,
    count_flops,
    machine_kind,
    matmul_peak,
    peak_fields,
    time_interleaved,
)
from pyramidal.data.sources import skimage_data_dir
from pyramidal.errors import PyramidalError
from pyramidal.fastpath import allocator_tuned
from pyramidal.inference import files as inference_files  # the module, so that a test can watch restore_files
from pyramidal.inference.model import load_restorer, prepare_for_inference
from pyramidal.inference.tiling import tile_layout
from pyramidal.io import read_image, read_rgb, write_image
from pyramidal.models import create_model
from pyramidal.options import DEFAULT_BATCH_SIZE, DEFAULT_TILE, check_tiling


def _bench_photo(height: int, width: int) -> np.ndarray:
    """A photograph of the given size (scikit-image's coffee, resized), or smooth random colour without it."""
    folder = skimage_data_dir()
    try:
        im = read_rgb(folder / "coffee.png") if folder is not None else None
    except PyramidalError:
        im = None
    if im is None:
        small = np.random.default_rng(0).integers(0, 256, (max(1, height // 64), max(1, width // 64), 3), np.uint8)
        im = Image.fromarray(small)
    return np.asarray(im.resize((width, height), Image.BICUBIC))


def _restore_model(c: BenchConfig) -> tuple[nn.Module, str]:
    """The model `--mode restore` runs and its name: from `weights` as `pyramidal restore` loads it, else
    `model` with random weights (the speed is the same)."""
    if c.weights:
        model = load_restorer(c.weights, c.task)
        return model, model.info.get("model", "?")
    torch.manual_seed(c.seed)
    return create_model(c.model, **c.options), c.model


def bench_restore(c: BenchConfig, device: torch.device, precision: str,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """`pyramidal restore` of one photo of `c.megapixels`, timed end to end (read, tiled restore, write)."""
    opts = {k: v for k, v in c.restore_options.items() if v is not None}
    per_pass = opts.get("batch_size", DEFAULT_BATCH_SIZE)
    tile, overlap = check_tiling(opts.get("tile", DEFAULT_TILE), opts.get("overlap"), per_pass)
    width = max(16, round(math.sqrt(c.megapixels * 1e6 * 4 / 3)))
    height = max(16, round(width * 3 / 4))
    model, name = _restore_model(c)
    multiple = 2 ** getattr(model, "levels", 0)
    (tile_h, ys), (tile_w, xs) = (tile_layout(height, tile, overlap, multiple),
                                  tile_layout(width, tile, overlap, multiple)) if tile else ((height, [0]), (width, [0]))
    tiles = len(ys) * len(xs)
    say("counting FLOPs")
    gflop = tiles * count_flops(model, (tile_h, tile_w), train=False) / 1e9
    say(f"measuring the {precision} matmul peak")
    peak = matmul_peak(device, precision, c.matmul_seconds)
    probe = MatmulProbe(device, precision, 0.4 * c.matmul_seconds, peak, c.matmul_seconds)
    result: dict[str, Any] = {
        "mode": "restore", "model": name, "weights": c.weights, "task": c.task,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device), "precision": precision, "threads": torch.get_num_threads(),
        "machine": machine_kind(device), "steps": c.steps, "warmup": c.warmup,
        "restore_width": width, "restore_height": height, "restore_megapixels": width * height / 1e6,
        "restore_tile": tile, "restore_overlap": overlap, "restore_tiles_per_pass": per_pass,
        "restore_tiles": tiles, "restore_tile_size": [tile_h, tile_w], "restore_gflop": gflop,
        "matmul_peak_gflop_per_s": peak,
    }
    # The allocator is the restore path's own business (prepare_for_inference tunes it on the CPU);
    # --no-tune-allocator turns that off for this run.
    saved = os.environ.get("PYRAMIDAL_NO_ALLOCATOR_TUNING")
    if c.tune_allocator is False:
        os.environ["PYRAMIDAL_NO_ALLOCATOR_TUNING"] = "1"
    try:
        with tempfile.TemporaryDirectory(prefix="pyramidal-bench-") as tmp:
            photo = Path(tmp) / "photo.png"
            write_image(_bench_photo(height, width), photo)
            outdir = Path(tmp) / "restored"
            prepared = prepare_for_inference(model, device, precision)

            def restore() -> None:
                (done,) = inference_files.restore_files(prepared, [photo], outdir, overwrite=True, **opts)
                if done.error:
                    raise PyramidalError(done.error)

            say(f"restoring a {width}×{height} photo ({c.warmup} warm-up + {c.steps})")
            with PeakMemory(device) as mem:
                for _ in range(c.warmup):
                    restore()
            times = time_interleaved([restore, probe], c.steps, device)[0]
            start = time.perf_counter()
            write_image(read_image(photo).rgb, outdir / "again.png")
            result["restore_io_s"] = time.perf_counter() - start
    finally:
        if c.tune_allocator is False:
            if saved is None:
                os.environ.pop("PYRAMIDAL_NO_ALLOCATOR_TUNING", None)
            else:
                os.environ["PYRAMIDAL_NO_ALLOCATOR_TUNING"] = saved
    median = statistics.median(times)
    result.update({
        "allocator_tuned": allocator_tuned(),
        "restore_times_s": times, "restore_s": median,
        "restore_mp_per_s": result["restore_megapixels"] / median,
        "restore_mp_per_s_best": result["restore_megapixels"] / min(times),
        "restore_gflop_per_s": gflop / median,
        "restore_peak_memory_mb": mem.peak_mb, "peak_memory_mb": mem.peak_mb, "notes": [],
    })
    result.update(peak_fields("restore", result["restore_gflop_per_s"], probe))
    return result

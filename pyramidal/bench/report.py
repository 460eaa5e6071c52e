"""The human-readable summaries of `pyramidal bench`'s results."""

from __future__ import annotations

from typing import Any

from pyramidal.bench.measure import describe_machine
from pyramidal.io import format_number


def fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    """`format_number` with the report's unit after the value and "n/a" for a missing one."""
    return format_number(value, digits, unit, missing="n/a")


def _format_restore(r: dict[str, Any]) -> str:
    source = f"weights {r['weights']}" + (f" ({r['task']})" if r.get("task") else "") if r.get("weights") else \
        "random weights"
    tile_h, tile_w = r["restore_tile_size"]
    tiling = (f"tiles {r['restore_tile']} px, overlap {r['restore_overlap']}, {r['restore_tiles_per_pass']} per pass: "
              f"{r['restore_tiles']} tiles of {tile_w}×{tile_h}" if r["restore_tile"] else "the whole image at once")
    return "\n".join([
        f"machine: {describe_machine(r['machine'])}",
        f"restore: model {r['model']} ({r['parameters']:,} parameters, {source}), {r['device']}, {r['precision']}"
        + (", allocator tuned" if r.get("allocator_tuned") else ""),
        f"photo {r['restore_width']}×{r['restore_height']} ({fmt(r['restore_megapixels'], ' MP', 1)}), {tiling}, "
        f"{fmt(r['restore_gflop'], ' GFLOP', 0)}",
        f"restore:   {fmt(r['restore_s'], ' s')} median (read, restore, write PNG; best "
        f"{fmt(min(r['restore_times_s']), ' s')}) = {fmt(r['restore_mp_per_s'], ' MP/s', 3)}, "
        f"of which reading and writing the files {fmt(r['restore_io_s'], ' s')}",
        f"           {fmt(r['restore_gflop_per_s'], ' GFLOP/s', 1)} = {fmt(100 * r['restore_peak_fraction'], '%', 1)} "
        f"of the {r['precision']} matmul peak measured between the runs "
        f"({fmt(r['restore_matmul_gflop_per_s'], ' GFLOP/s', 1)}; "
        f"{fmt(r['matmul_peak_gflop_per_s'], ' GFLOP/s', 1)} up front), "
        f"peak memory {fmt(r['restore_peak_memory_mb'], ' MB', 0)}",
    ])


def format_report(r: dict[str, Any]) -> str:
    """A human-readable summary of a `run_bench` result."""
    if r["mode"] == "restore":
        return _format_restore(r)
    lines = [
        f"machine: {describe_machine(r['machine'])}",
        f"model {r['model']} ({r['parameters']:,} parameters), {r['size']}×{r['size']}, batch {r['batch_size']}, "
        f"{r['device']} ({r['threads']} threads), {r['precision']}, "
        f"{'channels_last' if r['channels_last'] else 'NCHW'}"
        + (", compiled" if r["compile"] else "") + (", memory-efficient" if r["memory_efficient"] else "")
        + (", allocator tuned" if r.get("allocator_tuned") else ""),
        f"FLOPs per image: forward {fmt(r['gflop_per_image'], ' GFLOP', 3)}"
        + (f", training step {fmt(r['train_gflop_per_image'], ' GFLOP', 3)}" if "train_gflop_per_image" in r else ""),
        f"matmul peak ({r['precision']}): {fmt(r['matmul_peak_gflop_per_s'], ' GFLOP/s', 1)} up front"
        + "".join(f", {fmt(r[f'{k}_matmul_gflop_per_s'], ' GFLOP/s', 1)} between the {k} steps"
                  for k in ("train", "infer") if f"{k}_matmul_gflop_per_s" in r)
        + " (the fractions of peak below use the latter)",
    ]
    if "train_images_per_s" in r:
        lines.append(
            f"training:  {fmt(r['train_images_per_s'])} images/s median (best {fmt(r['train_images_per_s_best'])}), "
            f"{fmt(r['train_gflop_per_s'], ' GFLOP/s', 1)} = {fmt(100 * r['train_peak_fraction'], '%', 1)} of peak, "
            f"peak memory {fmt(r['train_peak_memory_mb'], ' MB', 0)} (+{fmt(r['train_step_memory_mb'], ' MB', 0)})")
        if "train_speedup" in r:
            lines.append(f"  plain fp32 NCHW reference: {fmt(r['reference_train_images_per_s'])} images/s → "
                         f"speed-up ×{fmt(r['train_speedup'])} (ratio of medians; median of paired "
                         f"ratios ×{fmt(r['train_speedup_paired'])})")
    if "infer_images_per_s" in r:
        mem = f", peak memory {fmt(r['infer_peak_memory_mb'], ' MB', 0)}" if "infer_peak_memory_mb" in r else ""
        lines.append(
            f"inference: {fmt(r['infer_images_per_s'])} images/s median (best {fmt(r['infer_images_per_s_best'])}), "
            f"{fmt(r['infer_gflop_per_s'], ' GFLOP/s', 1)} = {fmt(100 * r['infer_peak_fraction'], '%', 1)} of peak"
            + mem)
        if "infer_speedup" in r:
            lines.append(f"  plain fp32 NCHW reference: {fmt(r['reference_infer_images_per_s'])} images/s → "
                         f"speed-up ×{fmt(r['infer_speedup'])} (ratio of medians; median of paired "
                         f"ratios ×{fmt(r['infer_speedup_paired'])})")
    if r.get("data_pairs_per_s"):
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in r["data_pairs_per_s"].items())
        lines.append(f"data pipeline (damaged pairs/s): {rates}")
        if "data_to_train_ratio" in r:
            lines.append(f"  slowest task {r['data_slowest_task']}: ×{fmt(r['data_to_train_ratio'], '', 1)} "
                         "the training images/s")
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def format_sweep(r: dict[str, Any]) -> str:
    """The sweep as a table: one line per batch size."""
    lines = []
    if "machine" in r:
        lines.append(f"machine: {describe_machine(r['machine'])}")
        lines.append(f"model {r['model']} ({r['parameters']:,} parameters), {r['size']}×{r['size']}, {r['device']}, "
                     f"{r['precision']}, training step {fmt(r['train_gflop_per_image'], ' GFLOP', 3)} per image")
    lines.append(f"{'batch':>6} {'images/s':>10} {'GFLOP/s':>10} {'of peak':>8} {'peak memory':>12}")
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"{row['batch_size']:>6} {row['error']}")
            continue
        lines.append(f"{row['batch_size']:>6} {fmt(row['train_images_per_s'], '', 0):>10} "
                     f"{fmt(row['train_gflop_per_s'], '', 0):>10} {fmt(100 * row['train_peak_fraction'], '%', 1):>8} "
                     f"{fmt(row.get('train_peak_memory_mb'), ' MB', 0):>12}")
    return "\n".join(lines)

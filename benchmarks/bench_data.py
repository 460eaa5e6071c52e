"""Data-pipeline throughput: damaged training pairs per second for every task.

Usage: python benchmarks/bench_data.py [--size 64] [--batch-size 32] [--seconds 3] [--threads N] [TASK ...]

"pipeline" = built-in photograph patches (crop, rescale, flip, colour jitter) + damage + float conversion,
exactly what `make_loader(..., num_workers=W)` does in training; "damage only" = the task alone on a ready
uint8 batch in the main process.
"""

from __future__ import annotations

import argparse
import platform


def main(argv: list[str] | None = None) -> int:
    import torch

    from pyramidal.bench.pipeline import bench_pairs_per_second
    from pyramidal.damage import TASKS
    from pyramidal.data.sources import load_source

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tasks", nargs="*", default=TASKS.names())
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--workers", type=int, default=0, help="loader worker processes for the pipeline column")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    source = load_source("builtin", size=args.size)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.workers} workers, {args.size}x{args.size}, "
          f"batch {args.batch_size}")
    print(f"{'task':<10} {'pipeline pairs/s':>17} {'damage only /s':>15}")
    for name in args.tasks:
        full = bench_pairs_per_second(name, args.size, args.batch_size, args.seconds, source=source,
                                      num_workers=args.workers)
        dmg = bench_pairs_per_second(name, args.size, args.batch_size, args.seconds, source=source,
                                     damage_only=True)
        print(f"{name:<10} {full:>17.0f} {dmg:>15.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

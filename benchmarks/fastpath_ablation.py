"""Which fast path buys what: precision × memory layout, timed interleaved in one process.

Every configuration gets its own copy of the model; their steps alternate (A, B, C, D, A, B, ...), so a busy
machine slows them alike. Reports median images/s by wall clock and by process CPU time (with --threads 1
the CPU time hardly depends on what else the machine runs), and the median of per-round ratios against
the first configuration.

    python benchmarks/fastpath_ablation.py --mode train --size 64 --batch-size 8 --threads 1
    python benchmarks/fastpath_ablation.py --mode infer --size 256 --batch-size 1 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# Four models alternate: oneDNN's default cache of 1024 kernels would thrash (read at first use).
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")

import torch

from pyramidal.config import TrainConfig
from pyramidal.fastpath import memory_format, tune_cpu_allocator
from pyramidal.inference.model import prepare_for_inference
from pyramidal.models import create_model
from pyramidal.step import make_optimizer, train_step

CONFIGS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def make_step(model_name: str, precision: str, channels_last: bool, mode: str, size: int, batch: int,
              options: dict | None = None):
    torch.manual_seed(0)
    fmt = memory_format(channels_last)
    model = create_model(model_name, **(options or {})).to(memory_format=fmt)
    x = (torch.rand(batch, 3, size, size) * 2 - 1).contiguous(memory_format=fmt)
    y = torch.rand(batch, 3, size, size) * 2 - 1
    cpu = torch.device("cpu")
    if mode == "train":  # the step of `pyramidal train`, with its optimizer
        c = TrainConfig()
        opt = make_optimizer(model.parameters(), c.optimizer, c.lr, c.weight_decay, cpu)
        model.train()

        def run() -> None:
            train_step(model, opt, x, y, device=cpu, precision=precision, channels_last=channels_last)
    else:  # what `pyramidal restore` runs
        prepared = prepare_for_inference(model, cpu, precision, channels_last=channels_last)

        def run() -> None:
            prepared(x)

    def step() -> tuple[float, float]:
        wall, proc = time.perf_counter(), time.process_time()
        run()
        return time.perf_counter() - wall, time.process_time() - proc

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description="fast-path ablation (interleaved)")
    parser.add_argument("--model", default="pyramidal457101215")
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--no-tune-allocator", action="store_true")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=INT",
                        help="integer model option, e.g. --option m=16 --option growth=8")
    args = parser.parse_args()
    options = {k: int(v) for k, v in (o.split("=", 1) for o in args.option)}
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_tune_allocator:
        tune_cpu_allocator()
    steps = [make_step(args.model, p, cl, args.mode, args.size, args.batch_size, options) for p, cl in CONFIGS]
    for step in steps:  # warm-up: oneDNN picks and caches its kernels
        step()
        step()
    wall: list[list[float]] = [[] for _ in steps]
    cpu: list[list[float]] = [[] for _ in steps]
    for _ in range(args.rounds):
        for i, step in enumerate(steps):
            w, c = step()
            wall[i].append(w)
            cpu[i].append(c)
    b = args.batch_size
    print(f"{args.model} {options or ''} {args.mode} {args.size}×{args.size} batch {b}, {torch.get_num_threads()} threads, "
          f"{args.rounds} interleaved rounds")
    print(f"{'config':<16} {'img/s wall':>11} {'img/s cpu':>10} {'×wall':>7} {'×cpu':>7}")
    for i, (p, cl) in enumerate(CONFIGS):
        ratio_w = statistics.median(a / x for a, x in zip(wall[0], wall[i]))
        ratio_c = statistics.median(a / x for a, x in zip(cpu[0], cpu[i]))
        name = f"{p} {'NHWC' if cl else 'NCHW'}"
        print(f"{name:<16} {b / statistics.median(wall[i]):>11.2f} {b / statistics.median(cpu[i]):>10.2f} "
              f"{ratio_w:>7.2f} {ratio_c:>7.2f}")


if __name__ == "__main__":
    main()

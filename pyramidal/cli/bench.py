"""`pyramidal bench --model NAME`: training/inference images/s, FLOPs, memory, matmul peak, data pipeline;
`--mode restore`: `pyramidal restore` of a photo of --megapixels, in MP/s."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys

from pyramidal.cli.common import (
    add_device,
    add_json,
    add_precision,
    add_threads,
    at_least,
    check_report_files,
    positive_number,
    task_name,
    write_json_output,
    write_outputs,
)
from pyramidal.configfiles import parse_options
from pyramidal.damage import TASKS
from pyramidal.errors import PyramidalError
from pyramidal.options import DEFAULT_OVERLAP, RestoreOptions

HELP = "benchmark training, inference and restore speed, FLOPs, peak memory and the data pipeline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="registered model (default pyramidal457101215; smoke pyramidal44)")
    parser.add_argument("--model-option", action="append", metavar="KEY=VALUE", default=[],
                        help="a model option, as for train (repeatable), e.g. mask_input=true: a mask-conditioned "
                             "or noise-map model is timed on the 4-channel input it takes")
    # Checked, with the memory a step needs, by BenchConfig.validate (one line, exit 2).
    parser.add_argument("--size", type=int, help="image side in px (default 64; smoke 32)")
    parser.add_argument("--batch-size", type=int,
                        help="images per step (default 8; smoke 2); with --mode restore, tiles per forward pass "
                             f"(default restore's, {RestoreOptions.batch_size})")
    parser.add_argument("--sweep", metavar="B1,B2,...",
                        help="time training at each of these batch sizes (e.g. 64,256,1024): images/s and fraction "
                             "of the matmul peak per batch, no inference or data pipeline")
    parser.add_argument("--mode", default="both", choices=("train", "infer", "both", "restore"),
                        help="what to time (default both); restore: `pyramidal restore` of one photo, end to end")
    restore = parser.add_argument_group("--mode restore")
    restore.add_argument("--weights", help="'builtin' (needs --task) or a .safetensors file, as for restore "
                                           "(default: builtin unless --model is given, which runs random weights)")
    restore.add_argument("--task", type=task_name, help="the task of --weights builtin (default noise)")
    restore.add_argument("--megapixels", type=positive_number,
                         help="size of the 4:3 photo restored (default 12, a 4000×3000 photo; smoke 0.05)")
    restore.add_argument("--tile", type=at_least(0), help=f"as for restore (default restore's, {RestoreOptions.tile})")
    restore.add_argument("--overlap", type=at_least(0), help=f"as for restore (default restore's, {DEFAULT_OVERLAP})")
    add_precision(parser)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC activations and weights (default on)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (slow to start)")
    parser.add_argument("--memory-efficient", action="store_true",
                        help="checkpoint dense layers, transitions and the output conv: recompute them in backward (less memory)")
    add_device(parser)
    parser.add_argument("--steps", type=int, help="timed steps (default 10; smoke 2)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up steps, also used for peak memory (default 2)")
    add_threads(parser)
    parser.add_argument("--reference", action="store_true",
                        help="also time the plain fp32 NCHW implementation (benchmarks/plain_fc_densenet.py), "
                             "interleaved, and report the speed-up")
    parser.add_argument("--reference-file", metavar="PATH", help="where plain_fc_densenet.py is, if not in ./benchmarks")
    parser.add_argument("--data", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the data pipeline, damaged pairs/s per task (default on)")
    parser.add_argument("--tasks", help="comma-separated damage tasks for --data (default all)")
    parser.add_argument("--tune-allocator", action=argparse.BooleanOptionalAction, default=None,
                        help="keep freed CPU memory for reuse instead of page-faulting it back every step "
                             "(default on, off with --memory-efficient, as in pyramidal train)")
    add_json(parser)
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long run for CI: pyramidal44 unless --model is given, 32 px, batch 2, 2 steps; "
                             "with --mode restore a 0.05 MP photo")


def run(args: argparse.Namespace) -> int:
    from pyramidal.bench.config import BenchConfig  # lazy: the bench package loads torch
    from pyramidal.bench.report import format_report, format_sweep  # lazy: torch
    from pyramidal.bench.run import run_bench, run_sweep  # lazy: torch

    restore_flags = {"--weights": args.weights, "--task": args.task, "--megapixels": args.megapixels,
                     "--tile": args.tile, "--overlap": args.overlap}
    explicit = {
        "size": args.size, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
    }
    if args.mode == "restore":
        # Restore's own defaults apply unless given; --batch-size means tiles per pass, as for restore.
        explicit["restore_options"] = {"tile": args.tile, "overlap": args.overlap,
                                       "batch_size": explicit.pop("batch_size")}
        explicit["megapixels"] = args.megapixels
        if args.weights or not args.model:
            explicit["weights"] = args.weights or "builtin"
            explicit["task"] = args.task or ("noise" if explicit["weights"] == "builtin" else None)
    elif any(v is not None for v in restore_flags.values()):
        given = ", ".join(k for k, v in restore_flags.items() if v is not None)
        raise PyramidalError(f"{given}: only for --mode restore")
    explicit = {k: v for k, v in explicit.items() if v is not None}
    if args.model_option:
        if args.mode == "restore":
            raise PyramidalError("--model-option: not with --mode restore, which runs weights as they were saved")
        explicit["options"] = parse_options(args.model_option, "--model-option")
    common = dict(
        mode=args.mode, precision=args.precision, channels_last=args.channels_last, compile=args.compile,
        memory_efficient=args.memory_efficient, device=args.device, threads=args.threads,
        reference=args.reference, reference_file=args.reference_file, data=args.data,
        tasks=tuple(t for t in args.tasks.split(",") if t) if args.tasks else None,
        tune_allocator=args.tune_allocator,
    )
    if args.smoke:
        model = {"model": args.model} if args.model else {}
        config = BenchConfig.smoke(**common, **model, **explicit)
    else:
        config = BenchConfig(model=args.model or "pyramidal457101215", **common, **explicit)

    config.validate()
    for batch in _batch_sizes(args.sweep) if args.sweep else ():  # each batch of a sweep must fit, too
        dataclasses.replace(config, batch_size=batch, mode="train").validate()
    for task in config.tasks or ():
        TASKS.get(task)  # an unknown --tasks name fails now, not after the timings
    plan = check_report_files(json=args.json)  # before the benchmark runs, so that its results are never lost
    to_stdout = args.json == "-"  # then stdout holds the one JSON object and nothing else

    def log(msg: str) -> None:
        if not to_stdout:
            print(f"… {msg}", file=sys.stderr, flush=True)

    if args.sweep:
        if args.mode == "restore":
            raise PyramidalError("--sweep times training steps: not with --mode restore")
        result = run_sweep(config, _batch_sizes(args.sweep), log=log)
        report = format_sweep(result)
    else:
        result = run_bench(config, log=log)
        report = format_report(result)
    if not to_stdout:
        print(report)
    if to_stdout:
        write_json_output(result, "-")
    elif args.json:  # claimed as it is written: a file another run wrote meanwhile stays (exit 1)
        return write_outputs("bench", plan, [(args.json, functools.partial(write_json_output, result, args.json))])
    return 0


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise PyramidalError(f"--sweep {text}: give batch sizes as comma-separated positive integers, e.g. 64,256,1024")
    return sizes

"""`pyramidal evaluate --task T --weights W`: PSNR/SSIM of a model against classical baselines."""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyramidal.cli.common import (
    add_device,
    add_json,
    add_precision,
    add_task_options,
    at_least,
    side,
    task_help,
    task_name,
    task_option_values,
    write_json_output,
    write_outputs,
)
from pyramidal.damage import TASKS
from pyramidal.errors import PyramidalError
from pyramidal.options import DEFAULT_OVERLAP, EVALUATION, RestoreOptions

HELP = "score a model against classical baselines (PSNR/SSIM on fixed eval damage); table, JSON, Markdown"
MAX_CROPS = 10_000  # fixed crops per photograph: far more than any evaluation needs, far fewer than fill memory


def _crop_help() -> str:
    """The default crops of each task's evaluation protocol (`Task.eval_crop`, `Task.eval_crops`)."""
    by_policy: dict[tuple[int, int], list[str]] = {}
    for name in TASKS.names():
        task = TASKS.get(name)
        by_policy.setdefault((task.eval_crop, task.eval_crops), []).append(name)
    usual = max(by_policy, key=lambda k: len(by_policy[k]))
    others = "".join(f"; {crop} px, {crops} per photograph for {', '.join(names)}"
                     for (crop, crops), names in by_policy.items() if (crop, crops) != usual)
    return f"default {usual[0]} px, {usual[1]} per photograph" + others


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", type=task_name, help=task_help() + " (required, except with --benchmark: noise)")
    parser.add_argument("--weights", default="builtin",
                        help="'builtin' (default), a .safetensors file, a training checkpoint (last.ckpt), a run "
                             "folder, or 'none' for the baselines alone")
    parser.add_argument("--data", default="builtin", help="builtin (default), folder:PATH or celeba:PATH")
    parser.add_argument("--split", default="val", choices=("val", "test", "all"),
                        help="evaluation split (default val); all: every image of a folder:PATH that training "
                             "never reads, such as .data/photos-heldout")
    policy = _crop_help()
    parser.add_argument("--crop", type=side(0), default=None, help=f"crop side in px, 0 = whole images ({policy})")
    parser.add_argument("--crops", type=at_least(1, MAX_CROPS), default=None,
                        help="fixed crops per built-in photograph (default: the task's, at its default side; else 1)")
    parser.add_argument("--limit", type=at_least(1), default=None, help="evaluate at most N images")
    add_task_options(parser, "evaluate")
    parser.add_argument("--baselines", default="auto", choices=("auto", "none", "fast", "all"),
                        help="classical baselines: fast skips BM3D; auto runs BM3D up to 16 images (default)")
    parser.add_argument("--ensemble", action="store_true", help="also report the 8-fold self-ensemble as a row")
    add_json(parser)
    parser.add_argument("--markdown", metavar="OUT", help="write the results as Markdown")
    parser.add_argument("--figures", metavar="DIR",
                        help="write a figure per setting: ground truth / damaged / best classical / model")
    parser.add_argument("--overwrite", action="store_true", help="allow figures to replace existing files")
    parser.add_argument("--tile", type=at_least(0), default=EVALUATION.tile,
                        help=f"restore tile side, 0 = whole image (default {EVALUATION.tile})")
    parser.add_argument("--overlap", type=at_least(0), default=None,
                        help=f"tile overlap in px (default {DEFAULT_OVERLAP}, at most half a tile)")
    parser.add_argument("--batch-size", type=at_least(1), default=EVALUATION.batch_size,
                        help=f"tiles per forward pass (default {EVALUATION.batch_size})")
    add_device(parser)
    add_precision(parser)
    bench = parser.add_argument_group("the papers' colour denoising benchmark (docs/restore-and-evaluate.md)")
    bench.add_argument("--benchmark", action="append", metavar="DIR",
                       help="a folder of clean images (e.g. CBSD68, Kodak24), repeatable: AWGN at each --sigmas, "
                            "seed 0, whole images, scored by the papers' protocol (not clipped) and the file "
                            "protocol (clipped, 8-bit); runs in fp32 unless --precision is given")
    bench.add_argument("--sigmas", default="15,25,50", metavar="S,S,...",
                       help="noise levels on the 0-255 scale for --benchmark (default 15,25,50)")
    bench.add_argument("--protocol", choices=("both", "papers", "file"), default="both",
                       help="--benchmark protocols (default both)")
    real = parser.add_argument_group("real noisy photographs (docs/restore-and-evaluate.md)")
    real.add_argument("--pairs", metavar="DIR",
                      help="score on real noisy photographs instead of synthetic damage: DIR holds NAME_real.EXT "
                           "(noisy) and NAME_mean.EXT (clean reference) pairs, such as PolyU's; --task (camera or "
                           "noise) picks the built-in weights; whole images, against non-local means and CBM3D "
                           "with σ estimated and with an oracle σ")


def report_writes(args: argparse.Namespace, report: dict, markdown: str | None) -> list:
    """The --json and --markdown files as `write_outputs` claims them; `--json -` is printed at once."""
    from pyramidal.io import write_text  # lazy: not on the torch-free --help path

    writes = []
    if args.json == "-":
        write_json_output(report, "-")
    elif args.json:
        writes.append((args.json, lambda exclusive: write_json_output(report, args.json, exclusive=exclusive)))
    if args.markdown:
        writes.append((args.markdown, lambda exclusive: write_text(markdown, args.markdown, exclusive=exclusive)))
    return writes


def restore_options(args: argparse.Namespace) -> RestoreOptions:
    """The restore flags of an evaluation as one RestoreOptions (checked: a bad value names its flag)."""
    return RestoreOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                          precision=args.precision, ensemble=args.ensemble)


def _sigmas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(0 <= v <= 255 for v in values):
        raise PyramidalError(f"--sigmas {text!r}: give numbers from 0 to 255 separated by commas, e.g. 15,25,50")
    return values


def run_benchmark(args: argparse.Namespace) -> int:
    """`evaluate --benchmark DIR...`: the papers' AWGN protocol and the file protocol, whole images."""
    from pyramidal import benchmark  # lazy: loads torch
    from pyramidal.api import cached_model  # lazy: loads torch

    if args.task not in (None, "noise"):
        raise PyramidalError(f"--benchmark adds Gaussian noise: it scores noise weights, not --task {args.task}")
    if args.weights == "none":
        raise PyramidalError("--benchmark scores a model: give --weights builtin or a weight file")
    sigmas = _sigmas(args.sigmas)
    protocols = benchmark.PROTOCOLS if args.protocol == "both" else (args.protocol,)
    for folder in args.benchmark:
        benchmark.benchmark_images(folder)  # every folder checked before the first one runs
    plan = plan_outputs(args, [])
    precision = benchmark.PAPERS.precision if args.precision == "auto" else args.precision
    options = benchmark.PAPERS.replace(device=args.device, precision=precision, ensemble=args.ensemble)
    model = cached_model(args.weights, "noise", device=options.device, precision=options.precision)
    result = benchmark.run_benchmark(model, args.benchmark, sigmas, protocols, options, limit=args.limit,
                                     progress=None if args.json == "-" else print)
    result["weights"], result["precision"] = args.weights, precision
    if args.json != "-":
        print(benchmark.format_table(result))
    return write_outputs("evaluate", plan, report_writes(args, result, benchmark.format_markdown(result)))


def run_pairs(args: argparse.Namespace) -> int:
    """`evaluate --pairs DIR`: a model and the classical denoisers on real noisy/clean pairs, whole images."""
    from pyramidal.evaluate import format_markdown, format_table  # lazy: loads torch
    from pyramidal.hub import resolve_weights  # lazy: loads torch
    from pyramidal.realnoise import evaluate_pairs, find_pairs  # lazy: loads torch

    synthetic = {"--data": args.data != "builtin", "--split": args.split != "val", "--crop": args.crop is not None,
                 "--crops": args.crops is not None, "--figures": bool(args.figures),
                 **{f"--{name.replace('_', '-')}": True for name in task_option_values(args)}}
    unused = [flag for flag, given in synthetic.items() if given]
    if unused:
        raise PyramidalError(f"--pairs scores the real photographs of DIR, whole: {', '.join(unused)} do not apply")
    if args.task is None:
        raise PyramidalError("--pairs needs --task (camera or noise): whose built-in weights to score")
    options = restore_options(args)
    weights = None if args.weights == "none" else args.weights
    if weights is not None:
        resolve_weights(weights, args.task)
    find_pairs(args.pairs)  # a wrong folder fails before the model loads
    plan = plan_outputs(args, [])
    result = evaluate_pairs(weights, args.pairs, args.task, baselines=args.baselines, limit=args.limit,
                            options=options, progress=None)
    if args.json != "-":
        print(format_table(result))
        for note in result["skipped"]:
            print(f"pyramidal evaluate: warning: {note}", file=sys.stderr)
    return write_outputs("evaluate", plan, report_writes(args, result, format_markdown(result)))


def settings_from_args(args: argparse.Namespace) -> list[dict] | None:
    """The task-option flags (`--sigma 25 50`, ...) as the settings to report, every combination of their
    values; None when none is given (the task's own eval settings). A flag of another task is an error."""
    given = task_option_values(args, args.task)
    if not given:
        return None

    def plain(value):  # σ 50.0 → 50, so that a setting reads "sigma=50"
        return int(value) if isinstance(value, float) and value.is_integer() else value

    names = list(given)
    return [dict(zip(names, map(plain, combo))) for combo in itertools.product(*(given[n] for n in names))]


def figure_path(folder: str, task: str, label: str) -> Path:
    """Where `--figures` puts the figure of one setting: FOLDER/<task>[_<setting>].png."""
    from pyramidal.figures import file_suffix  # lazy: not on the torch-free --help path

    return Path(folder) / f"{task}{file_suffix(label)}.png"


def plan_outputs(args: argparse.Namespace, settings: list[dict] | None) -> Any:
    """Check every file the evaluation will write before it starts, so that no result is lost at the end.

    --json and --markdown name their file exactly and may replace it; figures may not replace a file
    without --overwrite. Returns the checked `io.OutputPlan`: each file is claimed again as it is written.
    """
    from pyramidal.evaluate import setting_label  # lazy: loads torch
    from pyramidal.io import OutputPlan  # lazy: not on the torch-free --help path

    plan = OutputPlan(overwrite=args.overwrite)
    if args.json and args.json != "-":
        plan.add(args.json, "--json", replace_ok=True)
    if args.markdown:
        plan.add(args.markdown, "--markdown", replace_ok=True)
    if args.figures:
        for options in settings if settings is not None else TASKS.get(args.task).eval_settings():
            plan.add(figure_path(args.figures, args.task, setting_label(options)), "--figures")
    return plan.check()


def figure_writes(result: dict, folder: str, rows: int = 4) -> list[tuple[str, Callable[..., Any]]]:
    """One PNG per setting, as (path, write) pairs for `write_outputs`: ground truth, damaged, best
    classical method, model (and ensemble)."""
    from pyramidal.evaluate import best_baseline, per_image_psnr  # lazy: loads torch
    from pyramidal.figures import comparison_figure  # lazy: matplotlib, not on the --help path

    writes = []
    for setting, images in zip(result["settings"], result["images"]):
        best = best_baseline(setting["rows"])
        columns = []
        for r in setting["rows"]:  # in row order: damaged input, baselines, model, ensemble
            if r["kind"] == "input":
                columns.append(("damaged", images["damaged"], per_image_psnr(r)))
            elif r is best and r["kind"] == "baseline":
                columns.append((r["method"].split(" (")[0], images[r["method"]], per_image_psnr(r)))
            elif r["kind"] in ("model", "ensemble"):
                title = "model + ensemble" if r["kind"] == "ensemble" else "model"
                columns.append((title, images[r["method"]], per_image_psnr(r)))
        path = figure_path(folder, result["task"], setting["label"])
        title = f"{result['task']} {setting['label']}".strip() + f" — {result.get('model') or 'baselines only'}"
        writes.append((str(path), functools.partial(comparison_figure, path, images["clean"], columns,
                                                     names=result["image_names"], rows=rows, title=title)))
    return writes


def run(args: argparse.Namespace) -> int:
    from pyramidal.evaluate import evaluate, format_markdown, format_table  # lazy: loads torch
    from pyramidal.hub import resolve_weights  # lazy: loads torch

    if args.benchmark:
        return run_benchmark(args)
    if args.pairs:
        return run_pairs(args)
    if args.task is None:
        raise PyramidalError("--task is required (or give --benchmark DIR)")
    # Everything that can be checked is checked before the (long) evaluation: options, weights, outputs.
    options = restore_options(args)
    weights = None if args.weights == "none" else args.weights
    if weights is not None:
        resolve_weights(weights, args.task)  # the model loads later; it warns if trained for another task
    settings = settings_from_args(args)
    plan = plan_outputs(args, settings)
    crop = "auto" if args.crop is None else args.crop
    result = evaluate(
        weights, args.task, args.data, split=args.split, crop=crop, crops=args.crops, limit=args.limit,
        settings=settings, baselines=args.baselines, options=options, keep_images=bool(args.figures),
        progress=None,
    )
    if args.json != "-":
        print(format_table(result))
    report = {k: v for k, v in result.items() if k != "images"}  # pixels are not JSON
    writes = report_writes(args, report, format_markdown(result) if args.markdown else None)
    if args.figures:
        writes += figure_writes(result, args.figures)
    return write_outputs("evaluate", plan, writes)

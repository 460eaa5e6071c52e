"""`pyramidal restore --task T [--weights FILE|builtin] INPUT... -o OUTDIR`: restore your own images."""

from __future__ import annotations

import argparse
import sys

from pyramidal.cli.common import (
    add_device,
    add_out,
    add_precision,
    add_recursive,
    add_strip_metadata,
    at_least,
    task_help,
    task_name,
)
from pyramidal.device import resolve_device, resolve_precision
from pyramidal.errors import PyramidalError
from pyramidal.options import DEFAULT_OVERLAP, RestoreOptions

HELP = "restore images of any size with trained or built-in weights (tiled, batched, optional self-ensemble)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (or folders of images)")
    add_out(parser, "folder for the restored images", required=True, metavar="OUTDIR")
    add_recursive(parser)
    parser.add_argument("--task", type=task_name,
                        help=task_help() + " (the damage the model undoes; needed for --weights builtin)")
    parser.add_argument("--weights", default="builtin",
                        help="'builtin' (weights shipped for --task, the default), a .safetensors file, a training "
                             "checkpoint (last.ckpt), a run folder, or a folder with model.safetensors + config.json")
    parser.add_argument("--tile", type=at_least(0), default=RestoreOptions.tile,
                        help="largest tile side in px, tiles spread evenly; 0 = whole image at once "
                             f"(default {RestoreOptions.tile})")
    parser.add_argument("--overlap", type=at_least(0), default=None,
                        help=f"overlap between tiles in px, blended (default {DEFAULT_OVERLAP}, at most half a tile)")
    parser.add_argument("--batch-size", type=at_least(1), default=RestoreOptions.batch_size,
                        help="tiles per forward pass; on the CPU one pass per thread runs at once "
                             f"(default {RestoreOptions.batch_size})")
    add_device(parser)
    add_precision(parser)
    parser.add_argument("--ensemble", action="store_true",
                        help="average the 8 flips and rotations (test-time self-ensemble, 8× slower)")
    parser.add_argument("--mask", metavar="PATH",
                        help="the holes to fill, kept exactly outside them: a mask image (non-zero or white = hole) "
                             "for one input, a folder of masks named like the inputs (any image suffix) for "
                             "several, or 'auto' for holes painted magenta (255, 0, 255)")
    parser.add_argument("--strength", type=float, default=RestoreOptions.strength,
                        help="how much of the model's change to apply, 0-2: output = input + S·(model − input); "
                             "below 1 keeps more detail (and noise), above 1 smooths more (default 1)")
    parser.add_argument("--sigma", type=float, default=None,
                        help="the noise σ of the images on the 0-255 scale, for a denoiser trained with a noise-level "
                             "input (noise_map=true), which needs it; other models take --strength instead")
    parser.add_argument("--format", choices=("png", "jpg", "webp", "tiff"), default="png",
                        help="output format (default png); 16-bit inputs give 16-bit png and tiff")
    parser.add_argument("--quality", type=int, default=None, help="jpg / webp quality 1-100 (default 95)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow outputs to replace existing files, input files included")
    add_strip_metadata(parser)
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="torch (default) or onnx: run a model written by `pyramidal export` with onnxruntime "
                             "(--weights MODEL.onnx; pip install -e .[onnx])")


def restore_options(args: argparse.Namespace) -> RestoreOptions:
    """The restore flags as one RestoreOptions (checked: a bad value is an error naming its flag)."""
    return RestoreOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                          precision=args.precision, ensemble=args.ensemble, strength=args.strength, sigma=args.sigma,
                          mask="auto" if args.mask == "auto" else None)


def run(args: argparse.Namespace) -> int:
    from pyramidal.inference.files import plan_restore_outputs  # lazy: loads torch, never for --help
    from pyramidal.inference.model import load_restorer, prepare_for_inference  # lazy: loads torch

    options = restore_options(args)
    if args.quality is not None and not 1 <= args.quality <= 100:
        raise PyramidalError(f"--quality {args.quality}: must be between 1 and 100")
    # Every output is checked once, before a model loads: an -o that is a file, an existing output.
    if not plan_restore_outputs(args.inputs, args.out, overwrite=args.overwrite, recursive=args.recursive,
                                format=args.format):
        raise PyramidalError(f"no images found in {', '.join(args.inputs)}")
    if args.backend == "onnx":
        return _run_onnx(args, options)
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    model = load_restorer(args.weights, args.task)  # warns if the weights were trained for another task
    print(f"model {model.info['model']} from {model.weights_path} on {device} ({precision})")
    model = prepare_for_inference(model, device, precision)
    return _restore_all(model, args, options.replace(device=device, precision=precision))


def _run_onnx(args: argparse.Namespace, options: RestoreOptions) -> int:
    import torch

    from pyramidal.onnx_backend import onnx_restore_fn  # lazy: onnxruntime only for --backend onnx

    if not str(args.weights).endswith(".onnx"):
        raise PyramidalError(f"--backend onnx needs --weights MODEL.onnx (write one with `pyramidal export`), "
                             f"not {args.weights!r}")
    if args.ensemble:
        raise PyramidalError("--ensemble is only available with the torch backend")
    model = onnx_restore_fn(args.weights)
    print(f"ONNX model {args.weights} on cpu (onnxruntime, fp32)")
    # The model pads internally; tiles below its minimum side are padded by the restorer.
    return _restore_all(model, args, options.replace(device=torch.device("cpu"), precision="fp32"))


def _restore_all(model, args: argparse.Namespace, options: RestoreOptions) -> int:
    import time

    from pyramidal.inference.files import restore_files  # lazy: loads torch
    from pyramidal.progress import say  # lazy: not on the torch-free --help path

    start = time.perf_counter()

    def report(result) -> None:
        if result.error:
            say(f"pyramidal restore: error: {result.error_flags or result.error}", file=sys.stderr)
        else:
            say(f"wrote {result.output}")

    def skipped(path, reason: str) -> None:  # other files in an input folder are not an error
        say(f"pyramidal restore: warning: {path}: skipped, {reason}", file=sys.stderr)

    results = restore_files(
        model, args.inputs, args.out, options, overwrite=args.overwrite, on_result=report, on_skip=skipped,
        recursive=args.recursive, format=args.format, quality=args.quality, progress=None,
        mask=None if options.mask else args.mask, strip_metadata=args.strip_metadata,
    )
    if not results:
        raise PyramidalError(f"no images found in {', '.join(args.inputs)}")
    done = sum(r.error is None for r in results)
    failed = len(results) - done
    print(f"restored {done} of {len(results)} image(s) into {args.out} in {time.perf_counter() - start:.1f} s"
          + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0

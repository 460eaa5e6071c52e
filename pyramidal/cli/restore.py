"""`pyramidal restore --task T [--weights FILE|builtin] INPUT... -o OUTDIR`: restore your own images."""

from __future__ import annotations

import argparse
import sys

HELP = "restore images of any size with trained or built-in weights (tiled, batched, optional self-ensemble)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (or folders of images)")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="folder for the restored PNGs")
    parser.add_argument("--task", help="damage the model undoes (needed for --weights builtin)")
    parser.add_argument("--weights", default="builtin",
                        help="'builtin' (weights shipped for --task, the default) or a .safetensors file")
    parser.add_argument("--tile", type=int, default=256, help="tile side in px; 0 = whole image at once (default 256)")
    parser.add_argument("--overlap", type=int, default=32, help="overlap between tiles in px, blended (default 32)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (default auto)")
    parser.add_argument("--ensemble", action="store_true",
                        help="average the 8 flips and rotations (test-time self-ensemble, 8× slower)")
    parser.add_argument("--overwrite", action="store_true", help="allow an output to replace an input file")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="torch (default) or onnx: run a model written by `pyramidal export` with onnxruntime "
                             "(--weights MODEL.onnx; pip install -e .[onnx])")


def run(args: argparse.Namespace) -> int:
    from pyramidal.device import resolve_device, resolve_precision
    from pyramidal.errors import PyramidalError
    from pyramidal.restore import load_restorer

    if args.batch_size < 1:
        raise PyramidalError("--batch-size must be at least 1")
    if args.tile < 0:
        raise PyramidalError("--tile must be 0 (no tiling) or a positive size")
    if args.backend == "onnx":
        return _run_onnx(args)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    model = load_restorer(args.weights, args.task)
    trained_for = getattr(model, "info", {}).get("task")
    if args.task and trained_for and trained_for != args.task:
        print(f"pyramidal restore: warning: {args.weights} was trained for task {trained_for!r}, not {args.task!r}",
              file=sys.stderr)
    print(f"model {model.info['model']} from {model.weights_path} on {device} ({precision})")

    return _restore_all(model, args, device=device, precision=precision)


def _run_onnx(args: argparse.Namespace) -> int:
    import torch

    from pyramidal.errors import PyramidalError
    from pyramidal.onnx_backend import onnx_restore_fn

    if not str(args.weights).endswith(".onnx"):
        raise PyramidalError(f"--backend onnx needs --weights MODEL.onnx (write one with `pyramidal export`), "
                             f"not {args.weights!r}")
    if args.ensemble:
        raise PyramidalError("--ensemble is only available with the torch backend")
    model = onnx_restore_fn(args.weights)
    print(f"ONNX model {args.weights} on cpu (onnxruntime, fp32)")
    # The model pads internally; tiles below its minimum side are padded by the restorer.
    return _restore_all(model, args, device=torch.device("cpu"), precision="fp32")


def _restore_all(model, args: argparse.Namespace, device, precision: str) -> int:
    import time

    from pyramidal.errors import PyramidalError
    from pyramidal.restore import restore_files

    start = time.perf_counter()

    def report(result) -> None:
        if result.error:
            print(f"pyramidal restore: error: {result.error}", file=sys.stderr)
        else:
            print(f"wrote {result.output}")

    results = restore_files(
        model, args.inputs, args.out, overwrite=args.overwrite, on_result=report,
        tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=device,
        precision=precision, ensemble=args.ensemble,
    )
    if not results:
        raise PyramidalError(f"no images found in {', '.join(args.inputs)}")
    done = sum(r.error is None for r in results)
    failed = len(results) - done
    print(f"restored {done} of {len(results)} image(s) into {args.out} in {time.perf_counter() - start:.1f} s"
          + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0

"""`pyramidal export --weights FILE --onnx OUT.onnx`: an ONNX model with dynamic batch, height and width."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyramidal.cli.common import task_name
from pyramidal.errors import PyramidalError

HELP = "export trained weights to ONNX (dynamic H×W; checked against torch when onnxruntime is installed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="a .safetensors file, a training checkpoint (last.ckpt) or run folder from "
                             "`pyramidal train`, or 'builtin'")
    parser.add_argument("--task", type=task_name, help="with --weights builtin: whose built-in weights to export")
    parser.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the ONNX model")
    parser.add_argument("--overwrite", action="store_true", help="allow the ONNX file to replace an existing file")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="run the file with onnxruntime at two sizes and compare with torch (default on)")


def run(args: argparse.Namespace) -> int:
    # lazy: torch and onnx load when the command runs, not for --help
    from pyramidal.export import DEFAULT_OPSET, check_onnx, export_onnx
    from pyramidal.inference.model import load_restorer
    from pyramidal.io import OutputPlan
    from pyramidal.onnx_backend import onnx_available

    out = Path(args.onnx)
    if out.suffix.lower() != ".onnx":
        raise PyramidalError(f"{out}: the output file should end in .onnx")
    if args.opset is not None and not 18 <= args.opset <= 23:
        raise PyramidalError(f"--opset {args.opset}: choose an opset from 18 to 23")
    plan = OutputPlan(overwrite=args.overwrite)
    plan.add(out, "--onnx")
    plan.check()  # before the model loads and the (slow) export runs
    model = load_restorer(args.weights, args.task)
    info = getattr(model, "info", {})
    export_onnx(model, out, opset=args.opset or DEFAULT_OPSET, metadata={k: info[k] for k in ("task",) if k in info},
                exclusive=plan.exclusive(out))  # a file another run wrote meanwhile is left as it is
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB, model {info.get('model', '?')}, dynamic batch×H×W)")
    if args.check:
        if not onnx_available():
            print("not checked: onnxruntime is not installed (pip install 'pyramidal[onnx]')")
        else:
            for (h, w), diff in check_onnx(model, out).items():
                print(f"onnxruntime vs torch at {h}×{w}: max |difference| {diff:.2e}")
    return 0

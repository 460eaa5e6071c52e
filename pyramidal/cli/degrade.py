"""`pyramidal degrade`: write damaged copies of images, to build test pairs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "apply a damage task (noise, jpeg, pixelate, ...) to images and write damaged PNGs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pyramidal.cli.common import add_out, add_recursive, add_task_options, task_help, task_list

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = task_list()
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (or folders of images)")
    add_out(parser, "folder for the damaged PNGs (required)", metavar="OUTDIR")
    add_recursive(parser)
    parser.add_argument("--output", dest="out", help=argparse.SUPPRESS)  # hidden alias, for scripts that use it
    parser.add_argument("--task", required=True, help=task_help())
    parser.add_argument("--seed", type=int, default=0, help="base seed; image k gets eval_seed(k, seed) (default 0)")
    add_task_options(parser, "degrade")


def _skipped(path: Path, reason: str) -> None:
    # Other files in an input folder are not an error.
    print(f"pyramidal degrade: warning: {path}: skipped, {reason}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import torch

    from pyramidal.cli.common import task_option_values
    from pyramidal.damage import create_task, eval_seed
    from pyramidal.errors import PyramidalError
    from pyramidal.io import expand_inputs, read_image, write_image

    if args.out is None:
        raise PyramidalError("-o/--out OUTDIR is required: the folder for the damaged PNGs")
    task = create_task(args.task, train=False, **task_option_values(args))  # ValueError: one line from the dispatcher

    outdir = Path(args.out)
    if outdir.exists() and not outdir.is_dir():
        raise PyramidalError(f"{outdir}: exists and is not a folder")
    # Damaged outputs from an earlier run inside an input folder are not inputs.
    items = expand_inputs(args.inputs, recursive=args.recursive, exclude=outdir, on_skip=_skipped)
    inputs = {f.resolve() for f, _ in items if f.exists()}
    written: dict[Path, Path] = {}
    failures = 0
    for k, (src, rel) in enumerate(items):
        dst = outdir / rel
        try:
            if dst.resolve() in inputs:
                raise PyramidalError(f"{src}: output {dst} would overwrite an input file; choose another -o")
            if dst.resolve() in written:
                raise PyramidalError(f"{src}: output {dst} already written for {written[dst.resolve()]}")
            image = torch.from_numpy(read_image(src).rgb).permute(2, 0, 1)  # alpha dropped, grayscale as RGB
            damaged = task(image.unsqueeze(0), seeds=[eval_seed(k, base=args.seed)])[0]
            write_image(damaged.permute(1, 2, 0).numpy(), dst)
            written[dst.resolve()] = src
        except PyramidalError as exc:
            print(f"pyramidal degrade: error: {exc}", file=sys.stderr)
            failures += 1
        except OSError as exc:
            print(f"pyramidal degrade: error: {dst}: cannot write ({exc.strerror or exc})", file=sys.stderr)
            failures += 1
    print(f"wrote {len(written)} damaged image(s) to {outdir} ({task.name}, seed {args.seed})"
          + (f"; {failures} failed" if failures else ""))
    return 1 if failures else 0

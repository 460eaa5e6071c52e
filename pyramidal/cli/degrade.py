"""`pyramidal degrade`: write damaged copies of images, to build test pairs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyramidal.cli.common import (
    add_out,
    add_recursive,
    add_strip_metadata,
    add_task_options,
    task_help,
    task_list,
    task_name,
    task_option_values,
)
from pyramidal.damage import TASKS, create_task, eval_seed
from pyramidal.errors import PyramidalError

HELP = "apply a damage task (noise, jpeg, pixelate, ...) to images and write damaged PNGs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = task_list()
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (or folders of images)")
    add_out(parser, "folder for the damaged PNGs (required)", metavar="OUTDIR")
    add_recursive(parser)
    parser.add_argument("--output", dest="out", help=argparse.SUPPRESS)  # hidden alias, for scripts that use it
    parser.add_argument("--task", required=True, type=task_name, help=task_help())
    parser.add_argument("--overwrite", action="store_true",
                        help="allow outputs to replace existing files (never the input files)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; image k gets eval_seed(k, seed) (default 0)")
    parser.add_argument("--masks", metavar="DIR",
                        help="tasks with holes: also write each damaged image's mask (PNG, 255 = hole) under DIR, "
                             "named like the image, for `restore --mask DIR`")
    add_strip_metadata(parser)
    add_task_options(parser, "degrade")


def _skipped(path: Path, reason: str) -> None:
    from pyramidal.progress import say  # lazy: outside the modules --help loads (TORCH_FREE)

    # Other files in an input folder are not an error.
    say(f"pyramidal degrade: warning: {path}: skipped, {reason}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    # lazy: torch and the image files load when the command runs, not for --help
    import torch

    from pyramidal.io import OutputPlan, expand_inputs, read_image, write_image, write_mask
    from pyramidal.progress import say

    if args.out is None:
        raise PyramidalError("-o/--out OUTDIR is required: the folder for the damaged PNGs")
    task = create_task(args.task, train=False, **task_option_values(args, args.task))  # ValueError: one line from the dispatcher
    if args.masks and not task.has_mask:
        with_holes = ", ".join(n for n in TASKS.names() if TASKS.get(n).has_mask)
        raise PyramidalError(f"--masks: task {task.name} makes no holes; tasks with masks: {with_holes}")

    outdir = Path(args.out)
    # Damaged outputs from an earlier run inside an input folder are not inputs.
    items = expand_inputs(args.inputs, recursive=args.recursive, exclude=outdir, on_skip=_skipped)
    if not items:
        raise PyramidalError(f"no images found in {', '.join(args.inputs)}")
    # Every output is checked before the first is written: never an input, never an unasked replacement.
    plan = OutputPlan(overwrite=args.overwrite, inputs=[f for f, _ in items])
    targets = [plan.add(outdir / rel, src) for src, rel in items]
    mask_targets = [plan.add(Path(args.masks) / rel.with_suffix(".png"), src) if args.masks else None
                    for src, rel in items]
    plan.check()
    written: dict[Path, Path] = {}
    failures = 0
    for k, ((src, _), dst, mask_dst) in enumerate(zip(items, targets, mask_targets)):
        try:
            loaded = read_image(src)
            image = torch.from_numpy(loaded.rgb).permute(2, 0, 1)  # alpha dropped, grayscale as RGB
            damaged, mask = task.apply(image.unsqueeze(0), seeds=[eval_seed(k, base=args.seed)])
            # Each output is claimed as it is written: a file another run put there meanwhile stays.
            write_image(damaged[0].permute(1, 2, 0).numpy(), dst, metadata=None if args.strip_metadata
                        else loaded.metadata, exclusive=plan.exclusive(dst))
            if mask_dst is not None:
                write_mask(mask[0, 0].cpu().numpy(), mask_dst, exclusive=plan.exclusive(mask_dst))
            written[dst.resolve()] = src
        except PyramidalError as exc:
            say(f"pyramidal degrade: error: {exc}", file=sys.stderr)
            failures += 1
        except OSError as exc:
            say(f"pyramidal degrade: error: {dst}: cannot write ({exc.strerror or exc})", file=sys.stderr)
            failures += 1
    say(f"wrote {len(written)} damaged image(s) to {outdir}" + (f" and their masks to {args.masks}" if args.masks else "")
          + f" ({task.name}, seed {args.seed})"
          + (f"; {failures} failed" if failures else ""))
    return 1 if failures else 0

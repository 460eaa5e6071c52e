"""`pyramidal degrade`: write damaged copies of images, to build test pairs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "apply a damage task (noise, jpeg, pixelate, ...) to images and write damaged PNGs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the damaged PNGs")
    parser.add_argument("--task", required=True, help="damage task: block, blur, gray, grid, jpeg, mixed, noise, "
                        "pixelate, squares, text")
    parser.add_argument("--seed", type=int, default=0, help="base seed; image k gets eval_seed(k, seed) (default 0)")
    parser.add_argument("--sigma", type=float, help="noise: standard deviation on the 0-255 scale (default 50)")
    parser.add_argument("--quality", type=int, help="jpeg: quality 1-100 (default 10)")
    parser.add_argument("--factor", type=int, help="pixelate: down-scaling factor (default 8)")
    parser.add_argument("--tasks", help="mixed: comma-separated tasks to draw from (default all)")


def _expand(inputs: list[str], outdir: Path) -> list[tuple[Path, Path]]:
    """(file, output path relative to OUTDIR) for every input; folders keep their sub-folders."""
    from pyramidal.data import scan_images

    out = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            good, bad = scan_images(p)
            # Damaged outputs from an earlier run inside the folder are not inputs.
            good = [f for f in good if not f.resolve().is_relative_to(outdir.resolve())]
            for f, reason in bad:  # other files in a folder are not an error
                print(f"pyramidal degrade: warning: {f}: skipped, {reason}", file=sys.stderr)
            for f in good:
                out.append((f, f.relative_to(p).with_suffix(".png")))
        else:
            out.append((p, Path(p.stem + ".png")))
    return out


def run(args: argparse.Namespace) -> int:
    from pyramidal.damage import create_task, eval_seed
    from pyramidal.data import read_image, write_image
    from pyramidal.errors import PyramidalError

    options = {k: getattr(args, k) for k in ("sigma", "quality", "factor", "tasks") if getattr(args, k) is not None}
    task = create_task(args.task, train=False, **options)  # ValueError -> one-line error from the dispatcher

    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise PyramidalError(f"{outdir}: exists and is not a folder")
    items = _expand(args.inputs, outdir)
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
            image = read_image(src)
            damaged = task(image.unsqueeze(0), seeds=[eval_seed(k, base=args.seed)])[0]
            dst.parent.mkdir(parents=True, exist_ok=True)
            write_image(damaged, dst)
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

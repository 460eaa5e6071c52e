#!/usr/bin/env python
"""Plot PSNR/val against step for training runs, and print the curves as a Markdown table.

    scripts/learning-curves.py -o docs/images/curves.png "noise phase 3=runs/builtin-phase3/noise/pyramidal23456/<stamp>"

Each argument is LABEL=RUN_DIR (a run folder of `pyramidal train`, read from its metrics.csv). The table gives
each curve's PSNR/val at evenly spaced steps, its best, and what the second half of its steps added to the best
of the first half: the gain of the last doubling of the steps, the slope a reader needs to judge how much more
training would still give (if it keeps up, another doubling gives about as much again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's pyramidal, installed or not

from pyramidal.compare import learning_curve  # noqa: E402
from pyramidal.figures import line_plot  # noqa: E402


def curve_table(curves: dict[str, tuple[list[int], list[float]]], points: int = 6) -> str:
    lines = ["| run | " + " | ".join(f"{i}/{points - 1}" for i in range(points)) + " | best | last doubling |",
             "|---|" + "---:|" * (points + 2)]
    for label, (steps, values) in curves.items():
        picks = [min(range(len(steps)), key=lambda j: abs(steps[j] - steps[-1] * i / (points - 1)))
                 for i in range(points)]
        cells = [f"{values[j]:.2f} @ {steps[j]:,}" for j in picks]
        # What the second half of the steps added to the best PSNR/val of the first half.
        gain = max(values) - max(v for s, v in zip(steps, values) if s <= steps[-1] / 2)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {max(values):.2f} | {gain:+.2f} dB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    p.add_argument("-o", "--out", help="PNG to write (default: only the table)")
    p.add_argument("--title", default="PSNR/val (dB) against training step")
    args = p.parse_args(argv)
    curves = {}
    for item in args.runs:
        label, sep, run = item.partition("=")
        if not sep:
            p.error(f"{item}: give LABEL=RUN_DIR")
        steps, values = learning_curve(run)
        if len(steps) < 2:
            p.error(f"{run}: no PSNR/val curve in its metrics.csv")
        curves[label] = (steps, values)
    if args.out:
        line_plot(curves, args.out, "step", "PSNR/val (dB)", title=args.title)
        print(f"wrote {args.out}")
    print(curve_table(curves))
    return 0


if __name__ == "__main__":
    sys.exit(main())

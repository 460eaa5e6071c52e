"""`pyramidal models [NAME]`: the model zoo as a table, or one model's layer structure."""

from __future__ import annotations

import argparse

from pyramidal.cli.common import at_least

HELP = "list every registered model (parameters, convs, levels, receptive field, GFLOPs) or show one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show this model's layer structure")
    parser.add_argument("--size", type=at_least(1), default=64, help="image side for the GFLOPs column (default 64)")


def run(args: argparse.Namespace) -> int:
    # lazy: torch loads when the command runs, not for --help
    from pyramidal.models import MODELS, create_model
    from pyramidal.models.summary import summarize

    names = [args.name] if args.name else MODELS.names()
    rows = [summarize(n, create_model(n), args.size) for n in names]
    header = f"{'model':<20} {'params':>11} {'convs':>6} {'levels':>6} {'RF(px)':>7} {'GFLOPs@' + str(args.size):>10}"
    if args.name:
        print(create_model(args.name))
        print()
    print(header)
    print("-" * len(header))
    for s in rows:
        print(f"{s.name:<20} {s.parameters:>11,} {s.conv_layers:>6} {s.levels:>6} {s.receptive_field:>7} {s.gflops:>10.3f}")
    print(f"\nGFLOPs: one forward pass of a 3×{args.size}×{args.size} image, counted by torch.utils.flop_counter "
          "(multiply-add = 2 FLOPs). RF: theoretical receptive field of the longest path.")
    return 0

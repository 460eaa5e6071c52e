"""`pyramidal <command>`: a thin dispatcher over the library.

Each command lives in `pyramidal/cli/<command>.py` and defines `HELP`, `add_arguments(parser)` and
`run(args) -> int`. Command modules import heavy libraries inside `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pyramidal import __version__
from pyramidal.errors import PyramidalError

# Order is the order shown in `pyramidal --help`.
COMMANDS = (
    "demo",
    "models",
    "degrade",
    "train",
    "restore",
    "evaluate",
    "compare",
    "gradients",
    "weights",
    "bench",
    "export",
)


def _command_modules():
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"pyramidal.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pyramidal.cli.{name}":
                continue  # command not built yet
            raise
        yield name, module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyramidal", description="Restore damaged images with pyramidal autoencoders."
    )
    parser.add_argument("--version", action="version", version=f"pyramidal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except PyramidalError as exc:
        print(f"pyramidal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # unknown registry names and bad option values
        print(f"pyramidal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyramidal {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

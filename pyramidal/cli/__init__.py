"""`pyramidal <command>`: a thin dispatcher over the library.

Each command lives in `pyramidal/cli/<command>.py` and defines `HELP`, `add_arguments(parser)` and
`run(args) -> int`. Command modules import heavy libraries inside `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from pyramidal import __version__
from pyramidal.errors import PyramidalError, command_line, printable

# Order is the order shown in `pyramidal --help`.
COMMANDS = (
    "demo",
    "models",
    "degrade",
    "train",
    "restore",
    "serve",
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


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other error: `pyramidal CMD: error: ...` (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="pyramidal", description="Restore damaged images with pyramidal autoencoders."
    )
    parser.add_argument("--version", action="version", version=f"pyramidal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _one_line(exc: BaseException) -> str:
    """An error as one line, worded for the command line (an OptionError's `flags`: `--tile 5`, not `tile=5`):
    characters a terminal would not show as themselves are escaped (a newline in a file name, bytes of a name
    that are not UTF-8), so that stderr gets one line per error naming the file exactly."""
    text = command_line(exc)
    return printable(text.strip()) or type(exc).__name__


def _os_error(exc: OSError) -> str:
    """A disk or permission error on some file: "<file>: <reason>", without Python's error class."""
    name = exc.filename
    where = os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else "" if name is None else str(name)
    reason = exc.strerror or str(exc)
    return printable(f"{where}: {reason}" if where else reason)


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error the user can cause is one line on stderr and a non-zero exit code.

    Exit codes: 0 done; 1 some inputs failed while the others were written; 2 refused (bad option, file
    or data, before or during the work); 130 interrupted. Warnings are one line each too.
    """
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    prefix = f"pyramidal {args.command}"

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prefix}: warning: {_one_line(message)}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning  # no Python file and source line under each warning
        try:
            return int(args._run(args) or 0)
        except PyramidalError as exc:
            print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except OSError as exc:  # a full disk, a read-only folder, a vanished file: never a traceback
            print(f"{prefix}: error: {_os_error(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())

"""User-facing errors: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PyramidalError(Exception):
    """A problem with the user's input (file, option, data) rather than a bug.

    Its message names parameters as Python callers write them (`tile=-1: ...`); `flags`, when given, is the same
    message as the command line words it (`--tile -1: ...`), which the CLI prints instead.
    """

    def __init__(self, message: str, flags: str | None = None):
        super().__init__(message)
        self.flags = flags


class OptionError(PyramidalError, ValueError):
    """A bad option value (a model option, a tile size, ...); also a ValueError for library callers. Worded
    for both, as every PyramidalError may be (`option_error`, `flag_error`)."""


def command_line(exc: BaseException) -> str:
    """`exc`'s message as the command line words it: its `flags` when it has them, else its message."""
    return getattr(exc, "flags", None) or str(exc)


def option_error(template: str, **values: object) -> OptionError:
    """An OptionError whose `template` names each parameter as `{name}`: written `name=value` in the message,
    `--name value` in its command-line form. E.g. `option_error("{overlap}: must be smaller than {tile}",
    overlap=16, tile=16)`."""
    python = template.format(**{name: f"{name}={value!r}" for name, value in values.items()})
    flags = template.format(**{name: f"--{name.replace('_', '-')} {value:g}" if isinstance(value, float) else
                               f"--{name.replace('_', '-')} {value}" for name, value in values.items()})
    return OptionError(python, flags)


def option_wording(template: str, *options: str, **values: Any) -> tuple[str, str]:
    """A message about options, (as Python callers name them, as the command line does).

    In `template`, `{name}` is an option of `options` (`lr` / `--lr`), `{name=}` the same with a value to follow
    (`lr=` / `--lr `); any other `{field}` is filled from `values`, as str.format does. E.g.
    `option_wording("{schedule=}{value!r}: unknown", "schedule", value="x")` is
    ("schedule='x': unknown", "--schedule 'x': unknown").
    """
    python = {**values, **{o: o for o in options}, **{f"{o}=": f"{o}=" for o in options}}
    flags = {**values, **{o: "--" + o.replace("_", "-") for o in options},
             **{f"{o}=": "--" + o.replace("_", "-") + " " for o in options}}
    return template.format_map(python), template.format_map(flags)


def flag_error(template: str, *options: str, **values: Any) -> OptionError:
    """An OptionError worded by `option_wording`: parameters for Python callers, flags on the command line."""
    return OptionError(*option_wording(template, *options, **values))


def check_choice(option: str, value: Any, choices: Sequence[str]) -> None:
    """An OptionError unless `value` is one of `choices`: `loss='l3': choose one of mse, l1, charbonnier`
    (`--loss 'l3': ...` on the command line)."""
    if value not in choices:
        raise flag_error(f"{{{option}=}}{{value!r}}: choose one of {{choices}}", option, value=value,
                         choices=", ".join(choices))


def printable(text: str) -> str:
    """`text` with every character a terminal would not show as itself escaped, so that a message naming a file
    stays one line and names it exactly, whatever the name holds: control characters as `\\n`, `\\x1b`, ...,
    and bytes that were not valid UTF-8 (Python's surrogate escapes of file names) as `\\xff`."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        code = ord(char)
        if char.isprintable():
            out.append(char)
        elif 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the undecodable byte code - 0xDC00
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(repr(char)[1:-1])  # \n, \t, \x1b, \u202e
    return "".join(out)

"""TOML config files: read them (tomllib / tomli), write resolved configs back, parse `key=value` options."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from pyramidal.errors import PyramidalError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a PyramidalError naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise PyramidalError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise PyramidalError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise PyramidalError(f"{path}: cannot read ({exc.strerror})") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: dict[str, Any]) -> str:
    """Serialise a flat dict with optional one-level sub-tables; None values are left out (TOML has no null)."""
    lines, tables = [], []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def parse_value(text: str) -> Any:
    """A command-line value as TOML (`8`, `0.5`, `true`, `[8, 16]`); anything else stays a string."""
    special = {"True": True, "False": False}
    if text in special:
        return special[text]
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """`["key=value", ...]` → dict, values parsed with `parse_value`."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise PyramidalError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = parse_value(value.strip())
    return out

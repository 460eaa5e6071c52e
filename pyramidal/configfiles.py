"""Config files and command-line options: the presets shipped with the package, TOML files, `key=value` options.

Reading only: what the values mean and whether they are allowed is `config` (TrainConfig) and `configcheck`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pyramidal.errors import OptionError, PyramidalError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# The presets shipped inside the package: `--config quick`, `--config noise`.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def list_configs() -> list[str]:
    """The config presets shipped with the package, by name.

    Returns:
        Sorted names such as "quick", "noise", "squares".
    """
    if not CONFIGS_DIR.is_dir():
        return []
    return sorted(p.relative_to(CONFIGS_DIR).with_suffix("").as_posix() for p in CONFIGS_DIR.rglob("*.toml"))


def find_config(name: str | os.PathLike) -> Path:
    """The TOML file for `--config NAME`: an existing path, else a preset shipped with the package.

    Args:
        name: a path to a TOML file, or a preset name ("quick", "noise"; a path such as
            "configs/quick.toml" also names the preset "quick").

    Returns:
        The path of the TOML file.

    Raises:
        PyramidalError: neither a file nor a preset (the message lists the presets).
    """
    path = Path(name)
    if path.is_file():
        return path
    preset = path.as_posix().removeprefix("./").removeprefix("pyramidal/").removeprefix("configs/")
    preset = preset.removesuffix(".toml")
    if preset in list_configs():
        return CONFIGS_DIR / f"{preset}.toml"
    raise PyramidalError(f"{name}: no such config file or preset; presets: {', '.join(list_configs())}")


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
    except UnicodeDecodeError:
        raise PyramidalError(f"{path}: not a text file (a config is UTF-8 TOML)") from None
    except OSError as exc:
        raise PyramidalError(f"{path}: cannot read ({exc.strerror})") from None


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
    """`["key=value", ...]` → dict, values parsed with `parse_value`; `flag` names the items on the command line."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise OptionError(f"{item!r}: expected KEY=VALUE", f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = parse_value(value.strip())
    return out

"""Files written whole or not at all (atomic writes, JSON, TOML, text), and numbers for reports."""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pyramidal.errors import PyramidalError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, exclusive: bool = False) -> None:
    """Write a file so that a crash never leaves it half-written: `write(tmp)`, fsync, then move it to `path`.

    A device, pipe or folder at `path` is refused: renaming over it would replace it, not write into it.
    On failure nothing is left: not the temporary file, nor the folders made for it. Any failure to write
    (a full disk, a file-size limit, an I/O error) is an OSError naming `path`, whatever the serializer
    raised (safetensors and torch.save have their own exception types for it).

    Args:
        path: the file to write.
        write: called with a temporary path in the same folder; it writes the whole content there.
        exclusive: claim `path` only if no file is there when the content is complete: a file that appeared
            after the command checked its outputs (another run writing into the same folder) is left as it
            is and `OutputExists` is raised. Else the content replaces whatever file is at `path`.

    Returns:
        None.

    Raises:
        OutputExists: with `exclusive`, a file is already at `path`.
        OSError: the file could not be written (its `filename` is `path`).
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise PyramidalError(f"{path}: {'is a folder' if path.is_dir() else 'not a regular file'}; "
                             "refusing to replace it")
    created = missing_folders(path.parent)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        # mkstemp makes the file private (0600); give it the permissions an ordinary new file gets.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        _publish(tmp, path, exclusive)
    except BaseException as exc:
        size = _size(tmp)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        remove_empty_folders(created)
        if isinstance(exc, Exception) and not isinstance(exc, PyramidalError):
            failure = _write_failure(exc, path, size)
            if failure is not None:
                raise failure from None
        raise


class OutputExists(PyramidalError):
    """A file appeared at an output path after the command checked it: another process wrote it first."""

    def __init__(self, path: str | os.PathLike):
        message = f"{path}: a file appeared here after this run checked its outputs (another run writing into " \
                  "the same folder?); left it as it is"
        super().__init__(f"{message} (overwrite=True replaces it)", f"{message} (--overwrite replaces it)")
        self.path = Path(path)


# A file system without hard links (FAT, some network shares) answers link() with one of these.
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def _publish(tmp: str, path: Path, exclusive: bool) -> None:
    """Move the finished temporary file to `path`: replacing what is there, or (`exclusive`) only if nothing is."""
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if `path` exists: the claim and the content arrive together
    except FileExistsError:
        raise OutputExists(path) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # Without hard links: claim the name with O_EXCL, then rename the content over the empty claim.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise OutputExists(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _size(path: str | None) -> int:
    try:
        return os.stat(path).st_size if path is not None else 0
    except OSError:
        return 0


# How serializers that raise their own exception types report a failed write (full disk, I/O error).
_WRITE_FAILURES = {"no space left": errno.ENOSPC, "disk quota": errno.EDQUOT, "file too large": errno.EFBIG,
                   "i/o error": errno.EIO, "file write failed": errno.EIO}


def _write_failure(exc: Exception, path: Path, written: int) -> OSError | None:
    """The OSError naming `path` that a failed write amounts to, or None for an error that is not a write failure.

    Libraries wrap the operating system's error in their own types (torch.save: a RuntimeError about an
    "iostream error", safetensors: a SafetensorError), or lose it. It is found, in order: an OSError among
    the exception's causes; the exception's text; the file-size limit reached by the temporary file; a
    folder with no space left.
    """
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return OSError(seen.errno, seen.strerror or os.strerror(seen.errno), str(path))
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    for words, code in _WRITE_FAILURES.items():
        if words in text:
            return OSError(code, os.strerror(code), str(path))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and written >= limit:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(path))
    try:
        room = os.statvfs(path.parent)
    except OSError:  # the folder is gone
        return None
    if room.f_bavail == 0:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def write_text(text: str, path: str | os.PathLike, *, exclusive: bool = False) -> None:
    """Write UTF-8 text atomically.

    Args:
        text: the content.
        path: the file to write.
        exclusive: only if no file is there (see `atomic_write`).

    Returns:
        None.
    """
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), exclusive=exclusive)


def jsonable(value: Any) -> Any:
    """A value made JSON-safe: NaN → null, ±inf → the strings 'inf' / '-inf', tuples → lists.

    Args:
        value: any mix of dicts, lists, tuples and plain values.

    Returns:
        The same structure, safe for `json.dumps`.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(value: Any, path: str | os.PathLike, *, exclusive: bool = False) -> None:
    """Write a value as indented UTF-8 JSON, atomically (see `jsonable` for inf and NaN).

    Args:
        value: what to write.
        path: the file to write.
        exclusive: only if no file is there (see `atomic_write`).

    Returns:
        None.
    """
    write_text(json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n", path, exclusive=exclusive)


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """Read a JSON file.

    Args:
        path: the file.
        what: what the file is, for the error message ("sidecar", "config").

    Returns:
        The parsed content.

    Raises:
        PyramidalError: "<path>: unreadable <what> (<reason>)" if it cannot be read or parsed.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError (a binary file)
        raise PyramidalError(f"{path}: unreadable {what + ' ' if what else ''}({exc})") from None


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


def format_number(value: float | int | None, digits: int = 2, unit: str = "", missing: str = "–") -> str:
    """A number for a report.

    Args:
        value: the number; None and NaN are shown as `missing`.
        digits: decimals for floats (thousands are separated).
        unit: text put after the number.
        missing: what to show for None and NaN.

    Returns:
        The formatted text.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """The folders on the way to `path` (itself included) that do not exist yet, deepest first."""
    path, missing = Path(path), []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty_folders(folders: Iterable[str | os.PathLike]) -> None:
    """Remove each folder in turn (deepest first) while it is empty: a failed command leaves no folders."""
    for folder in folders:
        try:
            Path(folder).rmdir()
        except OSError:  # not empty (or gone): what is left stays
            break

"""Planning outputs: every file a command will write, checked together before any work starts."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pyramidal.errors import PyramidalError


def folder_problem(folder: str | os.PathLike, probed: dict[Path, str | None] | None = None) -> str | None:
    """None if files can be written in `folder` (creating it if need be); else a "<path>: <reason>" line.

    The nearest existing folder is probed by creating (and removing) an empty file in it, which finds
    read-only disks and permissions for every user, root included. `probed` caches the verdict per
    existing folder, for many outputs at once.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            return f"{probe}: a broken link"
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe}: exists and is not a folder" + (f", so {folder} cannot be created" if probe != folder else "")
    probed = {} if probed is None else probed
    if probe not in probed:
        try:
            fd, tmp = tempfile.mkstemp(prefix=".pyramidal-probe-", dir=probe)
            os.close(fd)
            os.unlink(tmp)
            probed[probe] = None
        except OSError as exc:
            probed[probe] = f"{probe}: cannot write here ({exc.strerror or exc})"
    return probed[probe]


class OutputPlan:
    """Every file a command will write, checked together before any work starts.

    `add` claims a target for a source (an input file, or a name such as "--json"); `check` then refuses
    the whole plan with one line when a target would replace an input file, when two sources claim one
    target, when a target is a folder or device, when a target exists and `overwrite` is off (unless it
    was added with `replace_ok`, for a file the user named exactly), or when a target's folder cannot be
    created or written. Nothing is written by the plan itself. The writers then claim each target when they
    write it (`exclusive`): a check made before the work cannot see a file another run writes meanwhile.
    """

    def __init__(self, *, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 inputs_replaceable: bool = False):
        self.overwrite = overwrite
        self.inputs = {os.path.realpath(p) for p in inputs}
        # restore --overwrite may replace its own inputs; degrade never replaces an original with damage.
        self.inputs_replaceable = inputs_replaceable
        self.targets: dict[str, tuple[Path, str, bool]] = {}
        self.replaceable: set[str] = set()  # targets that may replace a file, decided by `check`

    def add(self, path: str | os.PathLike, source: str | os.PathLike = "", *, replace_ok: bool = False) -> Path:
        """Claim `path` for `source`; two sources claiming one file are refused at once."""
        path = Path(path)
        key = os.path.realpath(path)
        if key in self.targets:
            raise PyramidalError(f"{self.targets[key][1]} and {source} would both be written to {path}; "
                                 "rename one of them")
        self.targets[key] = (path, str(source), replace_ok)
        return path

    def exclusive(self, path: str | os.PathLike) -> bool:
        """Whether `path` must be written with `atomic_write(..., exclusive=True)`: True unless `overwrite`, or
        a report named exactly (`replace_ok`) that existed when the plan was checked. A file that appears
        after the check was written by someone else and is never replaced without `overwrite`."""
        return os.path.realpath(path) not in self.replaceable

    def __iter__(self):
        return (path for path, _, _ in self.targets.values())

    def __len__(self) -> int:
        return len(self.targets)

    def check(self) -> OutputPlan:
        """Raise PyramidalError (one line) if any target cannot or may not be written; returns the plan."""
        existing: list[Path] = []
        folders: dict[Path, None] = {}
        for key, (path, source, replace_ok) in self.targets.items():
            if path.is_dir():
                raise PyramidalError(f"{path}: is a folder; the output of {source} cannot go there")
            if path.exists() and not path.is_file():
                raise PyramidalError(f"{path}: not a regular file; refusing to replace it")
            if key in self.inputs and not (self.overwrite and self.inputs_replaceable):
                message = f"{source}: its output {path} would replace an input file; choose another output folder"
                raise PyramidalError(message + (" or pass overwrite=True" if self.inputs_replaceable else ""),
                                     message + (" or pass --overwrite" if self.inputs_replaceable else ""))
            if path.exists() and not (self.overwrite or replace_ok or key in self.inputs):
                existing.append(path)
            folders.setdefault(path.parent)
            if self.overwrite or (replace_ok and path.exists()):
                self.replaceable.add(key)
        probed: dict[Path, str | None] = {}
        for folder in folders:
            problem = folder_problem(folder, probed)
            if problem:
                raise PyramidalError(problem)
        if existing:
            more = f" (and {len(existing) - 1} more output(s) that exist)" if len(existing) > 1 else ""
            message = f"{existing[0]}: exists and this run did not write it{more}; pass "
            raise PyramidalError(f"{message}overwrite=True to replace, or choose another output folder",
                                 f"{message}--overwrite to replace, or choose another output folder")
        return self

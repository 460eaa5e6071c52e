"""The one progress display: a refreshing bar on a terminal, plain lines in a log, nothing when switched off.

Every long job (restoring images and tiles, evaluation, training epochs, the demo) reports through
`progress(...)`, so that output redirected to a file never fills with carriage-return bar refreshes: when
stderr is not a terminal, a line such as `restore: 12/40 tiles (30%), 8.1 s` is written at most every
`interval` seconds, and one at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from pyramidal.errors import printable

# Seconds between plain lines when stderr is a file or a pipe.
PLAIN_INTERVAL = 10.0


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default stderr) is an interactive terminal.

    Args:
        stream: the stream to test; None means `sys.stderr`.

    Returns:
        True for a terminal; False for a file, a pipe or a closed stream.
    """
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class PlainProgress:
    """tqdm's small interface (update, set_postfix_str, close, iteration) writing plain, rate-limited lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", file: TextIO | None = None, interval: float | None = None,
                 announce: bool = False, initial: int = 0):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.interval = PLAIN_INTERVAL if interval is None else interval
        self.file = file
        self.n = initial
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.written_at: int | None = None  # the count in the last line written
        self.closed = False
        if announce:  # a line when the job starts, so that a log shows every stage
            count = f"{total} {unit}" if total is not None else unit
            print(f"{desc + ', ' if desc else ''}{count}", file=self.file or sys.stderr, flush=True)

    def _line(self) -> str:
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc + ': ' if self.desc else ''}{count} {self.unit}{share}, " \
               f"{time.monotonic() - self.start:.1f} s{postfix}"

    def _write(self) -> None:
        print(self._line(), file=self.file or sys.stderr, flush=True)
        self.last = time.monotonic()
        self.written_at = self.n

    def update(self, n: int = 1) -> None:
        """Count `n` more items; write a line if `interval` seconds passed since the last one."""
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._write()

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        """Text shown after the count (e.g. the loss), in the next line written."""
        self.postfix = text

    def close(self) -> None:
        """Write the final count, if a line was written before or the job took longer than `interval`."""
        if self.closed:
            return
        self.closed = True
        long = self.written_at is not None or time.monotonic() - self.start >= self.interval
        if long and self.written_at != self.n:
            self._write()

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def say(message: str, file: TextIO | None = None) -> None:
    """Print a line without tearing a progress bar on the terminal (the bar is redrawn below it); characters a
    terminal would not show as themselves are escaped (`errors.printable`).

    Args:
        message: the line to print.
        file: the stream; default stdout.

    Returns:
        None.
    """
    message = printable(message)  # a file name with a newline or undecodable bytes stays on its line
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None and getattr(tqdm_module.tqdm, "_instances", None):
        tqdm_module.tqdm.write(message, file=file or sys.stdout)
    else:
        print(message, file=file or sys.stdout, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool | None = None, leave: bool = False, file: TextIO | None = None,
             interval: float | None = None, announce: bool = False, initial: int = 0) -> Any:
    """A progress display over `iterable` (or updated by hand with `.update(n)`).

    Args:
        iterable: what to iterate over; None to call `.update(n)` yourself.
        total: the number of items, if `iterable` has no length.
        desc: what is being done, shown first ("restore", "evaluate noise sigma=50").
        unit: what is counted ("image", "tile").
        enabled: None: a bar on a terminal, plain lines otherwise; True: shown, as a bar only on a terminal;
            False: nothing shown.
        leave: keep the finished bar on screen (terminal only).
        file: the stream; default stderr.
        interval: seconds between plain lines (default `PLAIN_INTERVAL`).
        announce: in plain-line mode, also write a line when the job starts (`desc, total unit`).
        initial: the count to start from (a resumed epoch).

    Returns:
        A tqdm bar on a terminal, else an object with the same `update`, `set_postfix_str`, `close`,
        iteration and context-manager interface.
    """
    stream = sys.stderr if file is None else file
    if enabled is False:
        from tqdm import tqdm

        return tqdm(iterable, total=total, initial=initial, disable=True)
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                    file=stream)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, file=file, interval=interval, announce=announce,
                         initial=initial)

"""pyramidal.errors: a file is named on one line whatever its name holds (control characters, bytes that are not
UTF-8, bidirectional marks)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyramidal.errors import printable

from helpers import FAST, env, picture

NAMES = ["new\nline.png", "bell\a\x1b[31mred.png", "tab\there.png", "bytes-\udcff\udcfe.png", "bidi-\u202eevil.png"]


@pytest.mark.parametrize("name", NAMES, ids=["newline", "escape", "tab", "not-utf8", "bidi"])
def test_a_file_is_named_on_one_line_whatever_its_name_holds(name, tmp_path, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / ("ok-" + name))  # a good image with such a name: one `wrote ...` line
    (folder / ("x" + name)).write_bytes(b"not an image either")  # in the folder: one warning line
    (tmp_path / name).write_bytes(b"not an image")  # named as an input: one error line
    argv = [sys.executable, "-m", "pyramidal", "restore", "--weights", str(weights), "--task", "noise", *FAST,
            os.fsencode(folder), os.fsencode(tmp_path / name), "-o", os.fsencode(tmp_path / "out")]
    done = subprocess.run(argv, capture_output=True, env=env(), timeout=300)
    out, err = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")
    assert done.returncode == 1 and "Traceback" not in err, err
    err_lines, out_lines = err.splitlines(), out.splitlines()
    shown = printable(name)
    assert len(err_lines) == 2, err_lines
    assert any(" error: " in line and line.rstrip().endswith(": not a readable image") and shown in line
               for line in err_lines), err_lines
    assert any(" warning: " in line and ("x" + shown) in line for line in err_lines), err_lines
    wrote = [line for line in out_lines if line.startswith("wrote ")]
    assert len(wrote) == 1 and printable("ok-" + name).removesuffix(".png") in wrote[0], out_lines


def test_printable_escapes_what_a_terminal_would_not_show():
    assert printable("plain é ü 写真.png") == "plain é ü 写真.png"
    assert printable("a\nb\tc\x1b") == "a\\nb\\tc\\x1b"
    assert printable(os.fsdecode(b"\xff\xfe.png")) == "\\xff\\xfe.png"

"""pyramidal.errors: a file is named on one line whatever its name holds (control characters, bytes that are not
UTF-8, bidirectional marks)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

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


# ----------------------------------------------------------------------------------------------------------
# Library errors name parameters; only their command-line form (an error's `flags`) names flags.

PACKAGE = Path(__file__).resolve().parent.parent / "pyramidal"
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _flag_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """PyramidalError and the package's classes derived from it: their second argument (`flags`) is the
    message as the command line words it. `__init__` stands for `super().__init__` in such a class."""
    names = {"PyramidalError", "OptionError", "__init__"}
    classes = [node for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    grown = True
    while grown:
        grown = False
        for node in classes:
            bases = {base.id if isinstance(base, ast.Name) else getattr(base, "attr", "") for base in node.bases}
            if node.name not in names and bases & names:
                names.add(node.name)
                grown = True
    return names


def _called(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else \
        call.func.attr if isinstance(call.func, ast.Attribute) else ""


def _texts(node: ast.AST, flag_classes: set[str], constants: dict[str, ast.AST]):
    """(line, literal text) in `node`: string constants, f-strings with each value as `{}`, and the module's
    string constants it names; left out is the command-line form given to an error class (`flags`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.lineno, node.value
    elif isinstance(node, ast.JoinedStr):
        yield node.lineno, "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
    elif isinstance(node, ast.Name) and node.id in constants:
        yield from _texts(constants.pop(node.id), flag_classes, constants)  # each constant once
    elif isinstance(node, ast.Call) and _called(node) in flag_classes:
        for arg in node.args[:1]:
            yield from _texts(arg, flag_classes, constants)
        for keyword in node.keywords:
            if keyword.arg != "flags":
                yield from _texts(keyword.value, flag_classes, constants)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _texts(child, flag_classes, constants)


def library_errors_naming_flags() -> list[str]:
    """`file:line: text` for each error a module outside cli/ makes (a `raise`, or a call of an error class
    anywhere, e.g. in a helper that returns one) whose literal message names a `--flag`."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))
             if "cli" not in path.relative_to(PACKAGE).parts[:1]}
    flag_classes = _flag_classes(trees)
    found = set()
    for path, tree in trees.items():
        constants = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                     for target in node.targets if isinstance(target, ast.Name)}
        made = [node.exc for node in ast.walk(tree) if isinstance(node, ast.Raise) and node.exc is not None]
        made += [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and (re.search(r"(Error|Exception)$", _called(node)) or _called(node) == "__init__")]
        for error in made:
            for line, text in _texts(error, flag_classes, constants):
                if FLAG.search(text.replace("{}", "x")):
                    found.add(f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}")
    return sorted(found)


def test_library_errors_name_parameters_and_leave_flags_to_their_command_line_form():
    found = library_errors_naming_flags()
    assert not found, "library errors naming a command-line flag (name the parameter; give the flag form as " \
                      "OptionError's `flags`):\n" + "\n".join(found)


def test_the_flag_scan_finds_a_flag_in_an_error_and_not_in_its_command_line_form():
    source = ('raise PyramidalError(f"--tile {tile}: too big")\n'
              'raise OptionError(f"tile={tile}: too big", f"--tile {tile}: too big")\n'
              'raise PyramidalError("tile too big", flags="--tile too big")\n'
              'def helper():\n    return ValueError("give --mask")\n')
    tree = ast.parse(source)
    flagged = [text for node in ast.walk(tree) if isinstance(node, (ast.Raise, ast.Return))
               for _, text in _texts(node.exc if isinstance(node, ast.Raise) else node.value,
                                          {"PyramidalError", "OptionError"}, {})
               if FLAG.search(text.replace("{}", "x"))]
    assert flagged == ["--tile {}: too big", "give --mask"]

"""The command line as a whole: `--help` stays light, shared flags mean the same in every command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyramidal.cli import COMMANDS, build_parser, main

HEAVY = ("torch", "numpy", "PIL")


def subparsers() -> dict:
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=lambda c: " ".join(c) or "pyramidal")
def test_help_imports_no_torch(command):
    """`python -X importtime` lists every module the process imports, the interpreter's own included."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pyramidal", *command, "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: pyramidal" in proc.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "pyramidal.cli" in imported  # the check sees the package's own imports
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_package_top_level_is_lazy():
    code = ("import sys, pyramidal\n"
            "assert 'torch' not in sys.modules, 'import pyramidal loaded torch'\n"
            "print(pyramidal.__version__, len(pyramidal.list_models()), 'torch' in sys.modules)\n"
            "from pyramidal import MODELS, create_model\n"
            "print(type(create_model('pyramidal44')).__name__, 'pyramidal44' in MODELS)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    version_line, model_line = proc.stdout.split("\n")[:2]
    assert version_line.split()[1:] == [str(len(__import__("pyramidal").MODELS)), "True"]
    assert model_line == "DensePyramid True"
    with pytest.raises(AttributeError, match="nothing_here"):
        getattr(__import__("pyramidal"), "nothing_here")  # noqa: B009


def _flag(parser, option: str):
    return next((a for a in parser._actions if option in a.option_strings), None)


@pytest.mark.parametrize("option", ["--device", "--precision", "--threads", "--json"])
def test_shared_flags_are_defined_once(option):
    """Same help, metavar and default (train leaves unset flags absent, so a config file is not overridden)."""
    found = {name: _flag(p, option) for name, p in subparsers().items() if _flag(p, option)}
    assert len(found) >= 2, found
    assert len({(a.help, a.metavar, a.type, a.nargs) for a in found.values()}) == 1, found
    defaults = {a.default for name, a in found.items() if name != "train"}
    assert len(defaults) <= 1, defaults
    if option == "--device":
        assert defaults == {"auto"} and set(found) >= {"gradients", "restore", "evaluate", "compare", "bench",
                                                       "train"}


def test_out_is_o_everywhere():
    with_out = {name: _flag(p, "--out") for name, p in subparsers().items() if _flag(p, "--out")}
    assert set(with_out) >= {"degrade", "restore", "train", "compare", "gradients", "demo"}
    for name, action in with_out.items():
        assert "-o" in action.option_strings, name
    for name, parser in subparsers().items():  # -o is nothing but --out
        action = _flag(parser, "-o")
        assert action is None or "--out" in action.option_strings, name


def test_degrade_output_is_a_hidden_alias(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a.png")
    assert main(["degrade", "--task", "gray", str(tmp_path / "a.png"), "--output", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "a.png").exists()
    with pytest.raises(SystemExit):
        main(["degrade", "--help"])
    assert "--output" not in capsys.readouterr().out
    assert main(["degrade", "--task", "gray", str(tmp_path / "a.png")]) == 2
    assert "-o/--out" in capsys.readouterr().err


def test_json_dash_prints_only_json(capsys):
    """`--json -` means stdout in every command that has --json; a path writes a file."""
    assert main(["evaluate", "--task", "gray", "--weights", "none", "--limit", "1", "--crop", "32",
                 "--json", "-", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["task"] == "gray"


def test_one_key_value_parser():
    from pyramidal.compare import parse_model_options
    from pyramidal.configfiles import parse_options

    items = ["channels=[16,32]", "m=16", "down=avgpool", "residual=true", "lr=1e-3", "name=\"a b\""]
    want = {"channels": [16, 32], "m": 16, "down": "avgpool", "residual": True, "lr": 1e-3, "name": "a b"}
    assert parse_options(items, "--option") == want
    assert parse_model_options(items + ["b:m=8"], ["a", "b"]) == {"a": want, "b": {**want, "m": 8}}
    args = build_parser().parse_args(["gradients", "--option", "channels=[16,32]", "--option", "m=16"])
    assert parse_options(args.option, "--option") == {"channels": [16, 32], "m": 16}
    for bad in (["oops"], ["=1"]):
        with pytest.raises(Exception, match="KEY=VALUE"):
            parse_options(bad, "--option")


def test_only_user_errors_become_one_line(monkeypatch, capsys):
    """A PyramidalError (a bad option, file or name) is one line and exit 2; any other exception is a bug and keeps
    its traceback, a ValueError included."""
    import pyramidal.cli.weights as command
    from pyramidal.errors import OptionError, PyramidalError
    from pyramidal.models import MODELS

    with pytest.raises(OptionError, match="unknown model 'nope'"):  # an unknown name is a user error
        MODELS.get("nope")
    monkeypatch.setattr(command, "run", lambda args: (_ for _ in ()).throw(PyramidalError("bad.png: unreadable")))
    assert main(["weights"]) == 2
    assert capsys.readouterr().err == "pyramidal weights: error: bad.png: unreadable\n"
    monkeypatch.setattr(command, "run", lambda args: int("not a number"))  # a bug
    with pytest.raises(ValueError, match="invalid literal"):
        main(["weights"])


def test_library_errors_name_parameters_and_the_cli_names_flags(tmp_path, capsys):
    """Python callers read `tile=-1`, the command line `--tile -1`: one error, worded for each."""
    from pyramidal.errors import OptionError
    from pyramidal.options import RestoreOptions

    with pytest.raises(OptionError, match=r"^overlap=16: must be smaller than tile=16$") as caught:
        RestoreOptions(tile=16, overlap=16)
    assert caught.value.flags == "--overlap 16: must be smaller than --tile 16"
    assert main(["restore", "--task", "noise", "--tile", "16", "--overlap", "16", str(tmp_path / "a.png"),
                 "-o", str(tmp_path / "out")]) == 2
    assert "error: --overlap 16: must be smaller than --tile 16" in capsys.readouterr().err

"""The `pyramidal` entry point, `pyramidal models`, and import hygiene."""

import subprocess
import sys

from pyramidal import __version__
from pyramidal.cli import main


def test_models_table_lists_every_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "pyramidal457101215" in out and "basic21" in out
    row = next(line for line in out.splitlines() if line.startswith("pyramidal457101215"))
    assert row.split()[1:3] == ["9,326,179", "103"]


def test_models_name_prints_structure(capsys):
    assert main(["models", "pyramidal44"]) == 0
    out = capsys.readouterr().out
    assert "DenseBlock" in out and "MaxPool2d" in out


def test_unknown_model_is_a_one_line_error(capsys):
    assert main(["models", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'nope'" in err[0] and "basic21" in err[0]


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert __version__ in capsys.readouterr().out


def test_import_touches_no_gpu_and_no_files():
    code = (
        "import builtins, torch\n"
        "def boom(*a, **k): raise AssertionError('GPU queried at import')\n"
        "torch.cuda.is_available = boom; torch.cuda.device_count = boom\n"
        "real_open = builtins.open\n"
        "def guarded(f, *a, **k):\n"
        "    if 'pyramidal' in str(f) and not str(f).endswith('.py'): raise AssertionError(f'opened {f}')\n"
        "    return real_open(f, *a, **k)\n"
        "builtins.open = guarded\n"
        "import pyramidal, pyramidal.cli\n"
        "pyramidal.cli.build_parser()\n"
        "print(len(pyramidal.list_models()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 12

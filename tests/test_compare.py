"""`pyramidal compare`: two tiny models, a tiny budget, the table and the figure."""

import json
from pathlib import Path

import pytest

from pyramidal.cli import main
from pyramidal.compare import PRESETS, parse_model_options
from pyramidal.errors import PyramidalError
from pyramidal.figures import spread

TINY = ["--steps", "2", "--size", "32", "--batch-size", "4", "--train-option", "val_images=4",
        "--train-option", "patches_per_epoch=8", "--eval-limit", "3", "--figure-rows", "2",
        "--device", "cpu", "--precision", "fp32"]


def test_compare_two_tiny_models(tmp_path, capsys):
    code = main(["compare", "--task", "squares", "--models", "pyramidal44,pyramidal457",
                 "--model-option", "m=4", "--model-option", "growth=2", "--model-option", "pyramidal457:dropout=0",
                 "--out", str(tmp_path), *TINY])
    out = capsys.readouterr().out
    assert code == 0
    [folder] = list((tmp_path / "squares").iterdir())
    result = json.loads((folder / "compare.json").read_text())
    rows = result["settings"][0]["rows"]
    assert [r["model"] for r in rows if r["kind"] == "model"] == ["pyramidal44", "pyramidal457"]
    assert rows[0]["method"] == "damaged input"
    assert any("Navier" in r["method"] for r in rows)
    assert all(r["steps"] == 2 for r in rows if r["kind"] == "model")
    assert result["runs"][1]["options"] == {"m": 4, "growth": 2, "dropout": 0}
    table = (folder / "compare.md").read_text()
    assert "| `pyramidal44` |" in table and "| `pyramidal457` |" in table and "2 steps per model" in table
    figure = folder / "compare_squares.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    for path in (figure, folder / "compare.md", folder / "compare.json"):
        assert f"wrote {path}" in out
    for run in result["runs"]:  # each run kept its own training folder and weights
        assert Path(run["weights"]).exists() and Path(run["weights"]).is_relative_to(folder)


def test_budget_and_models_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--models", "basic21", "--steps", "2", "--budget-minutes", "1"])
    assert main(["compare", "--out", str(tmp_path)]) == 2
    assert "--preset research" in capsys.readouterr().err
    assert main(["compare", "--models", "basic21,nosuchmodel", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "nosuchmodel" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_model_options_and_preset():
    assert PRESETS["research"] == {"task": "squares",
                                   "models": ["basic21", "basic51", "pyramidal51", "pyramidal51cat"]}
    opts = parse_model_options(["m=8", "b:growth=4", "channels=[4,8,8]"], ["a", "b"])
    assert opts == {"a": {"m": 8, "channels": [4, 8, 8]}, "b": {"m": 8, "growth": 4, "channels": [4, 8, 8]}}
    with pytest.raises(PyramidalError):
        parse_model_options(["c:m=8"], ["a", "b"])
    assert spread(48, 4) == [0, 16, 31, 47] and spread(2, 4) == [0, 1]

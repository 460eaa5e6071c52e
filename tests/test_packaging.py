"""What the wheel declares and carries: dependencies, licence metadata, presets by name, the typing marker."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from pyramidal.config import resolve_config
from pyramidal.configfiles import CONFIGS_DIR, find_config, list_configs
from pyramidal.errors import PyramidalError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def imported_modules() -> set[str]:
    found = set()
    for path in (ROOT / "pyramidal").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names} | {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found |= {node.module, node.module.split(".")[0]}
    return found


def test_dependencies_are_lower_bounds_and_used():
    deps = {re.split(r"[<>=!~; \[]", d, maxsplit=1)[0]: d for d in PROJECT["project"]["dependencies"]}
    assert re.fullmatch(r"torch>=2\.\d+", deps["torch"]), deps["torch"]  # never an exact pin
    assert "scipy" not in deps
    used = imported_modules()
    module_of = {"pillow": "PIL", "scikit-image": "skimage", "opencv-python-headless": "cv2",
                 "tensorboard": "torch.utils.tensorboard", "tomli": "tomli"}
    for name in deps:
        assert module_of.get(name, name) in used, f"{name} is declared but never imported"


def test_current_licence_metadata():
    assert PROJECT["project"]["license"] == "MIT"
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77
               for r in PROJECT["build-system"]["requires"])


def test_the_fresh_machine_guarantee_stays():
    assert "TORCH := torch==2.13.0" in (ROOT / "Makefile").read_text()  # the CPU wheel, installed first
    ci = (ROOT / ".ci" / "run").read_text()
    assert "nvidia" in ci and "scripts/check-wheel.sh" in ci


def test_package_data_carries_presets_weights_and_py_typed():
    data = " ".join(PROJECT["tool"]["setuptools"]["package-data"]["pyramidal"])
    for pattern in ("py.typed", "configs/*.toml", "recipes/*.toml", "weights/*.safetensors"):
        assert pattern in data
    assert (ROOT / "pyramidal" / "py.typed").is_file()
    assert not (ROOT / "configs").exists()  # one copy of the presets, inside the package


def test_presets_by_name_and_paths_still_work(tmp_path):
    names = list_configs()
    assert {"quick", "noise", "squares"} <= set(names)
    assert find_config("quick") == CONFIGS_DIR / "quick.toml"
    assert find_config("configs/noise.toml") == CONFIGS_DIR / "noise.toml"
    mine = tmp_path / "quick.toml"
    mine.write_text('task = "noise"\n')
    assert find_config(mine) == mine  # a file wins over a preset of the same name
    assert resolve_config(config_file=str(mine)).task == "noise"
    assert resolve_config(config_file="quick").model == "pyramidal51"
    with pytest.raises(PyramidalError, match="no such config file or preset; presets: .*quick"):
        find_config("nothing")


def test_docs_send_users_to_preset_names():
    text = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    assert "--config configs/" not in text
    assert "--config quick" in text

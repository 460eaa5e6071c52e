"""Committed artifacts name nothing of the machine that made them: no absolute path in the shipped weight files'
records, their sidecars, the config presets or the docs; and the packager refuses to write one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from safetensors import safe_open

from pyramidal.checkpoint import METADATA_KEY
from pyramidal.configfiles import CONFIGS_DIR
from pyramidal.hub import WEIGHTS_DIR, available_builtin_weights

from helpers import script

ROOT = Path(__file__).resolve().parents[1]
# A path of someone's machine: a home, a scratch or work root, a temporary folder, a Windows drive or `~/`.
# System paths that docs may name on purpose (/usr/bin/chromium, /proc/cpuinfo, /api/restore, /path/to/...)
# are not machine paths.
MACHINE_PATH = re.compile(
    r"(?:^|[\s\"'`(<=:,])(?:/(?:home|root|work|workspace|tmp|var|mnt|media|srv|opt|scratch|data|Users|private|"
    r"builds|runner|github|content|kaggle)/|~/|[A-Za-z]:\\)")
TEXT_ARTIFACTS = sorted(
    [ROOT / "README.md", ROOT / "mkdocs.yml", *(ROOT / "docs").rglob("*.md"), *CONFIGS_DIR.rglob("*.toml"),
     *WEIGHTS_DIR.glob("*.json")])


def strings(value):
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("task", available_builtin_weights())
def test_a_shipped_weight_record_holds_no_absolute_path(task):
    packager = script("package-builtin-weights.py")
    with safe_open(str(WEIGHTS_DIR / f"{task}.safetensors"), framework="pt") as fh:
        record = json.loads(fh.metadata()[METADATA_KEY])
    assert packager.absolute_paths(record) == []
    assert not [s for s in strings(record) if MACHINE_PATH.search(s)]
    # The sidecar is the same record, for people to read.
    assert json.loads((WEIGHTS_DIR / f"{task}.json").read_text()) == record


@pytest.mark.parametrize("path", TEXT_ARTIFACTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_committed_text_names_no_machine_path(path):
    hits = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if MACHINE_PATH.search(line)]
    assert hits == [], f"{path.relative_to(ROOT)} names a path of a machine"


@pytest.mark.parametrize("text", ["/work/runs-bg/builtin-phase6", "<~/runs/x run>/best.safetensors",
                                  "out=C:\\runs", "pyramidal train --config /tmp/noise.toml"])
def test_the_guards_catch_machine_paths(text):
    assert script("package-builtin-weights.py").absolute_paths({"a": [text]}) == [text]
    assert MACHINE_PATH.search(text)


@pytest.mark.parametrize("text", ["builtin:inpaint", "<builtin/inpaint-phase5 run>/best.safetensors",
                                  "builtin+.data/photos", "http://127.0.0.1:7860/", "scripts/train-builtin.sh"])
def test_the_guards_pass_portable_names(text):
    assert script("package-builtin-weights.py").absolute_paths({"a": text}) == []
    assert not MACHINE_PATH.search(text)


def test_the_packager_names_a_run_as_a_user_reruns_it(tmp_path):
    packager = script("package-builtin-weights.py")
    earlier = tmp_path / "stage-2" / "noise" / "pyramidal23456" / "stamp"
    earlier.mkdir(parents=True)
    (earlier / "config.json").write_text(json.dumps({"recipe": "noise", "stage": "stage-2"}))
    config = {"recipe": "noise", "stage": "stage-3", "out": str(tmp_path / "stage-3"), "config": None,
              "init_weights": str(earlier / "best.safetensors"), "data": "builtin+.data/photos", "lr": 1e-4,
              "threads": None}
    assert packager.portable_config(config) == {
        "recipe": "noise", "stage": "stage-3", "init_weights": "<recipe noise stage-2 run>/best.safetensors",
        "data": "builtin+.data/photos", "lr": 1e-4}
    shipped = packager.portable_config({"recipe": "noise", "init_weights": str(WEIGHTS_DIR / "noise.safetensors")})
    assert shipped["init_weights"] == "builtin:noise"
    assert packager.portable_config({"init_weights": "recipe:inpaint"})["init_weights"] == "recipe:inpaint"
    assert packager.recipe_command("squares") == "pyramidal train --recipe inpaint && pyramidal train --recipe squares"


@pytest.mark.parametrize("config, message", [
    ({"init_weights": "/work/runs-bg/shipped-old/noise.safetensors"}, "cannot be named"),
    ({"recipe": "noise", "data": "folder:/home/me/photos"}, "path of this machine"),
])
def test_the_packager_refuses_a_machine_path(config, message):
    packager = script("package-builtin-weights.py")
    with pytest.raises(packager.NotPortable, match=message):
        packager.portable_config(config)


@pytest.mark.parametrize("recipe", [None, "inpaint-phase5", "/work/runs-bg/inpaint-phase5.toml"])
def test_the_packager_refuses_a_run_not_made_by_a_shipped_recipe(recipe):
    packager = script("package-builtin-weights.py")
    with pytest.raises(packager.NotPortable, match="not trained by a recipe shipped"):
        packager.shipped_recipe(recipe, "RUN")

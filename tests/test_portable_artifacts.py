"""Committed artifacts name nothing of the machine that made them: no absolute path in the shipped weight files'
records, their sidecars, the config presets or the docs; and the packager refuses to write one."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from safetensors import safe_open

from pyramidal.checkpoint import METADATA_KEY
from pyramidal.config import CONFIGS_DIR
from pyramidal.inference import WEIGHTS_DIR, available_builtin_weights

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


def load_packager():
    spec = importlib.util.spec_from_file_location("packager", ROOT / "scripts" / "package-builtin-weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def strings(value):
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("task", available_builtin_weights())
def test_a_shipped_weight_record_holds_no_absolute_path(task):
    packager = load_packager()
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
    assert load_packager().absolute_paths({"a": [text]}) == [text]
    assert MACHINE_PATH.search(text)


@pytest.mark.parametrize("text", ["builtin:inpaint", "<builtin/inpaint-phase5 run>/best.safetensors",
                                  "builtin+.data/photos", "http://127.0.0.1:7860/", "scripts/train-builtin.sh"])
def test_the_guards_pass_portable_names(text):
    assert load_packager().absolute_paths({"a": text}) == []
    assert not MACHINE_PATH.search(text)


def test_the_packager_names_a_run_as_a_user_reruns_it():
    packager = load_packager()
    config = {"config": str(CONFIGS_DIR / "builtin" / "noise.toml"), "out": "/work/runs-bg/phase3",
              "init_weights": "/work/runs-bg/phase2/noise/best.safetensors", "data": "builtin+.data/photos",
              "lr": 1e-4, "threads": None}
    portable = packager.portable_config(config, "<builtin/noise run>/best.safetensors")
    assert portable == {"config": "builtin/noise", "init_weights": "<builtin/noise run>/best.safetensors",
                        "data": "builtin+.data/photos", "lr": 1e-4}
    assert packager.portable_config({"config": "builtin/squares", "init_weights": "builtin:inpaint"},
                                    None)["init_weights"] == "builtin:inpaint"


@pytest.mark.parametrize("config, init, message", [
    ({"config": "/work/runs-bg/inpaint-phase5.toml"}, None, "not a preset shipped"),
    ({"config": "builtin/noise", "init_weights": "/work/runs-bg/shipped-old/noise.safetensors"}, None,
     "cannot be named"),
    ({"config": "builtin/noise", "data": "folder:/home/me/photos"}, None, "path of this machine"),
])
def test_the_packager_refuses_a_machine_path(config, init, message):
    packager = load_packager()
    with pytest.raises(packager.NotPortable, match=message):
        packager.portable_config(config, init)

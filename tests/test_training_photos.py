"""The training-photo list of scripts/get-training-photos.sh, its held-out split, and scoring a held-out folder.

Nothing here touches the network: the script's list is read with --list, and its download step is replaced by
an `apt-get` that only records that it was called.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyramidal.data.sources import FolderSource
from pyramidal.errors import PyramidalError
from pyramidal.evaluate import eval_images

from helpers import REPO

SCRIPT = REPO / "scripts" / "get-training-photos.sh"
KEYS = ("split", "folder", "name", "package", "version", "path", "licence", "size", "sha256", "author")
# Licences that allow training and redistributing the weights' record (each one a free licence).
FREE = {"GPL-2+", "LGPL-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC0-1.0"}


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def entries() -> list[dict[str, str]]:
    out = run_script("--list")
    assert out.returncode == 0, out.stderr
    rows = [dict(zip(KEYS, line.split(maxsplit=9))) for line in out.stdout.splitlines() if line.strip()]
    assert len(rows) >= 30
    return rows


def test_every_entry_is_pinned_and_freely_licensed(entries):
    for e in entries:
        where = f"{e.get('folder')}/{e.get('name')}"
        assert len(e) == len(KEYS), where
        assert e["split"] in ("train", "heldout"), where
        assert re.fullmatch(r"[a-z0-9-]+", e["folder"]) and re.fullmatch(r"[A-Za-z0-9_-]+", e["name"]), where
        assert re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", e["package"]), where
        assert re.fullmatch(r"(\d+:)?[0-9][A-Za-z0-9.+~-]*", e["version"]), where
        assert e["path"].startswith("usr/share/") and ".." not in e["path"].split("/"), where
        assert e["path"].lower().endswith((".jpg", ".jpeg", ".png")), where
        assert e["licence"] in FREE, where
        assert re.fullmatch(r"[1-9]\d*x[1-9]\d*", e["size"]), where
        assert re.fullmatch(r"[0-9a-f]{64}", e["sha256"]), where
        assert e["author"].strip(), where


def test_nothing_comes_from_opencv_doc(entries):
    # Debian's opencv-doc images are kept for independent evaluation.
    assert not [e for e in entries if "opencv" in (e["package"] + e["path"]).lower()]


def test_held_out_photographs_are_disjoint_from_training(entries):
    keys = Counter((e["folder"], e["name"]) for e in entries)
    assert max(keys.values()) == 1
    assert len({e["sha256"] for e in entries}) == len(entries)  # no photograph listed twice under two names
    train = {(e["folder"], e["name"]) for e in entries if e["split"] == "train"}
    held = {(e["folder"], e["name"]) for e in entries if e["split"] == "heldout"}
    assert held and train and not held & train
    assert not {e["sha256"] for e in entries if e["split"] == "heldout"} & {
        e["sha256"] for e in entries if e["split"] == "train"}


def test_held_out_split_follows_its_documented_rule(entries):
    # Every 5th of the photographs beyond mate-nature (the first set, trained on before), sorted by folder/name.
    new = sorted(f"{e['folder']}/{e['name']}" for e in entries if e["folder"] != "mate-nature")
    expected = {name for i, name in enumerate(new, 1) if i % 5 == 0}
    assert {f"{e['folder']}/{e['name']}" for e in entries if e["split"] == "heldout"} == expected


def test_docs_table_matches_the_list(entries):
    docs = (REPO / "docs" / "damage-and-data.md").read_text(encoding="utf-8")
    section = docs.split("### Training photographs", 1)[1].split("\n### ", 1)[0]
    for package, version in {(e["package"], e["version"]) for e in entries}:
        assert f"{package} ({version})" in section
    n_train = sum(e["split"] == "train" for e in entries)
    n_held = len(entries) - n_train
    assert f"**{n_train}** | **{n_held}**" in section
    for e in entries:
        if e["split"] == "heldout":
            assert f"`{e['name']}`" in section


def fake_apt(tmp_path: Path) -> tuple[dict, Path]:
    """An environment whose `apt-get` fails and records its call (so a test can never download)."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "apt-called"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> "{marker}"\necho "E: no network" >&2\nexit 100\n')
    (bin_dir / "apt-get").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, marker


def expected_file(root: Path, e: dict[str, str], max_side: int = 1600) -> Path:
    w, h = (int(v) for v in e["size"].split("x"))
    ext = "png" if max(w, h) > max_side else e["path"].rsplit(".", 1)[1].lower()
    return root / e["folder"] / f"{e['name']}.{ext}"


def test_present_files_are_skipped_and_stale_copies_removed(tmp_path, entries):
    env, marker = fake_apt(tmp_path)
    dest, held = tmp_path / "photos", tmp_path / "heldout"
    for e in entries:
        f = expected_file(dest if e["split"] == "train" else held, e)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    held_out = next(e for e in entries if e["split"] == "heldout")
    stale = dest / held_out["folder"] / f"{held_out['name']}.jpg"  # a held-out photo left in training
    stale.write_bytes(b"x")
    out = run_script(str(dest), str(held), env=env)
    assert out.returncode == 0, out.stderr
    assert not marker.exists() and not stale.exists()
    assert expected_file(held, held_out).exists()


def test_a_missing_file_downloads_its_package_and_a_failure_is_one_line(tmp_path, entries):
    env, marker = fake_apt(tmp_path)
    out = run_script(str(tmp_path / "photos"), str(tmp_path / "heldout"), env=env)
    assert out.returncode == 1
    first = entries[0]["package"]
    assert marker.read_text().split()[:2] == ["download", f"{first}={entries[0]['version']}"]
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == f"get-training-photos.sh: apt-get download {first} failed: E: no network"
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["P", "P/held"], "must not lie inside the training folder"),
    (["P/train", "P"], "must not lie inside the held-out folder"),
    (["--max-side", "0"], "--max-side needs a whole number"),
    (["--bogus"], "unknown option --bogus"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, args, message):
    env, marker = fake_apt(tmp_path)
    out = run_script(*[a.replace("P", str(tmp_path / "p"), 1) if a.startswith("P") else a for a in args], env=env)
    assert out.returncode == 1 and not marker.exists()
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr


def test_split_all_scores_every_image_of_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"p{i}.png" for i in range(5)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / name)
    source = FolderSource(tmp_path)
    assert len(source.eval_images("val")) == 1  # 80/10/10 of five files: one validation image
    assert [n for n, _ in source.eval_images("all")] == names
    items, described = eval_images(f"folder:{tmp_path}", "all", crop=32)
    assert [tuple(x.shape) for _, x in items] == [(3, 32, 32)] * 5 and "split all, 5 images" in described
    with pytest.raises(PyramidalError, match="split=all"):
        eval_images("builtin", "all")


def test_bsds432_leaves_the_cbsd68_test_images_out(tmp_path):
    src = tmp_path / "BSDS500" / "data" / "images" / "test"
    src.mkdir(parents=True)
    for image_id in ("100007", "3096", "101085"):  # 3096 and 101085 are CBSD68 test images
        (src / f"{image_id}.jpg").write_bytes(b"jpeg")
    dest = tmp_path / "bsds432"
    script = Path(__file__).resolve().parents[1] / "scripts" / "get-bsds432.sh"
    done = subprocess.run(["bash", str(script), str(tmp_path / "BSDS500"), str(dest)], capture_output=True, text=True)
    assert done.returncode == 0 and sorted(p.name for p in dest.iterdir()) == ["100007.jpg"]
    (dest / "3096.jpg").write_bytes(b"jpeg")  # a test image that got into the training folder is refused
    refused = subprocess.run(["bash", str(script), str(tmp_path / "BSDS500"), str(dest)], capture_output=True,
                             text=True)
    assert refused.returncode == 1 and "3096.jpg is a CBSD68 test image" in refused.stderr

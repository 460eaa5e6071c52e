"""`pyramidal restore` (pyramidal/cli/restore.py): whole-image mode, option and output checks before the model
loads, `--task` as a registered name, `--sigma` only for a model with a noise-level input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pyramidal.checkpoint import save_weights
from pyramidal.models import create_model

from helpers import FAST, cli, one_error, picture

REPO = Path(__file__).resolve().parents[1]


def test_whole_image_mode_restores_tiny_images_cli(tmp_path, weights, capsys):
    inputs = [picture(tmp_path / "in" / "tiny3x5.png", 5, 3), picture(tmp_path / "in" / "good.png", 40, 50),
              picture(tmp_path / "in" / "one1x1.png", 1, 1)]
    code, _, err = cli(["restore", "--weights", str(weights), "--tile", "0", *map(str, inputs),
                        "-o", str(tmp_path / "out"), *FAST], capsys)
    assert code == 0 and err == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png", "one1x1.png", "tiny3x5.png"]


def test_bad_overlap_refused_once_before_the_model_loads(tmp_path, capsys):
    inputs = [picture(tmp_path / f"{i}.png", 20, 20, i) for i in range(3)]
    # The weights file does not exist: the overlap error must come first, once, naming the flags.
    code, out, err = cli(["restore", "--weights", str(tmp_path / "missing.safetensors"), "--tile", "64",
                          "--overlap", "64", *map(str, inputs), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and out == ""
    one_error(err, "--overlap 64", "--tile 64")
    assert not (tmp_path / "out").exists()


def test_restore_to_a_file_fails_once_before_the_model_loads(tmp_path, capsys):
    inputs = [picture(tmp_path / f"{i}.png", 12, 12, i) for i in range(3)]
    target = tmp_path / "a_file.png"
    target.write_bytes(b"x")
    code, out, err = cli(["restore", "--weights", str(tmp_path / "missing.safetensors"), *map(str, inputs),
                          "-o", str(target)], capsys)
    assert code == 2 and out == ""
    one_error(err, str(target), "not a folder")


def test_task_is_a_registered_name_never_a_path(tmp_path, capsys):
    fake = tmp_path / "blur.safetensors"
    save_weights(create_model("basic21", channels=(4, 8, 8)), fake, {"task": "blur"})
    img = picture(tmp_path / "a.png", 8, 8)
    code, _, err = cli(["restore", "--task", str(tmp_path / "blur"), str(img), "-o", str(tmp_path / "o")], capsys)
    assert code == 2
    one_error(err, "--task", "unknown task")
    assert not (tmp_path / "o").exists()
    from pyramidal.hub import builtin_weights_path

    with pytest.raises(ValueError, match="unknown"):
        builtin_weights_path(str(tmp_path / "blur"))


def test_restore_cli_refuses_sigma_for_a_blind_model(tmp_path):
    import subprocess

    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(tmp_path / "in.png")
    proc = subprocess.run([sys.executable, "-m", "pyramidal", "restore", str(tmp_path / "in.png"), "-o",
                           str(tmp_path / "out"), "--task", "noise", "--sigma", "25"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0
    assert "--sigma 25: this model has no noise-level input" in proc.stderr
    assert "Traceback" not in proc.stderr

"""One table of bad inputs through every command: each gives one error line naming the file or flag.

For every case: a non-zero exit, exactly one `pyramidal COMMAND: error: ...` line on stderr that names
what is wrong, no Python traceback, and no file left behind (the command runs in a scratch folder whose
contents are compared before and after). Fault classes swept for each command: bad numbers, bad enum
values, missing or unreadable files, outputs that cannot or may not be written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyramidal.checkpoint import save_state, save_weights
from pyramidal.cli import COMMANDS, main
from pyramidal.models import create_model

from helpers import FAST as CPU
from helpers import REPO

TINY_TRAIN = ["--size", "16", "--batch-size", "2", "--steps", "1", "--patches-per-epoch", "4", "--val-images", "2",
              "--out", "runs", "--threads", "1", "--no-progress"]


def workspace(root: Path) -> Path:
    """A scratch folder holding every kind of input the cases refer to (by relative path)."""
    rng = np.random.default_rng(0)
    (root / "in").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "in" / name)
    torch.manual_seed(0)
    save_weights(create_model("basic21", channels=(4, 8, 8)), root / "tiny.safetensors", {"task": "noise"})
    state = {k: v.contiguous() for k, v in create_model("basic21", channels=(4, 8, 8)).state_dict().items()}
    save_state(state, root / "badrecord.safetensors", {"model": "basic21", "options": "abc"}, sidecar=False)
    (root / "a_file").write_text("not a folder")
    (root / "binary.toml").write_bytes(b"\xff\xfe\x00\x01 binary")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo never",))

    torch.save({"format": "pyramidal-train-checkpoint", "x": Payload()}, root / "evil.ckpt")
    (root / "evil_run").mkdir()
    (root / "evil_run" / "config.json").write_text(json.dumps({"task": "noise", "model": "basic21"}))
    (root / "evil_run" / "last.ckpt").write_bytes((root / "evil.ckpt").read_bytes())
    (root / "trunc").mkdir()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "trunc" / "t.jpg")
    data = (root / "trunc" / "t.jpg").read_bytes()
    (root / "trunc" / "t.jpg").write_bytes(data[: len(data) // 3])
    return root


# (command line, text the error line must hold: the flag or the file at fault)
CASES: list[tuple[list[str], str]] = [
    # demo
    (["demo", "--train-minutes", "0", "-o", "out"], "--train-minutes"),
    (["demo", "--train-minutes", "abc", "-o", "out"], "--train-minutes"),
    (["demo", "--tasks", "nope", "-o", "out"], "nope"),
    (["demo", "-o", "a_file/demo"], "a_file"),
    # models
    (["models", "nope"], "nope"),
    (["models", "--size", "0"], "--size"),
    # degrade
    (["degrade", "--task", "nope", "in", "-o", "out"], "--task"),
    (["degrade", "--task", "noise", "--sigma", "abc", "in", "-o", "out"], "--sigma"),
    (["degrade", "--task", "blur", "--quality", "5", "in", "-o", "out"], "--quality"),
    (["degrade", "--task", "noise", "missing.png", "-o", "out"], "missing.png"),
    (["degrade", "--task", "noise", "in", "-o", "a_file"], "a_file"),
    (["degrade", "--task", "noise", "in", "-o", "in"], "would replace an input file"),
    (["degrade", "--task", "noise", "in"], "-o"),
    # train
    (["train", *TINY_TRAIN, "--threads", "0"], "--threads"),
    (["train", *TINY_TRAIN, "--threads", "-1"], "--threads"),
    (["train", *TINY_TRAIN, "--num-workers", "-1"], "--num-workers"),
    (["train", *TINY_TRAIN, "--model", "basic21", "--channels", "0,0,0"], "channels"),
    (["train", *TINY_TRAIN, "--model", "basic21", "--channels", "a,b"], "--channels"),
    (["train", *TINY_TRAIN, "--model", "pyramidal44", "--m", "-4"], "option m"),
    (["train", *TINY_TRAIN, "--model", "pyramidal44", "--m", "100000000"], "parameters"),
    (["train", *TINY_TRAIN, "--model", "basic21", "--model-option", "channels=abc"], "channels"),
    (["train", *TINY_TRAIN, "--model", "basic21", "--model-option", "channels=[-1,2,3]"], "channels"),
    (["train", *TINY_TRAIN, "--model", "basic21", "--model-option", "nonsense"], "--model-option"),
    (["train", *TINY_TRAIN, "--model", "nope"], "nope"),
    (["train", *TINY_TRAIN, "--task", "/x/noise"], "/x/noise"),
    (["train", *TINY_TRAIN, "--size", "0"], "--size"),
    (["train", *TINY_TRAIN, "--batch-size", "0"], "--batch-size"),
    (["train", *TINY_TRAIN, "--lr", "-1"], "--lr"),
    (["train", *TINY_TRAIN, "--lr", "nan"], "--lr"),
    (["train", *TINY_TRAIN, "--ema", "2"], "--ema"),
    (["train", *TINY_TRAIN, "--schedule", "bogus"], "--schedule"),
    (["train", *TINY_TRAIN, "--size-schedule", "x"], "--size-schedule"),
    (["train", *TINY_TRAIN, "--out", "a_file"], "a_file"),
    (["train", *TINY_TRAIN, "--out", "a_file/runs"], "a_file"),
    (["train", *TINY_TRAIN, "--config", "binary.toml"], "binary.toml"),
    (["train", *TINY_TRAIN, "--config", "missing.toml"], "missing.toml"),
    (["train", *TINY_TRAIN, "--resume", "missing_run"], "missing_run"),
    (["train", "--resume", "evil_run"], "refuses to load"),
    (["train", *TINY_TRAIN, "--init-weights", "missing.safetensors"], "missing.safetensors"),
    (["train", *TINY_TRAIN, "--init-weights", "badrecord.safetensors"], "badrecord.safetensors"),
    (["train", *TINY_TRAIN, "--init-weights", "evil.ckpt"], "evil.ckpt"),
    (["train", *TINY_TRAIN, "--data", "folder:missing"], "missing"),
    (["train", *TINY_TRAIN, "--data", "folder:trunc"], "trunc"),
    # restore
    (["restore", "--weights", "tiny.safetensors", "--tile", "-1", "in", "-o", "out"], "--tile"),
    (["restore", "--weights", "tiny.safetensors", "--overlap", "-3", "in", "-o", "out"], "--overlap"),
    (["restore", "--weights", "tiny.safetensors", "--tile", "64", "--overlap", "64", "in", "-o", "out"], "--overlap"),
    (["restore", "--weights", "tiny.safetensors", "--batch-size", "0", "in", "-o", "out"], "--batch-size"),
    (["restore", "--weights", "tiny.safetensors", "--strength", "5", "in", "-o", "out"], "--strength"),
    (["restore", "--weights", "tiny.safetensors", "--format", "bmp", "in", "-o", "out"], "--format"),
    (["restore", "--weights", "tiny.safetensors", "--quality", "0", "in", "-o", "out"], "--quality"),
    (["restore", "--weights", "tiny.safetensors", "in", "-o", "a_file"], "a_file"),
    (["restore", "--weights", "tiny.safetensors", "in", "-o", "in"], "--overwrite"),
    (["restore", "--weights", "tiny.safetensors", "missing.png", "-o", "out"], "missing.png"),
    (["restore", "--weights", "missing.safetensors", "in", "-o", "out"], "missing.safetensors"),
    (["restore", "--weights", "evil.ckpt", "in", "-o", "out"], "evil.ckpt"),
    (["restore", "--weights", "badrecord.safetensors", "in", "-o", "out"], "badrecord.safetensors"),
    (["restore", "--weights", "a_file", "in", "-o", "out"], "a_file"),
    (["restore", "--task", "/x/noise", "in", "-o", "out"], "--task"),
    (["restore", "--backend", "onnx", "--weights", "tiny.safetensors", "in", "-o", "out"], "--weights"),
    (["restore", "--device", "bogus", "--weights", "tiny.safetensors", "in", "-o", "out"], "--device"),
    # serve (every check happens before the server would start)
    (["serve", "--port", "0"], "--port"),
    (["serve", "--port", "abc"], "--port"),
    (["serve", "--queue", "0"], "--queue"),
    (["serve", "--tile", "1"], "--tile"),
    (["serve", "--max-megapixels", "0"], "--max-megapixels"),
    (["serve", "--weights", "missing.safetensors"], "missing.safetensors"),
    (["serve", "--weights", "a_file"], "a_file"),
    (["serve", "--weights", "badrecord.safetensors"], "badrecord.safetensors"),
    (["serve", "--weights", "evil.ckpt"], "evil.ckpt"),
    (["serve", "--weights-dir", "missing"], "missing"),
    (["serve", "--device", "bogus"], "--device"),
    # evaluate
    (["evaluate", "--task", "nope"], "--task"),
    (["evaluate", "--task", "noise", "--weights", "none", "--json", "a_file/r.json"], "a_file"),
    (["evaluate", "--task", "noise", "--weights", "none", "--markdown", "a_file/r.md"], "a_file"),
    (["evaluate", "--task", "noise", "--weights", "none", "--figures", "a_file"], "a_file"),
    (["evaluate", "--task", "noise", "--weights", "none", "--json", "r.json", "--markdown", "r.json"], "r.json"),
    (["evaluate", "--task", "noise", "--weights", "none", "--tile", "-1"], "--tile"),
    (["evaluate", "--task", "noise", "--weights", "none", "--tile", "64", "--overlap", "64"], "--overlap"),
    (["evaluate", "--task", "noise", "--weights", "none", "--limit", "0"], "--limit"),
    (["evaluate", "--task", "noise", "--weights", "none", "--crop", "-1"], "--crop"),
    (["evaluate", "--task", "noise", "--weights", "none", "--split", "bogus"], "--split"),
    (["evaluate", "--task", "noise", "--weights", "none", "--split", "all"], "--split all"),
    (["evaluate", "--task", "noise", "--weights", "none", "--baselines", "bogus"], "--baselines"),
    (["evaluate", "--task", "blur", "--weights", "none", "--sigma", "25"], "--sigma"),
    (["evaluate", "--task", "noise", "--weights", "missing.safetensors"], "missing.safetensors"),
    (["evaluate", "--task", "noise", "--weights", "evil.ckpt", "--data", "folder:in", *CPU], "evil.ckpt"),
    (["evaluate", "--task", "noise", "--weights", "none", "--data", "folder:missing"], "missing"),
    (["evaluate", "--task", "noise", "--weights", "none", "--data", "folder:trunc"], "trunc"),
    # compare
    (["compare", "--models", "nope", "--steps", "1", "-o", "out"], "nope"),
    (["compare", "--models", "basic21", "--steps", "0", "-o", "out"], "--steps"),
    (["compare", "--models", "basic21", "--budget-minutes", "-1", "-o", "out"], "--budget-minutes"),
    (["compare", "--models", "basic21", "--task", "/x", "--steps", "1", "-o", "out"], "--task"),
    (["compare", "--models", "basic21", "--steps", "1", "--eval-limit", "0", "-o", "out"], "--eval-limit"),
    (["compare", "--models", "basic21", "--steps", "1", "-o", "a_file/cmp"], "a_file"),
    (["compare", "--models", "basic21", "--steps", "1", "--data", "folder:missing", "-o", "out"], "missing"),
    (["compare", "--models", "basic21", "--steps", "1", "--model-option", "channels=abc", "-o", "out"], "channels"),
    # gradients
    (["gradients", "--models", "nope", "-o", "out"], "nope"),
    (["gradients", "--steps", "-1", "-o", "out"], "--steps"),
    (["gradients", "--size", "0", "-o", "out"], "--size"),
    (["gradients", "--lr", "0", "-o", "out"], "--lr"),
    (["gradients", "--task", "/x", "-o", "out"], "--task"),
    (["gradients", "--models", "pyramidal44", "--option", "m=abc", "-o", "out"], "option m"),
    (["gradients", "--models", "pyramidal44", "-o", "a_file/g"], "a_file"),
    # weights
    (["weights", "nope"], "nope"),
    (["weights", "/x/noise"], "/x/noise"),
    # bench
    (["bench", "--smoke", "--size", "0"], "--size"),
    (["bench", "--smoke", "--steps", "0"], "--steps"),
    (["bench", "--smoke", "--threads", "0"], "--threads"),
    (["bench", "--smoke", "--mode", "bogus"], "--mode"),
    (["bench", "--smoke", "--model", "nope"], "nope"),
    (["bench", "--smoke", "--tasks", "nope"], "nope"),
    (["bench", "--smoke", "--json", "a_file/b.json"], "a_file"),
    (["bench", "--smoke", "--device", "bogus"], "--device"),
    # export
    (["export", "--weights", "tiny.safetensors", "--onnx", "out.txt"], "out.txt"),
    (["export", "--weights", "tiny.safetensors", "--onnx", "a_file/m.onnx"], "a_file"),
    (["export", "--weights", "missing.safetensors", "--onnx", "m.onnx"], "missing.safetensors"),
    (["export", "--weights", "evil.ckpt", "--onnx", "m.onnx"], "evil.ckpt"),
    (["export", "--weights", "tiny.safetensors", "--onnx", "m.onnx", "--opset", "5"], "--opset"),
    (["export", "--weights", "builtin", "--task", "/x", "--onnx", "m.onnx"], "--task"),
]


def test_matrix_covers_every_command():
    assert {argv[0] for argv, _ in CASES} == set(COMMANDS)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def case_id(argv: list[str]) -> str:
    return " ".join(argv).replace(" ".join(TINY_TRAIN), "…")


@pytest.mark.parametrize("argv, needle", CASES, ids=[case_id(argv) for argv, _ in CASES])
def test_bad_input_gives_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    ws = workspace(tmp_path / "ws")
    monkeypatch.chdir(ws)  # relative paths in the cases, and any stray output, stay in the scratch folder
    before = snapshot(ws)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a bad flag value while parsing
        code = exc.code
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and ": warning: " not in line]
    assert code not in (0, None), err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pyramidal {argv[0]}: error: "), lines[0]
    assert needle in lines[0], (needle, lines[0])
    assert snapshot(ws) == before, "the command left files behind"


@pytest.mark.parametrize("argv, needle", [
    (["restore", "--weights", "tiny.safetensors", "--tile", "-1", "in", "-o", "out"], "--tile"),
    (["train", "--model", "pyramidal44", "--m", "-4", "--out", "runs"], "option m"),
])
def test_bad_input_gives_one_line_from_a_fresh_process(argv, needle, tmp_path):
    ws = workspace(tmp_path / "ws")
    before = snapshot(ws)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "pyramidal", *argv], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"pyramidal {argv[0]}: error: ") and needle in lines[0], lines
    assert snapshot(ws) == before

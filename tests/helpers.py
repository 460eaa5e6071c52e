"""Helpers shared by the test modules that run `pyramidal COMMAND` in-process and check its one-line errors."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import threading
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pyramidal.cli import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--device", "cpu", "--precision", "fp32"]
# A few steps of a tiny plain autoencoder on 32-px patches: seconds on one CPU thread.
TRAIN = ["--task", "noise", "--model", "basic21", "--channels", "4,8,8", "--size", "32", "--batch-size", "4",
         "--patches-per-epoch", "8", "--val-images", "2", "--log-images", "0", "--threads", "1",
         "--no-progress", "--quiet", *FAST]
# `pyramidal evaluate` of the damaged input alone (no model, no baselines) at one noise level.
EVAL = ["--task", "noise", "--weights", "none", "--baselines", "none", "--crop", "32", "--sigma", "25", *FAST]


def cli(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    """Run `pyramidal ARGV` in this process: (exit code, stdout, non-empty stderr lines)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses bad flag values itself
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def one_error(err: list[str], *needles: str) -> str:
    """The single stderr line of a refused command; it names what is wrong."""
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and " error: " in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err)
    return err[0]


def picture(path: Path, h: int = 16, w: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def truncated(path: Path, seed: int = 9) -> Path:
    picture(path, 64, 64, seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def env() -> dict:
    """The environment for a `python -m pyramidal` child: one torch thread, this checkout's package first."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def in_thread(target, timeout: float = 30.0):
    """Run `target` in a daemon thread: a call that blocks (opening a FIFO) fails the test instead of hanging it."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked on a file that is not a regular file"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def script(filename: str) -> types.ModuleType:
    """A script of scripts/ freshly imported as a module (`gpu-campaign.py` as `gpu_campaign`)."""
    name = Path(filename).stem.replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def torch_threads(count: int):
    """`count` intra-op torch threads inside the block, the thread count as it was afterwards. On a shared 2-core
    machine OpenMP barriers make two threads far slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)

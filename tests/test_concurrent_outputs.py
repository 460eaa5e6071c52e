"""Outputs are claimed when they are written, not only checked before the work: two runs into one folder never
both write a file, and neither replaces a file it did not check, unless --overwrite.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pyramidal.inference.files
import pyramidal.io
from pyramidal.cli import main
from pyramidal.io import OutputExists, atomic_write, read_image, write_text

from helpers import FAST as CPU
from helpers import REPO


def picture(path: Path, h: int = 24, w: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- the claim itself


def test_exclusive_write_never_replaces_and_leaves_nothing(tmp_path):
    path = tmp_path / "a.txt"
    write_text("first\n", path, exclusive=True)
    with pytest.raises(OutputExists, match="a.txt: a file appeared here"):
        write_text("second\n", path, exclusive=True)
    assert path.read_text() == "first\n" and os.listdir(tmp_path) == ["a.txt"]  # no temporary file left
    write_text("third\n", path)  # not exclusive: replaced
    assert path.read_text() == "third\n"


def test_exclusive_write_without_hard_links(tmp_path, monkeypatch):
    """A file system without hard links (FAT, some network shares): the name is claimed with O_EXCL instead."""

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "b.txt"
    write_text("first\n", path, exclusive=True)
    with pytest.raises(OutputExists):
        write_text("second\n", path, exclusive=True)
    assert path.read_text() == "first\n" and os.listdir(tmp_path) == ["b.txt"]


def _claim(path: str, text: str, start, results) -> None:
    start.wait()
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(text), exclusive=True)
        results.put(text)
    except OutputExists:
        results.put(None)


def test_one_of_many_racing_processes_claims_a_file(tmp_path):
    """Eight real processes write one file at the same moment: exactly one writes it, whole."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    path = tmp_path / "contested.txt"
    texts = [f"process {i}\n" * 1000 for i in range(8)]
    procs = [context.Process(target=_claim, args=(str(path), text, start, results)) for text in texts]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    won = [r for r in (results.get(timeout=10) for _ in procs) if r is not None]
    assert len(won) == 1 and path.read_text() == won[0]
    assert os.listdir(tmp_path) == ["contested.txt"]


# --------------------------------------------------------------------------- two real restore runs


def test_two_restore_runs_into_one_folder_never_both_write_a_file(tmp_path, weights):
    """Both runs pass their output checks at the same time; each file is written by one of them, and the other
    reports it as failed on one line and exits 1 (or was refused before its work, exit 2)."""
    inputs = [picture(tmp_path / "in" / f"p{i}.png", 96, 96, seed=i) for i in range(6)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for attempt in range(3):  # a retry only when one run started so late that its check saw the other's files
        out = tmp_path / f"out{attempt}"
        argv = [sys.executable, "-m", "pyramidal", "restore", "--weights", str(weights), "--task", "noise",
                *map(str, inputs), "-o", str(out), *CPU]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        runs = [(p.wait(180), *p.communicate()) for p in procs]
        if all(code != 2 for code, _, _ in runs):
            break
    wrote = [{line.split(" ", 1)[1] for line in lines(stdout) if line.startswith("wrote ")} for _, stdout, _ in runs]
    assert not wrote[0] & wrote[1], "both runs wrote the same file"
    assert wrote[0] | wrote[1] == {str(out / f"p{i}.png") for i in range(6)}
    for (code, _, stderr), mine in zip(runs, wrote):
        errors = lines(stderr)
        assert "Traceback" not in stderr
        if code == 2:  # started after the other had written: refused before its work, in one line
            assert not mine and len(errors) == 1 and "exist" in errors[0], errors
            continue
        assert len(errors) == 6 - len(mine), errors  # one line for each file the other run wrote
        assert all(" error: " in e and "a file appeared here" in e for e in errors), errors
        assert code == (0 if len(mine) == 6 else 1)
    assert sorted(os.listdir(out)) == [f"p{i}.png" for i in range(6)]  # no temporary files left


def _file_appears(monkeypatch, target: Path, content: bytes) -> None:
    """Another run writes `target` after this one checked its outputs: just before its input is read."""
    real = pyramidal.io.read_image

    def read_then_race(path):
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return real(path)

    monkeypatch.setattr(pyramidal.io, "read_image", read_then_race)  # degrade imports it when it runs
    monkeypatch.setattr(pyramidal.inference.files, "read_image", read_then_race)  # restore's file reader


def test_restore_never_replaces_a_file_written_after_its_check(tmp_path, weights, monkeypatch, capsys):
    inputs = [picture(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(2)]
    out = tmp_path / "out"
    _file_appears(monkeypatch, out / "p1.png", b"another run's result")
    code = main(["restore", "--weights", str(weights), "--task", "noise", *map(str, inputs), "-o", str(out), *CPU])
    stdout, stderr = capsys.readouterr()
    assert code == 1
    assert (out / "p1.png").read_bytes() == b"another run's result"
    assert read_image(out / "p0.png").rgb.shape == (24, 32, 3)
    assert [line for line in lines(stdout) if line.startswith("wrote")] == [f"wrote {out / 'p0.png'}"]
    errors = lines(stderr)
    assert len(errors) == 1 and "p1.png: a file appeared here" in errors[0], errors
    # With --overwrite the file is replaced, as asked.
    assert main(["restore", "--weights", str(weights), "--task", "noise", *map(str, inputs), "-o", str(out),
                 "--overwrite", *CPU]) == 0
    assert read_image(out / "p1.png").rgb.shape == (24, 32, 3)


def test_degrade_never_replaces_a_file_written_after_its_check(tmp_path, monkeypatch, capsys):
    inputs = [picture(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(2)]
    out = tmp_path / "out"
    _file_appears(monkeypatch, out / "p1.png", b"another run's result")
    code = main(["degrade", "--task", "noise", *map(str, inputs), "-o", str(out)])
    _, stderr = capsys.readouterr()
    assert code == 1
    assert (out / "p1.png").read_bytes() == b"another run's result"
    assert len(lines(stderr)) == 1 and "p1.png: a file appeared here" in stderr


EVAL = ["--task", "noise", "--weights", "none", "--baselines", "none", "--crop", "32", "--sigma", "25", *CPU]


def test_evaluate_reports_and_figures_are_claimed_when_written(tmp_path, monkeypatch, capsys):
    """A --json file absent when evaluate checked its outputs is not replaced if another run writes it first;
    the other outputs are still written, and the run exits 1."""
    import pyramidal.evaluate

    folder = tmp_path / "photos"
    for i in range(3):
        picture(folder / f"p{i}.png", 48, 40, seed=i)
    report, markdown, figures = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "figs"
    real = pyramidal.evaluate.evaluate

    def evaluate_while_another_run_writes(*args, **kwargs):
        result = real(*args, **kwargs)
        report.write_text("another run's report")
        (figures / "noise_sigma25.png").parent.mkdir(parents=True, exist_ok=True)
        (figures / "noise_sigma25.png").write_bytes(b"another run's figure")
        return result

    monkeypatch.setattr(pyramidal.evaluate, "evaluate", evaluate_while_another_run_writes)
    code = main(["evaluate", *EVAL, "--data", f"folder:{folder}", "--json", str(report), "--markdown",
                 str(markdown), "--figures", str(figures)])
    stdout, stderr = capsys.readouterr()
    assert code == 1
    assert report.read_text() == "another run's report"
    assert (figures / "noise_sigma25.png").read_bytes() == b"another run's figure"
    assert "damaged input" in markdown.read_text()
    errors = [line for line in lines(stderr) if line.startswith("pyramidal ")]  # progress lines aside
    assert len(errors) == 2 and all("a file appeared here" in e for e in errors), errors
    assert f"wrote {markdown}" in stdout
    # A report that existed when the run checked it was named exactly, and is replaced.
    monkeypatch.setattr(pyramidal.evaluate, "evaluate", real)
    assert main(["evaluate", *EVAL, "--data", f"folder:{folder}", "--json", str(report)]) == 0
    assert report.read_text().startswith("{")


def test_gradients_reports_are_claimed_when_written(tmp_path, monkeypatch, capsys):
    """Reports in -o replace the ones a finished run left, never one another run writes meanwhile."""
    import pyramidal.gradients

    out = tmp_path / "grad"
    argv = ["gradients", "--models", "basic21", "--option", "channels=[4,8,8]", "--steps", "0", "--size", "16",
            "--batch-size", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0 and main(argv) == 0  # the second run replaces the first run's reports
    capsys.readouterr()
    (out / "gradients.csv").unlink()
    real = pyramidal.gradients.measure

    def measure_while_another_run_writes(*args, **kwargs):
        result = real(*args, **kwargs)
        (out / "gradients.csv").write_text("another run's table")
        return result

    monkeypatch.setattr(pyramidal.gradients, "measure", measure_while_another_run_writes)
    assert main(argv) == 1
    stdout, stderr = capsys.readouterr()
    assert (out / "gradients.csv").read_text() == "another run's table"
    assert f"wrote {out / 'gradients.png'}" in stdout and f"wrote {out / 'gradients.json'}" in stdout
    errors = lines(stderr)
    assert len(errors) == 1 and "gradients.csv: a file appeared here" in errors[0], errors

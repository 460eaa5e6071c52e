"""Resource bounds end in one line: sizes, batches and steps are bounded (or their memory is counted before
anything is allocated), and a write over the file-size limit is one line naming the file."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import pytest

from helpers import cli, env

BIG = ["--size", "100000"]

TRAIN = ["train", "--model", "basic21", "--channels", "4,8,8", "--device", "cpu"]


@pytest.mark.parametrize("argv, words", [
    ([*TRAIN, *BIG], "--size 100000: at most 32,768"),
    ([*TRAIN, "--size", "20000"], "needs at least"),  # within the bound, but no machine holds its activations
    ([*TRAIN, "--batch-size", "100000000"], "--batch-size 100000000: at most"),
    ([*TRAIN, "--size", "4096", "--batch-size", "4096"], "needs at least"),
    ([*TRAIN, "--steps", str(10**15)], "--steps 1000000000000000: at most"),
    ([*TRAIN, "--epochs", str(10**12)], "--epochs"),
    ([*TRAIN, "--patches-per-epoch", str(10**12)], "--patches-per-epoch"),
    ([*TRAIN, "--size-schedule", "10:20000"], "needs at least"),
    ([*TRAIN, "--size-schedule", "10:99999"], "--size-schedule"),
    (["bench", "--device", "cpu", *BIG], "--size"),
    (["bench", "--device", "cpu", "--size", "20000"], "needs at least"),
    (["bench", "--device", "cpu", "--size", "20000", "--mode", "infer"], "needs at least"),
    (["bench", "--device", "cpu", "--batch-size", str(10**9)], "--batch-size"),
    (["bench", "--device", "cpu", "--steps", str(10**12)], "--steps"),
    (["gradients", "--device", "cpu", *BIG], "--size"),
    (["gradients", "--device", "cpu", "--size", "20000"], "needs at least"),
    (["gradients", "--device", "cpu", "--steps", str(10**12)], "--steps"),
    (["compare", "--device", "cpu", *BIG], "--size"),
    (["compare", "--device", "cpu", "--size", "20000", "--models", "basic21", "--steps", "1"], "needs at least"),
    (["evaluate", "--task", "noise", "--crops", str(10**8)], "--crops"),
    (["evaluate", "--task", "noise", "--crop", "100000"], "--crop"),
])
def test_sizes_batches_and_steps_are_bounded_in_one_line(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a command might write lands here (nothing should)
    code, _, err = cli(argv, capsys)
    assert code == 2, err
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err
    assert not list(tmp_path.iterdir())


def test_an_impossible_size_is_refused_before_anything_is_allocated(tmp_path):
    """Under an address-space limit of 3 GB, `train --size 20000` ends with the one-line memory error, not an
    allocation failure (the estimate runs on PyTorch's meta device)."""
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from pyramidal.cli import main
        sys.exit(main({[*TRAIN, "--size", "20000", "--out", str(tmp_path / "runs")]!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "needs at least" in done.stderr and "TB" in done.stderr


def test_a_checkpoint_write_over_the_file_size_limit_is_one_line_naming_it(tmp_path):
    """torch.save reports a file-size limit as a chained RuntimeError ('unexpected pos', 'iostream error'): it
    becomes one OSError naming the file, and nothing is left behind."""
    script = textwrap.dedent(f"""
        import errno, resource, signal, sys, torch
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        from pyramidal.checkpoint import save_checkpoint
        from pyramidal.io import write_json
        target = {str(tmp_path / "run" / "last.ckpt")!r}
        try:
            save_checkpoint(target, {{"w": torch.zeros(100_000)}})
        except OSError as exc:
            assert exc.errno == errno.EFBIG and exc.filename == target and exc.__cause__ is None, exc
            print("one line:", exc.filename, exc.strerror)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"one line: {tmp_path / 'run' / 'last.ckpt'} File too large"
    assert not (tmp_path / "run").exists()  # no partial file, no folder made for it


def test_training_over_the_file_size_limit_ends_in_one_line(tmp_path):
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
        from pyramidal.cli import main
        sys.exit(main({[*TRAIN, "--task", "noise", "--size", "16", "--batch-size", "2", "--steps", "1",
                        "--patches-per-epoch", "4", "--val-images", "2", "--log-images", "0", "--no-progress",
                        "--quiet", "--precision", "fp32", "--model-option", "channels=[32,64,64]",
                        "--out", str(tmp_path / "runs")]!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=600)
    errors = [line for line in done.stderr.splitlines() if "error" in line or "Traceback" in line]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and "File too large" in errors[0] and "Traceback" not in done.stderr, done.stderr
    assert ".ckpt" in errors[0] or ".safetensors" in errors[0]


def test_resource_limits_restored():  # the subprocess tests change limits in children only
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY

"""Bounds and one line, always: sizes, batches and steps are bounded (or their memory is counted before anything is
allocated); a failed write is one line naming the file; FIFOs and devices are skipped, never opened; a file's name
is shown exactly on one line whatever it holds; any NumPy array is taken or refused with a PyramidalError."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pyramidal
from pyramidal.cli import main
from pyramidal.errors import PyramidalError, printable
from pyramidal.io import atomic_write, expand_inputs, read_image, scan_images
from pyramidal.options import EVALUATION, RestoreOptions

REPO = Path(__file__).resolve().parents[1]
CPU = ["--device", "cpu", "--precision", "fp32"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a bad flag value itself
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def picture(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


# --------------------------------------------------------------------------- sizes, batches, steps


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
    code, _, err = run_cli(argv, capsys)
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


# --------------------------------------------------------------------------- write failures


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


def test_a_full_disk_is_named_whatever_the_serializer_raised(tmp_path, monkeypatch):
    """A serializer that loses the operating system's error: the folder with no space left explains it."""

    class NoRoom:
        f_bavail = 0

    monkeypatch.setattr(os, "statvfs", lambda path: NoRoom())

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662")

    with pytest.raises(OSError) as raised:
        atomic_write(tmp_path / "w.ckpt", write)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "w.ckpt")
    assert not list(tmp_path.iterdir())


def test_a_bug_in_a_serializer_is_not_dressed_as_a_write_failure(tmp_path):
    def write(tmp: str) -> None:
        raise TypeError("cannot serialize a lambda")

    with pytest.raises(TypeError):
        atomic_write(tmp_path / "x", write)


# --------------------------------------------------------------------------- files that are not regular files


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


@pytest.fixture
def fifo_folder(tmp_path) -> Path:
    folder = tmp_path / "in"
    picture(folder / "good.png")
    os.mkfifo(folder / "pipe.png")
    return folder


def test_io_never_opens_a_fifo(fifo_folder):
    with pytest.raises(PyramidalError, match="pipe.png: not a regular file \\(a FIFO"):
        in_thread(lambda: read_image(fifo_folder / "pipe.png"))
    good, bad = in_thread(lambda: scan_images(fifo_folder))
    assert good == [fifo_folder / "good.png"] and bad == [(fifo_folder / "pipe.png", "not a regular file (a FIFO (named pipe))")]
    skipped = []
    pairs = in_thread(lambda: expand_inputs([fifo_folder / "pipe.png", "/dev/null", fifo_folder / "good.png"],
                                            on_skip=lambda f, why: skipped.append(f)))
    assert [p for p, _ in pairs] == [fifo_folder / "good.png"]
    assert skipped == [fifo_folder / "pipe.png", Path("/dev/null")]


@pytest.mark.parametrize("command", ["restore", "degrade"])
def test_restore_and_degrade_skip_fifos_and_devices_with_a_warning(command, fifo_folder, tmp_path, weights):
    argv = {"restore": ["restore", "--weights", str(weights), "--task", "noise", *CPU],
            "degrade": ["degrade", "--task", "noise"]}[command]
    done = subprocess.run([sys.executable, "-m", "pyramidal", *argv, str(fifo_folder), str(fifo_folder / "pipe.png"),
                           "/dev/zero", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warnings) == 3 and all(" warning: " in w and "not a regular file" in w for w in warnings), warnings
    assert sum("pipe.png" in w for w in warnings) == 2 and any("/dev/zero" in w for w in warnings)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


def test_training_data_skips_a_fifo(fifo_folder):
    from pyramidal.data import SkippedImageWarning, load_source

    for i in range(5):
        picture(fifo_folder / f"more{i}.png", seed=i + 1)
    with pytest.warns(SkippedImageWarning, match="pipe.png: skipped, not a regular file"):
        source = in_thread(lambda: load_source(f"folder:{fifo_folder}", size=8))
    assert source is not None


# --------------------------------------------------------------------------- file names


NAMES = ["new\nline.png", "bell\a\x1b[31mred.png", "tab\there.png", "bytes-\udcff\udcfe.png", "bidi-\u202eevil.png"]


@pytest.mark.parametrize("name", NAMES, ids=["newline", "escape", "tab", "not-utf8", "bidi"])
def test_a_file_is_named_on_one_line_whatever_its_name_holds(name, tmp_path, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / ("ok-" + name))  # a good image with such a name: one `wrote ...` line
    (folder / ("x" + name)).write_bytes(b"not an image either")  # in the folder: one warning line
    (tmp_path / name).write_bytes(b"not an image")  # named as an input: one error line
    argv = [sys.executable, "-m", "pyramidal", "restore", "--weights", str(weights), "--task", "noise", *CPU,
            os.fsencode(folder), os.fsencode(tmp_path / name), "-o", os.fsencode(tmp_path / "out")]
    done = subprocess.run(argv, capture_output=True, env=env(), timeout=300)
    out, err = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")
    assert done.returncode == 1 and "Traceback" not in err, err
    err_lines, out_lines = err.splitlines(), out.splitlines()
    shown = printable(name)
    assert len(err_lines) == 2, err_lines
    assert any(" error: " in line and line.rstrip().endswith(": not a readable image") and shown in line
               for line in err_lines), err_lines
    assert any(" warning: " in line and ("x" + shown) in line for line in err_lines), err_lines
    wrote = [line for line in out_lines if line.startswith("wrote ")]
    assert len(wrote) == 1 and printable("ok-" + name).removesuffix(".png") in wrote[0], out_lines


def test_printable_escapes_what_a_terminal_would_not_show():
    assert printable("plain é ü 写真.png") == "plain é ü 写真.png"
    assert printable("a\nb\tc\x1b") == "a\\nb\\tc\\x1b"
    assert printable(os.fsdecode(b"\xff\xfe.png")) == "\\xff\\xfe.png"


# --------------------------------------------------------------------------- arrays


def _layouts() -> dict[str, np.ndarray]:
    base = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    read_only = base.copy()
    read_only.flags.writeable = False
    return {
        "negative strides": base[::-1, ::-1], "bgr view": base[..., ::-1], "fortran": np.asfortranarray(base),
        "slice": base[2:15:2, 1::3], "read-only": read_only, "broadcast": np.broadcast_to(base[:1], (20, 24, 3)),
        "gray view": base[..., 1], "gray column view": base[:, ::-2, 0], "rgba": np.dstack([base, base[..., 0]]),
        "uint16 big-endian": (base.astype(">u2") * 257), "float32": base.astype(np.float32) / 255,
        "float64 transposed": (base / 255.0).transpose(1, 0, 2), "float16": (base / 255).astype(np.float16),
        "float big-endian": (base / 255.0).astype(">f8"), "1x1": base[:1, :1], "one row": base[:1],
        "memmap-like": np.lib.stride_tricks.as_strided(base, (10, 12, 3), (base.strides[0] * 2,
                                                                          base.strides[1] * 2, 1)),
    }


@pytest.mark.parametrize("name", sorted(_layouts()))
def test_the_api_takes_any_array_layout(name, weights):
    arr = _layouts()[name]
    out = pyramidal.restore(arr, task="noise", weights=weights, device="cpu", precision="fp32", tile=16)
    assert out.shape == arr.shape and out.dtype == arr.dtype


@pytest.mark.parametrize("arr", [
    np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0), np.uint8), np.zeros((0, 0, 3), np.float32),
    np.zeros((3, 20, 24), np.uint8), np.zeros((1, 8, 8, 3), np.uint8), np.zeros((8, 8, 5), np.uint8),
    np.zeros((8, 8, 3), bool), np.zeros((8, 8, 3), np.int32), np.zeros((8, 8, 3), np.complex64),
    np.zeros((8, 8, 3), object), np.zeros((8, 8), dtype=[("a", "u1")]), np.zeros((), np.uint8),
], ids=["empty rows", "empty columns", "empty float", "channels first", "batch", "five channels", "bool", "int32",
        "complex", "object", "structured", "scalar"])
def test_the_api_refuses_other_arrays_with_a_pyramidal_error(arr, weights):
    with pytest.raises(PyramidalError):
        pyramidal.restore(arr, task="noise", weights=weights, device="cpu", precision="fp32")


@pytest.mark.parametrize("image", [torch.zeros(3, 0, 8, dtype=torch.uint8), np.zeros((0, 4, 3), np.uint8),
                                   torch.zeros(3, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)],
                         ids=["empty tensor", "empty array", "float tensor", "batch tensor"])
def test_restore_image_refuses_with_a_pyramidal_error(image, weights):
    from pyramidal.checkpoint import load_weights
    from pyramidal.inference import restore_image, restore_images

    model = load_weights(weights)
    with pytest.raises(PyramidalError):
        restore_image(model, image, options=RestoreOptions(device="cpu", precision="fp32"))
    with pytest.raises(PyramidalError):
        restore_images(model, [image], options=EVALUATION.replace(device="cpu", precision="fp32"))


def test_restore_array_takes_float64_and_refuses_integers(weights):
    from pyramidal.checkpoint import load_weights
    from pyramidal.inference import restore_array

    model = load_weights(weights)
    out = restore_array(model, torch.zeros(3, 8, 8, dtype=torch.float64),
                        options=RestoreOptions(device="cpu", precision="fp32"))
    assert out.dtype == torch.float32 and out.shape == (3, 8, 8)
    with pytest.raises(PyramidalError, match="takes floats"):
        restore_array(model, torch.zeros(3, 8, 8, dtype=torch.uint8),
                      options=RestoreOptions(device="cpu", precision="fp32"))
    flipped = np.zeros((3, 8, 10), ">f8")[:, ::-1, ::2]  # a NumPy view: any layout, any byte order
    assert restore_array(model, flipped,
                         options=RestoreOptions(device="cpu", precision="fp32")).shape == (3, 8, 5)
    for other in ([[0.0]], np.zeros((3, 8, 8), np.uint8)):
        with pytest.raises(PyramidalError, match="restore_array takes a 3×H×W tensor"):
            restore_array(model, other, options=RestoreOptions(device="cpu", precision="fp32"))


def test_resource_limits_restored():  # the subprocess tests change limits in children only
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY

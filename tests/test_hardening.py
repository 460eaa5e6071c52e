"""Issue 13: every user error is one line, a diverged run never reports success, run folders are locked.

One test (or a few) per defect of the issue, each failing on the code before the fix; the table of bad
inputs through every command is tests/test_error_matrix.py.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyramidal.checkpoint import load_checkpoint, load_weights, save_state, save_weights
from pyramidal.cli import main
from pyramidal.errors import OptionError, PyramidalError
from pyramidal.inference import restore_image
from pyramidal.models import create_model

REPO = Path(__file__).resolve().parents[1]
FAST = ["--device", "cpu", "--precision", "fp32"]
# A few steps of a tiny plain autoencoder on 32-px patches: seconds on one CPU thread.
TRAIN = ["--task", "noise", "--model", "basic21", "--channels", "4,8,8", "--size", "32", "--batch-size", "4",
         "--patches-per-epoch", "8", "--val-images", "2", "--log-images", "0", "--threads", "1",
         "--no-progress", "--quiet", *FAST]


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


def picture(path: Path, h: int, w: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def truncated(path: Path, seed: int = 9) -> Path:
    picture(path, 64, 64, seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.fixture
def weights(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "w" / "tiny.safetensors"
    save_weights(create_model("basic21", channels=(4, 8, 8)).eval(), path, {"task": "noise"})
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished two-step run folder (last.ckpt, best.safetensors); copy it before changing it."""
    out = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    assert main(["train", *TRAIN, "--steps", "2", "--out", str(out)]) == 0
    (run_dir,) = [p for p in out.glob("*/*/*") if p.is_dir()]
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


# ----------------------------------------------------------------------------------------------------------
# 1. --tile 0 (whole image at once) on small images; overlap checked once, naming the flags.


def test_whole_image_mode_restores_tiny_images_api(weights):
    model = load_weights(weights)
    for h, w in ((1, 1), (3, 5), (20, 30)):
        img = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
        for tile in (None, 0):
            assert restore_image(model, img, tile=tile, device="cpu", precision="fp32").shape == (h, w, 3)
        # A small tile with the default overlap works too: the default is at most half a tile.
        assert restore_image(model, img, tile=8, device="cpu", precision="fp32").shape == (h, w, 3)
    with pytest.raises(OptionError, match=r"overlap=16: must be smaller than tile=16"):
        restore_image(model, img, tile=16, overlap=16)


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


# ----------------------------------------------------------------------------------------------------------
# 2. A diverged run stops with one line and a non-zero exit; nothing non-finite is ever saved.


def test_first_nonfinite_sees_buffers_and_optimizer_state():
    from pyramidal.runstate import first_nonfinite

    model = create_model("basic21", channels=(4, 8, 8))
    assert first_nonfinite({"model": model.state_dict()}) is None
    model.encoder[0][0][1].running_var[2] = float("inf")  # a BatchNorm statistic, not a parameter
    assert first_nonfinite({"model": model.state_dict()}) == ("model.encoder.0.0.1.running_var", float("inf"))
    assert first_nonfinite({"optimizer": {"state": {3: {"exp_avg_sq": torch.tensor([1.0, float("nan")])}}}})[0] \
        == "optimizer.state.3.exp_avg_sq"


def test_diverged_run_fails_and_saves_nothing_non_finite(tmp_path, capsys):
    """The issue's command: a huge learning rate sends BatchNorm's running_var to infinity."""
    torch.set_num_threads(1)
    out = tmp_path / "runs"
    code, stdout, err = cli(["train", "--model", "basic21", "--size", "32", "--batch-size", "4", "--steps", "60",
                             "--lr", "1e20", "--warmup-steps", "100000", "--patches-per-epoch", "16",
                             "--val-images", "4", "--checkpoint-every-steps", "2", "--threads", "1",
                             "--no-progress", "--out", str(out)], capsys)
    assert code == 2 and "done" not in stdout
    one_error(err, "non-finite", "--lr")
    (run_dir,) = [p for p in out.glob("*/*/*") if p.is_dir()]
    from pyramidal.runstate import first_nonfinite

    if (run_dir / "last.ckpt").exists():
        assert first_nonfinite(load_checkpoint(run_dir / "last.ckpt")) is None
    if (run_dir / "best.safetensors").exists():
        assert first_nonfinite(load_weights(run_dir / "best.safetensors").state_dict()) is None


def test_diverging_resume_never_replaces_good_checkpoint(trained_run, tmp_path, capsys):
    run_dir = copy_run(trained_run, tmp_path)
    before = {name: (run_dir / name).read_bytes() for name in ("last.ckpt", "best.safetensors")}
    code, _, err = cli(["train", "--resume", str(run_dir), "--steps", "40", "--lr", "1e20",
                        "--checkpoint-every-steps", "2", "--threads", "1"], capsys)
    assert code == 2
    assert "non-finite" in err[-1] and "kept the last good checkpoint" in err[-1]
    assert all((run_dir / name).read_bytes() == data for name, data in before.items())


# ----------------------------------------------------------------------------------------------------------
# 3. Tracebacks for user errors: model options, run folders, weight records.


@pytest.mark.parametrize("name, options, needle", [
    ("pyramidal44", {"m": -1}, "option m must be a whole number >= 1, got -1"),
    ("pyramidal44", {"growth": 2.5}, "option growth must be a whole number >= 1, got 2.5"),
    ("basic21", {"channels": "abc"}, "option channels must be a list of whole numbers >= 1, got 'abc'"),
    ("basic21", {"channels": (0, 0, 0)}, "option channels must be a list of whole numbers >= 1"),
    ("pyramidal44", {"dropout": 1.5}, "option dropout must be a number from 0.0 to 1.0"),
    ("pyramidal44", {"residual": "yes"}, "option residual must be true or false"),
    ("pyramidal44", {"m": 10**9}, "parameters, more than the limit"),
])
def test_model_options_validated_at_construction(name, options, needle, tmp_path, capsys):
    with pytest.raises(OptionError, match=needle) as info:
        create_model(name, **options)
    assert isinstance(info.value, ValueError) and isinstance(info.value, PyramidalError)
    # The CLI says the same.
    flags = [f"--model-option={k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in options.items()]
    code, _, err = cli(["train", "--model", name, *flags, "--steps", "1", "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and needle.split(",")[0] in one_error(err)
    assert not (tmp_path / "runs").exists()


def test_huge_model_refused_before_allocating():
    start = time.perf_counter()
    with pytest.raises(OptionError, match="limit"):
        create_model("pyramidal457101215", m=2**20, growth=2**16)  # would need terabytes
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("options, needle", [
    ("abc", "options must be a table"),
    ({"m": "abc"}, "option m must be a whole number"),
    ({"m": -4}, "option m must be a whole number >= 1, got -4"),
    ({"m": 10**8}, "more than the limit"),
    ({"nonsense": 1}, "unknown option"),
])
@pytest.mark.parametrize("where", ["embedded", "sidecar"])
def test_bad_weight_record_is_one_line_naming_the_file(tmp_path, capsys, options, needle, where):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in create_model("pyramidal44", m=8, growth=4).state_dict().items()}
    path = tmp_path / "bad.safetensors"
    record = {"model": "pyramidal44", "options": options, "task": "noise"}
    if where == "embedded":
        save_state(state, path, record, sidecar=False)
    else:  # an older file: the record only in the JSON sidecar
        save_file(state, str(path))
        path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(PyramidalError, match=needle):
        load_weights(path)
    img = picture(tmp_path / "a.png", 8, 8)
    code, _, err = cli(["restore", "--weights", str(path), str(img), "-o", str(tmp_path / "out"), *FAST], capsys)
    assert code == 2
    one_error(err, str(path), needle)
    assert not (tmp_path / "out").exists()


def test_train_out_unwritable_or_full_disk_leaves_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    for out, needle in ((tmp_path / "a_file", "exists and is not a folder"),
                        (tmp_path / "a_file" / "runs", "exists and is not a folder")):
        code, _, err = cli(["train", *TRAIN, "--steps", "1", "--out", str(out)], capsys)
        assert code == 2
        one_error(err, str(tmp_path / "a_file"), needle, "--out")

    # A read-only disk: creating any file there fails (simulated, so that it works for root too).
    import tempfile

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(readonly):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    code, _, err = cli(["train", *TRAIN, "--steps", "1", "--out", str(readonly / "runs")], capsys)
    assert code == 2
    one_error(err, str(readonly), "Read-only file system")
    monkeypatch.undo()

    # A full disk once the run has started: one line, and the new run folder is gone again.
    import pyramidal.runstate

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "config.toml")

    monkeypatch.setattr(pyramidal.runstate, "write_text", full)  # what the run's logs write config.toml with
    out = tmp_path / "new" / "runs"
    code, _, err = cli(["train", *TRAIN, "--steps", "1", "--out", str(out)], capsys)
    assert code == 2
    one_error(err, "No space left on device")
    assert not (tmp_path / "new").exists()


def test_full_disk_in_any_serializer_is_an_os_error_and_leaves_nothing(tmp_path):
    """safetensors and torch.save report a full disk in their own exception types; the writer says it plainly."""
    from safetensors import SafetensorError

    from pyramidal.io import atomic_write

    def full(tmp):
        Path(tmp).write_bytes(b"part")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    target = tmp_path / "new" / "deeper" / "w.safetensors"
    with pytest.raises(OSError) as info:
        atomic_write(target, full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert files_under(tmp_path) == set()  # neither the temporary file nor the folders made for it


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_out_read_only_folder(tmp_path, capsys):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        code, _, err = cli(["train", *TRAIN, "--steps", "1", "--out", str(readonly / "runs")], capsys)
    finally:
        readonly.chmod(0o755)
    assert code == 2
    one_error(err, str(readonly))
    assert files_under(readonly) == set()


# ----------------------------------------------------------------------------------------------------------
# 4. Output paths are checked before the work; the results table comes before the files.


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    for i in range(5):
        picture(tmp_path / "photos" / f"p{i}.png", 48, 40, seed=i)
    return tmp_path / "photos"


EVAL = ["--task", "noise", "--weights", "none", "--baselines", "none", "--crop", "32", "--sigma", "25", *FAST]


def test_evaluate_unwritable_json_fails_before_the_work(tmp_path, photo_folder, capsys):
    (tmp_path / "a_file").write_text("x")
    code, out, err = cli(["evaluate", *EVAL, "--data", f"folder:{photo_folder}",
                          "--json", str(tmp_path / "a_file" / "r.json")], capsys)
    assert code == 2 and out == ""  # no table: nothing was evaluated
    one_error(err, str(tmp_path / "a_file"))


def test_evaluate_prints_the_table_before_writing_files(tmp_path, photo_folder, capsys, monkeypatch):
    import pyramidal.cli.common

    def disk_full(data, target, **_):
        raise OSError(errno.ENOSPC, "No space left on device", target)

    monkeypatch.setattr(pyramidal.cli.common, "write_json_output", disk_full)
    code, out, err = cli(["evaluate", *EVAL, "--data", f"folder:{photo_folder}",
                          "--json", str(tmp_path / "r.json")], capsys)
    assert code == 2
    assert "damaged input" in out  # the results were shown before the write failed
    one_error([e for e in err if e.startswith("pyramidal ")], "r.json", "No space left on device")


# ----------------------------------------------------------------------------------------------------------
# 5. One process trains in a run folder at a time (tested with two real processes).


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_second_process_refused_while_first_trains_and_lock_dies_with_it(trained_run, tmp_path):
    from pyramidal.config import check_run_folder
    from pyramidal.runstate import RunLock

    run_dir = copy_run(trained_run, tmp_path)
    first = subprocess.Popen([sys.executable, "-m", "pyramidal", "train", "--resume", str(run_dir), "--steps",
                              "100000", "--no-quiet", "--threads", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=REPO)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in first.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while True:  # "resuming RUN at step N" is printed once the first process holds the folder
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            try:
                if lines.get(timeout=1).startswith("resuming"):
                    break
            except queue.Empty:
                pass
        with pytest.raises(PyramidalError, match="another process"):
            RunLock(run_dir)  # this process, too, is refused while the other trains
        second = subprocess.run([sys.executable, "-m", "pyramidal", "train", "--resume", str(run_dir), "--steps",
                                 "3", "--lr", "1e-5"], capture_output=True, text=True, env=_env(), cwd=REPO,
                                timeout=180)
        assert second.returncode == 2, second.stderr
        err = [line for line in second.stderr.splitlines() if line.strip()]
        one_error(err, str(run_dir), "another process")
        first.send_signal(signal.SIGKILL)  # a crash: the operating system drops the lock
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    RunLock(run_dir).release()  # free again
    check_run_folder(run_dir)  # and still resumable: every file was replaced whole
    assert load_checkpoint(run_dir / "last.ckpt")["step"] >= 2


def test_lock_released_when_training_ends(trained_run, tmp_path, capsys):
    from pyramidal.runstate import RunLock

    run_dir = copy_run(trained_run, tmp_path)
    lock = RunLock(run_dir)
    code, _, err = cli(["train", "--resume", str(run_dir), "--steps", "3", "--threads", "1"], capsys)
    assert code == 2
    one_error(err, str(run_dir), "another process")
    lock.release()
    code, _, err = cli(["train", "--resume", str(run_dir), "--steps", "3", "--threads", "1"], capsys)
    assert code == 0, err
    RunLock(run_dir).release()  # the finished run let go of it


# ----------------------------------------------------------------------------------------------------------
# 6. Unreadable images are skipped (one warning line each) before the split.


def test_truncated_image_skipped_before_split(tmp_path, capsys):
    data = tmp_path / "data"
    for i in range(5):
        picture(data / f"good{i}.png", 48, 48, seed=i)
    bad = truncated(data / "trunc.jpg")
    torch.set_num_threads(1)
    code, _, err = cli(["train", *TRAIN, "--data", f"folder:{data}", "--steps", "2", "--val-images", "0",
                        "--batch-size", "2", "--out", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    warnings = [line for line in err if str(bad) in line]
    assert len(warnings) == 1 and warnings[0].startswith("pyramidal train: warning: ") and "skipped" in warnings[0]
    assert all(line.startswith("pyramidal train: ") for line in err), err  # no Python source lines
    code, out, err = cli(["evaluate", *EVAL, "--data", f"folder:{data}"], capsys)
    assert code == 0 and "damaged input" in out
    assert sum(str(bad) in line for line in err) == 1

    junk = tmp_path / "junk"
    for i in range(3):
        truncated(junk / f"t{i}.jpg", seed=i)
    code, _, err = cli(["train", *TRAIN, "--data", f"folder:{junk}", "--steps", "1",
                        "--out", str(tmp_path / "runs2")], capsys)
    assert code == 2
    assert "3 unreadable files skipped" in one_error([e for e in err if " error: " in e], str(junk))
    assert not (tmp_path / "runs2").exists()


# ----------------------------------------------------------------------------------------------------------
# 7. Any numpy layout.


def test_restore_image_accepts_any_numpy_layout(weights):
    model = load_weights(weights)
    img = np.random.default_rng(0).integers(0, 256, (20, 33, 3), dtype=np.uint8)
    for view in (img[..., ::-1], img[::-1], img[:, ::2], np.asfortranarray(img)):
        expected = restore_image(model, np.ascontiguousarray(view), device="cpu", precision="fp32")
        assert np.array_equal(restore_image(model, view, device="cpu", precision="fp32"), expected)
    readonly = img.copy()
    readonly.flags.writeable = False
    assert restore_image(model, readonly, device="cpu", precision="fp32").shape == img.shape


# ----------------------------------------------------------------------------------------------------------
# 8. and 9. Outputs never replace inputs or files this run did not write, unless --overwrite.


def test_degrade_into_its_input_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "in"
    for i in range(3):
        picture(folder / f"p{i}.png", 16, 16, i)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, _, err = cli(["degrade", "--task", "noise", str(folder), "-o", str(folder)], capsys)
    assert code == 2
    one_error(err, "would replace an input file")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_existing_outputs_need_overwrite(tmp_path, weights, capsys):
    src = tmp_path / "in" / "exif.jpg"
    picture(src.with_suffix(".png"), 24, 24).rename(src)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "exif.png").write_bytes(b"someone else's file")
    for command in (["restore", "--weights", str(weights), *FAST], ["degrade", "--task", "noise"]):
        code, _, err = cli([*command, str(src), "-o", str(keep)], capsys)
        assert code == 2
        one_error(err, str(keep / "exif.png"), "--overwrite")
        assert (keep / "exif.png").read_bytes() == b"someone else's file"
        code, _, err = cli([*command, str(src), "-o", str(keep), "--overwrite"], capsys)
        assert code == 0, err
        assert Image.open(keep / "exif.png").size == (24, 24)
        (keep / "exif.png").write_bytes(b"someone else's file")


def test_evaluate_figures_and_export_need_overwrite(tmp_path, photo_folder, capsys):
    figures = tmp_path / "figs"
    figures.mkdir()
    (figures / "noise_sigma25.png").write_bytes(b"mine")
    code, out, err = cli(["evaluate", *EVAL, "--data", f"folder:{photo_folder}", "--figures", str(figures)], capsys)
    assert code == 2 and out == ""
    one_error(err, "noise_sigma25.png", "--overwrite")
    assert (figures / "noise_sigma25.png").read_bytes() == b"mine"

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"mine")
    # Refused before the weights are even looked at.
    code, _, err = cli(["export", "--weights", str(tmp_path / "missing.safetensors"), "--onnx", str(onnx)], capsys)
    assert code == 2
    one_error(err, str(onnx), "--overwrite")
    assert onnx.read_bytes() == b"mine"


# ----------------------------------------------------------------------------------------------------------
# 10. Clear messages.


def test_malicious_checkpoint_is_refused_plainly(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-never-run",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"format": "pyramidal-train-checkpoint", "x": Payload()}, evil)
    with pytest.raises(PyramidalError, match="holds Python objects that pyramidal refuses to load") as info:
        load_checkpoint(evil)
    assert "weights_only" not in str(info.value) and "corrupt" not in str(info.value)
    img = picture(tmp_path / "a.png", 8, 8)
    code, out, err = cli(["restore", "--weights", str(evil), str(img), "-o", str(tmp_path / "o"), *FAST], capsys)
    assert code == 2 and "should-never-run" not in out
    assert "weights_only" not in one_error(err, str(evil), "refuses to load")


def test_resume_messages_are_one(tmp_path, capsys):
    missing = tmp_path / "x"
    config = tmp_path / "c.toml"
    config.write_text(f'resume = "{missing}"\n')
    _, _, from_flag = cli(["train", "--resume", str(missing)], capsys)
    _, _, from_file = cli(["train", "--config", str(config)], capsys)
    assert one_error(from_flag, str(missing)) == one_error(from_file)


def test_weights_as_run_folder_or_checkpoint_everywhere(trained_run, tmp_path, capsys):
    img = picture(tmp_path / "a.png", 20, 20)
    for i, weights in enumerate((trained_run, trained_run / "last.ckpt", trained_run / "best.safetensors")):
        code, _, err = cli(["restore", "--task", "noise", "--weights", str(weights), str(img),
                            "-o", str(tmp_path / f"out{i}"), *FAST], capsys)
        assert code == 0, err
        assert (tmp_path / f"out{i}" / "a.png").exists()
    code, out, err = cli(["evaluate", *EVAL[:2], "--weights", str(trained_run / "last.ckpt"), *EVAL[4:],
                          "--data", f"folder:{img.parent}", "--limit", "1"], capsys)
    assert code == 0 and "model basic21" in out, err
    from pyramidal.web.engine import weights_choices

    choices = weights_choices([trained_run, trained_run / "last.ckpt"])  # `serve --weights`
    assert [c.task for c in choices[1:]] == ["noise", "noise"] and choices[2].path.suffix == ".ckpt"


def test_restore_to_a_file_fails_once_before_the_model_loads(tmp_path, capsys):
    inputs = [picture(tmp_path / f"{i}.png", 12, 12, i) for i in range(3)]
    target = tmp_path / "a_file.png"
    target.write_bytes(b"x")
    code, out, err = cli(["restore", "--weights", str(tmp_path / "missing.safetensors"), *map(str, inputs),
                          "-o", str(target)], capsys)
    assert code == 2 and out == ""
    one_error(err, str(target), "not a folder")


def test_binary_config_names_the_file(tmp_path, capsys):
    config = tmp_path / "binary.toml"
    config.write_bytes(b"\xff\xfe\x00\x01binary")
    code, _, err = cli(["train", "--config", str(config)], capsys)
    assert code == 2
    one_error(err, str(config))


@pytest.mark.parametrize("flag, value", [("--threads", "0"), ("--threads", "-1"), ("--num-workers", "-1")])
def test_thread_and_worker_counts_checked(flag, value, tmp_path, capsys):
    code, _, err = cli(["train", flag, value, "--out", str(tmp_path / "runs")], capsys)
    assert code == 2
    one_error(err, flag)
    assert not (tmp_path / "runs").exists()


def test_evaluate_warns_for_weights_of_another_task(tmp_path, weights, photo_folder, capsys):
    code, _, err = cli(["evaluate", "--task", "blur", "--weights", str(weights), "--baselines", "none",
                        "--crop", "32", "--limit", "1", "--data", f"folder:{photo_folder}", *FAST], capsys)
    assert code == 0
    warnings = [line for line in err if "warning" in line]
    assert len(warnings) == 1 and "trained for task 'noise', not 'blur'" in warnings[0]


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

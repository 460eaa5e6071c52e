"""`pyramidal evaluate` (pyramidal/cli/evaluate.py): outputs checked before the work, the table printed before the
files are written, a warning for weights of another task."""

from __future__ import annotations

import errno

from helpers import EVAL, FAST, cli, one_error


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


def test_evaluate_warns_for_weights_of_another_task(tmp_path, weights, photo_folder, capsys):
    code, _, err = cli(["evaluate", "--task", "blur", "--weights", str(weights), "--baselines", "none",
                        "--crop", "32", "--limit", "1", "--data", f"folder:{photo_folder}", *FAST], capsys)
    assert code == 0
    warnings = [line for line in err if "warning" in line]
    assert len(warnings) == 1 and "trained for task 'noise', not 'blur'" in warnings[0]

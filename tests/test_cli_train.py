"""`pyramidal train` (pyramidal/cli/train.py): a bad output folder, config file, resume target or thread count is
one line and leaves nothing; `--sigma-dist` is a train flag only."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from helpers import TRAIN, cli, files_under, one_error


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


def test_resume_messages_are_one(tmp_path, capsys):
    missing = tmp_path / "x"
    config = tmp_path / "c.toml"
    config.write_text(f'resume = "{missing}"\n')
    _, _, from_flag = cli(["train", "--resume", str(missing)], capsys)
    _, _, from_file = cli(["train", "--config", str(config)], capsys)
    assert one_error(from_flag, str(missing)) == one_error(from_file)


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


def test_sigma_dist_is_a_train_flag_only():
    from pyramidal.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    assert "sigma_dist" in {a.dest for a in subs["train"]._actions}
    assert "sigma_dist" not in {a.dest for a in subs["evaluate"]._actions}
    assert "sigma_dist" not in {a.dest for a in subs["degrade"]._actions}

"""pyramidal.train: a diverged run stops with one line and a non-zero exit, and nothing non-finite is ever saved
(to merge into test_train.py)."""

from __future__ import annotations

import torch

from pyramidal.checkpoint import load_checkpoint, load_weights

from helpers import cli, copy_run, one_error


def test_diverged_run_fails_and_saves_nothing_non_finite(tmp_path, capsys):
    """A huge learning rate sends BatchNorm's running_var to infinity."""
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

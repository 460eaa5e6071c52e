"""The one progress display: a bar on a terminal, rate-limited plain lines in a log, nothing when switched off."""

from __future__ import annotations

import io

import pytest

import pyramidal.progress as progress_module
from pyramidal.cli import main
from pyramidal.progress import PlainProgress, is_terminal, progress, say


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_at_most_every_interval():
    log = io.StringIO()
    bar = PlainProgress(total=4, desc="restore", unit="images", file=log, interval=3600)
    for _ in range(4):
        bar.update(1)
    bar.close()
    assert log.getvalue() == ""  # a quick job writes nothing
    log = io.StringIO()
    for _ in PlainProgress(range(3), desc="tiles", unit="tiles", file=log, interval=0):
        pass
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["tiles: 1/3 tiles (33%)", "tiles: 2/3 tiles (67%)",
                                                      "tiles: 3/3 tiles (100%)"]
    assert "\r" not in log.getvalue()


def test_announce_and_postfix():
    log = io.StringIO()
    bar = PlainProgress(total=2, desc="noise sigma=50: BM3D", unit="images", file=log, interval=0, announce=True)
    bar.set_postfix_str("loss 0.01")
    bar.update(2)
    bar.close()
    first, second = log.getvalue().splitlines()
    assert first == "noise sigma=50: BM3D, 2 images"
    assert second.startswith("noise sigma=50: BM3D: 2/2 images (100%)") and second.endswith("loss 0.01")


@pytest.mark.parametrize("enabled,terminal,kind", [(None, True, "bar"), (None, False, "plain"), (True, False, "plain"),
                                                    (False, True, "off"), (False, False, "off")])
def test_the_display_follows_the_stream(enabled, terminal, kind):
    stream = Terminal() if terminal else io.StringIO()
    assert is_terminal(stream) == terminal
    bar = progress(range(3), desc="x", enabled=enabled, file=stream, interval=0)
    assert list(bar) == [0, 1, 2]
    shown = stream.getvalue()
    if kind == "bar":
        assert "\r" in shown and "x:" in shown and "/3" in shown  # tqdm, redrawn in place
    elif kind == "plain":
        assert "\r" not in shown and "x: 3/3" in shown
    else:
        assert shown == ""


def test_say_keeps_a_bar_intact(capsys):
    stream = Terminal()
    bar = progress(total=2, desc="x", file=stream)
    say("wrote a.png")
    bar.close()
    assert capsys.readouterr().out == "wrote a.png\n"


def test_evaluate_reports_each_stage_in_a_log(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL", 0.0)
    assert main(["evaluate", "--task", "blur", "--weights", "builtin", "--limit", "1", "--baselines", "fast",
                 "--crop", "64", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    for stage in ("blur: damaging, 1 images", "blur: Wiener", "blur: model pyramidal23456"):
        assert stage in err, err


def test_train_progress_in_a_log_is_plain_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL", 0.0)
    assert main(["train", "--task", "squares", "--model", "pyramidal44", "--m", "8", "--growth", "4", "--size", "32",
                 "--batch-size", "4", "--patches-per-epoch", "8", "--val-images", "2", "--steps", "2",
                 "--precision", "fp32", "--device", "cpu", "--quiet", "--progress", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "epoch 1: 2/2 steps (100%)" in err and "loss" in err

"""pyramidal.checkpoint: a bad weight record or a checkpoint holding Python objects is one line naming the file; a
run folder, its last.ckpt or its best.safetensors serve as weights everywhere."""

from __future__ import annotations

import json
import os

import pytest
import torch

from pyramidal.checkpoint import load_checkpoint, load_weights, save_state
from pyramidal.errors import PyramidalError
from pyramidal.models import create_model

from helpers import EVAL, FAST, cli, one_error, picture


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

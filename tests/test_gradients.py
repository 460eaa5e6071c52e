"""`pyramidal gradients`: forward-order conv discovery and the report files, with tiny settings."""

import csv
import json
import math

import pytest
import torch

from pyramidal.cli import main
from pyramidal.gradients import convs_in_forward_order
from pyramidal.models import create_model
from pyramidal.models.summary import count_convs


def test_convs_found_in_forward_order():
    model = create_model("pyramidal44", m=4, growth=2)
    layers = convs_in_forward_order(model, torch.zeros(1, 3, 16, 16))
    assert len(layers) == count_convs(model)
    names = [n for n, _ in layers]
    assert names[0] == "stem.0" and names[-1] == "output.conv"
    assert names.index("bottleneck.layers.0.conv") < names.index("up.0") < names.index("decoder.0.layers.0.conv")


def test_gradients_command_writes_report(tmp_path, capsys):
    out = tmp_path / "grad"
    code = main(["gradients", "--models", "plain103,pyramidal44", "--steps", "1", "--size", "32",
                 "--batch-size", "2", "--option", "m=4", "--option", "growth=2", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "plain103" in text and "pyramidal44" in text and "first/last" in text
    png = out / "gradients.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in text
    report = json.loads((out / "gradients.json").read_text())
    by_model = {m["model"]: m for m in report["models"]}
    assert by_model["plain103"]["conv_layers"] == 103
    assert [r["depth"] for r in by_model["pyramidal44"]["layers"]] == list(range(1, by_model["pyramidal44"]["conv_layers"] + 1))
    # Dense connections reach every layer; a very thin plain stack may have dead (zero) layers, that is the point.
    assert all(r["grad_norm"] > 0 for r in by_model["pyramidal44"]["layers"])
    assert by_model["plain103"]["layers"][-1]["grad_norm"] > 0
    with open(out / "gradients.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(m["conv_layers"] for m in report["models"])


def test_bad_option_is_a_clear_error(tmp_path, capsys):
    assert main(["gradients", "--models", "pyramidal44", "--option", "m", "--out", str(tmp_path)]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("option, task", [({"mask_input": True}, "strokes"), ({"find_holes": "magenta"}, "squares"),
                                          ({"noise_map": True}, "noise")])
def test_conditioned_models_are_given_what_training_gives_them(option, task):
    """A mask-conditioned model gets its holes, a noise-map model its σ: a fourth input channel, as in train."""
    from pyramidal.gradients import measure_model

    result = measure_model("pyramidal44", task=task, steps=1, size=32, options=dict(m=4, growth=2, **option))
    assert result["layers"][0]["grad_norm"] > 0 and all(map(math.isfinite, result["losses"]))


@pytest.mark.parametrize("option, task", [("mask_input=true", "noise"), ("find_holes='magenta'", "text"),
                                          ("noise_map=true", "squares")])
def test_a_condition_the_task_cannot_give_is_one_line(tmp_path, capsys, option, task):
    assert main(["gradients", "--models", "pyramidal44", "--task", task, "--option", option, "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"task {task}" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err

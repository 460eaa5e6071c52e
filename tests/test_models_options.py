"""pyramidal.models: model options are checked before anything is allocated, with one line naming the option (to
merge into test_models.py)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from pyramidal.errors import OptionError, PyramidalError
from pyramidal.models import create_model

from helpers import cli, one_error


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


def test_noise_map_model_takes_four_channels():
    model = create_model("pyramidal44", m=8, growth=4, noise_map=True).eval()
    assert model.conditions.noise_map and model.stem[0].in_channels == 4
    assert model(torch.zeros(1, 4, 9, 9)).shape == (1, 3, 9, 9)
    with pytest.raises(ValueError, match="not both"):
        create_model("pyramidal44", noise_map=True, mask_input=True)

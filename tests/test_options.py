"""RestoreOptions: one frozen set of restore options, one set of defaults, one check whose errors name the
parameter for Python callers and the flag on the command line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pyramidal.cli import main
from pyramidal.errors import OptionError
from pyramidal.options import DEFAULT_OVERLAP, EVALUATION, RestoreOptions


def test_the_defaults_are_restores():
    options = RestoreOptions()
    assert (options.tile, options.overlap, options.batch_size) == (512, None, 1)
    assert (options.device, options.precision, options.ensemble, options.strength) == ("auto", "auto", False, 1.0)
    assert (options.sigma, options.mask) == (None, None)
    assert options.tiling() == (512, DEFAULT_OVERLAP)
    # The evaluation setting differs only in tiling: crops up to 256 px whole, four to a forward pass.
    assert EVALUATION == RestoreOptions(tile=256, batch_size=4)


def test_options_are_frozen_and_replace_checks_again():
    options = RestoreOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.tile = 0
    assert options.replace(tile=64).tile == 64 and options.tile == 512
    with pytest.raises(OptionError, match="^tile=-1: "):
        options.replace(tile=-1)


@pytest.mark.parametrize("tile, overlap, expected", [
    (0, None, (None, 0)), (None, 8, (None, 0)),  # the whole image: the overlap does not matter
    (48, None, (48, 24)),  # at most half a tile
    (256, 16, (256, 16)),
])
def test_tiling_fills_in_the_overlap(tile, overlap, expected):
    assert RestoreOptions(tile=tile, overlap=overlap).tiling() == expected


@pytest.mark.parametrize("values, python, flags", [
    ({"tile": -1}, "tile=-1: must be 0", "--tile -1: must be 0"),
    ({"tile": 2.5}, "tile=2.5: must be a whole number", "--tile 2.5: must be a whole number"),
    ({"overlap": -2}, "overlap=-2: must be 0 or more", "--overlap -2: must be 0 or more"),
    ({"tile": 16, "overlap": 16}, "overlap=16: must be smaller than tile=16",
     "--overlap 16: must be smaller than --tile 16"),
    ({"batch_size": 0}, "batch_size=0: must be at least 1", "--batch-size 0: must be at least 1"),
    ({"strength": 3.0}, "strength=3.0: must be between 0 and 2", "--strength 3: must be between 0 and 2"),
    ({"strength": float("nan")}, "strength=nan: must be between 0 and 2", "--strength nan: must be between 0"),
    ({"sigma": 300}, "sigma=300: must be a number from 0 to 255", "--sigma 300: must be a number from 0 to 255"),
    ({"precision": "fp64"}, "precision='fp64': choose one of auto, fp32, bf16, fp16",
     "--precision fp64: choose one of"),
    ({"mask": "magenta"}, "mask='magenta': the mask policy is None or 'auto'", "--mask magenta: the mask policy"),
    ({"ensemble": "yes"}, "ensemble='yes': must be True or False", "--ensemble yes: must be True or False"),
])
def test_a_bad_option_names_the_parameter_and_its_flag(values, python, flags):
    with pytest.raises(OptionError) as raised:
        RestoreOptions(**values)
    assert str(raised.value).startswith(python)
    assert raised.value.flags.startswith(flags)
    assert isinstance(raised.value, ValueError)  # what a Python caller may catch


def test_the_restore_command_words_the_same_errors_as_flags(tmp_path, capsys):
    for flags, message in ((["--strength", "5"], "--strength 5: must be between 0 and 2"),
                           (["--tile", "16", "--overlap", "16"], "--overlap 16: must be smaller than --tile 16"),
                           (["--sigma", "-1"], "--sigma -1: must be a number from 0 to 255")):
        assert main(["restore", "--task", "noise", *flags, str(tmp_path / "a.png"), "-o", str(tmp_path / "o")]) == 2
        assert f"pyramidal restore: error: {message}" in capsys.readouterr().err


def test_the_api_builds_restore_options_from_keywords(weights):
    import numpy as np

    import pyramidal

    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(OptionError, match="^tile=-1: "):
        pyramidal.restore(rgb, weights=weights, tile=-1)
    with pytest.raises(TypeError):
        pyramidal.restore(rgb, weights=weights, tiles=64)  # not an option: never silently ignored
    given = pyramidal.restore(rgb, weights=weights,
                              options=RestoreOptions(device="cpu", precision="fp32", tile=0))
    same = pyramidal.restore(rgb, weights=weights,
                             options=RestoreOptions(tile=64), device="cpu", precision="fp32",
                             tile=0)  # keywords win over `options`
    assert np.array_equal(given, same)


def test_options_load_without_torch():
    code = ("import sys; from pyramidal.options import RestoreOptions; RestoreOptions(tile=64); "
            "assert 'torch' not in sys.modules, 'torch loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)

"""pyramidal.config and configcheck: the default recipe, the loss and CPU-budget checks, a model option from a config file."""

from __future__ import annotations

import pytest
from torch import nn

from pyramidal.config import TrainConfig, resolve_config
from pyramidal.configcheck import validate_config
from pyramidal.damage import NoiseTask
from pyramidal.errors import PyramidalError
from pyramidal.models import create_model


def test_defaults_keep_the_research_recipe():
    c = TrainConfig()
    assert (c.loss, c.optimizer, c.max_cpu_minutes) == ("mse", "adam", None)
    model = create_model("pyramidal23456")
    assert model.config.block == "dense" and model.config.norm == "batch" and not model.conditions.noise_map
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.Dropout2d) and m.p == 0.2 for m in model.modules())
    assert NoiseTask(train=True).sigma_dist == "uniform"


def test_a_bad_loss_is_one_line():
    with pytest.raises(PyramidalError, match=r"loss='l3': choose one of mse, l1, charbonnier"):
        validate_config(TrainConfig(loss="l3"))


def test_dropout_from_a_config_file(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('task = "noise"\nmodel = "pyramidal23456"\ndropout = 0.0\n')
    config = resolve_config(config_file=str(path))
    model = create_model(config.model, **config.model_kwargs())
    assert not any(isinstance(m, (nn.Dropout, nn.Dropout2d)) for m in model.modules())


def test_max_cpu_minutes_is_checked():
    with pytest.raises(PyramidalError, match="max_cpu_minutes must be at least 0"):
        validate_config(TrainConfig(max_cpu_minutes=-1))
    c = TrainConfig(max_cpu_minutes=1)
    validate_config(c)
    assert c.epochs is None  # a CPU budget is a length: no default epoch count on top

"""Shared test settings."""

import os

import pytest
import torch

from pyramidal.checkpoint import save_weights
from pyramidal.models import create_model

# The suite runs as two pytest-xdist workers on two cores: one torch thread each avoids the
# oversubscription that makes small CPU ops (BatchNorm above all) tens of times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture
def weights(tmp_path):
    """A tiny basic21 saved as noise weights (test modules with other needs define their own `weights`)."""
    torch.manual_seed(0)
    path = tmp_path / "w" / "tiny.safetensors"
    save_weights(create_model("basic21", channels=(4, 8, 8)).eval(), path, {"task": "noise"})
    return path

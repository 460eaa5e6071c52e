"""Shared test settings and fixtures."""

import os
from pathlib import Path

import pytest
import torch

from pyramidal.api import clear_cache
from pyramidal.checkpoint import save_weights
from pyramidal.cli import main
from pyramidal.models import create_model

from helpers import TRAIN, picture, torch_threads

# The suite runs as two pytest-xdist workers on two cores: one torch thread each avoids the
# oversubscription that makes small CPU ops (BatchNorm above all) tens of times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture
def weights(tmp_path):
    """A tiny basic21 saved as noise weights, with the API's model cache empty before and after
    (test modules with other needs define their own `weights`)."""
    torch.manual_seed(0)
    path = tmp_path / "w" / "tiny.safetensors"
    save_weights(create_model("basic21", channels=(4, 8, 8)).eval(), path, {"task": "noise"})
    clear_cache()
    yield path
    clear_cache()


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, the thread count as it was afterwards."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished two-step run folder (last.ckpt, best.safetensors); copy it before changing it."""
    out = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    assert main(["train", *TRAIN, "--steps", "2", "--out", str(out)]) == 0
    (run_dir,) = [p for p in out.glob("*/*/*") if p.is_dir()]
    return run_dir


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Five small photos in tmp_path/photos."""
    for i in range(5):
        picture(tmp_path / "photos" / f"p{i}.png", 48, 40, seed=i)
    return tmp_path / "photos"


@pytest.fixture
def fifo_folder(tmp_path) -> Path:
    """tmp_path/in holding a good image and a FIFO named pipe.png."""
    folder = tmp_path / "in"
    picture(folder / "good.png")
    os.mkfifo(folder / "pipe.png")
    return folder

"""Shared test settings."""

import os

import torch

# The suite runs as two pytest-xdist workers on two cores: one torch thread each avoids the
# oversubscription that makes small CPU ops (BatchNorm above all) tens of times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

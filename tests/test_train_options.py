"""pyramidal.train with the recipe switches: any loss (PSNR logged from the MSE), the noise-level map, the CPU-time
budget (to merge into test_train.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pyramidal.checkpoint import load_checkpoint
from pyramidal.config import TrainConfig
from pyramidal.errors import PyramidalError
from pyramidal.models import create_model
from pyramidal.options import RestoreOptions
from pyramidal.train import Trainer

TINY = dict(task="noise", model="pyramidal44", m=8, growth=4, data="builtin", size=32, batch_size=4,
            patches_per_epoch=16, val_images=4, log_images=0, precision="fp32", quiet=True, threads=1)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_training_logs_psnr_from_the_mse_whatever_the_loss(tmp_path):
    run_dir = Trainer(TrainConfig(**TINY, steps=2, log_every=1, loss="l1", out=str(tmp_path))).fit()
    import csv

    rows = [r for r in csv.DictReader(open(run_dir / "metrics.csv")) if r.get("PSNR/train")]
    assert rows
    for r in rows:  # the L1 loss is larger than the MSE for errors under 1: PSNR is not computed from it
        assert float(r["PSNR/train"]) != pytest.approx(10 * math.log10(4 / float(r["loss/train"])), abs=1e-3)


def test_noise_map_training_and_restore(tmp_path):
    from pyramidal.evaluate import evaluate
    from pyramidal.inference import restore_array

    run_dir = Trainer(TrainConfig(**TINY, steps=2, model_options={"noise_map": True}, out=str(tmp_path))).fit()
    model = load_checkpoint_model(run_dir)
    image = torch.rand(3, 20, 24) * 2 - 1
    assert restore_array(model, image, options=RestoreOptions(sigma=25)).shape == image.shape
    with pytest.raises(PyramidalError, match="sigma=S"):
        restore_array(model, image)
    with pytest.raises(PyramidalError, match="from 0 to 255"):
        RestoreOptions(sigma=300)
    blind = create_model("pyramidal44", m=8, growth=4).eval()
    with pytest.raises(PyramidalError, match="sigma=25: this model has no noise-level input"):
        restore_array(blind, image, options=RestoreOptions(sigma=25))
    result = evaluate(run_dir / "best.safetensors", "noise", limit=1, crop=32, settings=[{"sigma": 25}],
                      baselines="none")
    row = next(r for r in result["settings"][0]["rows"] if r["kind"] == "model")
    assert "σ given" in row["method"] and math.isfinite(row["psnr"])


def load_checkpoint_model(run_dir: Path) -> nn.Module:
    from pyramidal.checkpoint import load_weights

    return load_weights(run_dir / "best.safetensors").eval()


def test_noise_map_needs_a_task_with_a_noise_level(tmp_path):
    with pytest.raises(PyramidalError, match="noise_map: task jpeg has no noise level"):
        Trainer(TrainConfig(**{**TINY, "task": "jpeg"}, steps=1, model_options={"noise_map": True},
                            out=str(tmp_path)))


def test_max_cpu_minutes_stops_training_and_sums_over_resumes(tmp_path):
    from pyramidal.config import resume_config

    run_dir = Trainer(TrainConfig(**TINY, max_cpu_minutes=0.01, steps=10_000, out=str(tmp_path))).fit()
    first = load_checkpoint(run_dir / "last.ckpt")
    assert 0 < first["step"] < 10_000 and first["cpu_s"] >= 0.6
    Trainer(resume_config(run_dir, {"max_cpu_minutes": 0.02})).fit()  # as `train --resume RUN --max-cpu-minutes`
    second = load_checkpoint(run_dir / "last.ckpt")
    assert second["step"] > first["step"] and second["cpu_s"] >= 1.2


def test_max_cpu_minutes_zero_trains_nothing(tmp_path):
    run_dir = Trainer(TrainConfig(**TINY, max_cpu_minutes=0, out=str(tmp_path))).fit()
    assert load_checkpoint(run_dir / "last.ckpt")["step"] == 0
    assert (run_dir / "best.safetensors").is_file()  # the step-0 validation still leaves weights

"""Training batches made on the device (pyramidal/gpudata.py), run here on the CPU: the same patches and damage
as the CPU pipeline's recipe, reproducible per batch, and the persistent loader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyramidal.damage import MAGENTA, create_task
from pyramidal.data.loader import make_loader
from pyramidal.data.sources import load_source
from pyramidal.errors import PyramidalError
from pyramidal.gpudata import DEVICE_DAMAGE, DeviceBatches, DevicePhotos, clean_patches, window_side


@pytest.fixture(scope="module")
def photos() -> DevicePhotos:
    return DevicePhotos.from_dataset(load_source("builtin", size=64).split("train"), "cpu", window_side(64))


def _clean(photos: DevicePhotos, n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return clean_patches(photos, 64, n, g)


def test_windows_are_the_photographs_pixels(photos):
    dataset = load_source("builtin", size=64).split("train")
    first = torch.from_numpy(np.array(dataset.photos[1])).permute(2, 0, 1)
    got = photos.windows(torch.tensor([1, 1]), torch.tensor([0, 7]), torch.tensor([5, 0]), 10)
    assert torch.equal(got[0], first[:, 0:10, 5:15]) and torch.equal(got[1], first[:, 7:17, 0:10])


def test_clean_patches_are_8_bit_crops_of_the_photos(photos):
    clean = _clean(photos, 16)
    assert clean.shape == (16, 3, 64, 64)
    assert torch.equal(clean, clean.round()) and clean.min() >= 0 and clean.max() <= 255
    assert len({round(float(p.mean()), 3) for p in clean}) == 16  # different crops, not one repeated
    assert torch.equal(clean, _clean(photos, 16)) and not torch.equal(clean, _clean(photos, 16, seed=1))


@pytest.mark.parametrize("name", DEVICE_DAMAGE.names())
def test_batches_are_reproducible_and_in_range(photos, name):
    task = create_task(name, train=True)
    loader = DeviceBatches(photos, task, 64, 6, steps_per_epoch=3, seed=5, with_mask=task.has_mask)
    loader.set_epoch(2)
    batches = list(loader)
    assert len(batches) == 3
    loader.set_epoch(2)
    loader.skip_batches(1)
    again = list(loader)
    assert all(torch.equal(a, b) for x, y in zip(batches[1:], again) for a, b in zip(x, y))
    damaged, clean, *mask = batches[0]
    assert damaged.shape == clean.shape == (6, 3, 64, 64) and damaged.dtype == clean.dtype == torch.float32
    assert clean.min() >= -1 and clean.max() <= 1 and not torch.equal(damaged, clean)
    if name != "noise":  # only unclipped noise leaves the 8-bit range
        assert damaged.min() >= -1 and damaged.max() <= 1
    if mask:
        painted = torch.tensor(MAGENTA).view(1, 3, 1, 1) / 127.5 - 1
        assert torch.equal(torch.where(mask[0], painted, clean), damaged)


@pytest.mark.parametrize("name", ["blur", "pixelate", "gray"])
def test_deterministic_damage_equals_the_cpu_task(photos, name):
    """Damage without randomness gives the CPU task's pixels (blur within one level: other summation order)."""
    clean = _clean(photos)
    task = create_task(name, train=True)
    ours, _, _ = DEVICE_DAMAGE.get(name)(task, clean, torch.Generator())
    cpu = task(clean.to(torch.uint8), seeds=list(range(len(clean)))).float()
    diff = (ours - cpu).abs()
    assert diff.max() <= (1 if name == "blur" else 0) and diff.mean() < 0.01


def test_noise_draws_sigma_and_keeps_the_unclipped_share(photos):
    clean = _clean(photos, 64)
    task = create_task("noise", train=True, sigma_dist="low", unclipped=0.5)
    noisy, _, sigma = DEVICE_DAMAGE.get("noise")(task, clean, torch.Generator().manual_seed(3))
    on_grid = (noisy == noisy.round()).flatten(1).all(1)
    assert 16 <= int((~on_grid).sum()) <= 48  # about half keep unrounded floats
    assert torch.equal(noisy[on_grid], noisy[on_grid].clamp(0, 255))
    free = ~on_grid
    measured = (noisy[free] - clean[free]).flatten(1).std(1)
    assert torch.allclose(measured, sigma[free], rtol=0.1, atol=0.5)
    assert 0 <= sigma.min() and sigma.max() <= 130 and (sigma < 25).float().mean() > 0.25  # `low`: mass at low σ
    fixed = create_task("noise", train=True, sigma=25)
    _, _, sigma = DEVICE_DAMAGE.get("noise")(fixed, clean, torch.Generator())
    assert torch.equal(sigma, torch.full((64,), 25.0))


@pytest.mark.parametrize("name, holes", [("block", 1), ("grid", 9), ("squares", (3, 4))])
def test_holes_have_the_tasks_shapes(photos, name, holes):
    from scipy import ndimage

    clean = _clean(photos, 16)
    _, mask, _ = DEVICE_DAMAGE.get(name)(create_task(name, train=True), clean, torch.Generator().manual_seed(1))
    for m in mask[:, 0].numpy():
        count = ndimage.label(m)[1]
        if name == "squares":  # overlapping squares merge
            assert 1 <= count <= 4 and m.sum() <= 4 * 14 * 14
        else:
            assert count == holes and m.sum() == holes * (32 if name == "block" else 12) ** 2


def test_loader_refuses_tasks_damaged_on_the_cpu(photos):
    with pytest.raises(PyramidalError, match="jpeg is damaged on the CPU"):
        DeviceBatches(photos, create_task("jpeg", train=True), 64, 4, 1)


def test_persistent_workers_serve_every_epoch_with_the_same_pixels():
    """Worker processes start once and serve later epochs and a resumed epoch as the main process would."""
    ds = load_source("builtin", size=32, patches_per_epoch=12).split("train")
    plain = make_loader(ds, "noise", batch_size=4, seed=1)
    workers = make_loader(ds, "noise", batch_size=4, seed=1, num_workers=1)
    first = None
    for epoch, skip in ((0, 0), (1, 0), (1, 2)):
        for loader in (plain, workers):
            loader.set_epoch(epoch)
            loader.skip_batches(skip)
        a, b = list(plain), list(workers)
        assert len(a) == len(b) == 3 - skip
        assert all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))
        first = first or workers._workers
        assert workers._workers is first  # one DataLoader, its workers kept between epochs


# ----------------------------------------------------------------------------------------------------------
# The trainer on device batches, and the loss read every --log-every steps as it is on a GPU

TINY = dict(task="squares", model="pyramidal44", m=8, growth=4, data="builtin", size=32, batch_size=4,
            patches_per_epoch=16, val_images=4, log_images=0, precision="fp32", log_every=2, quiet=True,
            threads=1, ema=0.9)


def _weights(run_dir) -> dict:
    from pyramidal.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "last.ckpt")["model"]


def test_training_on_device_batches_resumes_exactly(tmp_path):
    from pyramidal.config import TrainConfig
    from pyramidal.train import Trainer, train

    straight = Trainer(TrainConfig(**TINY, data_on_device=True, steps=6, out=str(tmp_path / "a"))).fit()
    first = Trainer(TrainConfig(**TINY, data_on_device=True, steps=3, out=str(tmp_path / "b"))).fit()
    resumed = train(TrainConfig(resume=str(first), steps=6))
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_refuses_device_batches_for_a_cpu_task(tmp_path):
    from pyramidal.config import TrainConfig
    from pyramidal.train import Trainer

    with pytest.raises(PyramidalError, match="data_on_device: task jpeg"):
        Trainer(TrainConfig(**{**TINY, "task": "jpeg"}, data_on_device=True, steps=1, out=str(tmp_path)))


def _metrics(run_dir) -> list[dict]:
    import csv

    with open(run_dir / "metrics.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["loss/train"]]


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_loss_read_every_log_interval_logs_what_each_step_read(tmp_path, loss):
    """On a GPU the trainer sums the loss on the device and reads it every --log-every steps: the logged
    loss and PSNR are those a read after every step gives."""
    from pyramidal.config import TrainConfig
    from pyramidal.train import Trainer

    runs = []
    for deferred in (False, True):
        trainer = Trainer(TrainConfig(**TINY, loss=loss, steps=8, out=str(tmp_path / str(deferred))))
        trainer._defer_loss = deferred
        runs.append(_metrics(trainer.fit()))
    assert len(runs[0]) == len(runs[1]) >= 4
    for a, b in zip(*runs):
        assert a["step"] == b["step"]
        for key in ("loss/train", "PSNR/train"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), (key, a["step"])


def test_loss_read_late_still_stops_on_a_nonfinite_loss(tmp_path, monkeypatch):
    import torch.nn.functional as F

    from pyramidal.checkpoint import load_checkpoint
    from pyramidal.config import TrainConfig
    from pyramidal.train import Trainer, TrainingDiverged

    real, calls = F.mse_loss, {"n": 0}

    def poisoned(input, target, *args, **kwargs):
        if kwargs.get("reduction", "mean") == "mean":
            calls["n"] += 1
            if calls["n"] == 5:
                return real(input, target) * float("nan")
        return real(input, target, *args, **kwargs)

    monkeypatch.setattr(F, "mse_loss", poisoned)
    trainer = Trainer(TrainConfig(**{**TINY, "ema": None, "log_every": 4}, steps=8, checkpoint_every_steps=2,
                                  out=str(tmp_path)))
    trainer._defer_loss = True
    with pytest.raises(TrainingDiverged, match=r"read every 4 steps.*step [5-8]\b"):
        trainer.fit()
    ckpt = load_checkpoint(trainer.run_dir / "last.ckpt")
    assert ckpt["step"] == 4 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())

"""The batches of a run: its data source, the training loader of each patch-size phase (on the CPU or, with
--data-on-device, cut on the training device), the validation loader, and the epoch lengths they give."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data.distributed import DistributedSampler

from pyramidal.config import TrainConfig, size_phases
from pyramidal.data.loader import make_loader
from pyramidal.data.sources import load_source
from pyramidal.errors import flag_error
from pyramidal.gpudata import DeviceBatches, DevicePhotos, check_device_task, window_side
from pyramidal.models.conditions import Conditions
from pyramidal.train.machine import Machine


def cached_source(config: TrainConfig, size: int, cache: dict):
    """The data source a run of `config` reads at patch `size`, loaded once per `cache`."""
    c = config
    key = ("source", c.data, size, c.max_images, c.seed, c.patches_per_epoch)
    if key not in cache:
        cache[key] = load_source(c.data, size=size, max_images=c.max_images, seed=c.seed,
                                 patches_per_epoch=c.patches_per_epoch)
    return cache[key]


def cached_device_photos(config: TrainConfig, device: torch.device, cache: dict):
    """data_on_device: the training photographs of `config` held on `device`, once per `cache`."""
    side = window_side(max(s for _, s, _ in size_phases(config)))
    key = ("device photos", config.data, config.max_images, str(device), side)
    if key not in cache:
        cache[key] = DevicePhotos.from_dataset(cached_source(config, config.size, cache).split("train"), device, side)
    return cache[key]


class TrainingData:
    """The loaders of one run. `conditions`: what the model takes besides the image; a mask-conditioned or
    noise-map model's batches carry the holes or each σ as a third item (`step.training_conditions`)."""

    def __init__(self, config: TrainConfig, task, val_task, machine: Machine, cache: dict | None,
                 conditions: Conditions):
        """`cache`: a dict the caller keeps to share loaded data sources and device photographs among the
        runs it trains in one process (the GPU campaign); None loads them for this run alone."""
        self.config = c = config
        self.task, self.val_task, self.machine = task, val_task, machine
        self.with_mask, self.with_noise_level = conditions.mask_input, conditions.noise_map
        self.phases = size_phases(c)  # (first step, patch size, batch size) of each phase
        self._sources: dict[int, Any] = {}
        self._loaders: dict[int, Any] = {}
        self._cache = {} if cache is None else cache
        # An epoch: --patches-per-epoch patches with --data-on-device; else the training split's length.
        self.train_len = c.patches_per_epoch if c.data_on_device else len(self.source(c.size).split("train"))
        if c.data_on_device:
            check_device_task(task)
        self.val_loader = self._make_val_loader() if machine.is_main else None

    def source(self, size: int):
        if size not in self._sources:
            self._sources[size] = cached_source(self.config, size, self._cache)
        return self._sources[size]

    def train_loader(self, phase: int):
        """The training loader of size phase `phase`; the last phase's is kept, earlier ones are let go."""
        if phase not in self._loaders:
            self._loaders.clear()  # one phase at a time: no need to keep old patch sizes around
            _, size, batch = self.phases[phase]
            self._loaders[phase] = self._device_loader(size, batch) if self.config.data_on_device else \
                self._host_loader(size, batch)
        return self._loaders[phase]

    def _host_loader(self, size: int, batch: int):
        c, m = self.config, self.machine
        ds = self.source(size).split("train")
        sampler = None
        if m.distributed:
            sampler = DistributedSampler(ds, num_replicas=m.world_size, rank=m.rank, shuffle=True, seed=c.seed,
                                         drop_last=True)
        loader = self._make_loader(ds, self.task, batch, train=True, sampler=sampler)
        if len(loader) == 0:
            raise flag_error("{patches_per_epoch=}{ppe} gives no full batch of {batch} per process ({n} process(es)); "
                             "raise it or lower {batch_size}", "patches_per_epoch", "batch_size",
                             ppe=c.patches_per_epoch, batch=batch, n=m.world_size)
        return loader

    def _device_loader(self, size: int, batch: int):
        """data_on_device: batches cut and damaged on the training device from photographs held there."""
        c, m = self.config, self.machine
        photos = cached_device_photos(c, m.device, self._cache)
        return DeviceBatches(photos, self.task, size, batch, self.steps_per_epoch_for(batch), seed=c.seed,
                             rank=m.rank, with_mask=self.with_mask, with_noise_level=self.with_noise_level)

    def _make_val_loader(self):
        c = self.config
        ds = self.source(c.size).split("val")
        if c.val_images and c.val_images < len(ds):
            ds = torch.utils.data.Subset(ds, range(c.val_images))
        if len(ds) == 0:
            raise flag_error("{data=}{data}: the validation split is empty", "data", data=c.data)
        return self._make_loader(ds, self.val_task, c.batch_size, train=False)

    def _make_loader(self, ds, task, batch_size: int, train: bool, sampler=None):
        kwargs = {}
        if self.config.num_workers:
            # Workers stay up for the whole run; batches bound for a GPU come in page-locked memory.
            kwargs.update(num_workers=self.config.num_workers, pin_memory=self.machine.device.type == "cuda")
        return make_loader(ds, task, batch_size=batch_size, train=train, seed=self.config.seed,
                           sampler=sampler, drop_last=train, with_mask=self.with_mask,
                           with_noise_level=self.with_noise_level, **kwargs)

    # -- epoch lengths --------------------------------------------------------------------------------------

    def phase_for(self, step: int) -> int:
        """The size phase an epoch starting after `step` steps trains in."""
        return max(i for i, (at, _, _) in enumerate(self.phases) if at <= step)

    def steps_per_epoch_for(self, batch: int) -> int:
        m = self.machine
        per_process = self.train_len // m.world_size if m.distributed else self.train_len
        return max(1, per_process // batch)  # a lone partial batch still counts

    def planned_steps(self) -> int | None:
        """Steps the run will take by steps/epochs (None when only a time budget limits it)."""
        c = self.config
        limits = []
        if c.steps is not None:
            limits.append(c.steps)
        if c.epochs is not None:
            step = 0
            for _ in range(c.epochs):
                n = self.steps_per_epoch_for(self.phases[self.phase_for(step)][2])
                if n == 0:
                    break
                step += n
            limits.append(step)
        return min(limits) if limits else None

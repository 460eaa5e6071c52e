"""The resumable loader of (damaged, clean) batches: sample order and damage seeded per (seed, epoch, index)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from pyramidal.damage import Task, create_task, derive_seed, eval_seed, one_thread
from pyramidal.data.patches import _TAG_DAMAGE, _TAG_ORDER
from pyramidal.errors import OptionError
from pyramidal.pixels import eight_bit_to_model


class _EpochView(torch.utils.data.Dataset):
    """A dataset read by (epoch, index) keys: worker processes that live for the whole run (persistent
    workers) are told each sample's epoch with its index."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, torch.Tensor]:
        epoch, index = key
        if hasattr(self.dataset, "get"):
            return epoch, index, self.dataset.get(int(index), epoch)
        item = self.dataset[index]
        return epoch, index, (item[0] if isinstance(item, (tuple, list)) else item)


class _EpochBatches:
    """The batch sampler of the worker processes' DataLoader: the batches of the epoch (and from the batch)
    that the next iteration starts, as (epoch, index) keys."""

    def __init__(self, loader: PairLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip = self.loader._started
        for batch in self.loader.batches()[skip:]:
            yield [(epoch, i) for i in batch]


class _DamageCollate:
    """Stacks one batch and damages it with per-sample seeds (picklable: runs inside worker processes)."""

    def __init__(self, task: Task, train: bool, seed: int, with_mask: bool = False, with_noise_level: bool = False,
                 floats: bool = False):
        self.task, self.train, self.seed = task, train, seed
        self.with_mask, self.with_noise_level = with_mask, with_noise_level
        self.floats = floats  # convert to [-1, 1] here (in the worker processes)

    def seeds(self, indices: Sequence[int], epoch: int) -> list[int]:
        if self.train:
            return [derive_seed(_TAG_DAMAGE, self.seed, epoch, i) for i in indices]
        return [eval_seed(i) for i in indices]

    def __call__(self, items: list[tuple[int, int, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        epoch = items[0][0]
        indices = [i for _, i, _ in items]
        clean = torch.stack([x for _, _, x in items])
        seeds = self.seeds(indices, epoch)
        if self.with_mask:
            damaged, condition = self.task.apply(clean, seeds=seeds)
        else:
            damaged = self.task(clean, seeds=seeds)
            condition = torch.tensor(self.task.noise_levels(seeds)) if self.with_noise_level else None
        pair = (eight_bit_to_model(damaged), eight_bit_to_model(clean)) if self.floats else (damaged, clean)
        return pair if condition is None else (*pair, condition)


class PairLoader:
    """Iterates (damaged, clean) float32 B×3×H×W batches in [-1, 1]; damage is applied to whole batches.

    With `with_mask` (tasks with holes, for mask-conditioned models) each batch also carries the task's bool
    B×1×H×W mask of holes: (damaged, clean, mask); with `with_noise_level` (the noise task, for noise-map
    models) each image's σ on the 0-255 scale, a float B tensor: (damaged, clean, sigma).
    """

    def __init__(self, dataset: torch.utils.data.Dataset, task: Task | str, batch_size: int = 32,
                 train: bool = True, seed: int = 0, sampler: Any = None, drop_last: bool | None = None,
                 num_workers: int = 0, with_mask: bool = False, with_noise_level: bool = False,
                 pin_memory: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.task = create_task(task, train=train) if isinstance(task, str) else task
        if with_mask and not self.task.has_mask:
            raise OptionError(f"with_mask=True: task {self.task.name} makes no holes, so it has no mask to give")
        if with_noise_level and not self.task.has_noise_level:
            raise OptionError(f"with_noise_level=True: task {self.task.name} has no noise level to give")
        if with_mask and with_noise_level:
            raise ValueError("give the mask or the noise level, not both")
        self.with_mask, self.with_noise_level = bool(with_mask), bool(with_noise_level)
        self.batch_size, self.train, self.seed = int(batch_size), bool(train), int(seed)
        self.sampler, self.num_workers, self.pin_memory = sampler, int(num_workers), bool(pin_memory)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.epoch = 0
        self._skip = 0
        self._started = (0, 0)  # (epoch, first batch) of the iteration under way
        self._workers: torch.utils.data.DataLoader | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration produces (also forwarded to the sampler)."""
        self.epoch = int(epoch)

    def skip_batches(self, k: int) -> None:
        """Make the next iteration start at batch k of the epoch (for exact resume)."""
        self._skip = max(0, int(k))

    def indices(self) -> list[int]:
        """Sample order of the current epoch."""
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self.epoch)
            return [int(i) for i in self.sampler]
        n = len(self.dataset)
        if not self.train:
            return list(range(n))
        g = torch.Generator().manual_seed(derive_seed(_TAG_ORDER, self.seed, self.epoch))
        return torch.randperm(n, generator=g).tolist()

    def batches(self) -> list[list[int]]:
        """The epoch's batches of sample indices (a final partial batch is dropped only if not the only one)."""
        idx = self.indices()
        out = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.drop_last and len(out) > 1 and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest and (not self.drop_last or full == 0) else 0)

    def sample_seeds(self, indices: Sequence[int], epoch: int | None = None) -> list[int]:
        """Per-sample damage seeds: from (seed, epoch, index) in training, eval_seed(index) otherwise."""
        return self._collate().seeds(indices, self.epoch if epoch is None else epoch)

    def _collate(self, floats: bool = False) -> _DamageCollate:
        return _DamageCollate(self.task, self.train, self.seed, self.with_mask, self.with_noise_level, floats)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        self._started = (self.epoch, self._skip)
        self._skip = 0
        if self.num_workers <= 0:
            epoch, skip = self._started
            view, collate = _EpochView(self.dataset), self._collate(floats=True)
            for idx in self.batches()[skip:]:
                with one_thread():  # small tensors: see damage.one_thread
                    pair = collate([view[(epoch, i)] for i in idx])
                yield pair
            return
        # Workers load, damage and convert whole batches; every draw is seeded per sample, so the pixels are
        # the same as with num_workers=0. They are started once and serve every epoch (persistent workers);
        # with pin_memory the batches arrive in page-locked memory, ready for an asynchronous copy to a GPU.
        if self._workers is None:
            self._workers = torch.utils.data.DataLoader(
                _EpochView(self.dataset), batch_sampler=_EpochBatches(self), num_workers=self.num_workers,
                collate_fn=self._collate(floats=True), persistent_workers=True, pin_memory=self.pin_memory)
        yield from self._workers


def make_loader(dataset: torch.utils.data.Dataset, task: Task | str, batch_size: int = 32, train: bool = True,
                seed: int = 0, sampler: Any = None, drop_last: bool | None = None, num_workers: int = 0,
                with_mask: bool = False, with_noise_level: bool = False, pin_memory: bool = False) -> PairLoader:
    """A resumable loader of (damaged, clean) float pairs in [-1, 1] (and masks, `with_mask`, or each σ,
    `with_noise_level`); see PairLoader."""
    return PairLoader(dataset, task, batch_size=batch_size, train=train, seed=seed, sampler=sampler,
                      drop_last=drop_last, num_workers=num_workers, with_mask=with_mask,
                      with_noise_level=with_noise_level, pin_memory=pin_memory)

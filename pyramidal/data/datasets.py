"""Torch Datasets of clean uint8 3×size×size patches, each sample a pure function of (index, epoch)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from pyramidal.data.patches import (
    _TAG_AUG,
    _finish,
    _rng,
    _upscale_to,
    celeba_patch,
    centre_patch,
    random_patch,
)
from pyramidal.errors import PyramidalError
from pyramidal.io import read_rgb


class SkippedImageWarning(UserWarning):
    """A file under a data folder could not be read as an image and was skipped."""


class _EpochDataset(torch.utils.data.Dataset):
    """Dataset whose samples are a pure function of (index, epoch); `__getitem__` uses `self.epoch`."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def get(self, index: int, epoch: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get(int(index), self.epoch)


class PhotoPatches(_EpochDataset):
    """Random training patches from in-memory photographs; one epoch is `length` patches."""

    def __init__(self, photos: Sequence[Image.Image], size: int, length: int, seed: int = 0):
        if not photos:
            raise PyramidalError("no training photographs")
        self.photos = list(photos)
        self.size, self.length, self.seed = int(size), int(length), int(seed)

    def __len__(self) -> int:
        return self.length

    def get(self, index: int, epoch: int = 0) -> torch.Tensor:
        rng = _rng(_TAG_AUG, self.seed, epoch, index)
        photo = self.photos[int(rng.integers(len(self.photos)))]
        return random_patch(photo, self.size, rng)


class FixedCrops(_EpochDataset):
    """Fixed crops from photographs: the same pixels every epoch and every run."""

    def __init__(self, photos: Sequence[Image.Image], size: int, crops_per_photo: int, tag: int):
        self.size = int(size)
        self.photos = [_upscale_to(p, self.size) for p in photos]
        self.boxes: list[tuple[int, int, int]] = []
        for p, im in enumerate(self.photos):
            rng = _rng(tag, p)
            for _ in range(int(crops_per_photo)):
                top = int(rng.integers(0, im.height - self.size + 1))
                left = int(rng.integers(0, im.width - self.size + 1))
                self.boxes.append((p, top, left))

    def __len__(self) -> int:
        return len(self.boxes)

    def get(self, index: int, epoch: int = 0) -> torch.Tensor:
        p, top, left = self.boxes[index]
        return _finish(self.photos[p].crop((left, top, left + self.size, top + self.size)), None)


class ImageFiles(_EpochDataset):
    """Images decoded from files on every access; a file that fails to decode is replaced by the next one."""

    def __init__(self, files: Sequence[Path], size: int, train: bool, seed: int = 0, prepare: str = "crop",
                 where: str = "images"):
        self.files = [Path(f) for f in files]
        self.where = where  # for messages: e.g. "folder:photos, train split"
        self.size, self.train, self.seed, self.prepare = int(size), bool(train), int(seed), prepare
        self.bad: dict[Path, str] = {}  # files that failed at decode time (per process)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path) -> Image.Image | None:
        if path in self.bad:
            return None
        try:
            return read_rgb(path)
        except PyramidalError as exc:
            self.bad[path] = str(exc)
            warnings.warn(f"{exc}; skipped", SkippedImageWarning, stacklevel=3)
            return None

    def get(self, index: int, epoch: int = 0) -> torch.Tensor:
        n = len(self.files)
        for k in range(n):
            im = self._load(self.files[(index + k) % n])
            if im is not None:
                break
        else:
            raise PyramidalError(f"{self.where}: none of the {n} images could be decoded")
        rng = _rng(_TAG_AUG, self.seed, epoch, index) if self.train else None
        if self.prepare == "celeba":
            return celeba_patch(im, self.size, rng)
        return random_patch(im, self.size, rng) if rng is not None else centre_patch(im, self.size)

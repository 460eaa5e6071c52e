"""Data: clean-image sources (built-in photographs, image folders, CelebA) and (damaged, clean) loaders.

Every random choice of the training pipeline (sample order, photograph, crop, augmentation, damage) is a
pure function of (seed, epoch, sample index), so `set_epoch(e)` + `skip_batches(k)` reproduces exactly the
batches an uninterrupted run would have produced, with any number of workers or DDP ranks.

Protocols and error behaviour are documented in the README (Damage tasks, Data).
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pyramidal.damage import Task, create_task, derive_seed, eval_seed, one_thread
from pyramidal.errors import PyramidalError
from pyramidal.io import read_rgb, scan_images

__all__ = [
    "BUILTIN_PHOTOS",
    "BUILTIN_TEST",
    "BUILTIN_VAL",
    "PairLoader",
    "SkippedImageWarning",
    "Source",
    "bench_pairs_per_second",
    "list_images",
    "load_source",
    "make_loader",
    "scan_images",
    "to_float",
    "to_uint8",
]

# Photographs shipped inside scikit-image's wheel (skimage/data/), name -> file. Synthetic or document
# images (chessboard, logo, text, page, phantom, horse, color) and the motion-blurred clock are left out.
BUILTIN_PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "retina": "retina.jpg",
    "camera": "camera.png",
    "coins": "coins.png",
    "moon": "moon.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
}
# Validation photographs: a portrait, animal fur and smooth still life, all in colour (so `gray` is
# measurable). The built-in set is too small for a separate test set: "test" reuses these photographs.
BUILTIN_VAL: tuple[str, ...] = ("astronaut", "chelsea", "coffee")
BUILTIN_TEST: tuple[str, ...] = BUILTIN_VAL

# Tags keep the seed streams of different purposes apart.
_TAG_ORDER = 0x0D3E
_TAG_AUG = 0xA06
_TAG_DAMAGE = 0xDA3A
_TAG_VALCROP = 0x7A1C
_TAG_TESTCROP = 0x7E57

SPLITS = ("train", "val", "test")


class SkippedImageWarning(UserWarning):
    """A file under a data folder could not be read as an image and was skipped."""


# ----------------------------------------------------------------------------------------------------------
# Conversions and image files


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0-255 -> float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 0-255 (rounded, clipped)."""
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def _pil_to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def list_images(root: str | Path) -> list[Path]:
    """Readable images under a folder (recursively, sorted) or a single file; warns once per skipped file."""
    good, bad = scan_images(root)
    for f, reason in bad:
        warnings.warn(f"{f}: skipped, {reason}", SkippedImageWarning, stacklevel=2)
    return good


# ----------------------------------------------------------------------------------------------------------
# Geometry and augmentation


def _rng(*parts: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(*parts)))


def _upscale_to(im: Image.Image, min_side: int) -> Image.Image:
    """Upscale (bicubic) so that both sides are at least min_side; larger images are untouched."""
    if im.width >= min_side and im.height >= min_side:
        return im
    s = min_side / min(im.width, im.height)
    return im.resize((max(min_side, math.ceil(im.width * s)), max(min_side, math.ceil(im.height * s))), Image.BICUBIC)


def _centre_crop(im: Image.Image, h: int, w: int) -> Image.Image:
    h, w = min(h, im.height), min(w, im.width)
    top, left = (im.height - h) // 2, (im.width - w) // 2
    return im.crop((left, top, left + w, top + h))


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _colour_jitter(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slight brightness, saturation and contrast changes (each factor in [0.9, 1.1])."""
    b, c, s = (np.float32(v) for v in rng.uniform(0.9, 1.1, size=3))
    x = arr.reshape(-1, 3).astype(np.float32)
    # brightness ×b, saturation (blend with luma) ×s, contrast (about the mean luma) ×c: one affine map.
    sat = s * np.eye(3, dtype=np.float32) + (1 - s) * np.outer(np.ones(3, dtype=np.float32), _LUMA)
    mean_luma = b * np.float32((x @ _LUMA).mean())
    y = x @ (c * b * sat).T + (1 - c) * mean_luma
    return np.clip(np.round(y), 0, 255).astype(np.uint8).reshape(arr.shape)


def _finish(im: Image.Image, rng: np.random.Generator | None) -> torch.Tensor:
    """PIL crop -> uint8 3×H×W tensor, with flip and colour jitter when rng is given (training)."""
    arr = np.array(im, dtype=np.uint8)
    if rng is not None:
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        arr = _colour_jitter(arr, rng)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def random_patch(im: Image.Image, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Training patch: rescale by s in [0.95, 1.05] (crop size/s, resize to size), random crop, flip, jitter."""
    s = rng.uniform(0.95, 1.05)
    c = max(1, round(size / s))
    im = _upscale_to(im, c)
    top = int(rng.integers(0, im.height - c + 1))
    left = int(rng.integers(0, im.width - c + 1))
    patch = im.crop((left, top, left + c, top + c))
    if c != size:
        patch = patch.resize((size, size), Image.BICUBIC)
    return _finish(patch, rng)


def centre_patch(im: Image.Image, size: int) -> torch.Tensor:
    """Validation/test patch: upscale if smaller than size, then centre crop size×size."""
    return _finish(_centre_crop(_upscale_to(im, size), size, size), None)


# ----------------------------------------------------------------------------------------------------------
# Datasets


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


def celeba_shape(size: int) -> tuple[int, int]:
    """(H, W) CelebA images are resized to before cropping: 87×71 for 64, 174×142 for 128."""
    return round(87 * size / 64), round(71 * size / 64)


def celeba_patch(im: Image.Image, size: int, rng: np.random.Generator | None) -> torch.Tensor:
    """CelebA preparation: resize to celeba_shape(size) then centre-crop size (training: rescale, jitter)."""
    h, w = celeba_shape(size)
    if rng is None:
        return _finish(_centre_crop(im.resize((w, h), Image.BICUBIC), size, size), None)
    s = rng.uniform(0.95, 1.05)
    h, w = max(size, round(h * s)), max(size, round(w * s))
    im = im.resize((w, h), Image.BICUBIC)
    j = max(1, round(size / 16))  # keep the face near the centre: crop within ±4 px at 64
    top = min(max((h - size) // 2 + int(rng.integers(-j, j + 1)), 0), h - size)
    left = min(max((w - size) // 2 + int(rng.integers(-j, j + 1)), 0), w - size)
    return _finish(im.crop((left, top, left + size, top + size)), rng)


# ----------------------------------------------------------------------------------------------------------
# Sources


def split_counts(n: int) -> tuple[int, int, int]:
    """(train, val, test) sizes of the 80/10/10 split of n files (val/test at least one file when n >= 3)."""
    if n >= 3:
        nv = max(1, n // 10)
        return n - 2 * nv, nv, nv
    if n == 2:
        return 1, 1, 0
    return n, 0, 0


def split_files(names: Sequence[Any], split_seed: int = 0, max_images: int | None = None) -> dict[str, list]:
    """Deterministic 80/10/10 split: sort, seeded shuffle, cap, then train/val/test."""
    items = sorted(names)
    random.Random(split_seed).shuffle(items)
    if max_images is not None:
        items = items[: int(max_images)]
    nt, nv, _ = split_counts(len(items))
    return {"train": items[:nt], "val": items[nt : nt + nv], "test": items[nt + nv :]}


def _fill_empty_splits(splits: dict[str, list], where: str) -> dict[str, list]:
    """Tiny data sets: an empty val/test split reuses val or train so that evaluation still runs."""
    if not splits["val"]:
        warnings.warn(f"{where}: too few images for a validation split; validating on training images", stacklevel=3)
        splits["val"] = list(splits["train"])
    if not splits["test"]:
        splits["test"] = list(splits["val"])
    return splits


class Source:
    """A clean-image source with train/val/test splits."""

    kind = ""

    def __init__(self, size: int):
        if int(size) < 1:
            raise PyramidalError(f"image size must be >= 1, got {size}")
        self.size = int(size)
        self.skipped: list[tuple[str, str]] = []  # (file, reason) found when the source was opened

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def split(self, name: str) -> torch.utils.data.Dataset:
        """A torch Dataset of clean uint8 3×size×size tensors."""
        raise NotImplementedError

    def eval_images(self, split: str = "val", crop: int | None = None, limit: int | None = None):
        """Deterministic list of (name, uint8 3×H×W) for evaluation; crop=None gives whole images."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    @staticmethod
    def _check_split(name: str) -> None:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")


def _crop_or_whole(im: Image.Image, crop: int | None) -> torch.Tensor:
    return _pil_to_tensor(_centre_crop(im, crop, crop) if crop else im)


def _skimage_data_dir() -> Path | None:
    # Found without importing skimage.data: nothing here may touch the network (pooch).
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


# Training sets that scripts lay out, by folder name: where a user gets each one when its folder is missing.
KNOWN_PHOTO_SETS = {
    "bsds432": "the 432 BSDS500 photographs that are not in CBSD68 (Berkeley Segmentation Data Set 500, "
               "Arbelaez et al., TPAMI 2011; github.com/BIDS/BSDS500): lay them out with "
               "scripts/get-bsds432.sh BSDS500_DIR",
    "photos": "the Debian wallpaper photographs: fetch them with scripts/get-training-photos.sh",
}


def missing_photo_folder(root: Path) -> str:
    """The one-line error for a missing folder of extra training photographs, naming its source if known."""
    known = KNOWN_PHOTO_SETS.get(root.name)
    return f"{root}: no such folder of extra training photographs" + (f"; it holds {known}" if known else "")


class BuiltinSource(Source):
    """The photographs shipped inside scikit-image's wheel, split by photograph."""

    kind = "builtin"

    def __init__(self, size: int = 64, seed: int = 0, patches_per_epoch: int = 1024, val_crops: int = 16,
                 max_images: int | None = None, extra: str | Path | None = None, extra_max_side: int = 800,
                 **_: Any):
        super().__init__(size)
        self.seed, self.patches_per_epoch, self.val_crops = int(seed), int(patches_per_epoch), int(val_crops)
        folder = _skimage_data_dir()
        if folder is None or not folder.is_dir():
            raise PyramidalError("builtin: scikit-image is not installed; install it or give --data folder:PATH")
        self.photos: dict[str, Image.Image] = {}
        for name, file in BUILTIN_PHOTOS.items():
            try:
                self.photos[name] = read_rgb(folder / file)
            except PyramidalError as exc:
                self.skipped.append((str(folder / file), str(exc)))
                warnings.warn(f"{exc}; skipped", SkippedImageWarning, stacklevel=2)
        self.names = {
            "train": [n for n in self.photos if n not in BUILTIN_VAL and n not in BUILTIN_TEST],
            "val": [n for n in BUILTIN_VAL if n in self.photos],
            "test": [n for n in BUILTIN_TEST if n in self.photos],
        }
        if max_images is not None:
            self.names["train"] = self.names["train"][: max(1, int(max_images))]
        if not self.names["train"] or not self.names["val"]:
            raise PyramidalError(f"builtin: photographs missing from {folder}; reinstall scikit-image")
        # builtin+A+B: the extra folders A and B (each checked before any is read).
        self.extra = [Path(p) for p in str(extra).split("+") if p] if extra is not None else []
        for root in self.extra:
            if not root.is_dir():
                raise PyramidalError(missing_photo_folder(root))
        for root in self.extra:
            self._add_extra_photos(root, int(extra_max_side))

    def _add_extra_photos(self, root: Path, max_side: int) -> None:
        """More training photographs (never validation): every readable image under `root`.

        Large photos are shrunk to `max_side` so a 64-px patch shows a scene, not a blur of one leaf.
        """
        good, bad = scan_images(root)
        for f, reason in bad:
            self.skipped.append((str(f), reason))
            warnings.warn(f"{f}: skipped, {reason}", SkippedImageWarning, stacklevel=3)
        if not good:
            raise PyramidalError(f"{root}: no readable images in this folder")
        for f in good:
            im = read_rgb(f)
            if max(im.size) > max_side:
                scale = max_side / max(im.size)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                               Image.Resampling.LANCZOS)
            # Names stay unique across several folders (one folder keeps the plain "extra/" names).
            folder = f"{root.name}/" if len(self.extra) > 1 else ""
            name = f"extra/{folder}{f.relative_to(root).as_posix()}"
            self.photos[name] = im
            self.names["train"].append(name)

    def describe(self) -> str:
        folders = " and ".join(str(p) for p in self.extra)
        extra = f" (with extra photographs from {folders})" if self.extra else ""
        return (f"builtin{extra}: {len(self.names['train'])} training photographs, "
                f"{len(self.names['val'])} validation photographs ({', '.join(self.names['val'])})")

    def split(self, name: str) -> torch.utils.data.Dataset:
        self._check_split(name)
        photos = [self.photos[n] for n in self.names[name]]
        if name == "train":
            return PhotoPatches(photos, self.size, self.patches_per_epoch, self.seed)
        return FixedCrops(photos, self.size, self.val_crops, _TAG_VALCROP if name == "val" else _TAG_TESTCROP)

    def eval_images(self, split: str = "val", crop: int | None = None, limit: int | None = None):
        self._check_split(split)
        names = self.names[split][:limit]
        return [(n, _crop_or_whole(self.photos[n], crop)) for n in names]


class FolderSource(Source):
    """Every readable image under a folder, recursively, split 80/10/10 by file."""

    kind = "folder"

    def __init__(self, path: str | Path, size: int = 64, seed: int = 0, max_images: int | None = None,
                 split_seed: int = 0, **_: Any):
        super().__init__(size)
        self.root, self.seed = Path(path).expanduser(), int(seed)
        if not self.root.is_dir():
            raise PyramidalError(f"{self.root}: no such folder")
        # Every file is decoded once here, so that a truncated image is skipped before the split and every
        # split holds only readable images.
        good, bad = scan_images(self.root, decode=True)
        for f, reason in bad:
            self.skipped.append((str(f), reason))
            warnings.warn(f"{f}: skipped, {reason}", SkippedImageWarning, stacklevel=2)
        if not good:
            extra = f" ({len(bad)} unreadable files skipped)" if bad else ""
            raise PyramidalError(f"{self.root}: no readable images in this folder{extra}")
        rel = [f.relative_to(self.root).as_posix() for f in good]
        self.files = _fill_empty_splits(split_files(rel, split_seed, max_images), str(self.root))

    def describe(self) -> str:
        n = {k: len(v) for k, v in self.files.items()}
        skipped = f", {self.num_skipped} skipped" if self.skipped else ""
        return f"folder {self.root}: {n['train']} train / {n['val']} val / {n['test']} test images{skipped}"

    def split(self, name: str) -> torch.utils.data.Dataset:
        self._check_split(name)
        return ImageFiles([self.root / f for f in self.files[name]], self.size, name == "train", self.seed,
                          where=f"folder:{self.root}, {name} split")

    def eval_images(self, split: str = "val", crop: int | None = None, limit: int | None = None):
        # "all": every readable file, for a folder that training never reads (a held-out set).
        if split == "all":
            files = sorted({f for names in self.files.values() for f in names})
        else:
            self._check_split(split)
            files = self.files[split]
        out = []
        for f in files[:limit]:
            try:
                out.append((f, _crop_or_whole(read_rgb(self.root / f), crop)))
            except PyramidalError as exc:
                warnings.warn(f"{exc}; skipped", SkippedImageWarning, stacklevel=2)
        return out


class CelebASource(Source):
    """CelebA aligned faces in the standard layout, with the official split when its file is present."""

    kind = "celeba"

    def __init__(self, path: str | Path, size: int = 64, seed: int = 0, max_images: int | None = None,
                 split_seed: int = 0, **_: Any):
        super().__init__(size)
        self.root, self.seed = Path(path).expanduser(), int(seed)
        img_dir = self.root / "img_align_celeba"
        if not img_dir.is_dir() and self.root.name == "img_align_celeba" and self.root.is_dir():
            img_dir, self.root = self.root, self.root.parent  # the image folder itself was given
        if (img_dir / "img_align_celeba").is_dir():
            img_dir = img_dir / "img_align_celeba"  # some archives nest the folder twice
        if not img_dir.is_dir():
            raise PyramidalError(
                f"{self.root}: CelebA not found; put the aligned images in {self.root / 'img_align_celeba'}/ "
                f"(000001.jpg ...) and, for the official split, list_eval_partition.txt in {self.root}/ "
                "(pyramidal downloads nothing)"
            )
        self.img_dir = img_dir
        names = sorted(e.name for e in os.scandir(img_dir)
                       if e.is_file() and e.name.lower().endswith((".jpg", ".jpeg", ".png")))
        if not names:
            raise PyramidalError(f"{img_dir}: no CelebA images (*.jpg) in this folder")
        part_file = self.root / "list_eval_partition.txt"
        self.official = part_file.is_file()
        if self.official:
            files = self._read_partition(part_file, set(names))
            if max_images is not None:
                cap = int(max_images)
                caps = {"train": max(1, cap - 2 * max(1, cap // 10)), "val": max(1, cap // 10), "test": max(1, cap // 10)}
                files = {k: v[: caps[k]] for k, v in files.items()}
            if not files["train"]:
                warnings.warn(f"{part_file}: no training images listed; using an 80/10/10 split", stacklevel=2)
                self.official = False
        if not self.official:
            files = split_files(names, split_seed, max_images)
        self.files = _fill_empty_splits(files, str(img_dir))

    def _read_partition(self, path: Path, present: set[str]) -> dict[str, list[str]]:
        files: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        missing = 0
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                    raise PyramidalError(f"{path}:{lineno}: expected '<file> <0|1|2>', got {line.strip()!r}")
                if parts[0] not in present:
                    missing += 1
                    continue
                files[SPLITS[int(parts[1])]].append(parts[0])
        if missing:
            warnings.warn(f"{path}: {missing} listed images are not in {self.img_dir}; ignored", stacklevel=3)
        return {k: sorted(v) for k, v in files.items()}

    def describe(self) -> str:
        n = {k: len(v) for k, v in self.files.items()}
        how = "official split" if self.official else "80/10/10 split"
        return f"celeba {self.img_dir}: {n['train']} train / {n['val']} val / {n['test']} test ({how})"

    def split(self, name: str) -> torch.utils.data.Dataset:
        self._check_split(name)
        files = [self.img_dir / f for f in self.files[name]]
        return ImageFiles(files, self.size, name == "train", self.seed, prepare="celeba",
                          where=f"celeba:{self.root}, {name} split")

    def eval_images(self, split: str = "val", crop: int | None = None, limit: int | None = None):
        """Prepared faces (resized and centre-cropped to size); crop smaller than size crops further."""
        self._check_split(split)
        out = []
        for f in self.files[split][:limit]:
            try:
                face = celeba_patch(read_rgb(self.img_dir / f), self.size, None)
            except PyramidalError as exc:
                warnings.warn(f"{exc}; skipped", SkippedImageWarning, stacklevel=2)
                continue
            if crop and crop < self.size:
                top = (self.size - crop) // 2
                face = face[:, top : top + crop, top : top + crop].clone()
            out.append((f, face))
        return out


def load_source(spec: str = "builtin", size: int = 64, max_images: int | None = None, seed: int = 0,
                patches_per_epoch: int = 1024, val_crops: int = 16, **kw: Any) -> Source:
    """Open a data source: "builtin", "builtin+PATH" (extra training photos under PATH; "builtin+A+B" for two
    folders), "folder:PATH" or
    "celeba:PATH" (a bare existing folder means folder:)."""
    spec = str(spec)
    kind, _, path = spec.partition(":")
    if kind.startswith("builtin+"):  # builtin+PATH: the built-in photographs plus more training photos
        return BuiltinSource(size=size, seed=seed, patches_per_epoch=patches_per_epoch, val_crops=val_crops,
                             max_images=max_images, extra=spec[len("builtin+"):].removeprefix("folder:"), **kw)
    if kind == "builtin" and not path:
        return BuiltinSource(size=size, seed=seed, patches_per_epoch=patches_per_epoch, val_crops=val_crops,
                             max_images=max_images, **kw)
    if kind in ("folder", "celeba") and path:
        cls = FolderSource if kind == "folder" else CelebASource
        return cls(path, size=size, seed=seed, max_images=max_images, **kw)
    if Path(spec).is_dir():
        return FolderSource(spec, size=size, seed=seed, max_images=max_images, **kw)
    raise PyramidalError(f"{spec}: unknown data source; use builtin, builtin+PATH, folder:PATH or celeba:PATH")


# ----------------------------------------------------------------------------------------------------------
# Loader


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
        pair = (to_float(damaged), to_float(clean)) if self.floats else (damaged, clean)
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
            raise ValueError(f"task {self.task.name} makes no holes, so it has no mask to give")
        if with_noise_level and not self.task.has_noise_level:
            raise ValueError(f"task {self.task.name} has no noise level to give")
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


# ----------------------------------------------------------------------------------------------------------
# Benchmark

_BENCH_SOURCES: dict[int, Source] = {}


def bench_pairs_per_second(task_name: str, size: int = 64, batch_size: int = 32, seconds: float = 2.0,
                           source: Source | None = None, damage_only: bool = False, num_workers: int = 0) -> float:
    """Training pairs per second: built-in patches + augmentation + damage + float conversion (or damage only)."""
    if source is None:
        source = _BENCH_SOURCES.get(size) or _BENCH_SOURCES.setdefault(size, load_source("builtin", size=size))
    task = create_task(task_name, train=True)
    ds = source.split("train")
    if damage_only:
        clean = torch.stack([ds.get(i, 0) for i in range(batch_size)])
        task(clean, seeds=list(range(batch_size)))  # warm-up
        n, b, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            task(clean, seeds=[derive_seed(b, i) for i in range(batch_size)])
            n, b = n + batch_size, b + 1
        return n / (time.perf_counter() - start)
    loader = make_loader(ds, task, batch_size=batch_size, train=True, seed=0, num_workers=num_workers)
    epoch, n = 0, 0
    it = iter(loader)
    next(it)  # warm-up
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            damaged, _ = next(it)
        except StopIteration:
            epoch += 1
            loader.set_epoch(epoch)
            it = iter(loader)
            continue
        n += damaged.shape[0]
    return n / (time.perf_counter() - start)

"""Clean-image sources with train/val/test splits: the built-in photographs, image folders and CelebA."""

from __future__ import annotations

import importlib.util
import os
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pyramidal.data.datasets import FixedCrops, ImageFiles, PhotoPatches, SkippedImageWarning
from pyramidal.data.patches import _TAG_TESTCROP, _TAG_VALCROP, _centre_crop, _pil_to_tensor, celeba_patch
from pyramidal.errors import PyramidalError, option_wording
from pyramidal.io import read_rgb, scan_images

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

SPLITS = ("train", "val", "test")


def list_images(root: str | Path) -> list[Path]:
    """Readable images under a folder (recursively, sorted) or a single file; warns once per skipped file."""
    good, bad = scan_images(root)
    for f, reason in bad:
        warnings.warn(f"{f}: skipped, {reason}", SkippedImageWarning, stacklevel=2)
    return good


# ----------------------------------------------------------------------------------------------------------
# Splits


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


# ----------------------------------------------------------------------------------------------------------
# Sources


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


def skimage_data_dir() -> Path | None:
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
        folder = skimage_data_dir()
        if folder is None or not folder.is_dir():
            raise PyramidalError(*option_wording("builtin: scikit-image is not installed; install it or give "
                                                 "{data=}folder:PATH", "data"))
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

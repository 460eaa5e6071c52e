"""Damage tasks: turn clean 8-bit RGB batches into the damaged inputs a restorer learns to undo.

Every task takes a uint8 tensor B×3×H×W (any H, W >= 1) and returns a uint8 tensor of the same shape; only
damage that no 8-bit file can hold (noise with `unclipped`, in training) comes back as float32 on the 0-255
scale.
Randomness is per image: image i's damage depends only on the task options, ``seeds[i]`` and image i,
so a batch can be split, reordered or resumed without changing any pixel. All random draws use NumPy
generators seeded from those per-image seeds, so results do not depend on the torch device.

A task class also declares what the rest of the package needs to know about it, so adding a task touches
this file alone (docs/adding-a-task.md): its command-line options (`declared_options`), whether it paints a
mask, the classical baselines it is scored against, its evaluation crops and settings, a one-line
description. Reading those declarations imports neither torch nor NumPy (`pyramidal --help` uses them).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pyramidal import camera
from pyramidal.errors import OptionError
from pyramidal.lazy import LazyModule
from pyramidal.registry import Registry

np = LazyModule("numpy")
torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")

TASKS = Registry("damage task")

MAGENTA = (255, 0, 255)

_MASK64 = (1 << 64) - 1
# Tags keep the seed streams of different purposes apart.
_TAG_EVAL = 0xE7A1
_TAG_MIXED = 0x313D


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (pure, stable across versions and platforms)."""
    h = 0x2545F4914F6CDD1D
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h >> 1


def eval_seed(index: int, base: int = 0) -> int:
    """The fixed evaluation seed for image number `index` (optionally offset by a base seed)."""
    return derive_seed(_TAG_EVAL, base, index)


def create_task(name: str, train: bool = False, **options: Any) -> Task:
    """Build a registered damage task.

    Tasks work on uint8 B×3×H×W tensors (0-255) and return the same; holes come with a B×1×H×W mask.

    Args:
        name: a task name (`pyramidal.damage.TASKS.names()`): "noise", "jpeg", "pixelate", "blur", ...
        train: draw random training damage (e.g. σ per image for noise) instead of the fixed evaluation
            setting.
        **options: the task's own options, e.g. `sigma=25` for noise, `quality=10` for jpeg.

    Returns:
        The task: call it as `task(images, seeds=[...])`, or `task.apply(...)` for the mask too.

    Raises:
        ValueError: an unknown task or option.
    """
    cls = TASKS.get(name)
    try:
        return cls(train=train, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        allowed = ", ".join(o.name for o in cls.declared_options) or "none"
        given = ", ".join(sorted(options))
        raise OptionError(f"task {name!r} does not take option(s) {given}; its options: {allowed}") from None


# ----------------------------------------------------------------------------------------------------------
# Base class


def _as_batch(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (0-255), got {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
        squeeze = True
    elif images.dim() == 4:
        squeeze = False
    else:
        raise ValueError(f"images must be B×3×H×W or 3×H×W, got shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 channels, got shape {tuple(images.shape)}")
    return images, squeeze


@contextlib.contextmanager
def one_thread(enabled: bool = True):
    """Run CPU damage single-threaded: its many small ops gain little from threads and, on a busy
    machine, each multi-threaded op waits for descheduled threads (measured 5-10× slower)."""
    n = torch.get_num_threads()
    if not enabled or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class TaskOption:
    """One option of a task; `pyramidal degrade`, `evaluate` and `train` offer it as `--NAME`."""

    name: str  # the keyword of the task's __init__, and the flag `--name`
    type: Callable[[str], Any]  # parses the command-line text: float, int or str
    help: str  # what the value means
    default: str  # what evaluation and `degrade` use when it is not given
    train_default: str | None = None  # what training does when it is not given (None: the same)
    train_only: bool = False  # shapes random training damage only: offered by `train`, not `degrade`/`evaluate`


class Task:
    """A damage task; subclasses implement `_apply(images, seeds)` and declare what they are.

    The class attributes below are the task's knowledge that the rest of the package asks for: a new task
    sets those that differ and is picked up by `degrade`, `evaluate`, `train` and the demo unchanged.
    """

    name = ""
    description = ""  # one line for listings; defaults to the first line of the class docstring
    declared_options: tuple[TaskOption, ...] = ()  # each stored by __init__ as `self._opt_<name>`
    has_mask = False  # `apply` also returns the B×1×H×W mask of the pixels it painted
    has_noise_level = False  # `noise_levels(seeds)` gives each image's σ, for noise-map models
    # The colour holes are painted with, which a blind model trained on the task expects inside a user's mask
    # (None: the damage keeps its own pixels there, as text does).
    hole_colour: ClassVar[tuple[int, int, int] | None] = None
    baselines: tuple[str, ...] = ()  # classical methods scored next to a model: names in evaluate.BASELINES
    eval_crop = 256  # side of the evaluation crops
    eval_crops = 1  # fixed crops per built-in validation photograph at eval_crop (1: one centre crop)
    headline_setting: ClassVar[dict[str, Any]] = {}  # the one eval setting shown where only one fits (demo)
    input_note: str | None = None  # a note on the "damaged input" row of evaluation tables

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "description" not in cls.__dict__:
            cls.description = (cls.__doc__ or "").strip().split("\n")[0]

    def __init__(self, train: bool = False):
        self.train = bool(train)

    @property
    def options(self) -> dict[str, Any]:
        """Options such that `create_task(self.name, train=self.train, **self.options)` rebuilds the task."""
        values = {o.name: getattr(self, "_opt_" + o.name) for o in self.declared_options}
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def eval_settings(cls) -> list[dict[str, Any]]:
        """The option dicts an evaluation reports separately."""
        return [{}]

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}(train={self.train}{opts})"

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None, seeds: Any = None
    ) -> torch.Tensor:
        """Damage a uint8 batch; see `apply`."""
        return self.apply(images, generator=generator, seeds=seeds)[0]

    def apply(
        self, images: torch.Tensor, generator: torch.Generator | None = None, seeds: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Damage a uint8 batch; returns (damaged uint8, bool B×1×H×W mask of painted pixels or None)."""
        x, squeeze = _as_batch(images)
        b = x.shape[0]
        seed_list = self._seeds(b, generator, seeds)
        if b == 0:
            mask = torch.zeros(0, 1, *x.shape[2:], dtype=torch.bool) if self.has_mask else None
            out = x.clone()
        else:
            with one_thread(x.device.type == "cpu"):
                out, mask = self._apply(x, seed_list)
        if squeeze:
            out = out[0]
            mask = mask[0] if mask is not None else None
        return out, mask

    def _seeds(self, b: int, generator: torch.Generator | None, seeds: Any) -> list[int]:
        if seeds is not None:
            if generator is not None:
                raise ValueError("give either seeds or generator, not both")
            if isinstance(seeds, torch.Tensor):
                seeds = seeds.reshape(-1).tolist()
            seed_list = [int(s) for s in seeds]
            if len(seed_list) != b:
                raise ValueError(f"got {len(seed_list)} seeds for {b} images")
            return seed_list
        if generator is not None:
            return torch.randint(0, 2**62, (b,), generator=generator).tolist()
        if self.train:
            return torch.randint(0, 2**62, (b,)).tolist()  # global torch RNG: fresh damage every call
        return [eval_seed(i) for i in range(b)]

    def _apply(self, x: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(seed) & _MASK64))  # negative seeds are fine too


# ----------------------------------------------------------------------------------------------------------
# Tasks


@TASKS.register("noise")
class NoiseTask(Task):
    """Additive white Gaussian noise N(0, σ²) on the 0-255 scale."""

    name = "noise"
    train_range = (0.0, 130.0)
    default_eval_sigma = 50.0
    # How training draws σ from train_range: uniform, or "low": lo + (hi − lo)·u² for u uniform in [0, 1],
    # which puts 44 % of the images below σ = 25 (uniform: 19 %) and keeps the range.
    sigma_distributions = ("uniform", "low")
    declared_options = (
        TaskOption("sigma", float, "standard deviation σ on the 0-255 scale", f"{default_eval_sigma:g}",
                   f"blind: drawn per image from {train_range[0]:g}-{train_range[1]:g}"),
        TaskOption("sigma_dist", str, "how blind training draws σ: uniform, or low (σ = 130·u², more mass at "
                   "low σ)", "uniform", train_only=True),
        TaskOption("unclipped", float, "share of images (0-1) whose noisy values stay unrounded floats beyond "
                   "0-255, as the papers' AWGN protocol adds noise; the rest are clipped 8-bit files", "0",
                   train_only=True),
    )
    baselines = ("bm3d", "opencv-nlmeans")
    has_noise_level = True
    headline_setting = {"sigma": int(default_eval_sigma)}

    def __init__(self, train: bool = False, sigma: float | None = None, sigma_dist: str | None = None,
                 unclipped: float | None = None):
        super().__init__(train)
        if unclipped is not None:
            unclipped = float(unclipped)
            if not 0.0 <= unclipped <= 1.0:
                raise OptionError(f"noise: unclipped is a share of images from 0 to 1, got {unclipped}")
        self._opt_unclipped = unclipped
        self.unclipped = unclipped or 0.0
        if sigma is not None:
            sigma = float(sigma)
            if not math.isfinite(sigma) or sigma < 0:
                raise OptionError(f"noise: sigma must be >= 0, got {sigma}")
        if sigma_dist is not None:
            if sigma_dist not in self.sigma_distributions:
                raise OptionError(f"noise: sigma_dist {sigma_dist!r}: choose one of "
                                 f"{', '.join(self.sigma_distributions)}")
            if sigma is not None:
                raise OptionError("noise: sigma_dist sets how σ is drawn; a fixed sigma draws none, give one of them")
        self._opt_sigma = sigma
        self._opt_sigma_dist = sigma_dist
        self.sigma_dist = sigma_dist or "uniform"
        # The fixed σ (None in training when σ is drawn per image).
        self.sigma: float | None = sigma if sigma is not None else (None if train else self.default_eval_sigma)

    @classmethod
    def eval_settings(cls) -> list[dict[str, Any]]:
        return [{"sigma": 15}, {"sigma": 25}, {"sigma": 50}, {"sigma": 125}]

    def _sigma(self, rng: np.random.Generator) -> float:
        """The σ of one image: the fixed one, else drawn (the first draw of the image's generator)."""
        if self.sigma is not None:
            return self.sigma
        if self.sigma_dist == "low":
            lo, hi = self.train_range
            return lo + (hi - lo) * rng.uniform() ** 2
        return rng.uniform(*self.train_range)

    def noise_levels(self, seeds: list[int]) -> list[float]:
        """Each image's σ (0-255) for these per-image seeds: what `apply` with the same seeds draws."""
        return [float(self._sigma(_rng(s))) for s in seeds]

    def _apply(self, x, seeds):
        b, c, h, w = x.shape
        fields, keep = [], []
        for s in seeds:
            rng = _rng(s)
            sigma = self._sigma(rng)
            fields.append(rng.standard_normal((c, h, w), dtype=np.float32) * np.float32(sigma))
            # Drawn after the noise, so that the pixels of clipped images do not depend on `unclipped`.
            keep.append(bool(self.unclipped) and rng.uniform() < self.unclipped)
        noisy = x.float() + torch.from_numpy(np.stack(fields)).to(x.device)
        if not any(keep):
            return _to_u8(noisy), None
        # A float batch on the 0-255 scale: unclipped images as drawn, the others as their 8-bit files hold them.
        unclipped = torch.tensor(keep, device=x.device).view(b, 1, 1, 1)
        return torch.where(unclipped, noisy, noisy.round().clamp(0, 255)), None


@TASKS.register("pixelate")
class PixelateTask(Task):
    """×factor super-resolution input: bicubic antialiased down-scale, nearest-neighbour up-scale."""

    name = "pixelate"
    default_factor = 8
    declared_options = (TaskOption("factor", int, "down-scaling factor", f"{default_factor}"),)
    baselines = ("bilinear", "bicubic", "lanczos")

    def __init__(self, train: bool = False, factor: int | None = None):
        super().__init__(train)
        if factor is not None:
            if int(factor) != factor or int(factor) < 1:
                raise OptionError(f"pixelate: factor must be a positive integer, got {factor}")
            factor = int(factor)
        self._opt_factor = factor
        self.factor: int = factor if factor is not None else self.default_factor

    def small_size(self, h: int, w: int) -> tuple[int, int]:
        """(H//f, W//f), with a side shorter than the factor reduced to one pixel."""
        return max(1, h // self.factor), max(1, w // self.factor)

    def pixelate_small(self, images: torch.Tensor) -> torch.Tensor:
        """The down-scaled small image, uint8 B×3×(H//f)×(W//f) (or 3×h×w for one image)."""
        x, squeeze = _as_batch(images)
        size = self.small_size(*x.shape[2:])
        if x.shape[0] == 0:
            return torch.zeros(0, 3, *size, dtype=torch.uint8, device=x.device)
        small = _to_u8(F.interpolate(x.float(), size=size, mode="bicubic", antialias=True, align_corners=False))
        return small[0] if squeeze else small

    def _apply(self, x, seeds):
        small = self.pixelate_small(x)
        big = F.interpolate(small.float(), size=tuple(x.shape[2:]), mode="nearest")
        return big.to(torch.uint8), None


def pixelate_small(images: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """The pixelate task's down-scaled small image (uint8 B×3×(H//factor)×(W//factor))."""
    return PixelateTask(factor=factor).pixelate_small(images)


def gaussian_kernel_1d(size: int = 15, sigma: float | None = None) -> np.ndarray:
    """Normalised 1-D Gaussian; σ defaults to OpenCV's 0.3·((size−1)/2 − 1) + 0.8."""
    if sigma is None:
        sigma = 0.3 * ((size - 1) / 2 - 1) + 0.8
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


@TASKS.register("blur")
class BlurTask(Task):
    """Gaussian blur, 15×15 kernel, σ = 2.6, replicated borders."""

    name = "blur"
    baselines = ("wiener", "richardson-lucy")
    size = 15
    sigma = 0.3 * ((15 - 1) / 2 - 1) + 0.8  # = 2.6

    def kernel(self) -> np.ndarray:
        """The 2-D blur kernel (15×15 float64, sums to 1)."""
        g = gaussian_kernel_1d(self.size, self.sigma)
        return np.outer(g, g)

    def _apply(self, x, seeds):
        h, w = x.shape[2:]
        g = gaussian_kernel_1d(self.size, self.sigma).tolist()
        p = self.size // 2
        y = F.pad(x.float(), (p, p, p, p), mode="replicate")
        # Separable kernel as sums of shifted slices: much faster on CPU than a grouped conv2d.
        rows = y[..., :, 0:w] * g[0]
        for k in range(1, self.size):
            rows.add_(y[..., :, k : k + w], alpha=g[k])
        out = rows[..., 0:h, :] * g[0]
        for k in range(1, self.size):
            out.add_(rows[..., k : k + h, :], alpha=g[k])
        return _to_u8(out), None


def jpeg_roundtrip(image_hwc: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode one H×W×3 uint8 image with PIL's JPEG codec (4:2:0, standard tables)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_hwc, "RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


@TASKS.register("jpeg")
class JpegTask(Task):
    """JPEG round trip with the real codec."""

    name = "jpeg"
    train_range = (5, 50)
    default_eval_quality = 10
    declared_options = (
        TaskOption("quality", int, "JPEG quality 1-100", f"{default_eval_quality}",
                   f"random: drawn per image from {train_range[0]}-{train_range[1]}"),
    )
    headline_setting = {"quality": default_eval_quality}
    input_note = "the decoded JPEG"  # the damaged input is what a JPEG decoder shows: the natural baseline

    def __init__(self, train: bool = False, quality: int | None = None):
        super().__init__(train)
        if quality is not None:
            if int(quality) != quality or not 1 <= int(quality) <= 100:
                raise OptionError(f"jpeg: quality must be an integer in 1..100, got {quality}")
            quality = int(quality)
        self._opt_quality = quality
        self.quality: int | None = quality if quality is not None else (None if train else self.default_eval_quality)

    @classmethod
    def eval_settings(cls) -> list[dict[str, Any]]:
        return [{"quality": 10}, {"quality": 5}]

    def _apply(self, x, seeds):
        arr = x.permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(arr)
        lo, hi = self.train_range
        for i, s in enumerate(seeds):
            q = self.quality if self.quality is not None else int(_rng(s).integers(lo, hi + 1))
            out[i] = jpeg_roundtrip(np.ascontiguousarray(arr[i]), q)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(x.device), None


@TASKS.register("camera")
class CameraTask(Task):
    """Real camera noise: unprocessed to raw, Poisson–Gaussian sensor noise, demosaiced, tone-mapped, JPEG."""

    name = "camera"
    declared_options = (
        TaskOption("shot", float, "shot-noise level: variance per unit of linear raw signal (0-1 scale)",
                   f"drawn per image, log-uniform in {camera.SHOT_RANGE[0]:g}-{camera.SHOT_RANGE[1]:g}"),
        TaskOption("read", float, "read-noise variance (linear raw, 0-1 scale)",
                   f"drawn per image: log read = {camera.READ_SLOPE}·log shot + {camera.READ_INTERCEPT} "
                   f"+ N(0, {camera.READ_SPREAD}²)"),
        TaskOption("demosaic", str, f"the Bayer mosaic's demosaicing: {', '.join(camera.DEMOSAICS)} (none: no "
                   "mosaic, independent noise per colour)", f"drawn per image: {' or '.join(camera.DRAWN_DEMOSAICS)}"),
        TaskOption("quality", int, "JPEG quality 1-100, 0 for no JPEG",
                   f"drawn per image: none with probability {1 - camera.JPEG_SHARE:g}, else "
                   f"{camera.QUALITY_RANGE[0]}-{camera.QUALITY_RANGE[1]}"),
    )
    # Classical denoisers with no σ given (a user knows none for a photograph): estimated, or the oracle's best.
    baselines = ("opencv-nlmeans-est", "opencv-nlmeans-oracle", "bm3d-est", "bm3d-oracle")
    headline_setting = {"shot": 0.003}
    input_note = "the camera's noisy photograph"

    def __init__(self, train: bool = False, shot: float | None = None, read: float | None = None,
                 demosaic: str | None = None, quality: int | None = None):
        super().__init__(train)
        if shot is not None and not (math.isfinite(float(shot)) and float(shot) > 0):
            raise OptionError(f"camera: shot must be > 0, got {shot}")
        if read is not None and not (math.isfinite(float(read)) and float(read) >= 0):
            raise OptionError(f"camera: read must be >= 0, got {read}")
        if demosaic is not None and demosaic not in camera.DEMOSAICS:
            raise OptionError(f"camera: demosaic {demosaic!r}: choose one of {', '.join(camera.DEMOSAICS)}")
        if quality is not None and (int(quality) != quality or not 0 <= int(quality) <= 100):
            raise OptionError(f"camera: quality must be an integer in 0..100 (0: no JPEG), got {quality}")
        self._opt_shot = None if shot is None else float(shot)
        self._opt_read = None if read is None else float(read)
        self._opt_demosaic = demosaic
        self._opt_quality = None if quality is None else int(quality)

    @classmethod
    def eval_settings(cls) -> list[dict[str, Any]]:
        return [{"shot": 0.0003}, {"shot": 0.003}]

    def parameters(self, seed: int) -> camera.CameraParameters:
        """The camera of the image with this seed: what `apply` draws for it (the first draws of its generator)."""
        return camera.draw_parameters(_rng(seed), shot=self._opt_shot, read=self._opt_read,
                                      demosaic=self._opt_demosaic, quality=self._opt_quality)

    def _apply(self, x, seeds):
        arr = x.permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(arr)
        for i, s in enumerate(seeds):
            rng = _rng(s)
            p = camera.draw_parameters(rng, shot=self._opt_shot, read=self._opt_read, demosaic=self._opt_demosaic,
                                       quality=self._opt_quality)
            out[i] = camera.simulate(arr[i], p, rng)
            if p.quality:
                out[i] = jpeg_roundtrip(out[i], p.quality)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(x.device), None


def _fill(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint the pixels of a bool B×1×H×W mask magenta; returns (image, mask on the image's device)."""
    mask = mask.to(x.device)
    colour = torch.tensor(MAGENTA, dtype=torch.uint8, device=x.device).view(1, 3, 1, 1)
    return torch.where(mask, colour, x), mask


def _paint(x: torch.Tensor, boxes: list[list[tuple[int, int, int, int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill (top, left, height, width) boxes per image with magenta; returns (image, mask)."""
    b, _, h, w = x.shape
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool)
    for i, image_boxes in enumerate(boxes):
        for top, left, bh, bw in image_boxes:
            mask[i, 0, top : top + bh, left : left + bw] = True
    return _fill(x, mask)


# Classical inpainting, given the true mask: what every task with holes is scored against.
INPAINT_BASELINES = ("opencv-telea", "opencv-ns", "biharmonic")


class _MaskTask(Task):
    """Paints magenta boxes and reports them as a mask (inpainting), scored on 64-px crops."""

    has_mask = True
    hole_colour = MAGENTA
    baselines = INPAINT_BASELINES
    # The research's inpainting protocol: 16 fixed 64-px crops per validation photograph.
    eval_crop = 64
    eval_crops = 16

    def boxes(self, h: int, w: int, seed: int) -> list[tuple[int, int, int, int]]:
        """The (top, left, height, width) magenta boxes for one h×w image and its seed."""
        raise NotImplementedError

    def _apply(self, x, seeds):
        h, w = x.shape[2:]
        return _paint(x, [self.boxes(h, w, s) for s in seeds])


@TASKS.register("squares")
class SquaresTask(_MaskTask):
    """3-4 magenta squares, sides 4-14 px at 64 px (scaled by min(H, W)/64), fully inside the image."""

    name = "squares"

    def boxes(self, h, w, seed):
        rng = _rng(seed)
        m = min(h, w)
        u = m / 64
        lo = max(1, round(4 * u))
        hi = max(lo, min(m, round(14 * u)))
        lo = min(lo, hi)
        out = []
        for _ in range(int(rng.integers(3, 5))):
            side = int(rng.integers(lo, hi + 1))
            top = int(rng.integers(0, h - side + 1))
            left = int(rng.integers(0, w - side + 1))
            out.append((top, left, side, side))
        return out


def _jitter(rng: np.random.Generator, m: int) -> tuple[int, int]:
    j = round(2 * m / 64)
    dy, dx = rng.integers(-j, j + 1, size=2)
    return int(dy), int(dx)


@TASKS.register("block")
class BlockTask(_MaskTask):
    """One centred magenta square of side min(H, W)//2; training jitters it by ±2 px at 64 px."""

    name = "block"

    def boxes(self, h, w, seed):
        m = min(h, w)
        side = max(1, m // 2)
        top, left = (h - side) // 2, (w - side) // 2
        if self.train:
            dy, dx = _jitter(_rng(seed), m)
            top = min(max(top + dy, 0), h - side)
            left = min(max(left + dx, 0), w - side)
        return [(top, left, side, side)]


@TASKS.register("grid")
class GridTask(_MaskTask):
    """3×3 magenta squares of 12/64 side at a 14/64 pitch from 12/64, in the centred min(H,W) square."""

    name = "grid"

    def boxes(self, h, w, seed):
        m = min(h, w)
        u = m / 64
        side = max(1, round(12 * u))
        oy, ox = (h - m) / 2, (w - m) / 2
        dy = dx = 0
        if self.train:
            dy, dx = _jitter(_rng(seed), m)
        out = []
        for r in range(3):
            top = min(max(round(oy + (12 + 14 * r) * u) + dy, 0), h - side)
            for c in range(3):
                left = min(max(round(ox + (12 + 14 * c) * u) + dx, 0), w - side)
                out.append((top, left, side, side))
        return out


@TASKS.register("strokes")
class StrokesTask(_MaskTask):
    """1-3 free-form magenta brush strokes of 2-6 segments, 2-10 px wide at 64 px (DeepFill v2 / LaMa style)."""

    name = "strokes"
    max_coverage = 0.5  # a stroke that would paint more than this fraction of the image is left out

    def stroke_mask(self, h: int, w: int, seed: int) -> np.ndarray:
        """H×W bool: the strokes painted on one h×w image for its seed (the same in training and evaluation)."""
        from PIL import Image, ImageDraw

        rng = _rng(seed)
        m = min(h, w)
        u = m / 64
        thin = max(1, round(2 * u))
        thick = max(thin, round(10 * u))
        mask = np.zeros((h, w), dtype=bool)
        for k in range(int(rng.integers(1, 4))):
            canvas = Image.new("L", (w, h), 0)
            draw = ImageDraw.Draw(canvas)
            x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            start = (min(int(y), h - 1), min(int(x), w - 1))
            angle = float(rng.uniform(0, 2 * math.pi))
            for _ in range(int(rng.integers(2, 7))):
                # A brush turns by up to ±90° per segment and changes width: strokes, not straight bars.
                angle += float(rng.uniform(-math.pi / 2, math.pi / 2))
                length = float(rng.uniform(m / 8, m / 3))
                width = int(rng.integers(thin, thick + 1))
                nx = min(max(x + length * math.cos(angle), 0.0), w - 1.0)
                ny = min(max(y + length * math.sin(angle), 0.0), h - 1.0)
                draw.line([(x, y), (nx, ny)], fill=255, width=width)
                r = width / 2  # round joints and ends, as a brush leaves them
                for cx, cy in ((x, y), (nx, ny)):
                    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
                x, y = nx, ny
            stroke = np.asarray(canvas) > 0
            stroke[start] = True  # a stroke on a tiny image still paints its first pixel
            merged = mask | stroke
            if k > 0 and merged.mean() > self.max_coverage:
                continue
            mask = merged
        return mask

    def _apply(self, x, seeds):
        h, w = x.shape[2:]
        masks = np.stack([self.stroke_mask(h, w, s) for s in seeds])[:, None]
        return _fill(x, torch.from_numpy(masks))


@TASKS.register("gray")
class GrayTask(Task):
    """RGB → luminance Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601), copied to three channels."""

    name = "gray"

    def _apply(self, x, seeds):
        wts = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        y = _to_u8((x.float() * wts).sum(dim=1, keepdim=True))
        return y.expand(-1, 3, -1, -1).contiguous(), None


# Words for the text task: short, common, mixed case and digits, like captions and watermarks.
WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part over new sound take only little work know place year live me back give most very "
    "after thing our just name good sentence man think say great where help through much before line right "
    "too mean old any same tell boy follow came want show also around form three small set put end does "
    "another well large must big even such because turn here why ask went men read need land different home "
    "us move try kind hand picture again change off play spell air away animal house point page letter "
    "mother answer found study still learn should America world Hello Photo COPYRIGHT Sample 2017 ©2024 "
    "PREVIEW draft Lorem ipsum dolor sit amet consectetur adipiscing elit sed eiusmod tempor 42 No.7 OK"
).split()

_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """TrueType fonts for the text task: those shipped inside matplotlib's wheel (no system fonts)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return ()
    ttf = Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf"
    return tuple(str(ttf / f) for f in _FONT_FILES if (ttf / f).is_file())


@functools.lru_cache(maxsize=512)
def _font(index: int, size: int):
    from PIL import ImageFont

    files = font_files()
    if files:
        return ImageFont.truetype(files[index % len(files)], size)
    try:
        return ImageFont.load_default(size=size)  # Pillow's built-in scalable font
    except Exception:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


@TASKS.register("text")
class TextTask(Task):
    """Random words in random fonts, sizes, colours and positions drawn over the image."""

    name = "text"
    has_mask = True  # the pixels the words touch, antialiased edges included
    baselines = INPAINT_BASELINES

    def words(self, h: int, w: int, seed: int) -> list[tuple[str, int, int, tuple[int, int, int], int, int]]:
        """The (word, font index, size, colour, x, y) items drawn on one h×w image."""
        rng = _rng(seed)
        f = math.sqrt(h * w) / 64  # 1 at 64×64
        n = max(1, round(int(rng.integers(2, 6)) * f))
        n_fonts = max(1, len(font_files()))
        items = []
        for _ in range(n):
            word = WORDS[int(rng.integers(len(WORDS)))]
            font = int(rng.integers(n_fonts))
            size = max(3, round(int(rng.integers(8, 17)) * math.sqrt(f)))
            colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
            x = int(rng.integers(-size // 2, max(1, w - size)))
            y = int(rng.integers(-size // 2, max(1, h - size // 2)))
            items.append((word, font, size, colour, x, y))
        return items

    def _apply(self, x, seeds):
        from PIL import Image, ImageDraw

        arr = x.permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(arr)
        b, h, w = arr.shape[:3]
        masks = np.zeros((b, 1, h, w), dtype=bool)
        for i, s in enumerate(seeds):
            im = Image.fromarray(np.ascontiguousarray(arr[i]), "RGB")
            ink = Image.new("L", (w, h), 0)  # the same words drawn in white: where any ink lands
            draw, draw_ink = ImageDraw.Draw(im), ImageDraw.Draw(ink)
            for word, font, size, colour, px, py in self.words(h, w, s):
                draw.text((px, py), word, fill=colour, font=_font(font, size))
                draw_ink.text((px, py), word, fill=255, font=_font(font, size))
            out[i] = np.asarray(im)
            masks[i, 0] = np.asarray(ink) > 0
        damaged = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(x.device)
        return damaged, torch.from_numpy(masks).to(x.device)


@TASKS.register("mixed")
class MixedTask(Task):
    """One or two of the other tasks (default: all nine), chosen and ordered at random per image."""

    name = "mixed"
    default_tasks = ("noise", "pixelate", "blur", "jpeg", "squares", "block", "grid", "gray", "text")
    declared_options = (TaskOption("tasks", str, "comma-separated tasks to draw from", "all"),)

    def __init__(self, train: bool = False, tasks: str | list[str] | tuple[str, ...] | None = None):
        super().__init__(train)
        if tasks is None:
            names = list(self.default_tasks)
            self._opt_tasks = None
        else:
            names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t) for t in tasks]
            names = [t for t in names if t]
            if not names:
                raise OptionError(f"{self.name}: tasks must name at least one task")
            for t in names:
                if t == self.name:
                    raise OptionError(f"{self.name}: cannot contain itself")
                if self.has_mask and not TASKS.get(t).has_mask:  # TASKS.get: ValueError listing valid names
                    raise OptionError(f"{self.name}: task {t!r} has no holes; choose from tasks with a mask")
            self._opt_tasks = ",".join(names)
        self.tasks = [create_task(t, train=train) for t in names]

    def choose(self, seed: int) -> list[int]:
        """Indices into self.tasks applied to one image, in order."""
        rng = _rng(seed)
        k = min(len(self.tasks), int(rng.integers(1, 3)))
        return [int(i) for i in rng.choice(len(self.tasks), size=k, replace=False)]

    def _apply(self, x, seeds):
        out = x.clone()
        mask = torch.zeros(x.shape[0], 1, *x.shape[2:], dtype=torch.bool, device=x.device) if self.has_mask else None
        plans = [self.choose(s) for s in seeds]
        # Step j applies each image's j-th task; images sharing a task go through it as one sub-batch,
        # which gives the same pixels as one image at a time because damage is per-image seeded.
        for j in range(max(len(p) for p in plans)):
            for t in range(len(self.tasks)):
                idx = [i for i, p in enumerate(plans) if len(p) > j and p[j] == t]
                if idx:
                    sub_seeds = [derive_seed(_TAG_MIXED, seeds[i], j) for i in idx]
                    out[idx], painted = self.tasks[t].apply(out[idx], seeds=sub_seeds)
                    if mask is not None:
                        mask[idx] |= painted
        return out, mask


@TASKS.register("inpaint")
class InpaintTask(MixedTask):
    """One hole task per image, drawn at random (squares, block, grid, text, strokes); always with its mask."""

    name = "inpaint"
    has_mask = True
    hole_colour = MAGENTA  # every part but text paints magenta
    default_tasks = ("squares", "block", "grid", "text", "strokes")
    declared_options = (TaskOption("tasks", str, "comma-separated tasks with holes to draw from", "all"),)
    baselines = INPAINT_BASELINES
    eval_crop = 64
    eval_crops = 16

    def choose(self, seed: int) -> list[int]:
        """The index into self.tasks of the one task applied to an image."""
        return [int(_rng(seed).integers(len(self.tasks)))]

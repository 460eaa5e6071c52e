"""How a camera makes noise: the model behind the `camera` damage task.

A clean sRGB photograph is "unprocessed" back to the linear raw signal a sensor would have recorded, the
sensor's noise is added there, and the camera's processing is applied again (Brooks et al., "Unprocessing
Images for Learned Raw Denoising", CVPR 2019; Guo et al., "Toward Convolutional Blind Denoising of Real
Photographs" (CBDNet), CVPR 2019):

1. sRGB → linear: the inverse of a global tone curve (smoothstep) and of a 2.2 gamma;
2. linear sRGB → camera RGB: a colour-correction matrix (CCM), then white-balance and brightness gains
   divided out, so the raw signal is as dim and as green as a sensor's;
3. noise on the raw signal: Poisson shot noise plus Gaussian read noise, variance `shot · signal + read`
   (heteroscedastic: brighter pixels are noisier), on one colour per pixel of a Bayer mosaic;
4. demosaicing (OpenCV's bilinear or edge-aware Bayer conversion) spreads each pixel's noise to its
   neighbours and across the colours;
5. the gains, the CCM, the gamma and the tone curve are applied again, the result is rounded to 8 bits
   (and `pyramidal.damage.CameraTask` may then store it as a JPEG).

Only the noise is demosaiced: the damaged image is `process(raw + D(mosaic + noise) − D(mosaic))`, where D is
the demosaicing, so the photograph's own detail goes through the round trip unchanged (without noise it comes
back exactly, up to rounding). A camera's demosaicing error is part of its ground truth too (real noisy/clean
pairs share it), so a model should learn to remove the noise as demosaicing shapes it, not the error.

Each image's camera is drawn from its own seed (`draw_parameters`). The ranges and their sources are the
constants below. NumPy and OpenCV are imported on first use, so that reading the task's declarations stays
light (`pyramidal --help`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyramidal.errors import OptionError
from pyramidal.lazy import LazyModule

np = LazyModule("numpy")
cv2 = LazyModule("cv2")

# Shot noise: log-uniform over this range, on the linear raw scale 0-1 (Brooks et al. 2019, fitted to the
# Darmstadt Noise Dataset's phones and DSLRs at ISO 100-25600).
SHOT_RANGE = (1e-4, 1.2e-2)
# Read noise: log(read) = READ_SLOPE · log(shot) + READ_INTERCEPT + N(0, READ_SPREAD²) (Brooks et al. 2019: the
# two levels of real sensors lie on this line).
READ_SLOPE, READ_INTERCEPT, READ_SPREAD = 2.18, 1.20, 0.26
# Brightening gain 1/N(0.8, 0.1²) and white-balance gains for red and blue, uniform (Brooks et al. 2019).
BRIGHTNESS_MEAN, BRIGHTNESS_SPREAD = 0.8, 0.1
RED_GAIN_RANGE, BLUE_GAIN_RANGE = (1.9, 2.4), (1.5, 1.9)
# XYZ → camera matrices of four cameras (the Darmstadt Noise Dataset's, as Brooks et al. 2019 give them);
# each image's CCM is a random convex combination of them.
XYZ_TO_CAMERA = (
    ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    ((0.4913, -0.0541, -0.0202), (-0.6130, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    ((0.8380, -0.2630, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.0970, 0.1581, 0.5181)),
)
# Linear sRGB (D65) → XYZ (IEC 61966-2-1).
SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
GAMMA = 2.2
# Bayer layouts, named by their top-left 2×2 block read row by row; each image gets one at random.
CFA_PATTERNS = ("RGGB", "GRBG", "GBRG", "BGGR")
# OpenCV names a Bayer layout by the second row's second and third pixels: RGGB is its "BG".
_OPENCV_BAYER = {"RGGB": "BG", "GRBG": "GB", "GBRG": "GR", "BGGR": "RG"}
# Demosaicing: OpenCV's bilinear and edge-aware ("EA") Bayer conversions; "none" adds independent noise to
# every colour of every pixel (no mosaic). Training draws one of DRAWN_DEMOSAICS per image.
DEMOSAICS = ("bilinear", "ea", "none")
DRAWN_DEMOSAICS = ("bilinear", "ea")
# JPEG after the camera: quality uniform over this range in JPEG_SHARE of the images, none in the others
# (CBDNet compresses its synthetic noise at quality 60-100; phones and cameras store JPEGs at 70-95).
QUALITY_RANGE = (60, 95)
JPEG_SHARE = 0.75
# 16-bit coding of the raw values OpenCV demosaics: [-0.5, 1.5] covers the signal, out-of-gamut colours and
# the noise; a step of 3e-5 is far below the smallest read noise (σ ≈ 8e-5).
_CODE_LOW, _CODE_SPAN = -0.5, 2.0


@dataclass(frozen=True)
class CameraParameters:
    """One image's camera: its noise levels, colour processing, Bayer layout, demosaicing and JPEG quality."""

    shot: float  # shot-noise variance per unit of raw signal (linear, 0-1 scale)
    read: float  # read-noise variance (linear, 0-1 scale)
    rgb_to_camera: tuple[tuple[float, float, float], ...]  # 3×3, rows summing to 1
    gains: tuple[float, float, float]  # red, green, blue: white balance times brightening
    cfa: str  # one of CFA_PATTERNS
    demosaic: str  # one of DEMOSAICS
    quality: int  # JPEG quality, 0 for none


def read_noise_for(shot: float, residual: float = 0.0) -> float:
    """The read-noise variance that goes with a shot-noise level (Brooks et al.'s line, plus a residual)."""
    return math.exp(READ_SLOPE * math.log(shot) + READ_INTERCEPT + residual)


def draw_parameters(rng: np.random.Generator, shot: float | None = None, read: float | None = None,
                    demosaic: str | None = None, quality: int | None = None) -> CameraParameters:
    """One image's camera, drawn from `rng`; the values given are kept instead of drawn.

    Every parameter is drawn, in a fixed order, whether it is kept or not, so fixing one option never changes
    another's draw: the same seed with `quality=0` gives the same noise as with `quality=90`.
    """
    log_shot = rng.uniform(math.log(SHOT_RANGE[0]), math.log(SHOT_RANGE[1]))
    read_residual = rng.normal(0.0, READ_SPREAD)
    weights = rng.uniform(0.0, 1.0, size=len(XYZ_TO_CAMERA))
    brightening = 1.0 / max(rng.normal(BRIGHTNESS_MEAN, BRIGHTNESS_SPREAD), 0.4)  # 0.4: 4σ under the mean
    red, blue = rng.uniform(*RED_GAIN_RANGE), rng.uniform(*BLUE_GAIN_RANGE)
    cfa = CFA_PATTERNS[int(rng.integers(len(CFA_PATTERNS)))]
    drawn_demosaic = DRAWN_DEMOSAICS[int(rng.integers(len(DRAWN_DEMOSAICS)))]
    compress = rng.random() < JPEG_SHARE
    drawn_quality = int(rng.integers(QUALITY_RANGE[0], QUALITY_RANGE[1] + 1))

    shot = float(shot) if shot is not None else math.exp(log_shot)
    read = float(read) if read is not None else read_noise_for(shot, read_residual)
    xyz_to_camera = np.tensordot(weights / weights.sum(), np.array(XYZ_TO_CAMERA), axes=1)
    rgb_to_camera = xyz_to_camera @ np.array(SRGB_TO_XYZ)
    rgb_to_camera /= rgb_to_camera.sum(axis=1, keepdims=True)  # grey stays grey: white balance does the rest
    return CameraParameters(
        shot=shot, read=read,
        rgb_to_camera=tuple(tuple(float(v) for v in row) for row in rgb_to_camera),
        gains=(float(red * brightening), float(brightening), float(blue * brightening)),
        cfa=cfa,
        demosaic=demosaic if demosaic is not None else drawn_demosaic,
        quality=int(quality) if quality is not None else (drawn_quality if compress else 0),
    )


# --------------------------------------------------------------------------- the tone curve and the gamma


def tone(x: np.ndarray) -> np.ndarray:
    """The global tone curve, smoothstep 3x² − 2x³ on [0, 1] (Brooks et al.'s approximation of cameras')."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def untone(y: np.ndarray) -> np.ndarray:
    """The inverse of `tone`: 1/2 − sin(asin(1 − 2y)/3)."""
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * np.clip(y, 0.0, 1.0)) / 3.0)


def to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] → linear light: the tone curve and the gamma undone."""
    return untone(srgb) ** GAMMA


def from_linear(linear: np.ndarray) -> np.ndarray:
    """Linear light → sRGB values in [0, 1]: clipped to [0, 1] (a sensor neither goes below black nor above
    white), then the gamma and the tone curve."""
    return tone(np.clip(linear, 0.0, 1.0) ** (1.0 / GAMMA))


# --------------------------------------------------------------------------- colour


def unprocess(srgb: np.ndarray, p: CameraParameters) -> np.ndarray:
    """H×W×3 sRGB in [0, 1] → the camera's linear raw RGB (gains divided out). `process` inverts it exactly."""
    camera = to_linear(srgb) @ np.array(p.rgb_to_camera).T
    return camera / np.array(p.gains)


def process(raw: np.ndarray, p: CameraParameters) -> np.ndarray:
    """The camera's processing of linear raw RGB (H×W×3): gains, CCM back to sRGB, clipping, gamma, tone."""
    linear = (raw * np.array(p.gains)) @ np.linalg.inv(np.array(p.rgb_to_camera)).T
    return from_linear(linear)


# --------------------------------------------------------------------------- the mosaic and the noise


def cfa_channels(h: int, w: int, cfa: str) -> np.ndarray:
    """H×W int: the colour (0 red, 1 green, 2 blue) each pixel of the Bayer layout `cfa` records."""
    block = np.array(["RGB".index(c) for c in cfa]).reshape(2, 2)
    return np.tile(block, ((h + 1) // 2, (w + 1) // 2))[:h, :w]


def poisson_gaussian(signal: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """The noise a sensor adds to `signal` (linear, 0-1 scale): shot · Poisson(signal / shot) − signal plus
    N(0, read). Its variance is shot · signal + read; a negative signal (out of gamut) gets read noise alone."""
    signal = np.maximum(signal, 0.0)
    shot_noise = shot * rng.poisson(signal / shot) - signal if shot > 0 else np.zeros_like(signal)
    return shot_noise + rng.normal(0.0, math.sqrt(read), size=signal.shape)


def demosaic(mosaic: np.ndarray, cfa: str, method: str) -> np.ndarray:
    """H×W raw Bayer values (about −0.5 to 1.5) → H×W×3 RGB, with OpenCV's bilinear or edge-aware conversion.

    OpenCV demosaics 8- and 16-bit images only: the values are coded on 16 bits over [−0.5, 1.5] and back.
    """
    if method not in ("bilinear", "ea"):
        raise OptionError(f"demosaic must be bilinear or ea, got {method!r}")
    code = getattr(cv2, f"COLOR_Bayer{_OPENCV_BAYER[cfa]}2RGB" + ("_EA" if method == "ea" else ""))
    coded = np.rint(np.clip((mosaic - _CODE_LOW) / _CODE_SPAN, 0.0, 1.0) * 65535).astype(np.uint16)
    return cv2.cvtColor(coded, code).astype(np.float64) / 65535 * _CODE_SPAN + _CODE_LOW


def mosaic_of(raw: np.ndarray, cfa: str) -> np.ndarray:
    """H×W×3 → H×W: the one colour each pixel of the Bayer layout records."""
    h, w = raw.shape[:2]
    return np.take_along_axis(raw, cfa_channels(h, w, cfa)[..., None], axis=2)[..., 0]


def sensor_noise(raw: np.ndarray, p: CameraParameters, rng: np.random.Generator) -> np.ndarray:
    """H×W×3 noise in raw RGB, as the sensor makes it and the demosaicing spreads it."""
    if p.demosaic == "none" or min(raw.shape[:2]) < 2:  # one pixel has no Bayer block to demosaic
        return poisson_gaussian(raw, p.shot, p.read, rng)
    mosaic = mosaic_of(raw, p.cfa)
    noisy = mosaic + poisson_gaussian(mosaic, p.shot, p.read, rng)
    return demosaic(noisy, p.cfa, p.demosaic) - demosaic(mosaic, p.cfa, p.demosaic)


def simulate(image: np.ndarray, p: CameraParameters, rng: np.random.Generator) -> np.ndarray:
    """H×W×3 uint8 sRGB → the same photograph with this camera's noise, uint8, before any JPEG."""
    raw = unprocess(image.astype(np.float64) / 255.0, p)
    noisy = process(raw + sensor_noise(raw, p, rng), p)
    return np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8)

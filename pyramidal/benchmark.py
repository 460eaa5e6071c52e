"""The colour denoising benchmark as the papers run it, on any folder of clean images.

Two protocols, each on the same noise draw:

- `papers`: the clean 8-bit image as floats in [0, 1], plus N(0, (σ/255)²) drawn with NumPy's legacy generator
  seeded with 0 before each image (`np.random.seed(0)` in the FFDNet, DnCNN and DPIR code), **not clipped and
  not rounded**. This is the protocol of the published colour denoising tables (CBSD68, Kodak24).
- `file`: the same noisy image clipped to [0, 1] and rounded to 8 bits, as a user's noisy file holds it.

In both, the model's output is clipped and rounded to 8 bits, and PSNR is computed on RGB over the whole image
against the 8-bit original (no border cropped), then averaged over the images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyramidal.errors import OptionError, PyramidalError
from pyramidal.inference import restore_array
from pyramidal.io import IMAGE_SUFFIXES, read_rgb
from pyramidal.options import RestoreOptions
from pyramidal.pixels import from_model_range

PROTOCOLS = ("papers", "file")
DEFAULT_SIGMAS = (15.0, 25.0, 50.0)
NOISE_SEED = 0

# Published colour denoising PSNRs (dB), papers' protocol, from the colour denoising table of Zhang et al.,
# "Plug-and-Play Image Restoration with Deep Denoiser Prior" (DPIR), TPAMI 2021. Parameters: FFDNet 0.85 M,
# DRUNet 32.6 M. Shown beside our rows, labelled as published; never mixed with what we measure.
PUBLISHED_SOURCE = "published in Zhang et al., DPIR, TPAMI 2021 (colour denoising table)"
PUBLISHED: dict[str, dict[str, dict[int, float]]] = {
    "cbsd68": {
        "CBM3D": {15: 33.52, 25: 30.71, 50: 27.38},
        "DnCNN": {15: 33.90, 25: 31.24, 50: 27.95},
        "FFDNet": {15: 33.87, 25: 31.21, 50: 27.96},
        "DRUNet": {15: 34.30, 25: 31.69, 50: 28.51},
    },
    "kodak24": {
        "CBM3D": {15: 34.28, 25: 32.15, 50: 28.46},
        "DnCNN": {15: 34.60, 25: 32.14, 50: 28.95},
        "FFDNet": {15: 34.63, 25: 32.13, 50: 28.98},
        "DRUNet": {15: 35.31, 25: 32.89, 50: 29.86},
    },
}


def benchmark_images(folder: str | Path) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 H×W×3) for every image file directly in `folder`, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise _folder_error(folder, "no such folder of clean images")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise _folder_error(folder, "no image files in this folder")
    return [(f.name, np.asarray(read_rgb(f))) for f in files]


def _folder_error(folder: str | Path, problem: str) -> OptionError:
    """An error about a set's folder: `folder=...` for Python callers, `--benchmark ...` on the command line."""
    return OptionError(f"folder={str(folder)!r}: {problem}", f"--benchmark {folder}: {problem}")


def awgn(clean: np.ndarray, sigma: float, seed: int = NOISE_SEED) -> np.ndarray:
    """The papers' noisy image: `clean` (uint8) / 255 plus N(0, (σ/255)²), float64, not clipped.

    The noise is what `np.random.seed(seed); np.random.normal(0, sigma / 255, shape)` draws, without touching
    NumPy's global generator.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise PyramidalError(f"sigma {sigma}: must be a finite number >= 0")
    image = np.float32(clean / 255.0)
    return image + np.random.RandomState(seed).normal(0.0, sigma / 255.0, image.shape)


def as_file(noisy: np.ndarray) -> np.ndarray:
    """A noisy float image in [0, 1] as an 8-bit file holds it: clipped and rounded."""
    return np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8)


def psnr_u8(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB of two uint8 images over all pixels and channels (inf when equal)."""
    mse = float(np.mean((reference.astype(np.float64) - image.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def protocol_input(clean: np.ndarray, sigma: float, protocol: str) -> np.ndarray:
    """The noisy float image (H×W×3, 0-1 scale) a protocol gives the denoiser."""
    if protocol not in PROTOCOLS:
        raise PyramidalError(f"protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    noisy = awgn(clean, sigma)
    return noisy if protocol == "papers" else as_file(noisy) / 255.0


# The papers run whole images, in full precision unless asked otherwise.
PAPERS = RestoreOptions(tile=None, device=None, precision="fp32")


def denoise(model: Any, noisy: np.ndarray, options: RestoreOptions = PAPERS) -> np.ndarray:
    """The model's output (uint8 H×W×3) for a noisy float image on the 0-1 scale, whole image (whatever
    `options.tile`), unclipped input."""
    x = torch.from_numpy(np.ascontiguousarray(noisy.transpose(2, 0, 1), dtype=np.float32)).mul_(2.0).sub_(1.0)
    y = restore_array(model, x, options.replace(tile=None))
    return from_model_range(y, np.uint8)


def run_benchmark(model: Any, folders: Sequence[str | Path], sigmas: Sequence[float] = DEFAULT_SIGMAS,
                  protocols: Sequence[str] = PROTOCOLS, options: RestoreOptions = PAPERS, limit: int | None = None,
                  progress: Any = None) -> dict[str, Any]:
    """Mean PSNR of `model` on each folder, σ and protocol; the noisy input's PSNR beside it.

    Args:
        model: a model (nn.Module or prepared), as `pyramidal.inference.restore_array` takes it.
        folders: folders of clean images; each is one benchmark set, named by the folder's name.
        sigmas: noise levels on the 0-255 scale.
        protocols: "papers" (unclipped floats) and/or "file" (clipped, 8-bit).
        options: as for `restore_array` (ensemble: average the 8 flips and rotations); whole images always.
            By default `PAPERS`: fp32, on the model's own device.
        limit: at most this many images per set (for quick looks; the papers use every image).
        progress: a callable(str) told of each set and σ as it starts, or None.

    Returns:
        {"sets": [{"name", "folder", "images", "rows": [{"sigma", "protocol", "psnr", "input_psnr",
        "per_image"}]}], "sigmas", "protocols", "ensemble", "seconds"}.
    """
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise PyramidalError(f"protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    start = time.perf_counter()
    sets = []
    for folder in folders:
        images = benchmark_images(folder)[:limit]
        rows = []
        for sigma in sigmas:
            if progress:
                progress(f"{Path(folder).name}: σ {sigma:g}, {len(images)} images")
            for protocol in protocols:
                ours, noisy_scores = [], []
                for _, clean in images:
                    noisy = protocol_input(clean, float(sigma), protocol)
                    ours.append(psnr_u8(clean, denoise(model, noisy, options)))
                    noisy_scores.append(psnr_u8(clean, as_file(noisy)))
                rows.append({"sigma": float(sigma), "protocol": protocol, "psnr": float(np.mean(ours)),
                             "input_psnr": float(np.mean(noisy_scores)), "per_image": ours})
        sets.append({"name": Path(folder).name.lower(), "folder": Path(folder).name, "images": len(images),
                     "rows": rows})
    return {"sets": sets, "sigmas": [float(s) for s in sigmas], "protocols": list(protocols),
            "ensemble": options.ensemble, "seconds": time.perf_counter() - start}


def _published_cells(set_name: str, sigma: float) -> list[tuple[str, float]]:
    table = PUBLISHED.get(set_name, {})
    return [(method, scores[int(sigma)]) for method, scores in table.items()
            if float(sigma).is_integer() and int(sigma) in scores]


def format_table(result: dict[str, Any], label: str = "ours") -> str:
    """A plain-text table per set: σ, each protocol's PSNR, and the published rows (labelled as published)."""
    lines = []
    for s in result["sets"]:
        lines.append(f"{s['folder']} ({s['images']} images{', 8-fold ensemble' if result['ensemble'] else ''})")
        lines.append(f"  {'σ':>4}  {'protocol':<8}  {'noisy':>6}  {label:>7}   published (papers' protocol)")
        for row in s["rows"]:
            published = "  ".join(f"{m} {v:.2f}" for m, v in _published_cells(s["name"], row["sigma"]))
            published = published if row["protocol"] == "papers" else ""
            lines.append(f"  {row['sigma']:>4g}  {row['protocol']:<8}  {row['input_psnr']:6.2f}  "
                         f"{row['psnr']:7.2f}   {published}")
    return "\n".join(lines)


def format_markdown(result: dict[str, Any], label: str = "ours") -> str:
    """The field's table in Markdown: our measured rows per protocol, then the published rows, never mixed."""
    out = []
    for s in result["sets"]:
        sigmas = sorted({row["sigma"] for row in s["rows"]})
        head = " | ".join(f"σ {sg:g}" for sg in sigmas)
        out += [f"**{s['folder']}** ({s['images']} images)", "", f"| method | {head} |",
                "|---|" + "---:|" * len(sigmas)]
        for protocol in result["protocols"]:
            cells = [next(r for r in s["rows"] if r["sigma"] == sg and r["protocol"] == protocol) for sg in sigmas]
            name = {"papers": "papers' protocol (unclipped)", "file": "file protocol (clipped, 8-bit)"}[protocol]
            out.append(f"| {label}, {name}, measured | " + " | ".join(f"{c['psnr']:.2f}" for c in cells) + " |")
            out.append(f"| noisy input, {name} | " + " | ".join(f"{c['input_psnr']:.2f}" for c in cells) + " |")
        for method in PUBLISHED.get(s["name"], {}):
            values = [dict(_published_cells(s["name"], sg)).get(method) for sg in sigmas]
            out.append(f"| {method}, published | " + " | ".join("–" if v is None else f"{v:.2f}" for v in values)
                       + " |")
        out.append("")
    if any(PUBLISHED.get(s["name"]) for s in result["sets"]):
        out.append(f"Published rows: {PUBLISHED_SOURCE}, papers' protocol.")
    return "\n".join(out) + "\n"

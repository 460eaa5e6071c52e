"""`pyramidal evaluate --pairs DIR`: real noisy/clean pairs, the blind and oracle-σ baselines, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from pyramidal.baselines import BASELINES, ORACLE_SIGMAS, Context, estimated_sigma, nlmeans
from pyramidal.checkpoint import save_weights
from pyramidal.cli import main
from pyramidal.errors import PyramidalError
from pyramidal.evaluate import evaluate
from pyramidal.metrics import psnr
from pyramidal.models import create_model
from pyramidal.options import EVALUATION
from pyramidal.realnoise import PAIR_BASELINES, evaluate_pairs, find_pairs

from helpers import FAST as CPU


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 226, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def noisy_copy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, clean.shape)
    return np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)


@pytest.fixture
def pairs(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i, ext in enumerate(("png", "PNG", "png")):
        clean = smooth_image(48, 64, i)
        Image.fromarray(clean).save(folder / f"cam{i}_scene_mean.{ext}")
        Image.fromarray(noisy_copy(clean, 12.0, i)).save(folder / f"cam{i}_scene_Real.{ext}")
    return folder


@pytest.fixture
def camera_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_weights(create_model("basic21", channels=(4, 8, 8), residual=True).eval(), path, {"task": "camera"})
    return path


def test_pairs_are_found_by_their_suffixes(pairs):
    (pairs / "lonely_real.png").write_bytes((pairs / "cam0_scene_Real.png").read_bytes())
    (pairs / "notes.txt").write_text("not an image")
    found, unmatched = find_pairs(pairs)
    assert [p.name for p in found] == ["cam0_scene", "cam1_scene", "cam2_scene"]
    assert found[1].real.name == "cam1_scene_Real.PNG" and found[1].clean.name == "cam1_scene_mean.PNG"
    assert len(unmatched) == 1 and "lonely_real.png" in unmatched[0] and "lonely_mean" in unmatched[0]


def test_a_folder_without_pairs_is_one_clear_error(tmp_path):
    with pytest.raises(PyramidalError, match="no such folder"):
        find_pairs(tmp_path / "nowhere")
    Image.fromarray(smooth_image(16, 16)).save(tmp_path / "photo.png")
    with pytest.raises(PyramidalError, match=r"no pairs found; a pair is NAME_real\.EXT"):
        find_pairs(tmp_path)


def test_estimated_sigma_of_white_noise():
    clean = np.full((256, 256, 3), 128, np.uint8)
    assert estimated_sigma(noisy_copy(clean, 10.0, 0)) == pytest.approx(10.0, rel=0.1)
    assert estimated_sigma(clean) < 0.5


def test_the_oracle_finds_the_grids_best_sigma():
    clean = smooth_image(64, 64, 5)
    noisy = noisy_copy(clean, 9.0, 5)
    every = [psnr(clean, nlmeans(noisy, s)) for s in ORACLE_SIGMAS]
    chosen = BASELINES.get("opencv-nlmeans-oracle").run(noisy, Context(None, clean, None))
    assert psnr(clean, chosen) == pytest.approx(max(every))
    # and it differs from what σ estimated from the image gives, which no clean image helps
    blind = BASELINES.get("opencv-nlmeans-est").run(noisy, Context(None, clean, None))
    assert np.array_equal(blind, nlmeans(noisy, estimated_sigma(noisy)))


def test_evaluate_pairs_scores_the_input_baselines_and_model(pairs, camera_weights):
    (pairs / "odd_real.png").write_bytes((pairs / "cam0_scene_Real.png").read_bytes())
    Image.fromarray(smooth_image(20, 20)).save(pairs / "odd_mean.png")  # a pair of two sizes: reported, left out
    result = evaluate_pairs(camera_weights, pairs, "camera", baselines="fast",
                            options=EVALUATION.replace(device="cpu", precision="fp32"))
    assert result["image_names"] == ["cam0_scene", "cam1_scene", "cam2_scene"]
    assert any("odd_real.png: 64×48, but odd_mean.png is 20×20" in note for note in result["skipped"])
    rows = {r["method"]: r for r in result["settings"][0]["rows"]}
    want = np.mean([peak_signal_noise_ratio(np.asarray(Image.open(pairs / f"cam{i}_scene_mean.{e}")),
                                            np.asarray(Image.open(pairs / f"cam{i}_scene_Real.{e}")), data_range=255)
                    for i, e in enumerate(("png", "PNG", "png"))])
    assert rows["noisy input"]["psnr"] == pytest.approx(want)
    assert [BASELINES.get(k).name for k in PAIR_BASELINES if BASELINES.get(k).name in rows] == \
        [BASELINES.get(k).name for k in PAIR_BASELINES]
    nlm_oracle = rows[BASELINES.get("opencv-nlmeans-oracle").name]
    assert nlm_oracle["psnr"] > rows["noisy input"]["psnr"] + 2  # σ = 12 white noise: NLM helps a lot
    assert "skipped" in rows[BASELINES.get("bm3d-oracle").name]["note"]  # fast: no CBM3D
    assert rows["model basic21 (camera weights)"]["psnr"] is not None


def test_evaluate_cli_pairs_writes_table_json_and_markdown(pairs, camera_weights, tmp_path, capsys):
    out_json, out_md = tmp_path / "polyu.json", tmp_path / "polyu.md"
    assert main(["evaluate", "--pairs", str(pairs), "--task", "camera", "--weights", str(camera_weights),
                 "--baselines", "fast", "--limit", "2", "--json", str(out_json), "--markdown", str(out_md), *CPU]) == 0
    printed = capsys.readouterr().out
    assert "noisy input" in printed and "oracle σ" in printed
    report = json.loads(out_json.read_text())
    assert report["image_names"] == ["cam0_scene", "cam1_scene"] and report["split"] == "pairs"
    table = out_md.read_text()
    assert "| noisy input |" in table and "| model basic21 (camera weights) |" in table


@pytest.mark.parametrize("extra, message", [
    (["--crop", "64"], "--crop"),
    (["--sigma", "25"], "--sigma"),
    (["--data", "folder:x"], "--data"),
])
def test_evaluate_cli_pairs_refuses_synthetic_flags(pairs, extra, message, capsys):
    assert main(["evaluate", "--pairs", str(pairs), "--task", "noise", "--weights", "none", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "--pairs" in err[0]


def test_evaluate_cli_pairs_missing_folder(tmp_path, capsys):
    assert main(["evaluate", "--pairs", str(tmp_path / "none"), "--task", "noise", "--weights", "none"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_synthetic_camera_evaluation_runs_its_blind_baselines():
    result = evaluate(None, "camera", crop=64, limit=1, baselines="fast", settings=[{"shot": 0.003}])
    rows = {r["method"]: r for r in result["settings"][0]["rows"]}
    est = rows[BASELINES.get("opencv-nlmeans-est").name]
    oracle = rows[BASELINES.get("opencv-nlmeans-oracle").name]
    assert est["psnr"] is not None and oracle["psnr"] >= est["psnr"] - 0.5
    assert oracle["psnr"] > rows["damaged input"]["psnr"]

"""`pyramidal evaluate`: metrics match scikit-image, baselines per task, settings, reports, missing extras."""

import json
import re

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pyramidal.baselines import baselines_for
from pyramidal.checkpoint import load_weights, save_weights
from pyramidal.cli import main
from pyramidal.damage import create_task, eval_seed
from pyramidal.data.sources import load_source
from pyramidal.evaluate import evaluate, format_markdown
from pyramidal.metrics import psnr, ssim
from pyramidal.pixels import eight_bit_to_model

from helpers import FAST as CPU


@pytest.fixture
def pixelate_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_weights(create_tiny(), path, {"task": "pixelate"})
    return path


def create_tiny():
    from pyramidal.models import create_model

    return create_model("basic21", channels=(4, 8, 8), residual=True).eval()


def printed(out: str, method: str) -> tuple[float, float]:
    line = next(line for line in out.splitlines() if line.startswith("  " + method))
    values = re.findall(r"\s(-?\d+\.\d+|inf)", line)
    return float(values[0]), float(values[1])


def test_printed_psnr_matches_direct_computation(tmp_path, pixelate_weights, capsys):
    code = main(["evaluate", "--task", "pixelate", "--weights", str(pixelate_weights), "--crop", "64", "--limit", "1",
                 "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"), *CPU])
    out = capsys.readouterr().out
    assert code == 0
    # The same image, damage and model, computed here without the evaluate module.
    name, clean = load_source("builtin", size=64).eval_images("val", crop=64, limit=1)[0]
    task = create_task("pixelate")
    damaged = task(clean[None], seeds=[eval_seed(0)])
    with torch.no_grad():
        restored = load_weights(pixelate_weights)(eight_bit_to_model(damaged))
    restored = ((restored[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    ref = clean.permute(1, 2, 0).numpy()
    dam = damaged[0].permute(1, 2, 0).numpy()
    res = restored.permute(1, 2, 0).numpy()
    small = task.pixelate_small(clean).permute(1, 2, 0).numpy()
    bicubic = cv2.resize(np.ascontiguousarray(small), (64, 64), interpolation=cv2.INTER_CUBIC)
    for method, image in (("damaged input", dam), ("model basic21", res), ("bicubic up-scaling", bicubic)):
        want_psnr = peak_signal_noise_ratio(ref, image, data_range=255)
        want_ssim = structural_similarity(ref, image, channel_axis=-1, data_range=255)
        got_psnr, got_ssim = printed(out, method)
        assert got_psnr == pytest.approx(want_psnr, abs=0.006), method
        assert got_ssim == pytest.approx(want_ssim, abs=6e-5), method
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["image_names"] == [name]
    rows = {r["method"]: r for r in report["settings"][0]["rows"]}
    assert rows["model basic21"]["psnr"] == pytest.approx(peak_signal_noise_ratio(ref, res, data_range=255))
    assert "| bicubic up-scaling |" in (tmp_path / "r.md").read_text()


def test_noise_reports_each_sigma_and_missing_extra(monkeypatch):
    import pyramidal.evaluate as ev

    real = ev.module_available
    monkeypatch.setattr(ev, "module_available", lambda name: False if name == "bm3d" else real(name))
    result = evaluate(None, "noise", crop=32, limit=1, baselines="all")
    assert [s["options"] for s in result["settings"]] == [{"sigma": 15}, {"sigma": 25}, {"sigma": 50}, {"sigma": 125}]
    for setting in result["settings"]:
        rows = {r["method"]: r for r in setting["rows"]}
        bm3d = rows["BM3D (CBM3D, true σ)"]
        assert bm3d["psnr"] is None and "pip install -e .[baselines]" in bm3d["note"]
        assert rows["OpenCV non-local means (true σ)"]["psnr"] > rows["damaged input"]["psnr"]
    psnrs = [s["rows"][0]["psnr"] for s in result["settings"]]
    assert psnrs[0] > psnrs[1] > psnrs[2]  # more noise, lower PSNR of the damaged input
    assert "not installed" in format_markdown(result)


def test_bm3d_baseline_runs_when_installed():
    pytest.importorskip("bm3d")
    result = evaluate(None, "noise", crop=32, limit=1, settings=[{"sigma": 50}], baselines="all")
    rows = {r["method"]: r for r in result["settings"][0]["rows"]}
    assert rows["BM3D (CBM3D, true σ)"]["psnr"] > rows["damaged input"]["psnr"] + 5


@pytest.mark.parametrize("task", ["blur", "squares", "grid"])
def test_classical_baselines_beat_the_damaged_input(task):
    result = evaluate(None, task, crop=64, crops=2, limit=2, baselines="fast")
    rows = result["settings"][0]["rows"]
    assert len(result["image_names"]) == 2
    assert rows[0]["method"] == "damaged input"
    assert len(rows) == 1 + len(baselines_for(task))
    for row in rows[1:]:
        assert row["psnr"] > rows[0]["psnr"] + 1, row["method"]


def test_ensemble_row_and_figures(tmp_path, pixelate_weights, capsys):
    code = main(["evaluate", "--task", "jpeg", "--quality", "10", "--weights", str(pixelate_weights), "--crop", "48",
                 "--limit", "2", "--ensemble", "--figures", str(tmp_path / "figs"), *CPU])
    out = capsys.readouterr().out
    assert code == 0
    assert "self-ensemble" in out and "quality=10" in out and "quality=5" not in out
    assert (tmp_path / "figs" / "jpeg_quality10.png").stat().st_size > 1000
    assert f"wrote {tmp_path / 'figs' / 'jpeg_quality10.png'}" in out


def test_option_for_another_task_is_refused(pixelate_weights, capsys):
    assert main(["evaluate", "--task", "blur", "--sigma", "25", "--weights", str(pixelate_weights), *CPU]) == 2
    assert "pyramidal evaluate: error: --sigma applies to --task noise" in capsys.readouterr().err


def test_every_task_names_registered_baselines():
    from pyramidal.baselines import BASELINES
    from pyramidal.damage import TASKS

    used = {name for task in TASKS for name in TASKS.get(task).baselines}
    assert used == set(BASELINES.names())  # each registered, and none left unused
    assert [b.name for b in baselines_for("noise")] == ["BM3D (CBM3D, true σ)", "OpenCV non-local means (true σ)"]
    assert baselines_for("jpeg") == [] and baselines_for("squares") == baselines_for("grid")


def test_metric_helpers_accept_both_layouts():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 20, 20), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-5, 6, a.shape), 0, 255).astype(np.uint8)
    hwc = (a.transpose(1, 2, 0), b.transpose(1, 2, 0))
    assert psnr(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(psnr(*hwc))
    assert ssim(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(ssim(*hwc))
    assert psnr(hwc[0], hwc[0]) == float("inf")

"""The papers' colour denoising protocol (`evaluate --benchmark`): the noise, the clipping, the PSNR, the table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pyramidal import benchmark
from pyramidal.cli import main


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


def test_the_noise_is_numpys_seed_0_draw_and_the_same_each_time():
    clean = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    state = np.random.get_state()
    try:
        np.random.seed(0)  # what the FFDNet / DPIR test scripts do before each image
        expected = np.float32(clean / 255.0) + np.random.normal(0, 25 / 255.0, clean.shape)
    finally:
        np.random.set_state(state)
    noisy = benchmark.awgn(clean, 25)
    assert np.array_equal(noisy, expected)
    assert np.array_equal(benchmark.awgn(clean, 25), noisy)
    assert not np.array_equal(benchmark.awgn(clean, 25, seed=1), noisy)


def test_the_papers_protocol_is_not_clipped_and_the_file_protocol_is():
    black_white = np.zeros((16, 16, 3), np.uint8)
    black_white[:, 8:] = 255
    papers = benchmark.protocol_input(black_white, 50, "papers")
    assert papers.min() < 0 and papers.max() > 1  # noise below black and above white is kept
    file = benchmark.protocol_input(black_white, 50, "file")
    assert file.min() == 0 and file.max() == 1
    assert np.array_equal(file * 255, np.rint(file * 255))  # 8-bit values
    assert np.array_equal(benchmark.as_file(papers), np.clip(np.rint(papers * 255), 0, 255).astype(np.uint8))


def test_psnr_matches_a_hand_computation():
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 12  # one error of 12 over 12 values: MSE = 144 / 12 = 12
    assert benchmark.psnr_u8(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 12))
    assert benchmark.psnr_u8(a, a) == math.inf


def test_an_identity_model_scores_what_the_noisy_input_scores(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(30, 220, (24, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    result = benchmark.run_benchmark(Identity(), [tmp_path], sigmas=[15, 50],
                                     options=benchmark.PAPERS.replace(device="cpu"))
    rows = result["sets"][0]["rows"]
    assert [(r["sigma"], r["protocol"]) for r in rows] == [(15, "papers"), (15, "file"), (50, "papers"),
                                                           (50, "file")]
    for row in rows:  # clipping and rounding the unclipped input is what the identity's output gets
        assert row["psnr"] == pytest.approx(row["input_psnr"], abs=1e-9)
        assert len(row["per_image"]) == 2
    assert rows[0]["psnr"] > rows[2]["psnr"]


def test_the_markdown_never_mixes_measured_and_published_rows(tmp_path):
    folder = tmp_path / "CBSD68"
    folder.mkdir()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(folder / "a.png")
    text = benchmark.format_markdown(benchmark.run_benchmark(Identity(), [folder], sigmas=[25],
                                                             options=benchmark.PAPERS.replace(device="cpu")))
    assert "| CBM3D, published | 30.71 |" in text and "| FFDNet, published | 31.21 |" in text
    assert "papers' protocol (unclipped), measured" in text and "DPIR" in text


def test_evaluate_benchmark_writes_json_and_markdown(tmp_path, weights, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(folder / "x.png")
    out = tmp_path / "out"
    code = main(["evaluate", "--benchmark", str(folder), "--weights", str(weights), "--sigmas", "25",
                 "--json", str(out / "b.json"), "--markdown", str(out / "b.md"), "--device", "cpu"])
    assert code == 0
    result = json.loads((out / "b.json").read_text())
    assert result["precision"] == "fp32" and [r["protocol"] for r in result["sets"][0]["rows"]] == ["papers", "file"]
    assert "file protocol (clipped, 8-bit), measured" in (out / "b.md").read_text()
    assert "papers" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--benchmark", "{tmp}/missing"], "no such folder of clean images"),
    (["--benchmark", "{tmp}", "--sigmas", "x"], "--sigmas"),
    (["--benchmark", "{tmp}", "--task", "jpeg"], "scores noise weights"),
    (["--benchmark", "{tmp}", "--weights", "none"], "scores a model"),
    ([], "--task is required"),
])
def test_evaluate_benchmark_refuses_bad_input_in_one_line(tmp_path, capsys, argv, message):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["evaluate", *[a.replace("{tmp}", str(tmp_path)) for a in argv]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1

"""`pyramidal bench`: the CI smoke run works and reports sane values (no timing assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from pyramidal.cli import main

KEYS = ("train_images_per_s", "infer_images_per_s", "gflop_per_image", "peak_memory_mb", "precision")


def test_bench_smoke_json_cli():
    """The exact command CI runs, in a fresh process (the allocator tuning is process-wide)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "pyramidal", "bench", "--smoke", "--json", "-", "--reference", "--tasks", "noise"],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout  # one JSON object, nothing else on stdout
    result = json.loads(lines[0])
    for key in KEYS:
        assert key in result, key
    for key in ("train_images_per_s", "infer_images_per_s", "gflop_per_image", "peak_memory_mb",
                "train_gflop_per_image", "matmul_peak_gflop_per_s", "train_gflop_per_s",
                "reference_train_images_per_s", "train_speedup", "infer_speedup"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["precision"] in ("fp32", "bf16", "fp16")
    assert result["model"] == "pyramidal44"
    # A training step costs about 3 forward passes (backward: input and weight gradients).
    assert 2.0 < result["train_gflop_per_image"] / result["gflop_per_image"] < 3.5
    assert result["data_pairs_per_s"]["noise"] > 0
    assert result["notes"] == []
    assert result["allocator_tuned"] == sys.platform.startswith("linux")  # the speed default


def test_bench_memory_efficient_keeps_the_default_allocator():
    """As `pyramidal train` does: a memory-efficient run's RSS must show what the step needs, not a kept heap."""
    proc = subprocess.run(
        [sys.executable, "-m", "pyramidal", "bench", "--smoke", "--json", "-", "--memory-efficient", "--mode", "train",
         "--no-data"], capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["memory_efficient"] and result["allocator_tuned"] is False


def test_bench_smoke_in_process_fp32_memory_efficient(capsys):
    assert main(["bench", "--smoke", "--precision", "fp32", "--no-channels-last", "--memory-efficient",
                 "--mode", "train", "--no-data", "--no-tune-allocator", "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["precision"] == "fp32" and result["memory_efficient"] and not result["channels_last"]
    assert "infer_images_per_s" not in result and result["train_images_per_s"] > 0
    assert not result["allocator_tuned"]


def test_bench_human_report(capsys):
    assert main(["bench", "--smoke", "--mode", "infer", "--no-data", "--no-tune-allocator"]) == 0
    out = capsys.readouterr().out
    assert "inference:" in out and "GFLOP" in out and "training:" not in out


@pytest.mark.parametrize("argv, message", [
    (["--memory-efficient", "--model", "basic21"], "has no dense blocks"),
    (["--precision", "fp64"], "--precision"),
    (["--steps", "0"], "--steps"),
    (["--model", "nosuchmodel"], "nosuchmodel"),
])
def test_bench_user_errors(argv, message, capsys):
    assert main(["bench", "--smoke", "--no-data", "--no-tune-allocator", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyramidal bench: error:") and message in err


def test_reference_missing_is_a_note(tmp_path, capsys):
    assert main(["bench", "--smoke", "--no-data", "--no-tune-allocator", "--mode", "infer", "--reference",
                 "--reference-file", str(tmp_path / "absent.py"), "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert any("plain reference not found" in n for n in result["notes"])
    assert "infer_speedup" not in result


def test_reference_matches_package_model():
    """The plain reference is the same function as the package model (same weights, same outputs)."""
    import torch

    from pyramidal.bench.run import load_reference_module
    from pyramidal.models import create_model

    plain = load_reference_module()
    model = create_model("pyramidal457", m=8, growth=4).eval()
    ref = plain.from_config(model.config).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    with pytest.raises(ValueError, match="only builds"):
        plain.from_config(create_model("plain103").config)
    # The built-in weights' architecture is residual: the correction is added to the input, then clamped.
    builtin = create_model("pyramidal23456", m=8, growth=4).eval()
    ref = plain.from_config(builtin.config).eval()
    ref.load_state_dict(builtin.state_dict())
    with torch.no_grad():
        assert torch.equal(builtin(x), ref(x))


def test_prepare_for_inference_fp32_matches_eval_model():
    import torch

    from pyramidal.inference.model import prepare_for_inference
    from pyramidal.models import create_model

    torch.manual_seed(0)
    model = create_model("pyramidal44", m=8, growth=4)
    x = torch.rand(2, 3, 20, 12) * 2 - 1
    with torch.no_grad():
        expected = model.eval()(x)
    fast = prepare_for_inference(model, "cpu", "fp32")
    out = fast(x)
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert set(fast.state_dict()) == {"model." + k for k in model.state_dict()}
    bf16 = prepare_for_inference(model, "cpu", "bf16")(x)
    assert bf16.dtype == torch.float32 and (bf16 - expected).abs().max() < 0.1


def test_bench_restore_smoke_runs_the_restore_path(monkeypatch, capsys):
    """`--mode restore --smoke` times `inference.restore_files` itself, with restore's default tiling."""
    import pyramidal.inference.files as files
    from pyramidal.inference.model import InferenceModel
    from pyramidal.inference.tiling import tile_layout
    from pyramidal.options import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE

    calls = []
    real = files.restore_files

    def spy(model, inputs, outdir, **options):
        calls.append((model, options))
        return real(model, inputs, outdir, **options)

    monkeypatch.setattr(files, "restore_files", spy)
    assert main(["bench", "--mode", "restore", "--smoke", "--task", "noise", "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(calls) == result["warmup"] + result["steps"] == 3
    model, options = calls[0]
    assert isinstance(model, InferenceModel) and options == {"overwrite": True}
    assert result["model"] == "pyramidal23456" and result["weights"] == "builtin" and result["task"] == "noise"
    w, h = result["restore_width"], result["restore_height"]
    assert abs(w * h / 1e6 - 0.05) < 0.005 and abs(w / h - 4 / 3) < 0.02
    tiling = (result["restore_tile"], result["restore_overlap"], result["restore_tiles_per_pass"])
    assert tiling == (DEFAULT_TILE, DEFAULT_OVERLAP, DEFAULT_BATCH_SIZE)  # restore's own defaults
    (th, ys), (tw, xs) = tile_layout(h, DEFAULT_TILE, 32, 16), tile_layout(w, DEFAULT_TILE, 32, 16)  # 4 levels
    assert result["restore_tiles"] == len(ys) * len(xs) and result["restore_tile_size"] == [th, tw]
    for key in ("restore_s", "restore_mp_per_s", "restore_gflop_per_s", "restore_peak_fraction",
                "restore_matmul_gflop_per_s", "restore_io_s"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["restore_mp_per_s"] == pytest.approx(result["restore_megapixels"] / result["restore_s"])
    if sys.platform.startswith("linux"):
        assert result["restore_peak_memory_mb"] > 0


def test_bench_restore_options_and_report(capsys):
    assert main(["bench", "--mode", "restore", "--smoke", "--model", "pyramidal44", "--megapixels", "0.02",
                 "--tile", "64", "--overlap", "8", "--batch-size", "3", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "random weights" in out and "tiles 64 px, overlap 8, 3 per pass" in out and "MP/s" in out
    assert out.startswith("machine: ") and "AVX512-BF16" in out and "AMX" in out


def test_machine_kind_reads_the_cpu_flags():
    import torch

    from pyramidal.bench.measure import describe_machine, machine_kind

    kind = machine_kind()
    assert kind["threads"] == torch.get_num_threads() and kind["cores"] == os.cpu_count()
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        assert kind["amx"] is None and kind["avx512_bf16"] is None
    else:
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
        assert kind["avx512_bf16"] == ("avx512_bf16" in flags) and kind["amx"] == ("amx_tile" in flags)
    assert f"{kind['threads']} torch threads" in describe_machine(kind)


@pytest.mark.parametrize("argv, message", [
    (["--mode", "train", "--weights", "builtin"], "--weights: only for --mode restore"),
    (["--mode", "restore", "--weights", "builtin", "--task", "nosuchtask"], "nosuchtask"),
    (["--mode", "restore", "--megapixels", "0"], "--megapixels"),
    (["--mode", "restore", "--tile", "64", "--overlap", "64"], "--overlap"),
])
def test_bench_restore_user_errors(argv, message, capsys):
    try:
        code = main(["bench", "--smoke", "--no-data", *argv])
    except SystemExit as exc:  # argparse's own checks exit
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("pyramidal bench: error:") and message in err


@pytest.mark.parametrize("option", ["mask_input=true", "noise_map=true"])
def test_bench_and_summary_feed_the_extra_input_channel(option, capsys):
    """A mask-conditioned or noise-map model is timed and counted on the input it takes (4 channels)."""
    from pyramidal.models import create_model
    from pyramidal.models.summary import forward_flops

    assert main(["bench", "--smoke", "--precision", "fp32", "--mode", "both", "--no-data", "--model-option", option,
                 "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["train_images_per_s"] > 0 and result["infer_images_per_s"] > 0
    key, _ = option.split("=")
    assert forward_flops(create_model("pyramidal44", m=8, growth=4, **{key: True}), size=32) > \
        forward_flops(create_model("pyramidal44", m=8, growth=4), size=32)  # the stem sees 4 channels


def test_bench_sweep_times_each_batch(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    assert main(["bench", "--smoke", "--sweep", "1,3", "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "sweep" and result["model"] == "pyramidal44"
    assert [row["batch_size"] for row in result["rows"]] == [1, 3]
    for row in result["rows"]:
        assert row["train_images_per_s"] > 0 and 0 < row["train_peak_fraction"] < 1
    table = capsys.readouterr().out
    assert "of peak" in table and len([line for line in table.splitlines() if line.split()[:1] in (["1"], ["3"])]) == 2


@pytest.mark.parametrize("argv, message", [(["--sweep", "64,x"], "--sweep 64,x: give batch sizes"),
                                           (["--sweep", "8", "--mode", "restore"], "--sweep times training")])
def test_bench_sweep_user_errors(argv, message, capsys):
    assert main(["bench", "--smoke", *argv]) != 0
    assert message in capsys.readouterr().err

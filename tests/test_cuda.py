"""The CUDA paths: AMP steps, channels_last, memory-efficient backward, restore, nccl with SyncBatchNorm, resume.

Every test is marked `cuda` and skips without a GPU, so CI only collects them; `pytest -m cuda` runs them
on a lent GPU (scripts/gpu-campaign.sh all, docs/gpu-campaign.md). Training goes through the `pyramidal`
CLI, in this process where it can (no start-up per test), so the tests cover the code users run. The
argument lists are module constants: tests/test_gpu_campaign.py parses them with today's CLI on the CPU,
so a renamed flag fails in CI rather than on the next GPU.
"""

from __future__ import annotations

import copy
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyramidal.checkpoint import load_checkpoint
from pyramidal.cli import main
from pyramidal.models import create_model

from helpers import REPO

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m cuda on one)")]


# A tiny dense pyramid on 32-px squares; model options as --model-option (torchrun's parser takes `--m`).
TRAIN_ARGS = ["train", "--task", "squares", "--model", "pyramidal44", "--model-option", "m=8",
              "--model-option", "growth=4", "--data", "builtin", "--size", "32", "--batch-size", "8",
              "--patches-per-epoch", "48", "--val-images", "8", "--log-images", "0", "--no-progress", "--quiet",
              "--device", "cuda"]
RESTORE_ARGS = ["restore", "--task", "noise", "--tile", "64", "--overlap", "16"]


def _train(out: Path, *args: str) -> Path:
    """`pyramidal train` in this process; returns the run folder."""
    assert main([*TRAIN_ARGS, "--out", str(out), *args]) == 0
    return _run_dir(out)


def _run_dir(out: Path) -> Path:
    runs = [p for p in out.glob("*/*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _optimizer_steps(ckpt: dict) -> list[float]:
    return [float(s["step"]) for s in ckpt["optimizer"]["state"].values()]


def _all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.fixture
def exact_cuda():
    """fp32 convolutions and matmuls without TF32, and deterministic cuDNN algorithms, for comparisons."""
    cudnn = torch.backends.cudnn
    saved = cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark, torch.get_float32_matmul_precision()
    cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = False, True, False
    torch.set_float32_matmul_precision("highest")
    yield
    cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved[:3]
    torch.set_float32_matmul_precision(saved[3])


# ----------------------------------------------------------------------------------------------------------
# Mixed precision


def test_bf16_amp_training_step(tmp_path: Path):
    run_dir = _train(tmp_path, "--precision", "bf16", "--steps", "3")
    ckpt = load_checkpoint(run_dir / "last.ckpt")
    assert ckpt["step"] == 3 and ckpt["config"]["precision"] == "bf16"
    assert ckpt["scaler"] is None  # bf16 needs no loss scaling
    assert _optimizer_steps(ckpt) and all(s == 3 for s in _optimizer_steps(ckpt))
    assert _all_finite(ckpt["model"])
    moments = [s["exp_avg"] for s in ckpt["optimizer"]["state"].values()]
    assert all(torch.isfinite(m).all() for m in moments) and any(m.abs().sum() > 0 for m in moments)
    assert (run_dir / "best.safetensors").exists()


def test_fp16_amp_steps_with_grad_scaler_and_clipping(tmp_path: Path):
    # Clipping makes the scaler unscale the gradients first; overflowing steps are skipped, not applied.
    run_dir = _train(tmp_path, "--precision", "fp16", "--clip-grad", "1.0", "--steps", "8")
    ckpt = load_checkpoint(run_dir / "last.ckpt")
    assert ckpt["step"] == 8
    scaler = ckpt["scaler"]
    assert scaler is not None and 0 < scaler["scale"] <= 2.0**16
    steps = _optimizer_steps(ckpt)
    assert steps and 1 <= min(steps) <= 8, "the scaler skipped every step"
    assert _all_finite(ckpt["model"])
    # The scaler's state comes back on resume.
    assert main(["train", "--resume", str(run_dir), "--steps", "10", "--quiet"]) == 0
    resumed = load_checkpoint(run_dir / "last.ckpt")
    assert resumed["step"] == 10 and resumed["scaler"] is not None


# ----------------------------------------------------------------------------------------------------------
# Model paths on the GPU


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def test_channels_last_matches_nchw_in_bf16():
    """The built-in architecture in NHWC gives NCHW's outputs and gradients, and stays NHWC throughout."""
    torch.manual_seed(0)
    nchw = create_model("pyramidal23456", dropout=0.0).cuda().train()
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 64, 48, device="cuda") * 2 - 1
    target = torch.rand_like(x) * 2 - 1
    outs = []
    for model, inp in ((nchw, x), (nhwc, x.contiguous(memory_format=torch.channels_last))):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(inp)
        torch.nn.functional.mse_loss(out.float(), target).backward()
        outs.append(out.detach())
    assert outs[1].is_contiguous(memory_format=torch.channels_last), "an op fell back to NCHW"
    # bf16 rounds each layer's output; other kernels for NHWC round differently, a wrong layout by ~100 %.
    assert _relative_error(outs[1], outs[0]) < 3e-2
    grads_nchw, grads_nhwc = _grads(nchw), _grads(nhwc)
    assert grads_nchw.keys() == grads_nhwc.keys()
    total = _relative_error(torch.cat([g.flatten() for g in grads_nhwc.values()]),
                            torch.cat([g.flatten() for g in grads_nchw.values()]))
    assert total < 1e-1


@pytest.mark.parametrize("down", ["maxpool", "strided"])
def test_memory_efficient_backward_equals_plain_fp32(exact_cuda, down):
    """As tests/test_memory_efficient.py on the CPU: dropout masks replay on the GPU's RNG too."""
    torch.manual_seed(0)
    options = dict(m=8, growth=4, dropout=0.2, down=down)
    plain = create_model("pyramidal457", **options).cuda().train()
    efficient = create_model("pyramidal457", **options, memory_efficient=True).cuda().train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 24, 20, device="cuda") * 2 - 1
    results = []
    for model in (plain, efficient):
        torch.manual_seed(5)
        out = model(x)
        torch.nn.functional.mse_loss(out, x).backward()
        results.append(out.detach())
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)
    grads_plain = _grads(plain)
    for name, grad in _grads(efficient).items():
        torch.testing.assert_close(grad, grads_plain[name], rtol=1e-4, atol=1e-6, msg=name)
    buffers_plain = dict(plain.named_buffers())
    for name, buf in efficient.named_buffers():  # BN statistics updated once, not again in the recomputation
        torch.testing.assert_close(buf, buffers_plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_memory_efficient_backward_equals_plain_bf16_channels_last():
    """The training configuration of the built-in weights: bf16 autocast, NHWC, dropout."""
    torch.manual_seed(0)
    plain = create_model("pyramidal23456").cuda().to(memory_format=torch.channels_last).train()
    efficient = create_model("pyramidal23456", memory_efficient=True).cuda().to(memory_format=torch.channels_last)
    efficient.load_state_dict(plain.state_dict())
    efficient.train()
    x = (torch.rand(4, 3, 64, 64, device="cuda") * 2 - 1).contiguous(memory_format=torch.channels_last)
    outs = []
    for model in (plain, efficient):
        torch.manual_seed(7)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
        torch.nn.functional.mse_loss(out.float(), x).backward()
        outs.append(out.detach())
    assert _relative_error(outs[1], outs[0]) < 1e-2
    grads_plain, grads_eff = _grads(plain), _grads(efficient)
    assert grads_plain.keys() == grads_eff.keys()
    total = _relative_error(torch.cat([g.flatten() for g in grads_eff.values()]),
                            torch.cat([g.flatten() for g in grads_plain.values()]))
    assert total < 2e-2


def test_peak_memory_is_measured_on_cuda():
    """`pyramidal bench` reads CUDA's allocator statistics and its own matmul peak."""
    from pyramidal.bench.config import BenchConfig
    from pyramidal.bench.run import run_bench

    config = BenchConfig(model="pyramidal23456", batch_size=16, steps=3, warmup=1, device="cuda", precision="bf16",
                         data=False, matmul_seconds=0.3)
    result = run_bench(config)
    assert result["device"].startswith("cuda")
    assert result["train_peak_memory_mb"] > 0 and result["infer_peak_memory_mb"] > 0
    assert result["matmul_peak_gflop_per_s"] > 1000  # any GPU of this decade does a TFLOP/s in bf16
    assert 0 < result["train_peak_fraction"] < 1 and 0 < result["infer_peak_fraction"] < 1


# ----------------------------------------------------------------------------------------------------------
# Restore


def _test_image(path: Path) -> None:
    """A smooth colour image with texture, 100×76: odd-sized tiles and padding are exercised."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:76, 0:100]
    base = np.stack([np.sin(xx / 9.0), np.cos(yy / 7.0), np.sin((xx + yy) / 13.0)], axis=-1)
    noisy = (base * 0.4 + 0.5) * 255 + rng.normal(0, 25, base.shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path)


def _restored(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("*.png"))
    assert len(files) == 1, files
    return np.asarray(Image.open(files[0]).convert("RGB")).astype(np.float64)


def test_restore_on_cuda_matches_cpu_fp32(tmp_path: Path, exact_cuda):
    image = tmp_path / "in.png"
    _test_image(image)
    outputs = {}
    for name, device, precision in (("cpu", "cpu", "fp32"), ("cuda32", "cuda", "fp32"), ("cuda", "cuda", "auto")):
        folder = tmp_path / name
        assert main([*RESTORE_ARGS, str(image), "-o", str(folder), "--device", device, "--precision", precision]) == 0
        outputs[name] = _restored(folder)
    reference = outputs["cpu"]
    assert outputs["cuda32"].shape == reference.shape == (76, 100, 3)
    # fp32 on both: rounding to 8 bits may differ by one level here and there.
    assert np.abs(outputs["cuda32"] - reference).max() <= 2
    # bf16 (auto on any recent GPU): close to the fp32 result, as PSNR.
    mse = np.mean((outputs["cuda"] - reference) ** 2)
    assert mse == 0 or 10 * np.log10(255**2 / mse) > 35


# ----------------------------------------------------------------------------------------------------------
# Distributed


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_torchrun_one_process_nccl_sync_bn(tmp_path: Path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           "-m", "pyramidal", *TRAIN_ARGS, "--steps", "4", "--sync-bn", "--precision", "bf16", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ckpt = load_checkpoint(_run_dir(out) / "last.ckpt")
    assert ckpt["step"] == 4 and ckpt["world_size"] == 1
    assert ckpt["config"]["sync_bn"] is True and _all_finite(ckpt["model"])


def test_ddp_over_nccl_with_sync_batchnorm_matches_one_gpu(tmp_path: Path):
    """DDP (nccl) around the SyncBatchNorm-converted model takes the plain model's steps.

    One process: what a single GPU can check. DDP's reducer still all-reduces every bucket through nccl
    and checks across two steps that every parameter received a gradient.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_nccl_available():
        pytest.fail("this torch build has no nccl")
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = create_model("pyramidal44", m=8, growth=4, dropout=0.0).cuda().to(memory_format=torch.channels_last)
        synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
        ddp = DistributedDataParallel(synced, device_ids=[torch.cuda.current_device()])
        optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (plain, ddp)]
        gen = torch.Generator(device="cuda").manual_seed(1)
        for _ in range(2):
            x = (torch.rand(4, 3, 32, 32, device="cuda", generator=gen) * 2 - 1).contiguous(
                memory_format=torch.channels_last)
            for model, opt in zip((plain, ddp), optimizers):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = model(x)
                torch.nn.functional.mse_loss(out.float(), x).backward()
                opt.step()
        for (name, a), b in zip(plain.state_dict().items(), ddp.module.state_dict().values()):
            if a.is_floating_point():
                torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------
# Resume


def test_resume_on_cuda_continues_the_run(tmp_path: Path, exact_cuda):
    # Six steps per epoch: the first run stops mid-epoch at step 4, the resumed one goes on to step 9.
    common = ["--precision", "bf16", "--ema", "0.9", "--checkpoint-every-steps", "2", "--log-every", "1"]
    run_dir = _train(tmp_path / "resumed", *common, "--steps", "4")
    first = load_checkpoint(run_dir / "last.ckpt")
    assert first["step"] == 4 and first["batch_in_epoch"] == 4 and first["epoch"] == 0
    assert first["rng"]["cuda"], "the CUDA RNG state is part of the checkpoint"
    assert main(["train", "--resume", str(run_dir), "--steps", "9", "--quiet"]) == 0
    reference_dir = _train(tmp_path / "reference", *common, "--steps", "9")
    resumed, reference = load_checkpoint(run_dir / "last.ckpt"), load_checkpoint(reference_dir / "last.ckpt")
    assert resumed["step"] == reference["step"] == 9 and resumed["epoch"] == reference["epoch"] == 1
    # Same data, dropout masks and updates: the losses of steps 5-9 agree, which a resume that lost the data
    # order, the RNG or the optimizer state would not; the weights agree up to the GPU's float reductions
    # (Adam can turn a rounding-level gradient difference into a learning-rate-sized step, hence atol).
    losses = [_train_losses(d) for d in (run_dir, reference_dir)]
    assert list(losses[0]) == list(range(1, 10)) and losses[0].keys() == losses[1].keys()
    for step in range(5, 10):
        assert losses[0][step] == pytest.approx(losses[1][step], rel=1e-3), step
    for part in ("model", "ema"):
        for key, value in reference[part].items():
            if value.is_floating_point():
                torch.testing.assert_close(resumed[part][key], value, rtol=1e-2, atol=1e-3, msg=f"{part}.{key}")
            else:
                assert torch.equal(resumed[part][key], value), f"{part}.{key}"


def _train_losses(run_dir: Path) -> dict[int, float]:
    """{step: training loss} from metrics.csv; a step logged twice (after a crash) would show up as missing."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = [(int(row["step"]), float(row["loss/train"])) for row in csv.DictReader(fh) if row["loss/train"]]
    steps = [s for s, _ in rows]
    assert steps == sorted(set(steps)), steps  # rows logged after the checkpoint are not doubled
    return dict(rows)

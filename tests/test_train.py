"""Training system: TensorBoard output, rising PSNR, checkpoints, kill-and-resume, errors, DDP (all on CPU, tiny)."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from pyramidal.checkpoint import load_checkpoint, load_weights
from pyramidal.config import TrainConfig
from pyramidal.errors import PyramidalError
from pyramidal.models import create_model
from pyramidal.options import RestoreOptions
from pyramidal.step import psnr_from_mse
from pyramidal.train import Trainer, TrainingDiverged, train

from helpers import REPO, cli, copy_run, one_error, torch_threads

# A tiny dense pyramid: 8-wide stem, growth 4, one level; dropout stays on (its RNG must resume exactly).
TINY = dict(task="squares", model="pyramidal44", m=8, growth=4, data="builtin", size=32, batch_size=4,
            patches_per_epoch=16, val_images=4, log_images=4, precision="fp32", log_every=2, quiet=True)
TINY_ARGS = ["--task", "squares", "--model", "pyramidal44", "--m", "8", "--growth", "4", "--data", "builtin",
             "--size", "32", "--batch-size", "4", "--val-images", "4", "--log-images", "4",
             "--precision", "fp32", "--quiet", "--device", "cpu"]
assert TINY_ARGS[4:8] == ["--m", "8", "--growth", "4"]


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # same thread count in every process: identical float reductions
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyramidal", "train", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout, cwd=REPO)


def _run_dir(out: Path) -> Path:
    dirs = [p for p in out.glob("*/*/*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for the whole module, its run fixtures included."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """Six steps over two epochs of four steps; shared by the read-only checks below."""
    out = tmp_path_factory.mktemp("runs")
    run_dir = train(TrainConfig(**TINY, steps=6, out=str(out), ema=0.9, progress=False))
    return run_dir


# ----------------------------------------------------------------------------------------------------------
# Output of a run


def test_run_folder_layout(tiny_run: Path):
    assert tiny_run.parent.parent.name == "squares" and tiny_run.parent.name == "pyramidal44"
    assert len(tiny_run.name) == len("20240101-120000") and tiny_run.name[8] == "-"
    for name in ("config.toml", "config.json", "metrics.csv", "last.ckpt", "best.safetensors", "best.json"):
        assert (tiny_run / name).is_file(), name
    assert not list(tiny_run.glob(".*.tmp")), "an atomic write left a temporary file behind"


def test_tensorboard_scalars_images_and_config(tiny_run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("PSNR/train", "PSNR/val", "loss/train", "loss/val", "lr", "images_per_s"):
        assert tag in tags["scalars"], tag
    for panel in ("1 output (val)", "2 input", "3 ground truth", "4 output (train)"):
        assert panel in tags["images"], panel
    assert acc.Tensors("config/text_summary"), "config is not logged as text"
    # PSNR is 10·log10(4/MSE) of the logged MSE, and there is a validation at the start and the end.
    val = {e.step: e.value for e in acc.Scalars("PSNR/val")}
    loss = {e.step: e.value for e in acc.Scalars("loss/val")}
    assert 0 in val and 6 in val
    assert val[6] == pytest.approx(psnr_from_mse(loss[6]), abs=1e-3)
    # "1 output (val)" every epoch (steps 0, 4) and at the end; the input and ground truth once.
    assert [e.step for e in acc.Images("1 output (val)")] == [0, 4, 6]
    assert len(acc.Images("2 input")) == 1 and len(acc.Images("3 ground truth")) == 1


def test_metrics_csv_matches_tensorboard(tiny_run: Path):
    rows = _rows(tiny_run)
    assert list(rows[0]) == ["step", "epoch", "elapsed_s", "loss/train", "PSNR/train", "loss/val", "PSNR/val",
                             "PSNR/val_input", "lr", "images_per_s", "PSNR/val_images"]
    train_rows = [r for r in rows if r["PSNR/train"]]
    val_rows = [r for r in rows if r["PSNR/val"]]
    assert [int(r["step"]) for r in train_rows] == [2, 4, 6]
    assert [int(r["step"]) for r in val_rows] == [0, 4, 6]
    for r in train_rows:
        assert float(r["PSNR/train"]) == pytest.approx(10 * math.log10(4 / float(r["loss/train"])), abs=1e-3)
        assert float(r["images_per_s"]) > 0 and float(r["lr"]) == pytest.approx(3e-4)
    assert float(rows[0]["PSNR/val_input"]) > 5
    for r in val_rows:  # a mean of PSNRs is at least the PSNR of the mean MSE (Jensen), and close to it here
        assert 0 <= float(r["PSNR/val_images"]) - float(r["PSNR/val"]) < 10


def test_the_psnr_objective_chooses_weights_by_the_images_mean_psnr(tmp_path):
    run_dir = train(TrainConfig(**TINY, steps=4, out=str(tmp_path), loss="psnr", progress=False))
    val = [r for r in _rows(run_dir) if r["PSNR/val"]]
    info = json.loads((run_dir / "best.json").read_text())
    assert info["val_psnr"] == pytest.approx(max(float(r["PSNR/val_images"]) for r in val), abs=1e-3)
    assert info["val_psnr"] != pytest.approx(max(float(r["PSNR/val"]) for r in val), abs=1e-3)


def test_resume_keeps_the_rows_of_an_older_metrics_file(tmp_path):
    """A metrics.csv written before a column was added keeps its rows when the run resumes."""
    from pyramidal.runstate import CSV_COLUMNS, MetricsLog

    old = [c for c in CSV_COLUMNS if c != "PSNR/val_images"]
    (tmp_path / "metrics.csv").write_text(",".join(old) + "\n0,0,1.5,,,0.01,26.02,20,,\n8,1,9,0.02,23,,,,1e-4,30\n"
                                          "12,1,14,0.02,23,,,,1e-4,30\n")
    log = MetricsLog(tmp_path, {"task": "noise"}, resume_step=8)
    log.close()
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == ["0", "8"] and rows[0]["PSNR/val"] == "26.02" and rows[1]["lr"] == "1e-4"
    assert list(rows[0]) == list(CSV_COLUMNS)


def test_best_weights_and_sidecar(tiny_run: Path):
    model = load_weights(tiny_run / "best.safetensors")
    assert model.spec == {"model": "pyramidal44", "options": {"m": 8, "growth": 4}}
    info = json.loads((tiny_run / "best.json").read_text())
    assert info["model"] == "pyramidal44" and info["task"] == "squares" and info["data"] == "builtin"
    assert info["config"]["ema"] == 0.9 and info["steps"] in (4, 6)
    assert info["val_psnr"] == pytest.approx(max(float(r["PSNR/val"]) for r in _rows(tiny_run) if r["PSNR/val"]),
                                             abs=1e-3)
    out = model(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 3, 32, 32)


def test_last_checkpoint_contents(tiny_run: Path):
    ckpt = load_checkpoint(tiny_run / "last.ckpt")
    assert ckpt["step"] == 6 and ckpt["epoch"] == 1 and ckpt["batch_in_epoch"] == 2 and ckpt["finished"]
    for key in ("model", "optimizer", "scaler", "scheduler", "ema", "best_psnr", "rng", "config", "spec"):
        assert key in ckpt, key
    assert set(ckpt["rng"]) == {"torch", "numpy", "random", "cuda"}
    assert ckpt["ema"] is not None and ckpt["spec"]["model"] == "pyramidal44"


def test_saved_config_reruns(tiny_run: Path, tmp_path: Path):
    from pyramidal.config import resolve_config

    config = resolve_config({"out": str(tmp_path)}, config_file=str(tiny_run / "config.toml"))
    assert config.model == "pyramidal44" and config.m == 8 and config.steps == 6 and config.ema == 0.9
    assert config.resume is None and config.out == str(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Learning


@pytest.mark.slow
def test_validation_psnr_rises_pyramidal51_squares(tmp_path: Path):
    # The research's pyramidal51 (five levels, additive skips), narrowed so that it trains in seconds.
    run_dir = train(TrainConfig(task="squares", model="pyramidal51", channels=[8, 16, 16, 16, 16, 16],
                                data="builtin", size=32, batch_size=8, patches_per_epoch=160, steps=60,
                                val_every=20, val_images=16, lr=2e-3, precision="fp32", out=str(tmp_path),
                                quiet=True, progress=False, log_images=2))
    rows = _rows(run_dir)
    val = [(int(r["step"]), float(r["PSNR/val"])) for r in rows if r["PSNR/val"]]
    steps = [s for s, _ in val]
    assert steps == [0, 20, 40, 60]
    psnr = [p for _, p in val]
    assert psnr[-1] > psnr[0] + 5, psnr  # from random output to a real restoration
    assert psnr[-1] > psnr[1], psnr  # and still improving after the first 20 steps
    assert psnr[-1] > float(rows[0]["PSNR/val_input"]), psnr  # better than the damaged input


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: kill and resume, damaged files, other architectures


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path: Path):
    # 100 steps per epoch; a checkpoint every 3 steps. The first run would go on for 1000 steps: it is
    # killed as soon as a mid-epoch checkpoint exists. Dropout, EMA and warm-up all have to resume exactly.
    common = [*TINY_ARGS, "--patches-per-epoch", "400", "--ema", "0.99", "--warmup-steps", "5",
              "--checkpoint-every-steps", "3", "--checkpoint-minutes", "0", "--log-every", "10"]
    killed_out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pyramidal", "train", *common, "--steps", "1000",
                             "--out", str(killed_out)], env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(killed_out.glob("*/*/*/last.ckpt")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    run_dir = _run_dir(killed_out)
    ckpt = load_checkpoint(run_dir / "last.ckpt")
    assert 0 < ckpt["batch_in_epoch"] < 100 and ckpt["epoch"] == 0, "the kill did not land mid-epoch"
    assert not ckpt["finished"]

    # Resume to step 106: the rest of epoch 0, then six steps into epoch 1.
    resumed = _cli("--resume", str(run_dir), "--steps", "106")
    assert resumed.returncode == 0, resumed.stderr
    reference = _cli(*common, "--steps", "106", "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr

    a = load_checkpoint(run_dir / "last.ckpt")
    b = load_checkpoint(_run_dir(tmp_path / "reference") / "last.ckpt")
    assert a["step"] == b["step"] == 106 and a["epoch"] == b["epoch"] == 1
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])
    # The metrics a crashed run logged after its last checkpoint are replaced, not duplicated.
    steps = [int(r["step"]) for r in _rows(run_dir) if r["PSNR/train"]]
    assert steps == sorted(set(steps)) and steps[-1] == 106
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tb_steps = [e.step for e in acc.Scalars("PSNR/train")]
    assert tb_steps == steps


def test_truncated_checkpoint_gives_clear_error(tiny_run: Path, tmp_path: Path):
    broken = tmp_path / "last.ckpt"
    data = (tiny_run / "last.ckpt").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(PyramidalError, match="truncated or corrupt checkpoint") as info:
        load_checkpoint(broken)
    assert str(broken) in str(info.value)


def test_truncated_checkpoint_on_resume_cli(tiny_run: Path, tmp_path: Path):
    import shutil

    from pyramidal.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    ckpt = run_dir / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["train", "--resume", str(run_dir), "--steps", "8"]) == 2


def test_other_architecture_refused_naming_both(tiny_run: Path, tmp_path: Path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    from pyramidal.config import resume_config

    resolved = resume_config(run_dir, {"model": "basic21", "channels": [4, 8, 8], "m": None, "growth": None})
    with pytest.raises(PyramidalError) as info:
        Trainer(resolved)
    message = str(info.value)
    assert "last.ckpt" in message and "pyramidal44" in message and "basic21" in message
    # Same name, other widths: the mismatching tensors are named, with both specs.
    resolved = resume_config(run_dir, {"m": 12})
    with pytest.raises(PyramidalError, match=r"pyramidal44\(growth=4, m=8\).*pyramidal44\(growth=4, m=12\)"):
        Trainer(resolved)


def test_init_weights_from_other_architecture_refused(tiny_run: Path, tmp_path: Path):
    with pytest.raises(PyramidalError, match="pyramidal44.*basic21"):
        Trainer(TrainConfig(**{**TINY, "model": "basic21", "m": None, "growth": None}, channels=[4, 8, 8],
                            init_weights=str(tiny_run), steps=1, out=str(tmp_path)))


def test_resume_without_checkpoint_is_clear(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(PyramidalError, match="no config.json"):
        train(TrainConfig(resume=str(run_dir)))


# ----------------------------------------------------------------------------------------------------------
# Non-finite loss


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch):
    import torch.nn.functional as F

    real = F.mse_loss
    calls = {"train": 0}

    def poisoned(input, target, *args, **kwargs):
        if kwargs.get("reduction", "mean") == "mean":  # the training loss; validation sums
            calls["train"] += 1
            if calls["train"] == 5:
                return real(input, target) * float("nan")
        return real(input, target, *args, **kwargs)

    monkeypatch.setattr(F, "mse_loss", poisoned)
    trainer = Trainer(TrainConfig(**TINY, steps=8, checkpoint_every_steps=2, out=str(tmp_path)))
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    message = str(info.value)
    assert "non-finite" in message and "step 5" in message and "last.ckpt" in message and "step 4" in message
    ckpt = load_checkpoint(trainer.run_dir / "last.ckpt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_nonfinite_loss_cli_exit_code(tmp_path: Path):
    from pyramidal.cli import main

    code = main(["train", *TINY_ARGS, "--lr", "1e30", "--steps", "6", "--patches-per-epoch", "16",
                 "--out", str(tmp_path)])
    assert code != 0


# ----------------------------------------------------------------------------------------------------------
# DDP


# torchrun's own parser takes `--m` for an abbreviation of its options: model options go as --model-option.
DDP_ARGS = [*TINY_ARGS[:4], "--model-option", "m=8", "--model-option", "growth=4", *TINY_ARGS[8:]]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_only_rank0_writes(tmp_path: Path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "pyramidal", "train", *DDP_ARGS, "--steps", "4", "--patches-per-epoch", "16",
           "--sync-bn", "--out", str(out)]  # --sync-bn: a note on the CPU, not an error
    env = _env()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = _run_dir(out)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    ckpt = load_checkpoint(run_dir / "last.ckpt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4
    # 16 patches / 2 processes / batch 4 = 2 steps per epoch; images/s counts both processes.
    assert ckpt["epoch"] == 2
    train_rows = [r for r in _rows(run_dir) if r["PSNR/train"]]
    assert [int(r["step"]) for r in train_rows] == [2, 4]
    # (.lock: the folder's lock file, see test_runstate.py)
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(("events", ".lock"))) == [
        "best.json", "best.safetensors", "config.json", "config.toml", "last.ckpt", "metrics.csv"]


# ----------------------------------------------------------------------------------------------------------
# Config files, flags and presets


def test_config_file_then_flags_override(tmp_path: Path):
    from pyramidal.cli import build_parser
    from pyramidal.cli.train import overrides_from_args
    from pyramidal.config import resolve_config

    path = tmp_path / "c.toml"
    path.write_text('task = "noise"\nsigma = 50\nlr = 1e-3\nbatch-size = 8\n'
                    '[model_options]\nchannels = [4, 8, 8]\nactivation = "leakyrelu"\n')
    args = build_parser().parse_args(["train", "--config", str(path), "--lr", "0.01", "--model", "basic21",
                                      "--model-option", "activation=relu", "--no-channels-last"])
    overrides = overrides_from_args(args)
    assert set(overrides) == {"config", "lr", "model", "model_options", "channels_last"}
    config = resolve_config(overrides)
    assert (config.task, config.sigma, config.batch_size, config.lr) == ("noise", 50.0, 8, 0.01)
    assert config.model_kwargs() == {"channels": [4, 8, 8], "activation": "relu"}
    assert config.task_kwargs() == {"sigma": 50.0} and config.channels_last is False
    assert config.weight_decay == 1e-4 and config.config == str(path)


@pytest.mark.parametrize("text, match", [
    ("bogus = 1\n", "unknown option 'bogus'"),
    ("lr = \"fast\"\n", "lr must be a number"),
    ("steps = 2.5\n", "steps must be a whole number"),
    ("task = [\n", "not valid TOML"),
])
def test_bad_config_file_names_file_and_key(tmp_path: Path, text: str, match: str):
    from pyramidal.config import resolve_config

    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PyramidalError, match=match) as info:
        resolve_config(config_file=str(path))
    assert str(path) in str(info.value)


def test_toml_round_trip():
    from pyramidal.configfiles import load_toml, parse_options, tomllib
    from pyramidal.io import to_toml

    data = {"a": 1, "b": 2.5, "c": "x\"y", "d": True, "e": [1, 2], "f": None, "t": {"k": "v", "n": [1.0]}}

    assert tomllib.loads(to_toml(data)) == {k: v for k, v in data.items() if v is not None}
    assert parse_options(["m=8", "blocks=[4, 5]", "down=strided", "residual=true", "x=True"], "--o") == {
        "m": 8, "blocks": [4, 5], "down": "strided", "residual": True, "x": True}
    with pytest.raises(PyramidalError, match="KEY=VALUE"):
        parse_options(["oops"], "--model-option")
    with pytest.raises(PyramidalError, match="no such config file"):
        load_toml("/nonexistent/x.toml")


PRESETS = sorted((REPO / "pyramidal" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_resolve(path: Path):
    from pyramidal.config import resolve_config
    from pyramidal.damage import TASKS
    from pyramidal.models import MODELS

    config = resolve_config(config_file=str(path))
    assert config.task in TASKS and config.model in MODELS
    if path.stem != "quick":
        assert path.stem == config.task
        assert config.model == "pyramidal457101215" and config.batch_size == 100
        assert config.data.startswith("celeba:") and config.size == 64


def test_research_presets_cover_every_experiment():
    assert {p.stem for p in PRESETS} >= {"noise", "pixelate", "block", "squares", "blur", "jpeg", "grid"}


def test_research_preset_runs_small_on_builtin(tmp_path: Path):
    from pyramidal.config import resolve_config

    config = resolve_config({"data": "builtin", "size": 32, "batch_size": 2, "steps": 2, "val_images": 2,
                             "num_workers": 0, "model_options": {"m": 8, "growth": 4}, "out": str(tmp_path),
                             "quiet": True, "precision": "fp32"}, config_file="noise")  # a preset by name
    run_dir = Trainer(config).fit()
    info = json.loads((run_dir / "best.json").read_text())
    assert info["model"] == "pyramidal457101215" and info["task"] == "noise"


def test_celeba_missing_is_a_clear_error(tmp_path: Path):
    with pytest.raises(PyramidalError, match="CelebA not found"):
        Trainer(TrainConfig(**{**TINY, "data": f"celeba:{tmp_path}/none"}, steps=1, out=str(tmp_path)))


# ----------------------------------------------------------------------------------------------------------
# Schedules, EMA, patch-size phases, graceful stop


def test_learning_rate_schedules(tmp_path: Path):
    t = Trainer(TrainConfig(**TINY, steps=110, schedule="cosine", warmup_steps=10, min_lr=1e-5, out=str(tmp_path)))
    assert t._lr_at(0) == pytest.approx(3e-5) and t._lr_at(9) == pytest.approx(3e-4)
    assert t._lr_at(10) == pytest.approx(3e-4) and t._lr_at(60) == pytest.approx((3e-4 + 1e-5) / 2)
    assert t._lr_at(110) == pytest.approx(1e-5)
    t = Trainer(TrainConfig(**TINY, steps=10, schedule="step", lr_step=4, lr_gamma=0.5, out=str(tmp_path)))
    assert [t._lr_at(s) for s in (0, 3, 4, 8)] == pytest.approx([3e-4, 3e-4, 1.5e-4, 7.5e-5])
    with pytest.raises(PyramidalError, match="schedule=cosine needs steps or epochs"):
        Trainer(TrainConfig(**TINY, max_minutes=1, schedule="cosine", out=str(tmp_path)))
    with pytest.raises(PyramidalError, match="lr_step="):
        Trainer(TrainConfig(**TINY, steps=1, schedule="step", out=str(tmp_path)))


def test_ema_follows_weights():
    from pyramidal.runstate import EMA

    model = torch.nn.Linear(2, 2)
    ema = EMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=1000)  # decay 0.5 once the warm-up ramp is over
    assert torch.allclose(ema.model.weight, model.weight - 0.5)
    with pytest.raises(PyramidalError, match="between 0 and 1"):
        EMA(model, 1.5)


def test_size_schedule_switches_patch_size_at_epoch_start(tmp_path: Path):
    from pyramidal.config import parse_size_schedule

    assert parse_size_schedule("8:128:16, 4:96") == [(4, 96, None), (8, 128, 16)]
    with pytest.raises(PyramidalError, match="STEP:SIZE"):
        parse_size_schedule("4-96")
    # Epoch 0: 4 steps of 4 patches at 32 px. From step 3 on, 48 px in batches of 2: epoch 1 has 8 steps.
    t = Trainer(TrainConfig(**TINY, steps=9, size_schedule="3:48:2", out=str(tmp_path)))
    assert t.data.planned_steps() == t.total_steps == 9
    sizes = []
    real = t._train_step

    def spy(damaged, clean):
        sizes.append(tuple(damaged.shape))
        real(damaged, clean)

    t._train_step = spy
    t.fit()
    assert sizes == [(4, 3, 32, 32)] * 4 + [(2, 3, 48, 48)] * 5
    ckpt = load_checkpoint(t.run_dir / "last.ckpt")
    assert ckpt["phase"] == 1 and ckpt["batch_in_epoch"] == 5


def test_sigint_stops_after_the_step_and_checkpoints(tmp_path: Path):
    t = Trainer(TrainConfig(**TINY, steps=50, out=str(tmp_path)))
    real = t._train_step

    def step_then_interrupt(damaged, clean):
        real(damaged, clean)
        if t.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    t._train_step = step_then_interrupt
    t.fit()
    assert t.interrupted
    ckpt = load_checkpoint(t.run_dir / "last.ckpt")
    assert ckpt["step"] == 3 and not ckpt["finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_every_config_field_is_a_cli_flag():
    import dataclasses

    from pyramidal.cli import build_parser
    from pyramidal.cli.common import declared_task_options

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    dests = {a.dest for a in sub._actions}
    # `stage` is set by the recipe runner, which --stages drives; every other field is a flag.
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"stage"}
    assert fields <= dests, fields - dests
    task_flags = set(declared_task_options())  # those without a field of their own go into task_options
    assert dests - {"help", "stages"} - task_flags <= fields, dests - fields


def test_task_shorthand_fields_are_declared_task_options():
    from pyramidal.cli.common import declared_task_options
    from pyramidal.config import TASK_SHORTHANDS

    assert set(TASK_SHORTHANDS) <= set(declared_task_options())


def test_task_flags_without_a_field_become_task_options():
    from pyramidal.cli import build_parser
    from pyramidal.cli.train import overrides_from_args

    args = build_parser().parse_args(["train", "--task", "mixed", "--tasks", "noise,blur", "--sigma", "20",
                                      "--task-option", "tasks=gray", "--task-option", "x=1"])
    overrides = overrides_from_args(args)
    assert overrides["task_options"] == {"tasks": "noise,blur", "x": 1}  # the flag wins over --task-option
    assert overrides["sigma"] == 20.0 and "tasks" not in overrides


def test_diverged_run_fails_and_saves_nothing_non_finite(tmp_path, capsys):
    """A huge learning rate sends BatchNorm's running_var to infinity."""
    torch.set_num_threads(1)
    out = tmp_path / "runs"
    code, stdout, err = cli(["train", "--model", "basic21", "--size", "32", "--batch-size", "4", "--steps", "60",
                             "--lr", "1e20", "--warmup-steps", "100000", "--patches-per-epoch", "16",
                             "--val-images", "4", "--checkpoint-every-steps", "2", "--threads", "1",
                             "--no-progress", "--out", str(out)], capsys)
    assert code == 2 and "done" not in stdout
    one_error(err, "non-finite", "--lr")
    (run_dir,) = [p for p in out.glob("*/*/*") if p.is_dir()]
    from pyramidal.runstate import first_nonfinite

    if (run_dir / "last.ckpt").exists():
        assert first_nonfinite(load_checkpoint(run_dir / "last.ckpt")) is None
    if (run_dir / "best.safetensors").exists():
        assert first_nonfinite(load_weights(run_dir / "best.safetensors").state_dict()) is None


def test_diverging_resume_never_replaces_good_checkpoint(trained_run, tmp_path, capsys):
    run_dir = copy_run(trained_run, tmp_path)
    before = {name: (run_dir / name).read_bytes() for name in ("last.ckpt", "best.safetensors")}
    code, _, err = cli(["train", "--resume", str(run_dir), "--steps", "40", "--lr", "1e20",
                        "--checkpoint-every-steps", "2", "--threads", "1"], capsys)
    assert code == 2
    assert "non-finite" in err[-1] and "kept the last good checkpoint" in err[-1]
    assert all((run_dir / name).read_bytes() == data for name, data in before.items())


TINY_NOISE = dict(task="noise", model="pyramidal44", m=8, growth=4, data="builtin", size=32, batch_size=4,
            patches_per_epoch=16, val_images=4, log_images=0, precision="fp32", quiet=True, threads=1)


def test_training_logs_psnr_from_the_mse_whatever_the_loss(tmp_path):
    run_dir = Trainer(TrainConfig(**TINY_NOISE, steps=2, log_every=1, loss="l1", out=str(tmp_path))).fit()
    import csv

    rows = [r for r in csv.DictReader(open(run_dir / "metrics.csv")) if r.get("PSNR/train")]
    assert rows
    for r in rows:  # the L1 loss is larger than the MSE for errors under 1: PSNR is not computed from it
        assert float(r["PSNR/train"]) != pytest.approx(10 * math.log10(4 / float(r["loss/train"])), abs=1e-3)


def test_noise_map_training_and_restore(tmp_path):
    from pyramidal.evaluate import evaluate
    from pyramidal.inference import restore_array

    run_dir = Trainer(TrainConfig(**TINY_NOISE, steps=2, model_options={"noise_map": True}, out=str(tmp_path))).fit()
    model = load_checkpoint_model(run_dir)
    image = torch.rand(3, 20, 24) * 2 - 1
    assert restore_array(model, image, options=RestoreOptions(sigma=25)).shape == image.shape
    with pytest.raises(PyramidalError, match="sigma=S"):
        restore_array(model, image)
    with pytest.raises(PyramidalError, match="from 0 to 255"):
        RestoreOptions(sigma=300)
    blind = create_model("pyramidal44", m=8, growth=4).eval()
    with pytest.raises(PyramidalError, match="sigma=25: this model has no noise-level input"):
        restore_array(blind, image, options=RestoreOptions(sigma=25))
    result = evaluate(run_dir / "best.safetensors", "noise", limit=1, crop=32, settings=[{"sigma": 25}],
                      baselines="none")
    row = next(r for r in result["settings"][0]["rows"] if r["kind"] == "model")
    assert "σ given" in row["method"] and math.isfinite(row["psnr"])


def load_checkpoint_model(run_dir: Path) -> nn.Module:
    from pyramidal.checkpoint import load_weights

    return load_weights(run_dir / "best.safetensors").eval()


def test_noise_map_needs_a_task_with_a_noise_level(tmp_path):
    with pytest.raises(PyramidalError, match="noise_map: task jpeg has no noise level"):
        Trainer(TrainConfig(**{**TINY_NOISE, "task": "jpeg"}, steps=1, model_options={"noise_map": True},
                            out=str(tmp_path)))


def test_max_cpu_minutes_stops_training_and_sums_over_resumes(tmp_path):
    from pyramidal.config import resume_config

    run_dir = Trainer(TrainConfig(**TINY_NOISE, max_cpu_minutes=0.01, steps=10_000, out=str(tmp_path))).fit()
    first = load_checkpoint(run_dir / "last.ckpt")
    assert 0 < first["step"] < 10_000 and first["cpu_s"] >= 0.6
    Trainer(resume_config(run_dir, {"max_cpu_minutes": 0.02})).fit()  # as `train --resume RUN --max-cpu-minutes`
    second = load_checkpoint(run_dir / "last.ckpt")
    assert second["step"] > first["step"] and second["cpu_s"] >= 1.2


def test_max_cpu_minutes_zero_trains_nothing(tmp_path):
    run_dir = Trainer(TrainConfig(**TINY_NOISE, max_cpu_minutes=0, out=str(tmp_path))).fit()
    assert load_checkpoint(run_dir / "last.ckpt")["step"] == 0
    assert (run_dir / "best.safetensors").is_file()  # the step-0 validation still leaves weights

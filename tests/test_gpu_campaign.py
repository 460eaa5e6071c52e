"""scripts/gpu-campaign.sh: one call does everything, stops itself in time, and returns what the device tool brings back.

The smoke run (CPU, tiny sizes) is the GPU run's code: the CUDA tests (skipped here), the bench sweep, each
entry's probe, training, scores and archive. Its second entry is told to train far past the budget, so the
time guard must stop it and still return its files. The device tool brings back at most 8 files from $OUT,
16 MiB each, named in letters, digits, '.', '_' and '-'.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import pytest

from pyramidal.compare import gpucall

from helpers import REPO, script

SCRIPT = REPO / "scripts" / "gpu-campaign.sh"
MiB = 2**20
BUDGET = 50


def _last_stage(recipe: str) -> dict:
    from pyramidal.recipe import load_recipe

    loaded = load_recipe(recipe)
    return loaded.settings(len(loaded.stages) - 1)


@pytest.fixture(scope="module")
def campaign_script() -> types.ModuleType:
    return script("gpu-campaign.py")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    """The whole campaign in one call, told it has BUDGET seconds; noise-wide would train for 10 minutes."""
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    cmd = ["bash", str(SCRIPT), "all", "--smoke", "--seconds", str(BUDGET), "--out", str(out), "--work", str(work),
           "--train-option", "noise-wide:steps=1000000", "--train-option", "noise-wide:max_minutes=10"]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"out": out, "work": work, "wall": wall, "report": json.loads((out / "report.json").read_text()),
            "stdout": done.stdout}


@pytest.mark.slow
def test_one_call_returns_files_within_the_device_limits(smoke):
    files = [p for p in smoke["out"].rglob("*") if p.is_file()]
    assert {p.name for p in files} == {"report.json", "campaign.log", "check.json", "noise.tar", "noise-wide.tar"}
    assert len(files) <= 8 and sum(p.stat().st_size for p in files) <= 64 * MiB
    for p in files:
        assert p.stat().st_size <= 16 * MiB and re.fullmatch(r"[A-Za-z0-9._-]+", p.name), p


@pytest.mark.slow
def test_the_time_guard_stops_the_run_in_time_and_keeps_its_files(smoke):
    report = smoke["report"]
    assert smoke["wall"] <= BUDGET + gpucall.GRACE, smoke["wall"]
    assert report["status"] == "stopped by the time guard"
    wide = report["entries"]["noise-wide"]
    assert wide["status"] == "stopped by the time guard" and wide["run"]["stopped_by"] == "stop request"
    with tarfile.open(smoke["out"] / "noise-wide.tar") as tar:
        names = tar.getnames()
    assert {"noise-wide.safetensors", "noise-wide.json", "run/metrics.csv"} <= set(names)
    assert "time guard" in (smoke["out"] / "campaign.log").read_text()


@pytest.mark.slow
def test_report_covers_the_checks_the_training_and_the_scores(smoke):
    report = smoke["report"]
    tests = report["cuda_tests"]  # collected and skipped here (no GPU), none broken at import
    assert tests["finished"] and tests["skipped"] >= 7 and tests["failed"] == tests["error"] == tests["passed"] == 0
    sweep = report["sweep"]["models"]
    assert [row["batch_size"] for row in sweep[0]["rows"]] == [1, 2]
    assert sweep[1]["parameters"] > 3 * sweep[0]["parameters"]  # the wider entry, timed at its batch
    assert all(0 < row["train_peak_fraction"] < 1 for model in sweep for row in model["rows"])
    noise = report["entries"]["noise"]
    assert [r["start"] for r in noise["probe"]["runs"]] == ["scratch", "builtin:noise"]
    assert noise["start"] == (noise["probe"]["winner"] or "scratch")
    settings = noise["settings"]
    last = _last_stage("noise")
    assert settings["data_on_device"] and settings["batch_size"] == 4
    assert settings["lr"] == pytest.approx(last["lr"] * (4 / last["batch_size"]) ** 0.5)  # √k for k = 4/16
    assert settings["task_options"] == last["task_options"] and settings["loss"] == last["loss"]
    assert noise["run"]["steps"] >= 2 and noise["run"]["stopped_by"] in ("steps", "time")
    rows = noise["scores"]["validation"]
    assert [r["setting"] for r in rows] == ["sigma=15", "sigma=25", "sigma=50", "sigma=125"]
    assert all(r["psnr"] > 10 and "gain" in r for r in rows) and isinstance(noise["scores"]["wins"], bool)
    wide = report["entries"]["noise-wide"]
    assert wide["model_options"]["m"] == 48 and [r["start"] for r in wide["probe"]["runs"]] == ["scratch"]


@pytest.mark.slow
def test_packaging_round_trip_counts_steps_once_and_names_the_device(smoke, tmp_path, monkeypatch):
    from functools import partial

    import pyramidal.evaluate
    from pyramidal.checkpoint import load_weights, read_weights_info
    from pyramidal.hub import builtin_weights_path

    packager = script("package-builtin-weights.py")
    monkeypatch.setattr(pyramidal.evaluate, "evaluate", partial(pyramidal.evaluate.evaluate, limit=1, crop=64))
    target = packager.campaign_main(str(smoke["out"] / "noise.tar"), str(tmp_path / "noise.safetensors"), "none")
    record = read_weights_info(target)
    noise = smoke["report"]["entries"]["noise"]
    best_step = noise["run"]["best_step"]
    shipped = read_weights_info(builtin_weights_path("noise"))["steps"] if noise["start"] != "scratch" else 0
    assert record["steps"] == shipped + best_step
    cpu = smoke["report"]["machine"]["cpu"]
    assert record["trained_on"] == f"one {cpu}" and cpu in record["provenance"] and cpu in record["limits"]
    assert record["command"].endswith(f"scripts/gpu-campaign.sh all --smoke --seconds {BUDGET} --train-option "
                                      "noise-wide:steps=1000000 --train-option noise-wide:max_minutes=10")
    assert packager.absolute_paths(record) == [] and record["scores"] and record["dtype"] == "float16"
    assert sum(p.numel() for p in load_weights(target).parameters()) == record["parameters"]
    # The wider entry is a second file: not the task's default, by name or by speed.
    with pytest.raises(packager.NotPortable, match="not the task's default file"):
        packager.campaign_main(str(smoke["out"] / "noise-wide.tar"))
    renamed = tmp_path / "renamed"
    with tarfile.open(smoke["out"] / "noise-wide.tar") as tar:
        tar.extractall(renamed, filter="data")
    with tarfile.open(tmp_path / "noise.tar", "w") as tar:
        for p in renamed.rglob("*"):
            if p.is_file():
                tar.add(p, arcname=str(p.relative_to(renamed)).replace("noise-wide", "noise"))
    with pytest.raises(packager.NotPortable, match=r"3\.\d× the shipped model's FLOPs per pixel"):
        packager.campaign_main(str(tmp_path / "noise.tar"))


# ----------------------------------------------------------------------------------------------------------
# Fast checks, no training


def test_plan_scales_the_recipe_for_the_gpu():
    from pyramidal.compare.campaign import Entry, plan, scaled_lr

    last = _last_stage("noise")
    settings = plan(Entry("noise", "noise"), batch_size=256, steps=30000, seconds=200, out="runs/x")
    assert settings["lr"] == pytest.approx(last["lr"] * 4) == scaled_lr(last["lr"], 256, 16, "sqrt")
    assert settings["min_lr"] == pytest.approx(last["min_lr"] * 4) and settings["warmup_steps"] == 900
    assert settings["data"] == last["data"] and settings["loss"] == last["loss"]
    assert settings["data_on_device"] and settings["num_workers"] == 0 and settings["recipe"] == "noise"
    assert settings["steps"] == 30000 and settings["max_minutes"] == pytest.approx(200 / 60)
    assert scaled_lr(1e-3, 256, 16, "linear") == pytest.approx(16e-3)
    jpeg = plan(Entry("jpeg", "jpeg"), batch_size=256, steps=100, seconds=60, out="runs/x", num_workers=14)
    assert not jpeg["data_on_device"] and jpeg["num_workers"] == 14  # JPEG stays on persistent CPU workers


def test_entries_are_recipes_with_labels_and_options():
    from pyramidal.compare.campaign import parse_entries
    from pyramidal.errors import PyramidalError

    wide, plain = parse_entries(["noise-wide=noise", "noise"], None, ["noise-wide:m=48", "noise-wide:growth=24"],
                                ["steps=9", "noise:lr=0.5"])
    assert (wide.label, wide.recipe, wide.model_options, wide.changes_architecture) == (
        "noise-wide", "noise", {"m": 48, "growth": 24}, True)
    assert plain.model_options == {} and not plain.changes_architecture
    assert wide.train_options == {"steps": 9} and plain.train_options == {"steps": 9, "lr": 0.5}
    with pytest.raises(PyramidalError, match="recipe nosie"):
        parse_entries(["nosie"])
    with pytest.raises(PyramidalError, match="given twice"):
        parse_entries(["noise", "noise"])


def test_pytest_lines_give_each_tests_outcome():
    lines = ["tests/test_cuda.py::test_a PASSED [ 10%]", "[gw1] [ 20%] FAILED tests/test_cuda.py::test_b[x]",
             "tests/test_cuda.py::test_c SKIPPED (needs a CUDA GPU)", "E   AssertionError: assert 1 == 2"]
    result = gpucall.parse_tests(lines, None)
    assert result["tests"] == {"tests/test_cuda.py::test_a": "passed", "tests/test_cuda.py::test_b[x]": "failed",
                               "tests/test_cuda.py::test_c": "skipped"}
    assert (result["passed"], result["failed"], result["skipped"]) == (1, 1, 1) and not result["finished"]
    assert "killed" in result["note"] and result["output_tail"] == ["E   AssertionError: assert 1 == 2"]


def test_archive_leaves_out_a_file_over_the_limit(tmp_path):
    small, big = tmp_path / "small.json", tmp_path / "big.safetensors"
    small.write_text("{}")
    with open(big, "wb") as fh:
        fh.truncate(16 * MiB)
    out = gpucall.Out(tmp_path / "out")
    archive = out.archive("entry.tar", [(small, "small.json"), (big, "big.safetensors")])
    assert archive["members"] == 1 and archive["left_out"] == ["big.safetensors"]
    assert (tmp_path / "out" / "entry.tar").stat().st_size <= 16 * MiB


def test_cuda_tests_use_flags_the_cli_has():
    """tests/test_cuda.py only runs on a GPU: its command lines must not go stale in between."""
    from pyramidal.cli import build_parser

    sys.path.insert(0, str(REPO / "tests"))
    try:
        import test_cuda
    finally:
        sys.path.remove(str(REPO / "tests"))
    parser = build_parser()
    extra = ["--precision", "fp16", "--clip-grad", "1.0", "--steps", "8", "--ema", "0.9", "--sync-bn",
             "--checkpoint-every-steps", "2", "--log-every", "1", "--out", "runs"]
    assert parser.parse_args([*test_cuda.TRAIN_ARGS, *extra]).command == "train"
    assert parser.parse_args(["train", "--resume", "runs/x", "--steps", "10", "--quiet"]).command == "train"
    restore = parser.parse_args([*test_cuda.RESTORE_ARGS, "in.png", "-o", "out", "--device", "cuda",
                                 "--precision", "fp32"])
    assert restore.command == "restore"


def test_scores_compare_with_the_shipped_file_on_validation_and_benchmark_sets(tmp_path):
    """The shipped file scored against itself: every gain is 0, on the validation photographs and on a
    benchmark folder by both protocols, so it does not win."""
    import numpy as np

    from pyramidal.compare.campaign import score_entry
    from pyramidal.hub import builtin_weights_path
    from pyramidal.io import write_image

    folder = tmp_path / "bench"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), folder / f"{i}.png")
    scores = score_entry(builtin_weights_path("noise"), "noise", device="cpu", limit=1, crop=64,
                         benchmarks=[str(folder)])
    assert [r["setting"] for r in scores["validation"]] == ["sigma=15", "sigma=25", "sigma=50", "sigma=125"]
    bench = scores["benchmarks"]
    assert {(r["sigma"], r["protocol"]) for r in bench} == {(s, p) for s in (15.0, 25.0, 50.0)
                                                            for p in ("papers", "file")}
    assert all(r["images"] == 1 and r["gain"] == 0 for r in bench) and all(r["gain"] == 0 for r in scores["validation"])
    assert scores["mean_gain"] == 0 and scores["wins"] is False


@pytest.mark.slow
def test_missing_training_photographs_fail_in_one_line_after_the_checks(tmp_path):
    """Data that did not travel stops the training, not the CUDA tests and the sweep, which still return."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", str(SCRIPT), "all", "--smoke", "--out", str(out), "--work", str(tmp_path / "w"),
                           "--train", "noise", "--data", "builtin+.data/not-carried"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 1
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and ".data/not-carried" in report["error"] and "\n" not in report["error"]
    assert report["cuda_tests"]["finished"] and (out / "check.json").is_file() and "entries" not in report


def test_compile_is_used_only_when_it_pays(campaign_script):
    sweep = {"models": [{"rows": [{"batch_size": 64, "train_images_per_s": 900.0},
                                  {"batch_size": 256, "train_images_per_s": 1000.0}]}]}
    fast = gpucall.compile_decision({"train_images_per_s": 1300.0, "wall_seconds": 40}, sweep, 256)
    slow = gpucall.compile_decision({"train_images_per_s": 1100.0}, sweep, 256)
    late = gpucall.compile_decision(None, sweep, 256)
    assert fast["use"] and fast["gain"] == 1.3 and fast["seconds"] == 40
    assert not slow["use"] and slow["gain"] == 1.1
    assert not late["use"] and "did not finish" in late["why"]
    from pyramidal.cli import build_parser
    from pyramidal.compare.callsettings import CallSettings

    settings = CallSettings()  # the GPU defaults: compile auto, batch 256
    assert settings.compile == "auto" and settings.batch_size == 256 and settings.seconds == 480
    bench = build_parser().parse_args(gpucall.compile_bench_args(settings, Path("c.json")))
    assert bench.command == "bench" and bench.compile and bench.batch_size == 256 and not bench.data


def test_the_script_builds_the_call_settings_from_its_flags(campaign_script):
    from pyramidal.compare.callsettings import SMOKE_TRAIN_OPTIONS, CallSettings

    argv = ["all", "--out", "x"]
    assert campaign_script.parse_args(argv) == ("all", CallSettings(out="x", argv=tuple(argv)))
    argv = ["all", "--smoke", "--out", "x", "--train", "noise", "--train-option", "lr=0.1", "--sweep", "3,5"]
    phase, smoke = campaign_script.parse_args(argv)
    assert (smoke.smoke, smoke.device, smoke.batch_size, smoke.size, smoke.seconds, smoke.compile) == (
        True, "cpu", 4, 32, 45, "off")
    assert smoke.train == ("noise",) and smoke.model_option == () and smoke.sweep == (3, 5)
    assert smoke.train_option == (*SMOKE_TRAIN_OPTIONS, "lr=0.1") and smoke.data == "builtin"
    with pytest.raises(SystemExit) as exit:
        campaign_script.parse_args(["all", "--out", "x", "--train", "a", "--train", "b", "--train", "c"])
    assert exit.value.code == 2


def test_call_settings_are_checked_where_they_are_made_and_name_parameters():
    from pyramidal.compare.callsettings import CallSettings
    from pyramidal.errors import OptionError

    with pytest.raises(OptionError) as error:
        CallSettings(train=("noise", "jpeg", "blur"))
    assert str(error.value) == "train: at most two entries (the budget has room for two)"
    assert error.value.flags == "--train: at most two entries (the budget has room for two)"
    with pytest.raises(OptionError, match=r"^compile='fast': choose one of off, on, auto$") as error:
        CallSettings(compile="fast")
    assert error.value.flags == "--compile 'fast': choose one of off, on, auto"
    with pytest.raises(OptionError, match=r"^lr_rule='cube': choose one of sqrt, linear$"):
        CallSettings(lr_rule="cube")
    settings = CallSettings(train=["noise"], sweep=[1, 2])  # lists are kept as tuples: the settings are frozen
    assert settings.train == ("noise",) and settings.sweep == (1, 2) and hash(settings)
    with pytest.raises(AttributeError):
        settings.compile = "on"
    with pytest.raises(OptionError, match="^out: give the folder") as error:  # before anything is written
        gpucall.run(settings)
    assert error.value.flags.startswith("--out: ")

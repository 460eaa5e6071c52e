"""scripts/gpu-campaign.sh: the smoke run on the CPU writes what a GPU run returns, within the device tool's limits.

The device tool brings back at most 8 files from $OUT, 16 MiB each and 64 MiB together, no deeper than two
folders, named in letters, digits, '.', '_' and '-'. A kill at the time limit must leave what finished.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-campaign.sh"
MiB = 2**20


def _env() -> dict:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("OUT", None)  # the device tool's variable must not leak in from a developer's shell
    return env


def _command(out: Path, work: Path, *args: str) -> list[str]:
    return ["bash", str(SCRIPT), *args, "--smoke", "--out", str(out), "--work", str(work)]


def _returnable(out: Path) -> list[Path]:
    """OUT's files, checked against what the device tool brings back."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 1 <= len(files) <= 8, files
    assert sum(p.stat().st_size for p in files) <= 64 * MiB
    for p in files:
        parts = p.relative_to(out).parts
        assert len(parts) <= 3, f"{p}: deeper than two folders"
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in parts), p
        assert p.stat().st_size <= 16 * MiB, p
    return files


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, Path]:
    """Both phases: a chained task (jpeg, 2 phases), a hole task (block), and the research extra on squares."""
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    cmd = _command(out, work, "all", "--tasks", "jpeg,block", "--research", "--research-tasks", "squares")
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"smoke campaign: {time.monotonic() - start:.0f} s")
    return out, work


@pytest.mark.slow
def test_smoke_outputs_fit_the_device_limits(smoke):
    out, _ = smoke
    names = {p.name for p in _returnable(out)}
    assert names == {"report.json", "campaign.log", "bench.json", "weights.tar", "research.tar"}


@pytest.mark.slow
def test_smoke_report_covers_both_phases(smoke):
    out, _ = smoke
    report = _report(out)
    check, train = report["phases"]["check"], report["phases"]["train"]
    assert check["status"] == "done" and train["status"] == "done"
    # The CUDA tests were collected and skipped (no GPU here), none broke at import.
    pytest_run = check["pytest"]
    assert pytest_run["collected"] >= 7 and pytest_run["skipped"] == pytest_run["collected"]
    assert pytest_run["error"] == pytest_run["failed"] == 0
    bench = json.loads((out / "bench.json").read_text())
    assert [r["model"] for r in bench] == ["pyramidal23456", "pyramidal457101215"]
    for row in check["bench"]:
        assert row["train_images_per_s"] > 0 and 0 < row["train_peak_fraction"] < 1
    assert check["train_smoke"]["returncode"] == 0 and check["train_smoke"]["images_per_s"] > 0
    # The train phase used the check phase's rate, chained jpeg's phases and scored both tasks.
    assert train["settings"]["initial_rate_from"] == "the check phase's training run"
    tasks = train["tasks"]
    assert set(tasks) == {"jpeg", "block"} and all(t["status"] == "done" for t in tasks.values())
    jpeg = tasks["jpeg"]["runs"]
    assert [r["phase"] for r in jpeg] == [1, 2] and all(r["returncode"] == 0 for r in jpeg)
    phase2 = json.loads((Path(jpeg[1]["run"]) / "config.json").read_text())
    assert Path(phase2["init_weights"]) == Path(jpeg[0]["run"]) / "best.safetensors"
    assert {s["setting"] for s in tasks["jpeg"]["scores"]} == {"quality=10", "quality=5"}
    assert all(s["psnr"] > 0 for t in tasks.values() for s in t["scores"])
    research = train["research"]["tasks"]["squares"]
    assert research["returncode"] == 0
    with tarfile.open(out / "research.tar") as tar:
        names = tar.getnames()
    assert any(n.endswith(".json") for n in names) and any(n.endswith("metrics.csv") for n in names)


@pytest.mark.slow
def test_smoke_archive_holds_loadable_fp16_weights(smoke, tmp_path: Path):
    from safetensors import safe_open

    from pyramidal.checkpoint import load_weights

    out, work = smoke
    with tarfile.open(out / "weights.tar") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / work.name  # members are relative to the work folder's parent
    for task in ("jpeg", "block"):
        weights = root / "weights" / f"{task}.safetensors"
        sidecar = json.loads(weights.with_suffix(".json").read_text())
        assert sidecar["task"] == task and sidecar["dtype"] == "float16"
        assert sidecar["model"] == "pyramidal23456" and sidecar["campaign"]["runs"]
        assert sidecar["campaign_scores"] and "trained_on" in sidecar
        with safe_open(str(weights), "pt") as f:
            assert {str(f.get_tensor(k).dtype) for k in f.keys() if "num_batches" not in k} == {"torch.float16"}
        model = load_weights(weights)
        assert sum(p.numel() for p in model.parameters()) == sidecar["parameters"]
        assert (root / "eval" / f"{task}.json").exists()
    # Every phase's config, best-weights sidecar and metrics travel for provenance (jpeg: two phases; block: one).
    runs = [r for t in _report(out)["phases"]["train"]["tasks"].values() for r in t["runs"]]
    assert len(runs) == 3 and len(list(root.glob("builtin*/*/*/*/config.json"))) == len(runs)


@pytest.mark.slow
def test_sigterm_keeps_the_finished_tasks(tmp_path: Path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.Popen(_command(out, work, "train", "--tasks", "blur,mixed"), env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no task finished"
            try:
                tasks = _report(out)["phases"]["train"]["tasks"]
            except (OSError, ValueError, KeyError):
                tasks = {}
            if any(t["status"] == "done" for t in tasks.values()):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    _returnable(out)
    train = _report(out)["phases"]["train"]
    assert train["status"] == "interrupted"
    done = [name for name, t in train["tasks"].items() if t["status"] == "done"]
    assert len(done) == 1
    with tarfile.open(out / "weights.tar") as tar:
        names = tar.getnames()
    assert f"{work.name}/weights/{done[0]}.safetensors" in names
    assert not any("/weights/" in n and done[0] not in n for n in names)  # nothing half-finished


# ----------------------------------------------------------------------------------------------------------
# Fast checks, no training


def _campaign_module() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_campaign", REPO / "scripts" / "gpu-campaign.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_planner_fits_every_task_into_the_phase(monkeypatch):
    """Two lanes, every built-in recipe, 420 s: each lane ends by the deadline with little time unused, and
    steps are the rate's images over the run's seconds (96-px phases at (64/96)² of the 64-px rate)."""
    campaign = _campaign_module()
    clock = [0.0]
    monkeypatch.setattr(campaign, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    settings = types.SimpleNamespace(smoke=False, batch_size=64, max_steps=None, lanes=2)
    chains = campaign.discover_recipes(None, None)
    planner = campaign.Planner(settings, chains, deadline=420.0, rate=3000.0)
    assert sorted(t for lane in planner.lanes for t in lane) == sorted(chains)
    phases = [sum(len(chains[t]) for t in lane) for lane in planner.lanes]
    assert max(phases) - min(phases) <= 1, planner.lanes
    for lane, tasks in enumerate(planner.lanes):
        clock[0] = 0.0
        for task in tasks:
            end = planner.start_task(lane, task)
            for i, run in enumerate(chains[task]):
                steps, minutes = planner.plan_run(run, chains[task][i:], end)
                expected = int(0.95 * 3000 * (64 / run.size) ** 2 * minutes * 60 / 64)
                assert steps == expected > 0, (task, run.phase)
                clock[0] += minutes * 60 + planner.overhead
            clock[0] += planner.eval_seconds
            assert clock[0] <= end + 1e-6, (task, clock[0], end)
        assert 420 - 30 <= clock[0] <= 420 + 1e-6, (lane, clock[0])


def test_weight_archives_split_in_finishing_order(tmp_path: Path):
    """Past the size limit the next task opens a new archive; full archives never change afterwards."""
    campaign = _campaign_module()
    groups = []
    for i in range(12):  # 12 tasks of 1.7 MB each: more than fits one 15-MiB archive
        path = tmp_path / f"task{i}.safetensors"
        with open(path, "wb") as fh:
            fh.truncate(1_700_000)
        groups.append([(path, f"weights/task{i}.safetensors")])
    parts = campaign.split_parts(groups)
    assert [name for part in parts for _, name in part] == [g[0][1] for g in groups]  # order kept
    assert len(parts) == 2
    assert all(sum(campaign.tar_bytes(p) for p, _ in part) + 1024 <= campaign.ARCHIVE_LIMIT for part in parts)
    assert campaign.split_parts(groups[:9])[:1] == parts[:1]  # a later task leaves the full part alone


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

#!/usr/bin/env python
"""The GPU campaign: check the CUDA paths, measure the GPU, train the built-in weights at GPU scale.

Each phase is meant for one `run` call of the device tool (docs/gpu-campaign.md says how):
  check  `pytest -m cuda`, `pyramidal bench` for the built-in architecture and pyramidal457101215, and a
         20-second training run                                                       (2.5 minutes)
  train  every built-in task's recipe chain from pyramidal/configs/builtin/ (phase K starts from phase K-1's best
         weights) on GPU-sized batches in bf16, each task evaluated without BM3D and packed as fp16
         weights with their metadata                                                   (7.5 minutes)
  all    both, one after the other (what `--smoke` runs by default)

Everything lands in OUT as it goes, each file replaced atomically, so a kill at the time limit keeps
what finished: report.json, campaign.log, bench.json (check), weights.tar (and weights-2.tar, weights-3.tar
past 15 MiB) and research.tar (train). That is at most 7 files, all at OUT's top level, within the device
tool's limits (8 files, 16 MiB each).
`--smoke` runs the same code on the CPU with tiny budgets (under 2 minutes of CPU time; tests/test_gpu_campaign.py).

Usage: scripts/gpu-campaign.sh [check|train|all] [--smoke] [--out DIR] [options; see --help]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_CONFIGS = ROOT / "pyramidal" / "configs" / "builtin"
BENCH_MODELS = ("pyramidal23456", "pyramidal457101215")  # the built-in architecture, the research's 103 layers
FILE_LIMIT = 16 * 2**20  # the device tool returns files up to 16 MiB
ARCHIVE_LIMIT = FILE_LIMIT - 2**20  # headroom for tar headers and padding
# With report.json, campaign.log, bench.json and research.tar, three weight archives keep OUT at 7 files.
MAX_WEIGHT_ARCHIVES = 3


# ----------------------------------------------------------------------------------------------------------
# Settings: GPU defaults, and the smoke run's tiny ones


@dataclass
class Settings:
    """Everything a phase needs; `from_args` fills the GPU or smoke defaults."""

    phase: str
    smoke: bool
    out: Path
    work: Path
    device: str
    precision: str
    minutes: dict[str, float]
    tasks: list[str] | None
    max_phases: int | None
    batch_size: int
    steps_per_epoch: int
    workers: int
    lanes: int
    rate: float | None
    max_steps: int | None
    train_smoke_seconds: float
    train_args: list[str]
    research: bool
    research_tasks: list[str]
    research_share: float
    research_steps: int | None
    bench_batch: int
    kill_grace: float | None  # a run still going this long after the deadline is stopped (None: never)
    python: str = sys.executable
    run_overrides: list[str] = field(default_factory=list)  # appended to every `pyramidal train`
    eval_overrides: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        out = args.out or os.environ.get("OUT")
        if not out:
            sys.exit("gpu-campaign: give --out DIR (or set OUT, as the device tool does)")
        smoke = args.smoke
        cpus = os.cpu_count() or 2
        lanes = args.lanes or (1 if smoke else 2)
        workers = args.workers if args.workers is not None else (0 if smoke else max(1, cpus // lanes - 2))
        s = cls(
            phase=args.phase, smoke=smoke, out=Path(out), work=Path(args.work),
            device=args.device or ("cpu" if smoke else "cuda"),
            precision=args.precision or ("auto" if smoke else "bf16"),
            minutes={"check": args.check_minutes or (1.5 if smoke else 2.5),
                     "train": args.train_minutes or (2.0 if smoke else 7.5)},
            tasks=[t for t in args.tasks.split(",") if t] if args.tasks else None,
            max_phases=args.max_phases or (2 if smoke else None),
            batch_size=args.batch_size or (4 if smoke else 64),
            steps_per_epoch=args.steps_per_epoch or (2 if smoke else 400),
            workers=workers, lanes=lanes, rate=args.rate,
            max_steps=args.max_steps or (2 if smoke else None),
            train_smoke_seconds=args.train_smoke_seconds or (5.0 if smoke else 20.0),
            train_args=list(args.train_arg or []),
            research=args.research,
            research_tasks=[t for t in args.research_tasks.split(",") if t],
            research_share=args.research_share,
            research_steps=args.research_steps or (2 if smoke else None),
            bench_batch=args.bench_batch or 64,
            kill_grace=None if smoke else 30.0,  # a slow CI machine must not turn the smoke into a failure
        )
        if smoke:
            # Small enough for two CPU cores: 32-px patches, 4 validation crops, one thread, no extra photos.
            s.run_overrides = ["--size", "32", "--val-images", "4", "--threads", "1", "--data", "builtin",
                               "--log-images", "0"]
            s.eval_overrides = ["--limit", "1", "--crop", "64", "--crops", "1"]
        return s


# ----------------------------------------------------------------------------------------------------------
# Output: the log, the report and the archives in OUT, each always whole


class Outputs:
    """OUT's files. Every write replaces a whole file atomically; the log is appended line by line.

    `lock` guards the report too: lanes update it from their threads while another one saves it.
    """

    def __init__(self, out: Path, echo: bool = True):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._log = open(out / "campaign.log", "a", encoding="utf-8")
        self.echo = echo
        path = out / "report.json"
        try:
            self.report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, json.JSONDecodeError):
            self.report = {}
        self.report.setdefault("campaign", "pyramidal GPU campaign (scripts/gpu-campaign.sh)")
        self.report.setdefault("phases", {})

    def log(self, message: str, echo: bool = True) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        with self.lock:
            self._log.write(f"{stamp} {message}\n")
            self._log.flush()
        if echo and self.echo:
            print(message, flush=True)

    def replace(self, name: str, write) -> None:
        """Write OUT/name through a temporary file in OUT and rename it over the old one."""
        tmp = self.out / f".{name}.tmp"
        with self.lock:
            write(tmp)
            os.replace(tmp, self.out / name)

    def save_report(self) -> None:
        with self.lock:
            self.report["updated"] = now_iso()
            text = json.dumps(self.report, indent=2, ensure_ascii=False) + "\n"
            self.replace("report.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def phase(self, name: str) -> dict[str, Any]:
        return self.report["phases"].setdefault(name, {})

    def close(self) -> None:
        self._log.close()


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def write_archive(outputs: Outputs, name: str, files: list[tuple[Path, str]]) -> dict[str, Any]:
    """Replace OUT/name by a tar of `files` (path, name inside); files past the size limit are left out."""
    kept, left_out, total = [], [], 1024
    for path, arcname in files:
        if not path.is_file():
            continue
        size = 512 + (path.stat().st_size + 511) // 512 * 512
        if total + size > ARCHIVE_LIMIT:
            left_out.append(arcname)
            continue
        kept.append((path, arcname))
        total += size

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w") as tar:
            for path, arcname in kept:
                tar.add(path, arcname=arcname, recursive=False)

    outputs.replace(name, write)
    return {"file": name, "members": len(kept), "bytes": (outputs.out / name).stat().st_size, "left_out": left_out}


def tar_bytes(path: Path) -> int:
    return 512 + (path.stat().st_size + 511) // 512 * 512 if path.is_file() else 0


def split_parts(groups: list[list[tuple[Path, str]]], limit: int = ARCHIVE_LIMIT) -> list[list[tuple[Path, str]]]:
    """Groups (one task's files each, in the order they finished) packed into as few parts under `limit` as
    they fill in order: a part, once full, never changes again, so rewriting the last one is safe."""
    parts: list[list[tuple[Path, str]]] = [[]]
    size = 1024
    for group in groups:
        group_size = sum(tar_bytes(p) for p, _ in group)
        if parts[-1] and size + group_size > limit:
            parts.append([])
            size = 1024
        parts[-1].extend(group)
        size += group_size
    return parts


# ----------------------------------------------------------------------------------------------------------
# Running commands: logged line by line, stopped at a deadline or on request


class Runner:
    """Runs `python -m ...` commands from the repository root, logging their output with a tag."""

    def __init__(self, settings: Settings, outputs: Outputs):
        self.s, self.outputs = settings, outputs
        self.stop = threading.Event()
        self._children: set[subprocess.Popen] = set()
        self._lock = threading.RLock()  # the signal handler takes it too
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = str(ROOT) + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        self.env["PYTHONUNBUFFERED"] = "1"
        if settings.smoke:
            self.env["OMP_NUM_THREADS"] = "1"

    def run(self, args: list[str], tag: str, kill_at: float | None = None) -> tuple[int, float, list[str]]:
        """Run `args`; returns (exit code, seconds, last output lines). Past `kill_at` it is stopped."""
        start = time.monotonic()
        self.outputs.log(f"[{tag}] $ {' '.join(args)}", echo=False)
        try:
            proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", bufsize=1)
        except OSError as exc:
            self.outputs.log(f"[{tag}] could not start: {exc}")
            return 127, 0.0, [str(exc)]
        with self._lock:
            self._children.add(proc)
        tail: deque[str] = deque(maxlen=40)

        def read() -> None:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                self.outputs.log(f"[{tag}] {line}", echo=False)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        terminated_at = None
        while True:
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            late = kill_at is not None and time.monotonic() > kill_at
            if (late or self.stop.is_set()) and terminated_at is None:
                # SIGTERM: `pyramidal train` finishes its step and writes last.ckpt.
                self.outputs.log(f"[{tag}] stopping it ({'past its deadline' if late else 'campaign stopped'})")
                proc.terminate()
                terminated_at = time.monotonic()
            elif terminated_at is not None and time.monotonic() - terminated_at > 15:
                proc.kill()
        reader.join(timeout=5)
        with self._lock:
            self._children.discard(proc)
        seconds = time.monotonic() - start
        self.outputs.log(f"[{tag}] exit {proc.returncode} after {seconds:.1f} s", echo=False)
        return proc.returncode, seconds, list(tail)

    def request_stop(self) -> None:
        self.stop.set()
        with self._lock:
            for proc in self._children:
                if proc.poll() is None:
                    proc.terminate()

    def pyramidal(self, *args: str) -> list[str]:
        return [self.s.python, "-m", "pyramidal", *args]


# ----------------------------------------------------------------------------------------------------------
# The machine


def environment(s: Settings) -> dict[str, Any]:
    """What the campaign ran on: Python, torch, the GPU (read-only queries), the training photos."""
    import platform

    import torch

    from pyramidal import __version__

    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "pyramidal": __version__,
        "cpus": os.cpu_count(), "device": s.device, "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        try:  # a read-only query: the campaign never changes the card's settings
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            env["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    photos = ROOT / ".data" / "photos"
    env["training_photos"] = sum(1 for p in photos.rglob("*") if p.is_file()) if photos.is_dir() else 0
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            env["commit"] = head.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run_summary(run_dir: Path | None, wall: float, requested_steps: int | None) -> dict[str, Any]:
    """Steps, rate and validation PSNR of a finished `pyramidal train` run, from its metrics and sidecar."""
    if run_dir is None:
        return {"seconds": round(wall, 1)}
    rows = read_metrics(run_dir)
    rates = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
    steps = max((int(r["step"]) for r in rows if r.get("step")), default=0)
    elapsed = max((float(r["elapsed_s"]) for r in rows if r.get("elapsed_s")), default=0.0)
    out: dict[str, Any] = {
        "run": rel(run_dir), "steps": steps, "seconds": round(wall, 1), "training_seconds": round(elapsed, 1),
        "images_per_s": round(statistics.median(rates), 1) if rates else None,
    }
    if requested_steps is not None:
        out["stopped_by"] = "steps" if steps >= requested_steps else "time"
    best = run_dir / "best.json"
    if best.exists():
        info = json.loads(best.read_text())
        out.update(best_step=info.get("steps"), best_val_psnr=info.get("val_psnr"))
    return out


def rel(path: Path) -> str:
    """`path` relative to the repository root when inside it (how configs record init weights)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def existing_runs(task_folder: Path) -> set[Path]:
    """Run folders under OUT/<task>/ of `pyramidal train --out OUT` (they are <model>/<stamp>/)."""
    return {p for p in task_folder.glob("*/*") if p.is_dir()}


def new_run_dir(task_folder: Path, before: set[Path]) -> Path | None:
    """The run folder made under `task_folder` since `before` was taken."""
    found = existing_runs(task_folder) - before
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


# ----------------------------------------------------------------------------------------------------------
# Phase `check`


def parse_junit(path: Path) -> dict[str, Any]:
    """Counts and per-test outcomes from pytest's JUnit XML."""
    if not path.exists():
        return {"error": "no JUnit report (pytest did not run to the end)"}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests = []
    for case in suite.iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (node.get("message") or "")[:300]
                break
        tests.append({"test": case.get("name"), "outcome": outcome, "message": message,
                      "seconds": round(float(case.get("time") or 0), 2)})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {"collected": len(tests), **counts, "tests": tests}


def bench_row(r: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one `pyramidal bench` result that go into the report and the performance docs."""
    keys = ("model", "size", "batch_size", "device", "precision", "train_images_per_s", "infer_images_per_s",
            "train_peak_fraction", "infer_peak_fraction", "matmul_peak_gflop_per_s", "train_peak_memory_mb",
            "infer_peak_memory_mb", "data_min_pairs_per_s", "data_slowest_task")
    return {k: (round(r[k], 4) if isinstance(r.get(k), float) else r.get(k)) for k in keys if k in r}


def phase_check(s: Settings, outputs: Outputs, runner: Runner) -> None:
    section = outputs.phase("check")
    start = time.monotonic()
    deadline = start + s.minutes["check"] * 60
    section.update(status="running", started=now_iso(), budget_s=s.minutes["check"] * 60, smoke=s.smoke)
    section["environment"] = environment(s)
    outputs.save_report()
    env = section["environment"]
    outputs.log(f"check: {env.get('gpu', 'no GPU')}, torch {env['torch']}, {env['cpus']} CPUs, "
                f"{env['training_photos']} training photographs")
    s.work.mkdir(parents=True, exist_ok=True)

    def out_of_time(needed: float) -> bool:
        # The smoke never skips for time: on a loaded CI machine it must still cover every step.
        return runner.stop.is_set() or (not s.smoke and deadline - time.monotonic() < needed)

    kill_at = None if s.kill_grace is None else deadline

    # 1. The CUDA tests (they skip without a GPU).
    junit = s.work / "pytest-cuda.xml"
    junit.unlink(missing_ok=True)
    rc, seconds, tail = runner.run(
        [s.python, "-m", "pytest", "-m", "cuda", "-v", "-rs", "-p", "no:cacheprovider", "-o", "addopts=",
         "-o", "faulthandler_timeout=60",
         f"--junitxml={junit}", "tests/test_cuda.py"], "pytest",
        kill_at=kill_at and start + 0.55 * s.minutes["check"] * 60)
    section["pytest"] = {"returncode": rc, "seconds": round(seconds, 1), **parse_junit(junit)}
    if rc not in (0, 5):
        section["pytest"]["output_tail"] = tail[-15:]
    p = section["pytest"]
    outputs.log(f"check: pytest -m cuda: {p.get('passed', 0)} passed, {p.get('failed', 0)} failed, "
                f"{p.get('error', 0)} errors, {p.get('skipped', 0)} skipped ({seconds:.0f} s)")
    outputs.save_report()

    # 2. Speed on this device: images/s, peak memory, fraction of the bf16 matmul peak measured in the same run.
    results, rows = [], []
    for i, model in enumerate(BENCH_MODELS):
        if out_of_time(20):
            rows.append({"model": model, "skipped": "no time left"})
            continue
        path = s.work / f"bench-{model}.json"
        path.unlink(missing_ok=True)
        args = ["bench", "--model", model, "--device", s.device, "--precision", s.precision, "--json", str(path)]
        if s.smoke:  # 64 px: at the smoke's 32 px the 103-layer pyramid's bottleneck is 1×1
            args += ["--smoke", "--size", "64", "--threads", "1"]
        else:
            args += ["--batch-size", str(s.bench_batch), "--steps", "20", "--warmup", "3"]
        if i > 0:
            args.append("--no-data")  # the data pipeline does not depend on the model: time it once
        rc, seconds, tail = runner.run(runner.pyramidal(*args), f"bench {model}", kill_at=kill_at)
        if rc == 0 and path.exists():
            result = json.loads(path.read_text())
            results.append(result)
            rows.append({**bench_row(result), "seconds": round(seconds, 1)})
        else:
            rows.append({"model": model, "error": f"exit {rc}", "output_tail": tail[-10:]})
        section["bench"] = rows
        outputs.replace("bench.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n"))
        outputs.save_report()
    for row in rows:
        if "train_images_per_s" in row:
            outputs.log(f"check: bench {row['model']} batch {row['batch_size']}: train "
                        f"{row['train_images_per_s']:.0f} images/s ({100 * row['train_peak_fraction']:.1f} % of the "
                        f"{row['precision']} matmul peak), infer {row.get('infer_images_per_s', 0):.0f} images/s, "
                        f"peak memory {row.get('train_peak_memory_mb') or 0:.0f} MB")

    # 3. A short training run with the campaign's settings; its images/s sizes the train phase.
    if out_of_time(s.train_smoke_seconds + 10):
        section["train_smoke"] = {"skipped": "no time left"}
    else:
        parent = s.work / "check-train"
        before = existing_runs(parent / "noise")
        config = BUILTIN_CONFIGS / "noise.toml"
        args = train_args(s, config, parent, steps=s.max_steps or 10**6,
                          minutes=s.train_smoke_seconds / 60, patches_per_epoch=s.steps_per_epoch * s.batch_size)
        rc, seconds, tail = runner.run(runner.pyramidal(*args), "train smoke", kill_at=kill_at)
        summary = run_summary(new_run_dir(parent / "noise", before), seconds, None)
        summary.update(returncode=rc, config=rel(config), batch_size=s.batch_size, workers=s.workers)
        if rc != 0:
            summary["output_tail"] = tail[-15:]
        section["train_smoke"] = summary
        outputs.log(f"check: {s.train_smoke_seconds:.0f}-second training run: exit {rc}, {summary.get('steps')} steps, "
                    f"{summary.get('images_per_s')} images/s, best PSNR/val {summary.get('best_val_psnr')} dB")
    failed = p.get("failed", 0) or p.get("error", 0) or p.get("returncode") not in (0, 5)
    section.update(status="done" if not failed else "done, with failures", seconds=round(time.monotonic() - start, 1))
    outputs.save_report()


# ----------------------------------------------------------------------------------------------------------
# Phase `train`


@dataclass
class RecipeRun:
    """One phase of a built-in recipe: pyramidal/configs/builtin/TASK.toml (phase 1) or TASK-phaseK.toml."""

    task: str
    phase: int
    config: Path
    size: int
    steps: int

    @property
    def work(self) -> float:
        """The recipe's pixels, which share out a task's time among its phases."""
        return float(self.steps * self.size**2)

    def out_name(self) -> str:
        return "builtin" if self.phase == 1 else f"builtin-phase{self.phase}"


def discover_recipes(tasks: list[str] | None, max_phases: int | None) -> dict[str, list[RecipeRun]]:
    """Each built-in task's chain of phases, from pyramidal/configs/builtin/."""
    chains: dict[str, list[RecipeRun]] = {}
    for path in sorted(BUILTIN_CONFIGS.glob("*.toml")):
        name, _, phase = path.stem.partition("-phase")
        data = tomllib.loads(path.read_text())
        run = RecipeRun(name, int(phase or 1), path, int(data.get("size", 64)), int(data.get("steps") or 1000))
        chains.setdefault(name, []).append(run)
    unknown = sorted(set(tasks or []) - set(chains))
    if unknown:
        sys.exit(f"gpu-campaign: --tasks {','.join(unknown)}: no recipe in {rel(BUILTIN_CONFIGS)} "
                 f"(recipes: {', '.join(sorted(chains))})")
    out = {}
    for name in tasks or sorted(chains):
        chain = sorted(chains[name], key=lambda r: r.phase)
        out[name] = chain[:max_phases] if max_phases else chain
    return out


def train_args(s: Settings, config: Path, out: Path, *, steps: int, minutes: float, patches_per_epoch: int,
               init_weights: Path | None = None) -> list[str]:
    """`pyramidal train` arguments for one run of the campaign."""
    args = ["train", "--config", rel(config), "--out", rel(out), "--device", s.device, "--precision", s.precision,
            "--batch-size", str(s.batch_size), "--patches-per-epoch", str(patches_per_epoch),
            "--num-workers", str(s.workers), "--steps", str(steps), "--max-minutes", f"{minutes:.4f}",
            "--no-progress"]
    if init_weights is not None:
        args += ["--init-weights", rel(init_weights)]
    if not s.smoke:
        # Every training photograph there is: the CPU recipes pin the folders their shipped weights saw.
        photos = (ROOT / ".data" / "photos").is_dir()
        args += ["--data", "builtin+.data/photos" if photos else "builtin"]  # without: noted in the report
    return args + s.run_overrides + s.train_args


def assign_lanes(chains: dict[str, list[RecipeRun]], lanes: int) -> list[list[str]]:
    """Tasks per lane, longest chains first, each to the lane with the fewest phases so far."""
    assigned: list[list[str]] = [[] for _ in range(lanes)]
    for name in sorted(chains, key=lambda n: -len(chains[n])):
        min(assigned, key=lambda tasks: sum(len(chains[t]) for t in tasks)).append(name)
    return assigned


class Planner:
    """Shares the phase's time among tasks and their phases, and turns seconds into steps.

    Each lane runs its own list of tasks (`assign_lanes`). A task that starts gets a share of its lane's
    time left, in proportion to its number of phases among the lane's tasks still to come; inside it, each
    phase gets a share of what remains in proportion to its recipe's pixels. So a run that ends early leaves
    its time to the next. Steps follow from the measured images/s (the first runs use the check phase's
    rate), so that the cosine schedule ends as the time does; --max-minutes stops a run whose estimate
    was too high.
    """

    def __init__(self, s: Settings, chains: dict[str, list[RecipeRun]], deadline: float, rate: float):
        self.s, self.deadline = s, deadline
        self.lanes = assign_lanes(chains, s.lanes)
        self.pending = {name: len(chain) for name, chain in chains.items()}
        self.rate_64 = rate  # images/s at 64 px, any task
        self.task_rate_64: dict[str, float] = {}
        self.overheads: list[float] = []  # seconds of a run outside its training loop (start-up, loading)
        self.evals: list[float] = []
        self._lock = threading.Lock()

    @property
    def overhead(self) -> float:
        return statistics.median(self.overheads) if self.overheads else (4.0 if self.s.smoke else 10.0)

    @property
    def eval_seconds(self) -> float:
        return statistics.median(self.evals) if self.evals else (4.0 if self.s.smoke else 15.0)

    def start_task(self, lane: int, task: str) -> float:
        """The time by which `task` (starting now on `lane`) should be done, evaluation included."""
        with self._lock:
            now = time.monotonic()
            to_come = sum(self.pending.get(t, 0) for t in self.lanes[lane])
            phases = self.pending.pop(task)
            return now + max(0.0, self.deadline - now) * phases / to_come

    def plan_run(self, run: RecipeRun, remaining: list[RecipeRun], task_end: float) -> tuple[int, float]:
        """(steps, minutes) for `run`, the first of `remaining`, so that the task ends by `task_end`."""
        with self._lock:
            now = time.monotonic()
            # Each run still to come costs its start-up overhead and the task ends with one evaluation: keep
            # those aside first, then share what is left by work, so short last phases are not squeezed out.
            spare = task_end - now - self.overhead * len(remaining) - self.eval_seconds
            seconds = max(0.0, spare) * run.work / sum(r.work for r in remaining)
            # A floor keeps a share from being too short to train at all, but never past the task's end.
            seconds = max(seconds, min(3.0 if self.s.smoke else 10.0, max(0.0, spare)))
            rate = self.task_rate_64.get(run.task, self.rate_64) * (64 / run.size) ** 2
            steps = max(1, int(0.95 * rate * seconds / self.s.batch_size))
            if self.s.max_steps:
                steps = min(steps, self.s.max_steps)
            return steps, seconds / 60

    def observe(self, run: RecipeRun, summary: dict[str, Any]) -> None:
        with self._lock:
            if summary.get("images_per_s"):
                rate = summary["images_per_s"] * (run.size / 64) ** 2
                self.task_rate_64[run.task] = rate
                self.rate_64 = statistics.median(self.task_rate_64.values())
            if summary.get("training_seconds") is not None:
                self.overheads.append(max(0.0, summary["seconds"] - summary["training_seconds"]))


def packaged_scores(task: str) -> dict[str, float]:
    """The shipped weights' PSNR per evaluation setting (pyramidal/weights/TASK.json)."""
    path = ROOT / "pyramidal" / "weights" / f"{task}.json"
    try:
        return {s["setting"]: s["ours_psnr"] for s in json.loads(path.read_text()).get("scores", [])}
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}


def eval_scores(result: dict[str, Any], task: str, default_eval: bool) -> list[dict[str, Any]]:
    """Per setting: the model's PSNR/SSIM, the damaged input, the best classical row, and (when evaluated on
    the same images as the shipped weights' scores) the shipped weights' PSNR."""
    from pyramidal.evaluate import best_baseline

    shipped = packaged_scores(task) if default_eval else {}
    scores = []
    for setting in result.get("settings", []):
        rows = setting["rows"]
        model = next((r for r in rows if r["kind"] == "model"), None)
        damaged = next((r for r in rows if r["kind"] == "input"), None)
        if model is None:
            continue
        best = best_baseline(rows)
        label = setting.get("label", "")
        entry = {"setting": label, "psnr": round(model["psnr"], 3), "ssim": round(model["ssim"], 4),
                 "damaged_psnr": damaged and round(damaged["psnr"], 3)}
        if best:
            entry.update(baseline=best["method"], baseline_psnr=round(best["psnr"], 3))
        if label in shipped:
            entry.update(shipped_psnr=shipped[label], gain_over_shipped=round(model["psnr"] - shipped[label], 3))
        scores.append(entry)
    return scores


class TrainPhase:
    """Trains every task's chain on `lanes` parallel lanes, then packs and evaluates each as it finishes."""

    def __init__(self, s: Settings, outputs: Outputs, runner: Runner):
        self.s, self.outputs, self.runner = s, outputs, runner
        self.section = outputs.phase("train")
        self.finished: dict[str, list[tuple[Path, str]]] = {}  # task -> files for weights.tar
        self.arc_root = ROOT if s.work.resolve().is_relative_to(ROOT) else s.work.resolve().parent
        self._lock = outputs.lock

    def initial_rate(self) -> tuple[float, str]:
        if self.s.rate:
            return self.s.rate, "--rate"
        smoke_run = self.outputs.report["phases"].get("check", {}).get("train_smoke", {})
        if smoke_run.get("images_per_s") and smoke_run.get("batch_size") == self.s.batch_size:
            return float(smoke_run["images_per_s"]), "the check phase's training run"
        return (20.0 if self.s.smoke else 2500.0), "a default guess"

    def run(self) -> None:
        s, section = self.s, self.section
        start = time.monotonic()
        total = s.minutes["train"] * 60
        reserve = 5.0 if s.smoke else 15.0  # the last archive and report
        research_time = total * s.research_share if s.research else 0.0
        deadline = start + total - reserve - research_time
        chains = discover_recipes(s.tasks, s.max_phases)
        rate, rate_source = self.initial_rate()
        self.planner = Planner(s, chains, deadline, rate)
        photos = (ROOT / ".data" / "photos").is_dir()
        section.update(
            status="running", started=now_iso(), budget_s=total, smoke=s.smoke,
            settings={"device": s.device, "precision": s.precision, "batch_size": s.batch_size,
                      "steps_per_epoch": s.steps_per_epoch, "num_workers": s.workers, "lanes": s.lanes,
                      "initial_rate_images_per_s": rate, "initial_rate_from": rate_source,
                      "training_photos": photos, "train_args": s.train_args, "research": s.research},
            tasks={name: {"status": "waiting", "phases": len(chain)} for name, chain in chains.items()})
        if not photos and not s.smoke:
            section["note"] = ("no training photographs in .data/photos (carry .data): trained on the built-in "
                               "photographs alone, unlike the recipes")
        if "environment" not in self.outputs.report["phases"].get("check", {}):
            section["environment"] = environment(s)
        self.outputs.save_report()
        self.outputs.log(f"train: {len(chains)} tasks, {sum(map(len, chains.values()))} runs, {s.lanes} lanes, "
                         f"batch {s.batch_size}, {total / 60:.1f} min; first rate estimate {rate:.0f} images/s "
                         f"at 64 px ({rate_source})")
        self._write_archive()

        lanes = [threading.Thread(target=self._lane, args=(i, tasks, chains), daemon=True)
                 for i, tasks in enumerate(self.planner.lanes)]
        for t in lanes:
            t.start()
        for t in lanes:
            while t.is_alive():
                t.join(timeout=0.5)
        if s.research and not self.runner.stop.is_set():
            self._research(start + total - reserve)
        done = [n for n, t in section["tasks"].items() if t["status"] == "done"]
        section.update(status="interrupted" if self.runner.stop.is_set() else "done",
                       seconds=round(time.monotonic() - start, 1), tasks_done=len(done))
        self.outputs.save_report()

    def _lane(self, lane: int, tasks: list[str], chains: dict[str, list[RecipeRun]]) -> None:
        for task in tasks:
            if self.runner.stop.is_set():
                return
            try:
                self._train_task(lane, task, chains[task])
            except Exception as exc:  # one task's failure must not cost the others their time
                self.outputs.log(f"train {task}: failed: {type(exc).__name__}: {exc}")
                with self._lock:
                    self.section["tasks"][task].update(status="failed", error=f"{type(exc).__name__}: {exc}")
                    self.outputs.save_report()

    def _train_task(self, lane: int, task: str, chain: list[RecipeRun]) -> None:
        s, planner = self.s, self.planner
        task_end = planner.start_task(lane, task)
        entry = self.section["tasks"][task]
        needed = len(chain) * (planner.overhead + 10) + planner.eval_seconds
        if not s.smoke and task_end - time.monotonic() < needed:
            with self._lock:  # better nothing than a run killed halfway: the finished tasks stay whole
                entry.update(status="skipped", reason=f"{task_end - time.monotonic():.0f} s left, {needed:.0f} s needed")
                self.outputs.save_report()
            self.outputs.log(f"train {task}: skipped, {entry['reason']}")
            return
        with self._lock:
            entry.update(status="training", lane=lane, started=now_iso(),
                         planned_seconds=round(max(0.0, task_end - time.monotonic()), 1), runs=[])
        self.outputs.log(f"train {task}: {len(chain)} phase(s) in {entry['planned_seconds']:.0f} s (lane {lane})")
        previous: Path | None = None
        for i, run in enumerate(chain):
            if self.runner.stop.is_set():
                break
            steps, minutes = planner.plan_run(run, chain[i:], task_end)
            parent = s.work / run.out_name()
            before = existing_runs(parent / task)
            args = train_args(s, run.config, parent, steps=steps, minutes=minutes,
                              patches_per_epoch=s.steps_per_epoch * s.batch_size,
                              init_weights=previous and previous / "best.safetensors")
            rc, seconds, tail = self.runner.run(self.runner.pyramidal(*args), f"{task} phase {run.phase}",
                                                kill_at=self._kill_at())
            run_dir = new_run_dir(parent / task, before)
            summary = {"phase": run.phase, "config": rel(run.config), "planned_steps": steps,
                       "planned_minutes": round(minutes, 3), "returncode": rc,
                       **run_summary(run_dir, seconds, steps)}
            planner.observe(run, summary)
            ok = rc == 0 and run_dir is not None and (run_dir / "best.safetensors").exists()
            if not ok:
                summary["output_tail"] = tail[-15:]
            with self._lock:
                entry["runs"].append(summary)
                self.outputs.save_report()
            self.outputs.log(f"train {task} phase {run.phase}: exit {rc}, {summary.get('steps')} of {steps} steps "
                             f"in {seconds:.0f} s, {summary.get('images_per_s')} images/s, best PSNR/val "
                             f"{summary.get('best_val_psnr')} dB")
            if not ok:
                break
            previous = run_dir
        complete = len(entry["runs"]) == len(chain) and entry["runs"][-1]["returncode"] == 0
        if previous is None or (self.runner.stop.is_set() and not complete):
            with self._lock:  # a stopped campaign packs no half-trained task: the time left goes to the report
                entry.update(status="interrupted" if self.runner.stop.is_set() else "failed",
                             error=None if self.runner.stop.is_set() else "no phase finished")
                self.outputs.save_report()
            return
        self._package(task, chain, previous, entry, complete)

    def _package(self, task: str, chain: list[RecipeRun], final: Path, entry: dict, complete: bool) -> None:
        """fp16 weights + sidecar, scored on the validation photographs, then into weights.tar."""
        from pyramidal.checkpoint import load_weights, save_weights, sidecar_path

        s = self.s
        weights = s.work / "weights" / f"{task}.safetensors"
        model = load_weights(final / "best.safetensors")
        info = model.info
        config = json.loads((final / "config.json").read_text())
        commands = []
        for summary, run in zip(entry["runs"], chain):
            commands.append(f"pyramidal train --config {rel(run.config)} --batch-size {s.batch_size} "
                            f"--steps {summary['planned_steps']} --device {s.device} --precision {s.precision}"
                            + (" --init-weights <previous phase>/best.safetensors" if run.phase > 1 else ""))
        env = self.outputs.report["phases"].get("check", {}).get("environment") or self.section.get("environment", {})
        seconds = sum(r.get("seconds", 0) for r in entry["runs"])
        metadata = {
            "task": task, "task_options": info.get("task_options", {}),
            "parameters": sum(p.numel() for p in model.parameters()), "data": config.get("data"),
            "steps": sum(r.get("best_step") or 0 for r in entry["runs"]),
            "val_psnr_64px": info.get("val_psnr"), "command": " && ".join(commands),
            "config": {k: v for k, v in config.items() if v is not None}, "dtype": "float16",
            "trained_on": (f"{env.get('gpu', s.device)} for {seconds:.0f} s with "
                           + ", ".join(rel(r.config) for r in chain[:len(entry["runs"])])
                           + " (scripts/gpu-campaign.sh train)"),
            "campaign": {"torch": env.get("torch"), "complete": complete, "runs": entry["runs"]},
        }
        save_weights(model, weights, metadata, half=True)
        self.outputs.log(f"train {task}: packed {rel(weights)}; evaluating")
        eval_json = s.work / "eval" / f"{task}.json"
        eval_json.unlink(missing_ok=True)
        eval_json.parent.mkdir(parents=True, exist_ok=True)
        rc, seconds, tail = self.runner.run(
            self.runner.pyramidal("evaluate", "--task", task, "--weights", str(weights), "--baselines", "fast",
                                  "--device", s.device, "--json", str(eval_json), *s.eval_overrides),
            f"{task} evaluate", kill_at=self._kill_at())
        self.planner.evals.append(seconds)
        scores = (eval_scores(json.loads(eval_json.read_text()), task, not s.eval_overrides)
                  if rc == 0 and eval_json.exists() else [])
        if scores:
            metadata["campaign_scores"] = scores
            save_weights(model, weights, metadata, half=True)  # the file's own record and its sidecar copy
        files = [weights, sidecar_path(weights), eval_json]
        for summary in entry["runs"]:
            if "run" in summary:
                run_dir = ROOT / summary["run"]  # (an absolute path stays itself)
                files += [run_dir / n for n in ("config.json", "best.json", "metrics.csv")]
        with self._lock:
            self.finished[task] = [(p, self._arcname(p)) for p in files]
            entry.update(status="done" if complete else "partial", weights=rel(weights), final_run=rel(final),
                         scores=scores, evaluate_returncode=rc, finished=now_iso())
            if rc != 0:
                entry["evaluate_output_tail"] = tail[-10:]
            self._write_archive()
            self.outputs.save_report()
        for sc in scores:
            gain = f", {sc['gain_over_shipped']:+.2f} dB over the shipped weights" if "gain_over_shipped" in sc else ""
            self.outputs.log(f"train {task} {sc['setting'] or ''}: {sc['psnr']:.2f} dB{gain}")

    def _kill_at(self) -> float | None:
        return None if self.s.kill_grace is None else self.planner.deadline + self.s.kill_grace

    def _arcname(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.arc_root))

    def _write_archive(self) -> None:
        """weights.tar, then weights-2.tar and weights-3.tar once the tasks outgrow 15 MiB (about 9 tasks)."""
        parts = split_parts(list(self.finished.values()))  # in the order the tasks finished
        archives = []
        for i, files in enumerate(parts[:MAX_WEIGHT_ARCHIVES]):
            archives.append(write_archive(self.outputs, "weights.tar" if i == 0 else f"weights-{i + 1}.tar", files))
        if len(parts) > MAX_WEIGHT_ARCHIVES:
            archives[-1]["left_out"] += [name for files in parts[MAX_WEIGHT_ARCHIVES:] for _, name in files]
        self.section["archives"] = archives

    def _research(self, end: float) -> None:
        """Issue 19's comparison in the time that is left: the parts of `pyramidal.compare.RESEARCH_PARTS`
        named by --research-tasks (squares and block: the research's four models and pyramidal51 with
        up=upsample; depth: pyramidal457101215 against plain103 on block), as scripts/research-comparison.sh."""
        from pyramidal.compare import PRESETS, RESEARCH_PARTS

        s = self.s
        section = self.section.setdefault("research", {"tasks": {}})
        left = end - time.monotonic()
        tasks = [t for t in s.research_tasks if t in RESEARCH_PARTS]
        for task in s.research_tasks:
            if task not in RESEARCH_PARTS:
                section["tasks"][task] = {"skipped": f"not one of {', '.join(RESEARCH_PARTS)}"}
        if not tasks or (left < 90 and not s.smoke):
            section["skipped"] = f"{left:.0f} s left" if tasks else "no known part in --research-tasks"
            return
        if s.research_steps:
            steps = s.research_steps
        else:  # equal steps for every model; batch 16 steps cost about what the measured batch-B steps did
            per_model = (left / len(tasks) - 30) / max(len(PRESETS[RESEARCH_PARTS[t][0]]["models"]) for t in tasks)
            steps_per_s = self.planner.rate_64 / s.batch_size
            steps = max(100, int(0.6 * steps_per_s * per_model))
        section.update(steps=steps, parts={t: list(RESEARCH_PARTS[t]) for t in tasks})
        parent = s.work / "research"
        files: list[tuple[Path, str]] = []
        for task in tasks:
            if self.runner.stop.is_set():
                break
            preset, damage = RESEARCH_PARTS[task]
            folder = parent / task  # the comparison's folder: the same command again continues it
            args = ["compare", "--preset", preset, "--task", damage, "--steps", str(steps), "--device",
                    s.device, "--precision", s.precision, "--out", str(folder), "--baselines", "fast",
                    "--train-option", f"num_workers={s.workers}",
                    "--train-option", f"patches_per_epoch={16 * (s.steps_per_epoch if s.smoke else 1000)}",
                    "--train-option", f"val_images={4 if s.smoke else 48}", "--train-option", "log_images=0"]
            if s.smoke:
                args += ["--size", "32", "--eval-limit", "1", "--train-option", "threads=1"]
            rc, seconds, tail = self.runner.run(self.runner.pyramidal(*args), f"research {task}",
                                                kill_at=None if s.kill_grace is None else end)
            started = (folder / "plan.json").is_file()
            section["tasks"][task] = {"returncode": rc, "seconds": round(seconds, 1),
                                      "folder": rel(folder) if started else None}
            if rc != 0:
                section["tasks"][task]["output_tail"] = tail[-10:]
            if started:
                files += [(p, str(p.relative_to(parent))) for p in sorted(folder.rglob("*"))
                          if p.is_file() and not p.name.startswith(".")
                          and (p.parent == folder or p.name in ("config.json", "best.json", "metrics.csv"))]
                section["archive"] = write_archive(self.outputs, "research.tar", files)
            self.outputs.save_report()


# ----------------------------------------------------------------------------------------------------------


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The closing table: what the device tool's output tail shows."""
    lines = []
    check = report["phases"].get("check")
    if check:
        p = check.get("pytest", {})
        lines.append(f"check [{check.get('status')}]: pytest -m cuda {p.get('passed', 0)} passed, "
                     f"{p.get('failed', 0)} failed, {p.get('error', 0)} errors, {p.get('skipped', 0)} skipped")
        for t in p.get("tests", []):
            if t["outcome"] in ("failed", "error"):
                lines.append(f"  {t['outcome']}: {t['test']}: {t['message'][:150]}")
        for row in check.get("bench", []):
            if "train_images_per_s" in row:
                lines.append(f"  bench {row['model']:<20} batch {row['batch_size']:>3}: train "
                             f"{row['train_images_per_s']:>8.0f} img/s {100 * row['train_peak_fraction']:5.1f} %  "
                             f"infer {row.get('infer_images_per_s', 0):>8.0f} img/s  "
                             f"peak {row.get('train_peak_memory_mb') or 0:.0f} MB")
            else:
                lines.append(f"  bench {row.get('model')}: {row.get('error') or row.get('skipped')}")
        smoke = check.get("train_smoke", {})
        lines.append(f"  training run: {smoke.get('steps')} steps, {smoke.get('images_per_s')} images/s "
                     f"(pass --rate {smoke.get('images_per_s')} to the train phase)")
    train = report["phases"].get("train")
    if train:
        lines.append(f"train [{train.get('status')}]: {train.get('tasks_done', 0)} of {len(train.get('tasks', {}))} "
                     f"tasks done in {train.get('seconds', 0):.0f} s; "
                     + ", ".join(f"{a['file']} {a['bytes'] / 2**20:.1f} MiB" for a in train.get("archives", [])))
        for name, t in train.get("tasks", {}).items():
            runs = t.get("runs", [])
            steps = "+".join(str(r.get("steps")) for r in runs)
            scores = ", ".join(f"{sc['setting'] or name} {sc['psnr']:.2f}"
                               + (f" ({sc['gain_over_shipped']:+.2f})" if "gain_over_shipped" in sc else "")
                               for sc in t.get("scores", []))
            lines.append(f"  {name:<9} {t['status']:<8} steps {steps or '-'}: {scores or '-'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Defaults: GPU values, then smoke values in brackets.")
    parser.add_argument("phase", nargs="?", default="all", choices=("check", "train", "all"))
    parser.add_argument("--smoke", action="store_true", help="tiny budgets on the CPU (CI)")
    parser.add_argument("--out", help="where the returned files go (default $OUT)")
    parser.add_argument("--work", default="runs/gpu-campaign",
                        help="scratch folder for the runs, relative to the repository root [runs/gpu-campaign]")
    parser.add_argument("--device", help="cuda [cpu]")
    parser.add_argument("--precision", help="bf16 [auto]")
    parser.add_argument("--check-minutes", type=float, help="the check phase's time [2.5; 1.5]")
    parser.add_argument("--train-minutes", type=float, help="the train phase's time, evaluation included [7.5; 2]")
    parser.add_argument("--tasks", help="comma-separated built-in tasks [every recipe in pyramidal/configs/builtin/]")
    parser.add_argument("--max-phases", type=int, help="at most this many phases per task [all; 2]")
    parser.add_argument("--batch-size", type=int, help="training batch [64; 4]")
    parser.add_argument("--steps-per-epoch", type=int,
                        help="sets --patches-per-epoch (validation and last.ckpt once per epoch) [400; 2]")
    parser.add_argument("--workers", type=int, help="data loader processes per run [CPUs / lanes - 2; 0]")
    parser.add_argument("--lanes", type=int, help="tasks trained at the same time [2; 1]")
    parser.add_argument("--rate", type=float,
                        help="images/s at 64 px for the first step estimates: the check phase's training run "
                             "[from report.json in OUT, else 2500; 20]")
    parser.add_argument("--max-steps", type=int, help="cap on any run's steps [none; 2]")
    parser.add_argument("--train-smoke-seconds", type=float, help="the check phase's training run [20; 5]")
    parser.add_argument("--train-arg", action="append", metavar="ARG",
                        help="extra `pyramidal train` argument for every run (repeatable), e.g. --train-arg=--lr=2e-3")
    parser.add_argument("--bench-batch", type=int, help="batch of the check phase's bench [64]")
    parser.add_argument("--research", action="store_true",
                        help="train phase: then issue 19's comparison in the time reserved by --research-share")
    parser.add_argument("--research-tasks", default="squares,block",
                        help="parts of the comparison: squares, block, depth (pyramidal.compare.RESEARCH_PARTS) "
                             "[squares,block]")
    parser.add_argument("--research-share", type=float, default=0.3, help="share of the train phase's time [0.3]")
    parser.add_argument("--research-steps", type=int, help="steps per model [from the time and the measured rate; 2]")
    args = parser.parse_args(argv)
    s = Settings.from_args(args)
    if not s.work.is_absolute():
        s.work = ROOT / s.work
    if s.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"gpu-campaign: --device {s.device}: no CUDA device here (torch {torch.__version__}); "
                     "use --smoke or --device cpu")
    outputs = Outputs(s.out)
    runner = Runner(s, outputs)

    def on_signal(signum, frame):
        outputs.log(f"{signal.Signals(signum).name}: stopping the campaign, keeping what finished")
        runner.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    phases = ("check", "train") if s.phase == "all" else (s.phase,)
    try:
        for phase in phases:
            if runner.stop.is_set():
                break
            if phase == "check":
                phase_check(s, outputs, runner)
            else:
                TrainPhase(s, outputs, runner).run()
    finally:
        for phase in phases:
            section = outputs.report["phases"].get(phase, {})
            if section.get("status") == "running":
                section["status"] = "interrupted"
        outputs.save_report()
        for line in summary_lines(outputs.report):
            outputs.log(line)
        outputs.close()
    return 130 if runner.stop.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())

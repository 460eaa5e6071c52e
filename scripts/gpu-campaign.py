#!/usr/bin/env python
"""The GPU campaign in one call: CUDA checks, training at GPU scale, scores against the shipped weights.

Everything runs in this one process except the CUDA tests (a subprocess, so that a hung test can be killed),
under one wall-clock budget (--seconds): a time guard stops training at the deadline and, should anything
still run 20 s later, writes the report and exits. OUT (--out or $OUT) receives, each replaced whole as it
is ready, at most 6 files: report.json, campaign.log, check.json and one LABEL.tar per entry (fp16 weights,
sidecar, scores, metrics). The library calls are in pyramidal/campaign.py; docs/gpu-campaign.md has the
`run` call and its budget.

Usage: scripts/gpu-campaign.sh all [--smoke] [--out DIR] [--seconds S] [--train RECIPE|LABEL=RECIPE ...]
       scripts/gpu-campaign.sh prepare [--data SPEC]   # here: the training photographs, sized to travel
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FILE_LIMIT = 16 * 2**20  # the device tool returns files up to 16 MiB, at most 8 of them
GRACE = 20.0  # seconds past the deadline before the guard writes the report and exits
DEFAULT_TRAIN = ["noise", "noise-wide=noise"]
DEFAULT_OPTIONS = ["noise-wide:m=48", "noise-wide:growth=24"]  # 2× the width: 3.2 M parameters, 3.9× the FLOPs
# Both CPU cores of the machines the shipped weights were trained on, on the same model and patches: 12.8 images/s
# on one idle thread (docs/performance.md, `pyramidal bench --model pyramidal23456 --size 64 --batch-size 16
# --mode both --threads 1`), twice that for two cores (an upper bound: two threads scale less than 2×).
CPU_REFERENCE = {"images_per_s": 25.6, "model": "pyramidal23456", "size": 64,
                 "machine": "AMD EPYC Zen 4, 2 cores (2 × the 1-thread rate of docs/performance.md)"}


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class Out:
    """OUT's files, each replaced atomically; the log is appended line by line."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._log = open(folder / "campaign.log", "a", encoding="utf-8")
        self.report: dict[str, Any] = {"campaign": "pyramidal GPU campaign (scripts/gpu-campaign.sh)",
                                       "started": now_iso(), "status": "running"}

    def log(self, message: str) -> None:
        with self.lock:
            self._log.write(f"{datetime.datetime.now():%H:%M:%S} {message}\n")
            self._log.flush()
        print(message, flush=True)

    def replace(self, name: str, write) -> None:
        with self.lock:
            tmp = self.folder / f".{name}.tmp"
            write(tmp)
            os.replace(tmp, self.folder / name)

    def json(self, name: str, data: Any) -> None:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
        self.replace(name, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def save(self) -> None:
        with self.lock:
            self.report["updated"] = now_iso()
            self.json("report.json", self.report)

    def archive(self, name: str, files: list[tuple[Path, str]]) -> dict[str, Any]:
        """OUT/name: a tar of (path, name inside) under the size limit; what does not fit is listed, not packed."""
        kept, left_out, size = [], [], 1024
        for path, arcname in files:
            if not path.is_file():
                continue
            need = 512 + (path.stat().st_size + 511) // 512 * 512
            if size + need > FILE_LIMIT - 2**20:
                left_out.append(arcname)
                continue
            kept.append((path, arcname))
            size += need

        def write(tmp: Path) -> None:
            with tarfile.open(tmp, "w") as tar:
                for path, arcname in kept:
                    tar.add(path, arcname=arcname, recursive=False)

        self.replace(name, write)
        return {"file": name, "members": len(kept), "bytes": (self.folder / name).stat().st_size,
                "left_out": left_out}


class Guard:
    """The wall-clock budget: `left()` seconds remain; at the deadline a SIGTERM asks the training run in
    progress to stop after its step (it writes last.ckpt and keeps its best weights); GRACE seconds later, if
    the campaign has not finished, the report is written and the process exits."""

    def __init__(self, seconds: float, out: Out):
        self.start = time.monotonic()
        self.deadline = self.start + seconds
        self.out = out
        self.done = threading.Event()
        self.stopped = False
        threading.Thread(target=self._watch, daemon=True).start()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _watch(self) -> None:
        if self.done.wait(max(0.0, self.left())):
            return
        self.stopped = True
        self.out.log("time guard: the deadline is reached; stopping the run in progress")
        os.kill(os.getpid(), signal.SIGTERM)
        if self.done.wait(GRACE):
            return
        self.out.log(f"time guard: still running {GRACE:.0f} s past the deadline; writing the report and exiting")
        self.out.report["status"] = "stopped by the time guard"
        self.out.save()
        os._exit(3)


# ----------------------------------------------------------------------------------------------------------
# The machine and the CUDA checks


def environment(device) -> dict[str, Any]:
    import platform

    import torch

    from pyramidal import __version__
    from pyramidal.bench.measure import machine_kind

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "pyramidal": __version__,
                           "device": str(device), **machine_kind(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        try:  # a read-only query: the card's settings are never changed
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            env["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:  # the device machine's copy of the tree may have no git
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            env["commit"] = head.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


OUTCOME = re.compile(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
TEST_ID = re.compile(r"(tests/\S+::\S+)")


class Subprocess:
    """A command in its own process group, its output logged and kept; `stop()` kills the whole group."""

    def __init__(self, args: list[str], out: Out, tag: str, env: dict | None = None):
        self.tail: deque[str] = deque(maxlen=4000)
        self.out, self.tag = out, tag
        out.log(f"[{tag}] $ {' '.join(args)}")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace", start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.tail.append(line.rstrip("\n"))
            with self.out.lock:
                self.out._log.write(f"[{self.tag}] {line}")

    def wait(self, until: float | None) -> int | None:
        """The exit code, or None after killing it at `until` (time.monotonic)."""
        while self.proc.poll() is None:
            if until is not None and time.monotonic() > until:
                self.stop()
                self.reader.join(5)
                return None
            time.sleep(0.2)
        self.reader.join(5)
        return self.proc.returncode

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cuda_tests(s: argparse.Namespace, out: Out) -> Subprocess:
    """`pytest -m cuda` in the background: each test under --test-timeout when pytest-timeout is there, in
    parallel workers when pytest-xdist is; the whole run is killed at the check deadline."""
    args = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-rs", "-p", "no:cacheprovider", "-o", "addopts=",
            "-o", "faulthandler_timeout=60", "tests/test_cuda.py"]
    if importlib.util.find_spec("pytest_timeout"):
        args += [f"--timeout={s.test_timeout}", "--timeout-method=signal"]
    if importlib.util.find_spec("xdist") and not s.smoke:
        args += ["-n", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return Subprocess(args, out, "pytest", env)


def parse_tests(lines: list[str], returncode: int | None) -> dict[str, Any]:
    """Per-test outcomes from pytest -v lines (as far as it got), and the counts."""
    tests: dict[str, str] = {}
    for line in lines:
        test, outcome = TEST_ID.search(line), OUTCOME.search(line)
        if test and outcome:
            tests[test.group(1)] = outcome.group(1).lower()
    counts = {k: sum(v == k for v in tests.values()) for k in ("passed", "failed", "error", "skipped")}
    result = {"returncode": returncode, "finished": returncode is not None, **counts, "tests": tests}
    if returncode is None:
        result["note"] = "killed at the check deadline; the tests not listed did not finish"
    if returncode not in (0, 5, None) or counts["failed"] or counts["error"]:
        result["output_tail"] = [line for line in lines if "Error" in line or "assert" in line][-20:]
    return result


COMPILE_GAIN = 1.15  # what torch.compile must gain to be used: its compile time comes out of the training's


def compile_probe(s: argparse.Namespace, out: Out) -> Subprocess:
    """`pyramidal bench --compile` of the default architecture at the training batch, in the background beside
    the CUDA tests (killed with them at the check deadline): its images/s, and how long compiling took."""
    path = Path(s.work).resolve() / "compile-bench.json"
    path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    probe = Subprocess([sys.executable, "-m", "pyramidal", *compile_bench_args(s, path)], out, "compile", env)
    probe.path, probe.started = path, time.monotonic()
    return probe


def compile_bench_args(s: argparse.Namespace, path: Path) -> list[str]:
    return ["bench", "--model", "pyramidal23456", "--mode", "train", "--compile", "--no-data", "--size", str(s.size),
            "--batch-size", str(s.batch_size), "--precision", s.precision, "--steps", "10", "--warmup", "2",
            "--json", str(path)]


def compile_decision(probe: dict | None, sweep: dict, batch: int) -> dict[str, Any]:
    """Whether the training runs compiled: the compiled rate over the sweep's eager one at the same batch."""
    eager = next((row.get("train_images_per_s") for model in sweep.get("models", [])[:1]
                  for row in model.get("rows", []) if row.get("batch_size") == batch), None)
    if not probe or not probe.get("train_images_per_s") or not eager:
        return {"use": False, "why": "the compiled bench did not finish in time" if not probe else "no eager rate"}
    gain = probe["train_images_per_s"] / eager
    return {"use": gain >= COMPILE_GAIN, "gain": round(gain, 3), "compiled_images_per_s": probe["train_images_per_s"],
            "eager_images_per_s": eager, "seconds": probe.get("wall_seconds"),
            "why": f"{gain:.2f}× the eager rate ({'at least' if gain >= COMPILE_GAIN else 'below'} {COMPILE_GAIN}×)"}


def bench_sweep(s: argparse.Namespace, entries, device, out: Out) -> dict[str, Any]:
    """Training images/s and the fraction of the measured bf16 matmul peak at each --sweep batch for the default
    architecture, and at the training batch for every other architecture the entries train."""
    from pyramidal.bench.config import BenchConfig
    from pyramidal.bench.report import format_sweep
    from pyramidal.bench.run import run_sweep
    from pyramidal.campaign import train_config

    models = {}
    for entry in entries:
        config = train_config(plan(s, entry, device, steps=1, seconds=60))
        name, options = config.model, config.model_kwargs()
        key = (name, json.dumps(options, sort_keys=True))
        models.setdefault(key, (name, options, s.sweep if not models else [s.batch_size]))
    results = []
    for name, options, batches in models.values():
        config = BenchConfig(model=name, options=options, size=s.size, device=str(device), precision=s.precision,
                             steps=s.bench_steps, warmup=1 if s.smoke else 2, matmul_seconds=0.05 if s.smoke else 0.5,
                             data=False)
        result = run_sweep(config, batches)
        out.log(format_sweep(result))
        results.append(result)
    return {"models": results}


# ----------------------------------------------------------------------------------------------------------
# Training the entries


def entry_files(summary: dict, packed: Path, scores_path: Path, work: Path) -> list[tuple[Path, str]]:
    run = Path(summary["run"])
    files = [(packed, packed.name), (packed.with_suffix(".json"), packed.with_suffix(".json").name),
             (scores_path, scores_path.name)]
    files += [(run / n, f"run/{n}") for n in ("config.json", "best.json", "metrics.csv")]
    return files


def plan(s: argparse.Namespace, entry, device, **kw) -> dict[str, Any]:
    """The entry's `pyramidal train` settings with the campaign's flags (campaign.plan)."""
    from pyramidal import campaign

    return campaign.plan(entry, batch_size=s.batch_size, out=Path(s.work) / entry.label, device=str(device),
                         precision=s.precision, data=s.data, task_options=s.task_options, lr_rule=s.lr_rule,
                         steps_per_epoch=s.steps_per_epoch, num_workers=s.workers, compile=s.compile == "on",
                         overrides=s.train_options.get(entry.label), **kw)


def train_entries(s: argparse.Namespace, entries, device, machine: dict, guard: Guard, out: Out) -> None:
    """Each entry in turn; one that fails leaves its error in the report and the next one its time."""
    section = out.report.setdefault("entries", {})
    for i, entry in enumerate(entries):
        record = section.setdefault(entry.label, {"recipe": entry.recipe, "status": "waiting"})
        if guard.stopped:
            record["status"] = "not started: the campaign was stopped"
            continue
        try:
            train_entry(s, entry, len(entries) - i, device, machine, guard, out, record)
        except Exception as exc:
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc().splitlines()[-25:])
            out.log(f"{entry.label}: failed: {traceback.format_exc()}")
            out.save()


def train_entry(s: argparse.Namespace, entry, remaining: int, device, machine: dict, guard: Guard, out: Out,
                record: dict) -> None:
    """One entry: the start probe, the run, its scores and its archive, in its share of the time left."""
    from pyramidal import campaign

    work = Path(s.work)
    share = (guard.left() - s.final_reserve) / remaining
    # The smoke never skips for time: on a loaded CI machine it must still cover every step (the guard ends it).
    if not s.smoke and share < s.probe_seconds + s.score_reserve + 30:
        record.update(status="skipped", reason=f"{share:.0f} s left for it")
        out.log(f"{entry.label}: skipped, {share:.0f} s left for it")
        out.save()
        return
    end = time.monotonic() + share
    settings = plan(s, entry, device, steps=1, seconds=share, init_weights=None)
    task = settings["task"]
    record.update(status="probing", task=task, model=settings["model"],
                  model_options=settings.get("model_options", {}))
    out.save()
    candidates = campaign.start_candidates(entry, task)
    probe = campaign.probe_start(settings, candidates, s.probe_seconds, work / entry.label / "probe", s.cache,
                                 out.log)
    record["probe"] = probe
    if guard.stopped:
        record["status"] = "stopped in the probe"
        return
    rate = probe["images_per_s"] or probe["runs"][0]["steps"] * s.batch_size / max(
        probe["runs"][0]["training_seconds"], 1e-3)
    seconds = max(1.0, end - time.monotonic() - s.score_reserve)  # late (a loaded smoke machine): train briefly
    steps = max(2, int(0.92 * rate * seconds / s.batch_size))
    if s.max_steps:
        steps = min(steps, s.max_steps)
    settings = plan(s, entry, device, steps=steps, seconds=seconds, init_weights=probe["winner"])
    record.update(status="training", start=probe["winner"] or "scratch", planned_steps=steps,
                  planned_seconds=round(seconds, 1), settings={k: settings[k] for k in (
                      "batch_size", "lr", "min_lr", "warmup_steps", "steps", "data", "task_options", "loss",
                      "data_on_device", "num_workers", "precision", "compile")})
    out.save()
    out.log(f"{entry.label}: {steps} steps of batch {s.batch_size} at lr {settings['lr']:.2e} in {seconds:.0f} s "
            f"(start: {probe['winner'] or 'scratch'}, {rate:.0f} images/s in the probe)")
    summary = campaign.train_settings(settings, s.cache)
    record["run"] = summary
    if summary["images_per_s"]:  # against both CPU cores on the same model (FLOPs-scaled for another one)
        flops = campaign.flops_ratio(settings)
        summary["times_cpu"] = round(summary["images_per_s"] * flops / CPU_REFERENCE["images_per_s"], 1)
    out.log(f"{entry.label}: {summary['steps']} steps, {summary['images_per_s']} images/s "
            f"(×{summary.get('times_cpu')} both CPU cores), best PSNR/val {summary['best_val_psnr']} dB "
            f"(stopped by {summary['stopped_by']})")
    if summary["best_step"] is None:
        record["status"] = "no weights"
        out.save()
        return
    scores = None
    if not guard.stopped and (s.smoke or guard.left() > s.score_reserve / 2):
        record["status"] = "scoring"
        out.save()
        run_best = Path(summary["run"]) / "best.safetensors"
        scores = campaign.score_entry(run_best, task, device=str(device), precision=s.precision,
                                      benchmarks=s.benchmark or None, limit=s.eval_limit,
                                      crop=s.eval_crop, crops=s.eval_crops)
        record["scores"] = scores
        out.log(f"{entry.label}: " + ", ".join(
            f"{r['setting'] or task} {r['psnr']:.2f}" + (f" ({r['gain']:+.2f})" if "gain" in r else "")
            for r in scores["validation"]) + f"; wins: {scores['wins']}")
    packed = campaign.pack_entry(entry, summary["run"], work / "weights" / f"{entry.label}.safetensors",
                                 summary=summary, scores=scores, machine=machine)
    scores_path = work / "weights" / f"{entry.label}-scores.json"
    scores_path.write_text(json.dumps({"entry": record, "machine": machine, "argv": out.report["argv"]},
                                      indent=2, default=str) + "\n")
    record["archive"] = out.archive(f"{entry.label}.tar", entry_files(summary, packed, scores_path, work))
    record["status"] = "done" if not guard.stopped else "stopped by the time guard"
    out.save()


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The closing lines: what the device tool's output tail shows."""
    lines = [f"campaign [{report.get('status')}] in {report.get('seconds', 0):.0f} s on "
             f"{report.get('machine', {}).get('gpu') or report.get('machine', {}).get('cpu')}"]
    tests = report.get("cuda_tests", {})
    if tests:
        lines.append(f"  pytest -m cuda: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
                     f"{tests.get('error', 0)} errors, {tests.get('skipped', 0)} skipped"
                     + ("" if tests.get("finished") else " (killed at the deadline)"))
        lines += [f"    {outcome}: {test}" for test, outcome in tests.get("tests", {}).items()
                  if outcome in ("failed", "error")]
    for model in report.get("sweep", {}).get("models", []):
        for row in model.get("rows", []):
            if "error" in row:
                lines.append(f"  bench {model.get('model')} batch {row['batch_size']}: {row['error']}")
            else:
                lines.append(f"  bench {model.get('model')} batch {row['batch_size']}: "
                             f"{row['train_images_per_s']:.0f} images/s, {100 * row['train_peak_fraction']:.1f} % of peak")
    for label, e in report.get("entries", {}).items():
        run = e.get("run", {})
        scores = e.get("scores", {})
        lines.append(f"  {label} [{e.get('status')}]: {run.get('steps')} steps, {run.get('images_per_s')} images/s "
                     f"(×{run.get('times_cpu')} CPU), "
                     f"PSNR/val {run.get('best_val_psnr')}; mean gain over shipped {scores.get('mean_gain')} dB, "
                     f"wins {scores.get('wins')}")
    return lines


TRAVEL_LIMIT = 64 * 2**20  # the working tree and the carried paths, together
PREPARED = Path(".data/campaign")
EXTRA_MAX_SIDE = 800  # data.BuiltinSource shrinks extra photographs to this side when it reads them


def prepare(data: str | None) -> str:
    """Copy the extra training photographs of a builtin+A+B spec (the noise recipe's by default) into
    .data/campaign/<A's name>/..., each at the size the trainer reads it (longest side 800 px, LANCZOS, as
    data.BuiltinSource shrinks it): larger photographs as JPEG quality 95, the others byte for byte. Prints and returns the data spec that reads the copies, and what travels."""
    import shutil

    import numpy as np
    from PIL import Image

    from pyramidal.campaign import base_settings
    from pyramidal.errors import PyramidalError
    from pyramidal.io import read_rgb, scan_images, write_image

    spec = data or base_settings("noise")["data"]
    if not spec.startswith("builtin+"):
        raise PyramidalError(f"--data {spec}: prepare copies the folders of a builtin+A+B spec")
    parts = []
    for part in spec[len("builtin+"):].split("+"):
        root = ROOT / part
        if not root.is_dir():
            raise PyramidalError(f"--data {spec}: {part}: no such folder here")
        dest = ROOT / PREPARED / root.name
        shutil.rmtree(dest, ignore_errors=True)
        good, _ = scan_images(root)
        for f in good:
            target = dest / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            im = read_rgb(f)
            if max(im.size) <= EXTRA_MAX_SIDE:
                shutil.copyfile(f, target)
                continue
            scale = EXTRA_MAX_SIDE / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS)
            write_image(np.asarray(im), target.with_suffix(".jpg"), quality=95)
        parts.append((PREPARED / root.name).as_posix())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((ROOT / f.decode()).stat().st_size for f in tracked if f and (ROOT / f.decode()).is_file())
    carried = sum(p.stat().st_size for p in (ROOT / PREPARED).rglob("*") if p.is_file())
    prepared = "builtin+" + "+".join(parts)
    print(f"data spec: {prepared}")
    print(f"travels: tracked files {tree / 2**20:.1f} MiB + {PREPARED} {carried / 2**20:.1f} MiB = "
          f"{(tree + carried) / 2**20:.1f} MiB of {TRAVEL_LIMIT / 2**20:.0f} (untracked files travel too)")
    if tree + carried > TRAVEL_LIMIT:
        raise PyramidalError(f"{PREPARED} and the tracked files are over the {TRAVEL_LIMIT / 2**20:.0f} MiB that travel")
    return prepared


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", nargs="?", default="all", choices=("all", "prepare"),
                   help="all: everything, in one call; prepare: here, the training photographs sized to travel")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (CI)")
    p.add_argument("--out", help="where the returned files go (default $OUT)")
    p.add_argument("--work", default="runs/gpu-campaign", help="scratch folder for the runs [runs/gpu-campaign]")
    p.add_argument("--seconds", type=float, help="wall-clock budget of the whole call [480; smoke 45]")
    p.add_argument("--check-seconds", type=float, help="cap on the CUDA tests [45]")
    p.add_argument("--test-timeout", type=int, default=25, help="per-test timeout (pytest-timeout) [25]")
    p.add_argument("--train", action="append", metavar="RECIPE|LABEL=RECIPE",
                   help=f"an entry to train, named by a recipe (repeatable; at most two) [{' '.join(DEFAULT_TRAIN)}]")
    p.add_argument("--model", action="append", default=[], metavar="LABEL:MODEL", help="another architecture")
    p.add_argument("--model-option", action="append", metavar="[LABEL:]KEY=VALUE",
                   help=f"model options per entry [{' '.join(DEFAULT_OPTIONS)}]")
    p.add_argument("--data", help="training data spec for every entry, relative to the checkout [the recipe's]")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="task option for every entry, e.g. unclipped=0.5")
    p.add_argument("--train-option", action="append", default=[], metavar="[LABEL:]KEY=VALUE",
                   help="any other `pyramidal train` option, for one entry or every entry")
    p.add_argument("--batch-size", type=int, help="training batch [256; smoke 4]")
    p.add_argument("--lr-rule", default="sqrt", choices=("sqrt", "linear"),
                   help="learning rate from the recipe's: ×√k or ×k for k times its batch [sqrt]")
    p.add_argument("--steps-per-epoch", type=int, help="validation and last.ckpt every N steps [500; smoke 4]")
    p.add_argument("--workers", type=int, help="loader processes for tasks damaged on the CPU [CPUs - 2]")
    p.add_argument("--size", type=int, default=64, help="patch side of the bench [64; smoke 32]")
    p.add_argument("--sweep", help="bench batches for the default architecture [64,256,1024; smoke 1,2]")
    p.add_argument("--bench-steps", type=int, help="timed bench steps per batch [10; smoke 2]")
    p.add_argument("--precision", help="[bf16; smoke auto]")
    p.add_argument("--compile", choices=("off", "on", "auto"),
                   help="torch.compile the training model; auto: time it beside the CUDA tests and use it if it "
                        f"trains {COMPILE_GAIN}× as fast as the sweep's eager rate [auto; smoke off]")
    p.add_argument("--probe-seconds", type=float, help="seconds per start candidate [8; smoke 1]")
    p.add_argument("--max-steps", type=int, help="cap on each entry's steps")
    p.add_argument("--benchmark", action="append", default=[], metavar="DIR",
                   help="folder of clean benchmark images to score noise entries on (repeatable)")
    p.add_argument("--eval-limit", type=int, help="validation images per setting [all]")
    s = p.parse_args(argv)
    s.out = s.out or os.environ.get("OUT")
    if not s.out and s.phase == "all":
        p.error("give --out DIR (or set OUT, as the device tool does)")
    smoke = s.smoke
    s.seconds = s.seconds or (45.0 if smoke else 480.0)
    s.check_seconds = s.check_seconds or 45.0
    s.train = s.train or DEFAULT_TRAIN
    s.model_option = s.model_option if s.model_option is not None else (
        DEFAULT_OPTIONS if s.train == DEFAULT_TRAIN else [])
    s.batch_size = s.batch_size or (4 if smoke else 256)
    s.steps_per_epoch = s.steps_per_epoch or (4 if smoke else 500)
    s.workers = s.workers if s.workers is not None else (0 if smoke else max(1, (os.cpu_count() or 4) - 2))
    s.size = 32 if smoke and s.size == 64 else s.size
    s.sweep = [int(b) for b in (s.sweep or ("1,2" if smoke else "64,256,1024")).split(",")]
    s.bench_steps = s.bench_steps or (1 if smoke else 10)
    s.precision = s.precision or ("auto" if smoke else "bf16")
    s.compile = s.compile or ("off" if smoke else "auto")
    s.probe_seconds = s.probe_seconds if s.probe_seconds is not None else (1.0 if smoke else 8.0)
    s.score_reserve = 4.0 if smoke else 30.0
    s.final_reserve = 2.0 if smoke else 10.0
    s.device = "cpu" if smoke else "cuda"
    s.eval_crop, s.eval_crops = (64, 1) if smoke else ("auto", None)
    s.eval_limit = s.eval_limit or (1 if smoke else None)
    if smoke:  # small enough for a CI machine: 32-px patches, 4 validation crops, one thread, the built-in photos
        s.train_option = ["size=32", "val_images=4", "threads=1", *s.train_option]
        s.data = s.data or "builtin"
    if len(s.train) > 2:
        p.error("--train: at most two entries (the budget has room for two)")
    return s


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    if s.phase == "prepare":
        from pyramidal.errors import PyramidalError

        try:
            prepare(s.data)
        except PyramidalError as exc:
            sys.exit(f"gpu-campaign prepare: {exc}")
        return 0
    out = Out(Path(s.out))
    guard = Guard(s.seconds, out)
    out.report.update(budget_s=s.seconds, smoke=s.smoke, argv=sys.argv[1:] if argv is None else argv,
                      cpu_reference=CPU_REFERENCE)
    os.chdir(ROOT)  # data specs and the work folder are relative to the checkout
    import torch

    from pyramidal import campaign
    from pyramidal.compare import parse_model_options
    from pyramidal.config import parse_options
    from pyramidal.errors import PyramidalError

    if not s.smoke and not torch.cuda.is_available():
        sys.exit(f"gpu-campaign: no CUDA device here (torch {torch.__version__}); use --smoke on the CPU")
    device = torch.device(s.device)
    # The guard's SIGTERM (or the device tool's) stops a training run after its step; anywhere else it only
    # marks the campaign as stopping, and the loop over the entries ends at its next check.
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(guard, "stopped", True))
    tests = cuda_tests(s, out)  # in the background while this process measures the GPU
    Path(s.work).mkdir(parents=True, exist_ok=True)
    compiled = compile_probe(s, out) if s.compile == "auto" else None
    try:
        entries = campaign.parse_entries(s.train, s.model, s.model_option)
        s.train_options = parse_model_options(s.train_option, [e.label for e in entries])
        s.task_options = parse_options(s.task_option, "--task-option")
        machine = out.report["machine"] = environment(device)
        out.save()
        out.log(f"campaign: {machine.get('gpu') or machine['cpu']}, torch {machine['torch']}, "
                f"{s.seconds:.0f} s; entries {', '.join(e.label for e in entries)}")
        s.cache = {}
        data_error = None
        try:  # the photographs are read (and put on the device) while the tests run
            for entry in entries:
                out.report.setdefault("data", {})[entry.label] = campaign.preload(
                    plan(s, entry, device, steps=1, seconds=60), s.cache)
        except PyramidalError as exc:  # the checks still run; the training cannot
            data_error = exc
            out.log(f"gpu-campaign: {exc}")
        if s.smoke:  # nothing runs on a GPU: the sweep need not wait for the tests
            out.report["sweep"] = bench_sweep(s, entries, device, out)
        returncode = tests.wait(None if s.smoke else guard.start + s.check_seconds)
        out.report["cuda_tests"] = parse_tests(list(tests.tail), returncode)
        out.save()
        if compiled is not None:  # its time is up with the tests'
            code = compiled.wait(guard.start + s.check_seconds)
            result = json.loads(compiled.path.read_text()) if code == 0 and compiled.path.is_file() else None
            if result:
                result["wall_seconds"] = round(time.monotonic() - compiled.started, 1)
        if not s.smoke:  # on the GPU alone, for clean numbers
            out.report["sweep"] = bench_sweep(s, entries, device, out)
        if compiled is not None:
            decision = out.report["compile"] = compile_decision(result, out.report["sweep"], s.batch_size)
            s.compile = "on" if decision["use"] else "off"
            out.log(f"torch.compile: {'used' if decision['use'] else 'not used'}, {decision['why']}")
        out.json("check.json", {"cuda_tests": out.report["cuda_tests"], "sweep": out.report["sweep"],
                                "machine": machine})
        out.report["check_seconds"] = round(guard.elapsed(), 1)
        out.save()
        if data_error is not None:
            raise data_error
        train_entries(s, entries, device, machine, guard, out)
        out.report["status"] = "stopped by the time guard" if guard.stopped else "done"
    except PyramidalError as exc:
        out.report.update(status="failed", error=str(exc))
        out.log(f"gpu-campaign: {exc}")
    except Exception as exc:  # a first run on a GPU may meet anything: the report says what, with its trace
        out.report.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc().splitlines()[-25:])
        out.log(traceback.format_exc())
    finally:
        tests.stop()
        if compiled is not None:
            compiled.stop()
        guard.done.set()
        out.report["seconds"] = round(guard.elapsed(), 1)
        out.save()
        for line in summary_lines(out.report):
            out.log(line)
    return 0 if out.report["status"] in ("done", "stopped by the time guard") else 1


if __name__ == "__main__":
    sys.exit(main())

"""The GPU campaign in one call: CUDA checks, training at GPU scale, scores against the shipped weights.

Everything runs in this one process except the CUDA tests and the compiled bench (subprocesses, so that a hung
one can be killed), under one wall-clock budget (`seconds`): a time guard stops training at the deadline and,
should anything still run 20 s later, writes the report and exits. OUT receives, each replaced whole as it is
ready, at most 6 files: report.json, campaign.log, check.json and one LABEL.tar per entry (fp16 weights,
sidecar, scores, metrics). `run` is the call; its settings are a `callsettings.CallSettings`, which
scripts/gpu-campaign.py builds from its flags.
The entries' training plan is `pyramidal.compare.campaign`; docs/gpu-campaign.md has the `run` call and its
budget. The campaign runs from a checkout (ROOT): its CUDA tests and its data specs are the checkout's.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pyramidal import __version__
from pyramidal.bench.config import BenchConfig
from pyramidal.bench.measure import machine_kind
from pyramidal.bench.report import format_sweep
from pyramidal.bench.run import run_sweep
from pyramidal.compare import campaign
from pyramidal.compare.callsettings import CallSettings
from pyramidal.errors import PyramidalError, flag_error, option_wording
from pyramidal.io import read_rgb, scan_images, write_image

ROOT = Path(__file__).resolve().parents[2]
FILE_LIMIT = 16 * 2**20  # the device tool returns files up to 16 MiB, at most 8 of them
GRACE = 20.0  # seconds past the deadline before the guard writes the report and exits


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
    """The machine: Python, torch, the package's version and commit, and the GPU's name, memory and driver."""


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


def cuda_tests(s: CallSettings, out: Out) -> Subprocess:
    """`pytest -m cuda` in the background: each test under `s.test_timeout` when pytest-timeout is there, in
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


def compile_probe(s: CallSettings, out: Out) -> Subprocess:
    """`pyramidal bench --compile` of the default architecture at the training batch, in the background beside
    the CUDA tests (killed with them at the check deadline): its images/s, and how long compiling took."""
    path = Path(s.work).resolve() / "compile-bench.json"
    path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    probe = Subprocess([sys.executable, "-m", "pyramidal", *compile_bench_args(s, path)], out, "compile", env)
    probe.path, probe.started = path, time.monotonic()
    return probe


def compile_bench_args(s: CallSettings, path: Path) -> list[str]:
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


def bench_sweep(s: CallSettings, entries, device, out: Out) -> dict[str, Any]:
    """Training images/s and the fraction of the measured bf16 matmul peak at each `s.sweep` batch for the default
    architecture, and at the training batch for every other architecture the entries train."""
    models = {}
    for entry in entries:
        config = campaign.train_config(campaign.call_plan(s, entry, device, steps=1, seconds=60))
        name, options = config.model, config.model_kwargs()
        key = (name, json.dumps(options, sort_keys=True))
        models.setdefault(key, (name, options, list(s.sweep) if not models else [s.batch_size]))
    results = []
    for name, options, batches in models.values():
        config = BenchConfig(model=name, options=options, size=s.size, device=str(device), precision=s.precision,
                             steps=s.bench_steps, warmup=1 if s.smoke else 2, matmul_seconds=0.05 if s.smoke else 0.5,
                             data=False)
        result = run_sweep(config, batches)
        out.log(format_sweep(result))
        results.append(result)
    return {"models": results}


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
    data.BuiltinSource shrinks it): larger photographs as JPEG quality 95, the others byte for byte. Prints and returns the
    data spec that reads the copies, and what travels."""
    spec = data or campaign.base_settings("noise")["data"]
    if not spec.startswith("builtin+"):
        raise PyramidalError(*option_wording("{data=}{spec}: prepare copies the folders of a builtin+A+B spec", "data",
                                             spec=spec))
    parts = []
    for part in spec[len("builtin+"):].split("+"):
        root = ROOT / part
        if not root.is_dir():
            raise PyramidalError(*option_wording("{data=}{spec}: {part}: no such folder here", "data", spec=spec,
                                                 part=part))
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


def run(s: CallSettings) -> int:
    """The whole campaign in one call, as `s` says; 0 when it finished or the time guard stopped it, 1 when it
    failed (the report says why)."""
    if not s.out:
        raise flag_error("{out}: give the folder the returned files go to", "out")
    out = Out(Path(s.out))
    guard = Guard(s.seconds, out)
    out.report.update(budget_s=s.seconds, smoke=s.smoke, argv=list(s.argv), cpu_reference=campaign.CPU_REFERENCE)
    os.chdir(ROOT)  # data specs and the work folder are relative to the checkout
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
        entries = campaign.parse_entries(list(s.train), list(s.model), list(s.model_option), list(s.train_option))
        s.task_options()  # a bad one fails here, in the report, before any data is read
        machine = out.report["machine"] = environment(device)
        out.save()
        out.log(f"campaign: {machine.get('gpu') or machine['cpu']}, torch {machine['torch']}, "
                f"{s.seconds:.0f} s; entries {', '.join(e.label for e in entries)}")
        cache: dict = {}
        data_error = None
        try:  # the photographs are read (and put on the device) while the tests run
            for entry in entries:
                out.report.setdefault("data", {})[entry.label] = campaign.preload(
                    campaign.call_plan(s, entry, device, steps=1, seconds=60), cache)
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
            s = replace(s, compile="on" if decision["use"] else "off")
            out.log(f"torch.compile: {'used' if decision['use'] else 'not used'}, {decision['why']}")
        out.json("check.json", {"cuda_tests": out.report["cuda_tests"], "sweep": out.report["sweep"],
                                "machine": machine})
        out.report["check_seconds"] = round(guard.elapsed(), 1)
        out.save()
        if data_error is not None:
            raise data_error
        campaign.train_entries(s, entries, device, machine, guard, out, cache)
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

#!/usr/bin/env python3
"""Load test for `pyramidal serve`: 20 concurrent restores of 512×512 photographs and 5 bad files, on localhost.

Every good request must come back as a correct image (512×512, PSNR against the ground truth above the damaged
input's), every bad one as a clear error; a full queue's 503 "busy, retry" is retried after its Retry-After.
The server's peak RSS (VmHWM from /proc) must stay under --max-rss-mb.

    .venv/bin/python scripts/serve-load-test.py                      # starts its own server on a free port
    .venv/bin/python scripts/serve-load-test.py --url http://127.0.0.1:7860 --pid 12345   # a running one

Exit status 0 when every check passes. Needs Linux (/proc) for the memory figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 512
TASKS = ("noise", "jpeg", "blur", "pixelate")  # tasks with built-in weights that work on any photograph


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def call(url: str, body: bytes | None = None, content_type: str | None = None, timeout: float = 900):
    """(status, headers, body bytes) of a GET, or of a POST when `body` is given."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ground_truths() -> list[np.ndarray]:
    """The built-in validation photographs, resized to 512×512."""
    from pyramidal.data.sources import BUILTIN_VAL, load_source

    source = load_source("builtin")
    return [np.array(source.photos[name].resize((SIZE, SIZE), Image.Resampling.LANCZOS)) for name in BUILTIN_VAL]


def damaged_requests(n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """n (task, clean, damaged) triples: the photographs in turn, the tasks in turn, a fresh seed each."""
    import torch

    from pyramidal.damage import create_task

    photos = ground_truths()
    out = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        clean = photos[i % len(photos)]
        damaged = create_task(task)(torch.from_numpy(clean).permute(2, 0, 1)[None].contiguous(), seeds=[1000 + i])
        out.append((task, clean, damaged[0].permute(1, 2, 0).numpy().copy()))
    return out


def huge_header_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims width×height pixels: the server must refuse it before decoding."""
    data = bytearray(png(np.zeros((8, 8, 3), np.uint8)))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def bad_requests() -> list[tuple[str, dict, dict, int, str]]:
    """(label, fields, files, expected status, expected text in the error)."""
    good = png(np.full((64, 64, 3), 128, np.uint8))
    return [
        ("not an image", {"task": "noise"}, {"image": ("notes.txt", b"hello, not an image")}, 400,
         "notes.txt: not an image file Pillow can read"),
        ("truncated PNG", {"task": "noise"}, {"image": ("cut.png", good[:60])}, 400, "cut.png: "),
        ("empty file", {"task": "noise"}, {"image": ("empty.png", b"")}, 400, "empty.png: empty file"),
        ("60 MP image", {"task": "noise"}, {"image": ("huge.png", huge_header_png(10000, 6000))}, 413,
         "huge.png: 10000×6000 px is 60 MP; the limit is 50 MP"),
        ("wrong-size mask", {"task": "block", "mask_mode": "paint"},
         {"image": ("photo.png", good), "mask": ("mask.png", png(np.full((32, 48, 3), 255, np.uint8)))}, 400,
         "the mask is 48×32 px but the image is 64×64 px"),
    ]


class Watch:
    """Samples the server's RSS every 0.2 s; peak() also reads the kernel's high-water mark (VmHWM)."""

    def __init__(self, pid: int):
        self.pid, self.samples, self.stop = pid, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def field(self, name: str) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            rss = self.field("VmRSS")
            if rss:
                self.samples.append(rss)

    def peak(self) -> int:
        return max([self.field("VmHWM") or 0, *self.samples])


def post_restore(url: str, body: bytes, content_type: str, log: dict) -> tuple[int, bytes]:
    """POST /api/restore, retrying after each 503 "busy, retry" as long as its Retry-After says."""
    while True:
        status, headers, answer = call(f"{url}/api/restore", body, content_type)
        if status != 503:
            return status, answer
        log["busy"] += 1
        time.sleep(float(headers.get("Retry-After", headers.get("retry-after", "2"))))


def restore_one(url: str, task: str, damaged: np.ndarray, log: dict) -> np.ndarray:
    """POST one restore, poll it to the end, download the result."""
    body, content_type = multipart({"task": task}, {"image": (f"{task}.png", png(damaged))})
    status, answer = post_restore(url, body, content_type, log)
    if status != 202:
        raise AssertionError(f"restore answered {status}: {answer[:200]!r}")
    job = json.loads(answer)
    while job["state"] not in ("done", "error"):
        time.sleep(0.25)
        status, _, answer = call(f"{url}/api/jobs/{job['id']}")
        job = json.loads(answer)
    if job["state"] == "error":
        raise AssertionError(f"job failed: {job['error']}")
    status, _, data = call(f"{url}/api/jobs/{job['id']}/result.png")
    if status != 200:
        raise AssertionError(f"result answered {status}")
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def start_server(port: int, extra: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "pyramidal", "serve", "--port", str(port), *extra])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"pyramidal serve exited with {proc.returncode}")
        try:
            if call(f"http://127.0.0.1:{port}/api/info", timeout=2)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("pyramidal serve did not answer within 180 s")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one on a free port)")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for its memory")
    parser.add_argument("--restores", type=int, default=20, help="concurrent good restores (default 20)")
    parser.add_argument("--max-rss-mb", type=float, default=1024, help="peak RSS bound in MB (default 1024)")
    parser.add_argument("--server-args", default="", help="extra `pyramidal serve` arguments when starting one")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    proc = None
    if args.url:
        url, pid = args.url.rstrip("/"), args.pid
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = start_server(port, args.server_args.split())
        url, pid = f"http://127.0.0.1:{port}", proc.pid
    watch = Watch(pid) if pid else None
    failures = []
    try:
        goods = damaged_requests(args.restores)
        bads = bad_requests()
        idle_rss = watch.field("VmRSS") if watch else None
        if watch:
            watch.thread.start()
        log = {"busy": 0}
        latencies: list[float] = [0.0] * len(goods)

        def good(i: int):
            task, clean, damaged = goods[i]
            start = time.perf_counter()
            try:
                result = restore_one(url, task, damaged, log)
            except AssertionError as exc:
                return f"restore {i} ({task}): {exc}"
            latencies[i] = time.perf_counter() - start
            if result.shape != clean.shape:
                return f"restore {i} ({task}): shape {result.shape}, expected {clean.shape}"
            before, after = psnr(clean, damaged), psnr(clean, result)
            if not after > before:
                return f"restore {i} ({task}): PSNR {after:.2f} dB is not above the damaged input's {before:.2f} dB"
            print(f"  restore {i:2d} {task:8s} {before:6.2f} → {after:6.2f} dB in {latencies[i]:6.1f} s")
            return None

        def bad(item):
            label, fields, files, expected, text = item
            status, answer = post_restore(url, *multipart(fields, files), log)
            try:
                message = json.loads(answer)["error"]
            except (ValueError, KeyError):
                return f"bad file '{label}': answered {status} without a JSON error: {answer[:200]!r}"
            if status != expected or text not in message:
                return f"bad file '{label}': answered {status} {message!r}, expected {expected} with {text!r}"
            print(f"  bad file {label:16s} → {status} {message}")
            return None

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(goods) + len(bads)) as pool:
            futures = [pool.submit(good, i) for i in range(len(goods))] + [pool.submit(bad, b) for b in bads]
            failures = [f.result() for f in futures]
        wall = time.perf_counter() - start
        failures = [f for f in failures if f]
        if call(f"{url}/api/info")[0] != 200:
            failures.append("the server stopped answering")
        peak = watch.peak() if watch else None
        if watch:
            watch.stop.set()
        figures = {
            "restores": len(goods), "bad_files": len(bads), "size": SIZE, "wall_s": round(wall, 1),
            "latency_s": {"min": round(min(latencies), 1), "median": round(float(np.median(latencies)), 1),
                          "max": round(max(latencies), 1)},
            "busy_answers": log["busy"], "idle_rss_mb": idle_rss and round(idle_rss / 2**20),
            "peak_rss_mb": peak and round(peak / 2**20), "max_rss_mb": args.max_rss_mb,
            "machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "failures": failures,
        }
        if peak and peak / 2**20 > args.max_rss_mb:
            failures.append(f"peak RSS {peak / 2**20:.0f} MB is over the bound of {args.max_rss_mb:g} MB")
        print(json.dumps(figures, indent=2, ensure_ascii=False))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    print("load test passed" if not failures else f"load test failed: {len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

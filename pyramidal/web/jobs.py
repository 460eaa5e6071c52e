"""The job queue of `pyramidal serve`: a job's inputs, state and results; a bounded queue and the one thread that
runs its jobs; finished jobs kept in memory for a limited time.

Requests never run a model: they hand a job to the queue, which one thread works through; the page polls the
job for its progress over tiles. A full queue refuses the job (`Busy`).
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyramidal.errors import PyramidalError
from pyramidal.options import RestoreOptions
from pyramidal.web import engine
from pyramidal.web.settings import ServeConfig

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Job:
    """One restore: its inputs until it runs, then its state, progress and results."""

    id: str
    kind: str  # "restore" or "sample"
    task: str
    weights: engine.WeightsChoice
    options: RestoreOptions  # the server's, with the request's tile, strength and ensemble
    image: engine.Decoded | None = None
    mask: np.ndarray | None = None
    sample_index: int = 0
    want_input: bool = False  # also return the decoded input (for files the browser cannot show)
    filename: str = ""
    seq: int = 0
    state: str = "queued"
    done: int = 0
    total: int = 0
    error: str | None = None
    warning: str | None = None
    width: int = 0
    height: int = 0
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    scores: dict | None = None
    sample: dict | None = None

    def status(self, position: int) -> dict:
        """The JSON the page polls."""
        seconds = None
        if self.started is not None:
            seconds = round((self.finished or time.monotonic()) - self.started, 2)
        return {
            "id": self.id, "kind": self.kind, "state": self.state, "task": self.task, "weights": self.weights.id,
            "position": position if self.state == "queued" else 0, "done": self.done, "total": self.total,
            "error": self.error, "warning": self.warning, "width": self.width, "height": self.height,
            "seconds": seconds, "files": sorted(self.files), "scores": self.scores, "sample": self.sample,
        }


class Busy(Exception):
    """The queue is full."""


class Worker:
    """A bounded queue of jobs and the one thread that runs them, plus the finished jobs kept for download."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=config.queue_size)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.lock = threading.Lock()
        self.submitted = itertools.count(1)
        self.taken = 0
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.stopping.clear()
        self.thread = threading.Thread(target=self._loop, name="pyramidal-serve-worker", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=2)  # a job still running ends with the process (daemon thread)

    def full(self) -> bool:
        return self.queue.full()

    def submit(self, job: Job) -> None:
        """Queue `job`, or raise Busy when the queue is full."""
        with self.lock:
            self._forget_old()
            job.seq = next(self.submitted)
            try:
                self.queue.put_nowait(job)
            except queue.Full:
                raise Busy from None
            self.jobs[job.id] = job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            self._forget_old()
            return self.jobs.get(job_id)

    def position(self, job: Job) -> int:
        """1 for the next job to run."""
        return max(0, job.seq - self.taken)

    def _forget_old(self) -> None:
        now = time.monotonic()
        finished = [j for j in self.jobs.values() if j.finished is not None]
        finished.sort(key=lambda j: j.finished)
        excess = len(finished) - self.config.keep_results
        for i, j in enumerate(finished):
            if i < excess or now - j.finished > self.config.result_ttl:
                del self.jobs[j.id]

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                job = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            with self.lock:
                self.taken = job.seq
            self.run(job)

    def run(self, job: Job) -> None:
        """Run one job to completion; any failure becomes the job's error and the worker goes on."""
        job.state, job.started = "running", time.monotonic()
        try:
            self._run(job)
            job.state = "done"
        except (PyramidalError, ValueError) as exc:
            job.state, job.error = "error", str(exc)
        except MemoryError:
            job.state, job.error = "error", "out of memory; try a smaller image or tile size"
        except Exception as exc:  # a bug must not stop the worker: report it and keep serving
            traceback.print_exc(file=sys.stderr)
            job.state, job.error = "error", f"internal error ({type(exc).__name__}: {exc})"
        finally:
            job.image = job.mask = None
            job.finished = time.monotonic()

    def _run(self, job: Job) -> None:
        cfg = self.config
        weights = "builtin" if job.weights.path is None else job.weights.path

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        item = None
        if job.kind == "sample":
            item = engine.sample(job.task, job.sample_index)
            image = engine.Decoded(item.damaged, None, False)
            mask = item.mask
            job.sample = {"name": item.name, "index": item.index, "count": item.count, "setting": item.setting}
        else:
            image, mask = job.image, job.mask
        job.height, job.width = image.rgb.shape[:2]
        out = engine.restore(image.rgb, job.task, weights, job.options, mask=mask, progress=progress)
        job.files["result"] = engine.encode_png(out, image.alpha, image.grayscale, image.metadata)
        if item is not None:
            job.files["input"] = engine.encode_png(item.damaged)
            job.files["clean"] = engine.encode_png(item.clean)
            label = f"ours ({engine.model_name(job.task, weights, job.options)}"
            label += ", self-ensemble ×8" if job.options.ensemble else ""
            label += f", strength {job.options.strength:g})" if job.options.strength != 1.0 else ")"
            job.scores = engine.scores(item, out, label, slow=cfg.slow_baselines)
        elif job.want_input:
            job.files["input"] = engine.encode_png(image.rgb, image.alpha, image.grayscale)

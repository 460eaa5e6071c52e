"""The HTTP side of `pyramidal serve`: one page, a small JSON API, and a bounded queue with one worker thread.

Requests never run a model: they parse and check the upload, then hand a job to the queue, which one thread
works through; the page polls the job for its progress over tiles. A full queue answers 503 "busy, retry".
Uploads stay in memory: multipart parts over 1 MB spill to an unlinked private temporary file while the request
is read, and the library's reader gets each upload from a private temporary folder deleted right after decoding.
Results are kept in memory for a limited time. No route reads the file system.

The server answers only requests addressed to it by a name or address it listens on (the Host header): a page
of another site that points its own name at 127.0.0.1 (DNS rebinding) gets 400, so it can neither queue jobs
nor read their results. Every error is JSON, {"error": message}.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import secrets
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pyramidal.errors import OptionError, PyramidalError
from pyramidal.options import STRENGTH_RANGE, RestoreOptions
from pyramidal.web import engine

if TYPE_CHECKING:
    import numpy as np

MASK_MODES = ("none", "auto", "paint")
# The names this computer answers to; the --host given and --allow-host names are added (`ServeConfig.hosts`).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
TILE_RANGE = (64, 2048)
# Headers on every response: the page loads nothing from anywhere but this server.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                                 b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


@dataclass
class ServeConfig:
    """Everything the app needs to know, fixed when the server starts."""

    weights: Sequence[engine.WeightsChoice] = ()
    options: RestoreOptions = RestoreOptions()  # device, precision and the default tile; a request sets its own
    max_pixels: int = 50_000_000
    max_upload_bytes: int = 100 * 2**20
    queue_size: int = 4
    keep_results: int = 16  # finished jobs kept for download, newest first
    result_ttl: float = 600.0  # seconds a finished job stays downloadable
    slow_baselines: bool = False  # BM3D in sample scores (tens of seconds per image on a CPU)
    decode_slots: int = 2  # uploads decoded at once (each up to max_pixels × 3 bytes)
    hosts: Sequence[str] = LOCAL_HOSTS  # Host header values answered (any port); others get 400


class HTTPError(Exception):
    """An error answered as JSON {"error": message} with `status`."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


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
            loaded = engine.load(job.task, weights, job.options.device, job.options.precision)
            label = f"ours ({loaded.info.get('model', 'model')}"
            label += ", self-ensemble ×8" if job.options.ensemble else ""
            label += f", strength {job.options.strength:g})" if job.options.strength != 1.0 else ")"
            job.scores = engine.scores(item, out, label, slow=cfg.slow_baselines)
        elif job.want_input:
            job.files["input"] = engine.encode_png(image.rgb, image.alpha, image.grayscale)


# --------------------------------------------------------------------------- requests


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "on", "yes")


def _shown(value: Any) -> str:
    """A form value fit for a message: printable, at most 40 characters, quoted."""
    text = "".join(c for c in str(value) if c.isprintable())
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


class App:
    """Route handlers bound to one configuration and one worker."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.worker = Worker(config)
        self.weights = {w.id: w for w in (config.weights or engine.weights_choices())}
        self.tasks = {t["name"]: t for t in engine.tasks()}
        self.decode_slots = threading.BoundedSemaphore(max(1, config.decode_slots))
        self.static = _static_files()

    # ---- pages and info

    async def page(self, request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in self.static:
            return _error(404, f"no such page: {engine.display_name(name)}")
        body, media_type = self.static[name]
        return Response(body, media_type=media_type, headers={"cache-control": "no-cache"})

    async def info(self, request: Request) -> Response:
        cfg = self.config
        return JSONResponse({
            "tasks": list(self.tasks.values()),
            "weights": [{"id": w.id, "label": w.label, "task": w.task} for w in self.weights.values()],
            "limits": {"max_pixels": cfg.max_pixels, "max_upload_bytes": cfg.max_upload_bytes,
                       "queue_size": cfg.queue_size, "tile_range": list(TILE_RANGE)},
            "tile": cfg.options.tile,
            "strength": {"min": STRENGTH_RANGE[0], "max": STRENGTH_RANGE[1], "default": cfg.options.strength},
            "mask_modes": list(MASK_MODES),
        })

    # ---- jobs

    def _options(self, fields: dict) -> tuple[str, engine.WeightsChoice, RestoreOptions]:
        task = fields.get("task", "")
        if not task:
            raise HTTPError(400, f"no task in the request (send the form field 'task': one of {', '.join(self.tasks)})")
        if task not in self.tasks:
            raise HTTPError(400, f"unknown task {_shown(task)}; choose one of {', '.join(self.tasks)}")
        weights_id = fields.get("weights", "builtin")
        if weights_id not in self.weights:
            raise HTTPError(400, f"unknown weights {_shown(weights_id)}; choose one of {', '.join(self.weights)}")
        weights = self.weights[weights_id]
        if weights.path is None and not self.tasks[task]["builtin"]:
            raise HTTPError(400, f"no built-in weights for task {task!r}; choose weights trained for it (the form "
                                 "field 'weights'), or start the server with a weights file trained for it")
        try:
            tile = int(fields.get("tile") or self.config.options.tile)
        except ValueError:
            raise HTTPError(400, f"tile {_shown(fields.get('tile'))} is not a number") from None
        if not TILE_RANGE[0] <= tile <= TILE_RANGE[1]:
            raise HTTPError(400, f"tile {tile}: choose a size from {TILE_RANGE[0]} to {TILE_RANGE[1]} px")
        try:
            strength = float(fields.get("strength") or self.config.options.strength)
        except ValueError:
            raise HTTPError(400, f"strength {_shown(fields.get('strength'))} is not a number") from None
        try:
            options = self.config.options.replace(tile=tile, strength=strength,
                                                  ensemble=_flag(fields.get("ensemble", "")))
        except OptionError as exc:
            raise HTTPError(400, str(exc)) from None
        return task, weights, options

    def _new_job(self, kind: str, fields: dict) -> Job:
        task, weights, options = self._options(fields)
        job = Job(id=secrets.token_urlsafe(12), kind=kind, task=task, weights=weights, options=options)
        if weights.task and weights.task != task:
            job.warning = f"these weights were trained for task {weights.task!r}, not {task!r}"
        return job

    def _submit(self, job: Job) -> Response:
        try:
            self.worker.submit(job)
        except Busy:
            raise self._busy() from None
        return JSONResponse(job.status(self.worker.position(job)), status_code=202)

    def _busy(self) -> HTTPError:
        return HTTPError(503, f"busy: {self.config.queue_size} restores are already queued; retry in a few "
                              "seconds", {"retry-after": "2"})

    async def restore(self, request: Request) -> Response:
        fields, files = await _read_form(request)
        job = self._new_job("restore", fields)
        if "image" not in files:
            raise HTTPError(400, "no image in the request (send it as the form field 'image')")
        mode = fields.get("mask_mode", "none")
        if mode not in MASK_MODES:
            raise HTTPError(400, f"mask_mode {_shown(mode)}: choose one of {', '.join(MASK_MODES)}")
        task_info = self.tasks[job.task]
        if mode != "none" and not task_info["maskable"]:
            raise HTTPError(400, f"task {job.task!r} takes no mask (masks are for "
                                 f"{', '.join(t for t, i in self.tasks.items() if i['maskable'])})")
        if mode == "auto" and not task_info["hole"]:
            raise HTTPError(400, f"auto (magenta) masks are for the hole tasks, not {job.task!r}; paint the mask")
        if mode == "paint" and "mask" not in files:
            raise HTTPError(400, "mask_mode paint needs the painted mask as the form field 'mask'")
        if self.worker.full():  # answer before spending time decoding
            raise self._busy()
        filename, data = files["image"]
        job.filename = engine.display_name(filename)
        job.want_input = not _flag(fields.get("previewed", "1"))
        image, mask = await run_in_threadpool(self._decode, data, filename, mode, files.get("mask"))
        job.image, job.mask = image, mask
        return self._submit(job)

    def _decode(self, data: bytes, filename: str, mode: str, mask_file: tuple[str, bytes] | None):
        with self.decode_slots:
            image = engine.decode_image(data, filename, self.config.max_pixels)
            h, w = image.rgb.shape[:2]
            mask = None
            if mode == "auto":
                mask = engine.magenta_mask(image.rgb)
                if not mask.any():
                    raise PyramidalError(f"{engine.display_name(filename)}: no magenta (255, 0, 255) pixels for the "
                                         "auto mask; paint the mask instead")
            elif mode == "paint":
                mask = engine.decode_mask(mask_file[1], mask_file[0] or "mask", w, h)
                if not mask.any():
                    raise PyramidalError("the painted mask is empty; paint over the damage first")
            return image, mask

    async def sample(self, request: Request) -> Response:
        fields, _ = await _read_form(request)
        job = self._new_job("sample", fields)
        try:
            job.sample_index = int(fields.get("index") or 0)
        except ValueError:
            raise HTTPError(400, "index must be a whole number") from None
        return self._submit(job)

    def _job(self, request: Request) -> Job:
        job = self.worker.get(request.path_params["job_id"])
        if job is None:
            raise HTTPError(404, f"no such job (finished results are kept for {self.config.result_ttl / 60:g} "
                                 f"minutes, the last {self.config.keep_results} of them)")
        return job

    async def job_status(self, request: Request) -> Response:
        job = self._job(request)
        return JSONResponse(job.status(self.worker.position(job)), headers={"cache-control": "no-store"})

    async def job_file(self, request: Request) -> Response:
        job = self._job(request)
        name = request.path_params["name"]
        if name not in job.files:
            state = "is not finished" if job.finished is None else "has no such file"
            raise HTTPError(404, f"job {job.id} {state} ({engine.display_name(name)}.png)")
        return Response(job.files[name], media_type="image/png", headers={"cache-control": "private, max-age=600"})


async def _read_form(request: Request) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """The multipart (or urlencoded) form: text fields, and files as (name, bytes), read into memory."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in FORM_TYPES:
        raise HTTPError(415, f"send the request as a form (multipart/form-data, fields such as task and image), "
                             f"not {_shown(kind) if kind else 'a body without a content type'}")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    try:
        async with request.form(max_files=2, max_fields=20, max_part_size=64 * 1024) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files[key] = (value.filename or "", await value.read())
                else:
                    fields[key] = value
    except MultiPartException as exc:
        raise HTTPError(400, f"malformed upload: {exc.message}") from None
    except HTTPException as exc:  # Starlette's own refusals of a form (a multipart body without a boundary)
        raise HTTPError(400, f"malformed upload: {exc.detail}") from None
    return fields, files


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package: the only files the server ever sends."""
    folder = resources.files("pyramidal.web") / "static"
    out = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in STATIC_TYPES:
            out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return out


def _same_origin(headers: dict[bytes, bytes]) -> bool:
    """True unless the browser says the request comes from a page of another origin than this server."""
    origin = headers.get(b"origin")
    if origin is None:
        return True  # not sent by a browser page (curl, scripts, same-origin navigation in some browsers)
    return origin.split(b"://", 1)[-1] == headers.get(b"host", b"")


def host_name(value: str) -> str:
    """The name in a Host header (or a --host), lower case, without port, brackets or a final dot:
    "LocalHost:7860" → "localhost", "[::1]:7860" → "::1"."""
    text = value.strip().lower()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


class Guard:
    """ASGI middleware: requests for another host name refused (400), cross-site posts refused (403), request-size
    limit (413), security headers on every answer."""

    def __init__(self, app: Any, max_bytes: int, hosts: Sequence[str] = LOCAL_HOSTS):
        self.app, self.max_bytes = app, max_bytes
        self.hosts = {host_name(h) for h in hosts}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        headers = dict(scope.get("headers", []))
        host = headers.get(b"host", b"").decode("latin-1")
        if host_name(host) not in self.hosts:
            # A name this server does not listen on: another site's page reaching it through its own DNS name.
            refused = HTTPError(400, f"this server answers requests for {', '.join(sorted(self.hosts))} only, "
                                     f"not {_shown(host) if host else 'a request without a Host header'}")
            await self._answer(refused, scope, receive, send_with_headers)
            return
        if scope["method"] == "POST" and not _same_origin(headers):
            # Another site's page may make the browser post here, though it cannot read the answer.
            await self._answer(HTTPError(403, "cross-site request refused"), scope, receive, send_with_headers)
            return
        too_large = HTTPError(413, f"the upload is over the limit of {self.max_bytes / 2**20:.3g} MB")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._answer(too_large, scope, receive, send_with_headers)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except HTTPError as exc:
            if started:
                raise
            await self._answer(exc, scope, receive, send_with_headers)

    @staticmethod
    async def _answer(exc: HTTPError, scope: dict, receive: Any, send: Any) -> None:
        await _error(exc.status, exc.message, exc.headers)(scope, receive, send)


def create_app(config: ServeConfig | None = None) -> Any:
    """The ASGI app for `config`: Starlette routes wrapped in the size limit and security headers."""
    config = config or ServeConfig()
    handlers = App(config)

    async def errors(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPError):
            return _error(exc.status, exc.message, exc.headers)
        return _error(413 if isinstance(exc, engine.TooLarge) else 400, str(exc))

    async def routing(request: Request, exc: HTTPException) -> Response:  # Starlette's 404 and 405, as JSON
        where = _shown(request.url.path)
        allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
        message = {404: f"no such page or API route: {where}",
                   405: f"{request.method} {where}: method not allowed (allowed: {allowed})"}.get(
                       exc.status_code, str(exc.detail))
        return _error(exc.status_code, message, exc.headers)

    async def disconnected(request: Request, exc: ClientDisconnect) -> Response:
        # A closed tab mid-upload: nothing to answer and nothing queued; one line, not a traceback.
        print(f"pyramidal serve: a client closed the connection during its request ({request.method} "
              f"{request.url.path}); nothing was queued", file=sys.stderr, flush=True)
        return Response(status_code=400)

    async def internal(request: Request, exc: Exception) -> Response:  # a bug: JSON too (the log has the traceback)
        return _error(500, f"internal error ({type(exc).__name__})")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        handlers.worker.start()
        try:
            yield
        finally:
            handlers.worker.stop()

    routes = [
        Route("/", handlers.page),
        Route("/static/{name}", handlers.page),
        Route("/api/info", handlers.info),
        Route("/api/restore", handlers.restore, methods=["POST"]),
        Route("/api/sample", handlers.sample, methods=["POST"]),
        Route("/api/jobs/{job_id}", handlers.job_status),
        Route("/api/jobs/{job_id}/{name}.png", handlers.job_file),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPError: errors, PyramidalError: errors, ValueError: errors,
                                        HTTPException: routing, ClientDisconnect: disconnected, Exception: internal})
    app.state.handlers = handlers
    guarded = Guard(app, config.max_upload_bytes, config.hosts)
    guarded.state = app.state  # tests reach the worker through app.state
    return guarded

"""The HTTP side of `pyramidal serve`: one page, a small JSON API over the job queue (`jobs`), behind the
security checks (`guard`).

Requests never run a model: they parse and check the upload, then hand a job to the queue; a full queue answers
503 "busy, retry". Uploads stay in memory: multipart parts over 1 MB spill to an unlinked private temporary file
while the request is read, and the library's reader gets each upload from a private temporary folder deleted
right after decoding. Results are kept in memory for a limited time. No route reads the file system.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import threading
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pyramidal.errors import OptionError, PyramidalError
from pyramidal.inference.inputs import magenta_mask
from pyramidal.options import STRENGTH_RANGE, RestoreOptions
from pyramidal.web import engine
from pyramidal.web.guard import Guard, HTTPError, json_error, shown
from pyramidal.web.jobs import Busy, Job, Worker
from pyramidal.web.settings import TILE_RANGE, ServeConfig

MASK_MODES = ("none", "auto", "paint")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "on", "yes")


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
            return json_error(404, f"no such page: {engine.display_name(name)}")
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
            raise HTTPError(400, f"unknown task {shown(task)}; choose one of {', '.join(self.tasks)}")
        weights_id = fields.get("weights", "builtin")
        if weights_id not in self.weights:
            raise HTTPError(400, f"unknown weights {shown(weights_id)}; choose one of {', '.join(self.weights)}")
        weights = self.weights[weights_id]
        if weights.path is None and not self.tasks[task]["builtin"]:
            raise HTTPError(400, f"no built-in weights for task {task!r}; choose weights trained for it (the form "
                                 "field 'weights'), or start the server with a weights file trained for it")
        try:
            tile = int(fields.get("tile") or self.config.options.tile)
        except ValueError:
            raise HTTPError(400, f"tile {shown(fields.get('tile'))} is not a number") from None
        if not TILE_RANGE[0] <= tile <= TILE_RANGE[1]:
            raise HTTPError(400, f"tile {tile}: choose a size from {TILE_RANGE[0]} to {TILE_RANGE[1]} px")
        try:
            strength = float(fields.get("strength") or self.config.options.strength)
        except ValueError:
            raise HTTPError(400, f"strength {shown(fields.get('strength'))} is not a number") from None
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
            raise HTTPError(400, f"mask_mode {shown(mode)}: choose one of {', '.join(MASK_MODES)}")
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
                mask = magenta_mask(image.rgb)
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
                             f"not {shown(kind) if kind else 'a body without a content type'}")
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



def create_app(config: ServeConfig | None = None) -> Any:
    """The ASGI app for `config`: Starlette routes wrapped in the size limit and security headers."""
    config = config or ServeConfig()
    handlers = App(config)

    async def errors(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPError):
            return json_error(exc.status, exc.message, exc.headers)
        return json_error(413 if isinstance(exc, engine.TooLarge) else 400, str(exc))

    async def routing(request: Request, exc: HTTPException) -> Response:  # Starlette's 404 and 405, as JSON
        where = shown(request.url.path)
        allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
        message = {404: f"no such page or API route: {where}",
                   405: f"{request.method} {where}: method not allowed (allowed: {allowed})"}.get(
                       exc.status_code, str(exc.detail))
        return json_error(exc.status_code, message, exc.headers)

    async def disconnected(request: Request, exc: ClientDisconnect) -> Response:
        # A closed tab mid-upload: nothing to answer and nothing queued; one line, not a traceback.
        print(f"pyramidal serve: a client closed the connection during its request ({request.method} "
              f"{request.url.path}); nothing was queued", file=sys.stderr, flush=True)
        return Response(status_code=400)

    async def internal(request: Request, exc: Exception) -> Response:  # a bug: JSON too (the log has the traceback)
        return json_error(500, f"internal error ({type(exc).__name__})")

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

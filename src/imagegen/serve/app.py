"""The studio's FastAPI application: `create_app(runs_dir, ...)` wires the routers (runs and jobs here, training
in `routes_train`), the page (serve/static), one guard over /api/* (token, body limit) and the error handlers that
turn every refusal into JSON {"error": "one line"} (no traceback ever reaches a client)."""

from __future__ import annotations

import hmac
import importlib
import importlib.util
import inspect
import logging
import os
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import ImagegenError
from . import routes_jobs
from .jobs import Jobs, QueueFull
from .runs import STUDIO, NotFound

log = logging.getLogger("imagegen.serve")
STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024  # bytes of a request body; more is 413
PLACEHOLDER = ("<!doctype html><meta charset='utf-8'><title>imagegen studio</title><h1>imagegen studio</h1>"
               "<p>The page is not installed here; the API is at <a href='/docs'>/docs</a>.</p>")


@dataclass
class Studio:
    """What the routes read from `request.app.state.studio`."""

    runs_dir: Path  # resolved; every run name is resolved inside it
    device: str
    threads: int  # torch threads of the generation worker
    train_threads: int  # the cores left for a training child
    max_n: int  # images per generate job
    max_cells: int  # images per compare job
    jobs: Jobs


def create_app(runs_dir: str | os.PathLike, *, token: str | None = None, cors_origin: str | None = None,
               max_n: int = 1000, queue_size: int = 16, device: str = "cpu", threads: int | None = None,
               cache_size: int = 4, max_cells: int = 100) -> FastAPI:
    """The application over the runs under `runs_dir`. Its only side effect is RUNS/.studio (job history and
    results); the worker starts with the app (lifespan) and stops with it."""
    runs_dir = Path(runs_dir).resolve()
    (runs_dir / STUDIO).mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 2
    threads = threads or max(1, cores // 2)
    jobs = Jobs(runs_dir, device=device, threads=threads, max_n=max_n, queue_size=queue_size,
                cache_size=cache_size, max_cells=max_cells)
    train = _train_routes()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.start()
        try:
            yield
        finally:
            close = getattr(train, "shutdown", None)
            if close is not None:
                done = close(app)
                if inspect.isawaitable(done):
                    await done
            jobs.stop()

    app = FastAPI(title="imagegen studio", version=__version__, lifespan=lifespan,
                  description="Runs, generation jobs, comparisons, explanations and training over `--runs`.")
    app.state.studio = Studio(runs_dir, device, threads, max(1, cores - threads), max_n, max_cells, jobs)
    _handlers(app)
    app.include_router(routes_jobs.router)
    if train is not None:
        app.include_router(train.router)
    app.add_api_route("/", page, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    app.add_middleware(Guard, token=token)
    if cors_origin:  # outermost: preflights are answered before the guard, and refusals carry CORS headers
        app.add_middleware(CORSMiddleware, allow_origins=[cors_origin], allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def _train_routes():
    """serve/routes_train.py (the training routes) where it exists."""
    name = f"{__package__}.routes_train"
    return importlib.import_module(name) if importlib.util.find_spec(name) else None


def page():
    index = STATIC / "index.html"
    return FileResponse(index) if index.is_file() else HTMLResponse(PLACEHOLDER)


class Guard:
    """Pure ASGI middleware over /api/*: the token (header `Authorization: Bearer T` or `?token=T`, compared in
    constant time) -> 401; a body over MAX_BODY bytes -> 413, by its Content-Length or, for a chunked body, as it
    is read. The page, /static and /docs hold no data and stay open (the page then sends the token)."""

    def __init__(self, app, token: str | None = None, limit: int = MAX_BODY):
        self.app, self.token, self.limit = app, token, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        if self.token and not self.authorised(scope):
            return await _error(401, "a valid token is needed: header 'Authorization: Bearer TOKEN' or ?token=TOKEN",
                                {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            return await _error(400, "Content-Length must be a number of bytes")(scope, receive, send)
        if int(length) > self.limit:
            return await _error(413, f"the request body is over {self.limit // 1024} KiB")(scope, receive, send)
        read = 0

        async def limited():
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.limit:
                raise HTTPException(413, f"the request body is over {self.limit // 1024} KiB")
            return message

        return await self.app(scope, limited, send)

    def authorised(self, scope) -> bool:
        given = ""
        for key, value in scope["headers"]:
            if key == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].decode("latin-1").strip()
        if not given:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _handlers(app: FastAPI) -> None:
    """Every error as {"error": "one line"}: HTTP errors keep their status (and headers: Retry-After), bad
    parameters are 422 with the library's message, anything unexpected is 500 with its type only (the traceback
    goes to the server's log)."""

    async def http_error(request, e: HTTPException):
        return _error(e.status_code, str(e.detail), getattr(e, "headers", None))

    async def invalid(request, e: RequestValidationError):
        return _error(422, validation_line(e.errors()))

    async def full(request, e: QueueFull):
        return _error(429, str(e), {"Retry-After": str(e.retry_after)})

    async def not_found(request, e: NotFound):
        return _error(404, str(e))

    async def refused(request, e: ImagegenError):
        return _error(422, str(e).splitlines()[0] if str(e) else type(e).__name__)

    async def unexpected(request, e: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=e)
        return _error(500, f"internal error ({type(e).__name__}); the server's log has the details")

    for kind, handler in ((HTTPException, http_error), (RequestValidationError, invalid), (QueueFull, full),
                          (NotFound, not_found), (ImagegenError, refused), (Exception, unexpected)):
        app.add_exception_handler(kind, handler)


UNION_MEMBER = re.compile(r"int|str|float|bool|none|(list|dict|union|tuple)\[.*\]")


def validation_line(errors: list[dict]) -> str:
    """The first of pydantic's errors as one line, named as the field is named in the body."""
    if not errors:
        return "invalid request"
    e = errors[0]
    # without "body" and the member tags of a union ("class.int"): the field as the body names it
    loc = [str(p) for p in e.get("loc", ()) if p != "body" and not UNION_MEMBER.fullmatch(str(p))]
    field = ".".join(loc)
    if not field and e.get("type") in ("missing", "model_attributes_type", "dict_type", "model_type"):
        return "the request body must be a JSON object of the request's fields"
    if e.get("type") == "extra_forbidden":
        return f"unknown field {field!r}"
    if e.get("type") == "missing":
        return f"{field} is required"
    if e.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    return f"{field}: {e.get('msg', 'invalid')}" if field else str(e.get("msg", "invalid request"))

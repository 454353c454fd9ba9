"""The HTTP shell of training from the studio (/api/v1/train): parse the request, call the TrainManager
(serve/training.py), format its answer; a refusal is JSON {"error": "one line"} with its status (404, 409, 422).

`router` is what `create_app` includes: its manager is the app's, `app.state.train`, made at the first request from
the app's settings (`app.state.studio`: runs_dir, device, train_threads) unless one was set before; `shutdown(app)`
stops its training at the app's end. `train_router(manager)` gives the same routes over a manager of one's own."""

from __future__ import annotations

import json
import threading

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from .training import API, Refused, TrainManager

START_FIELDS = ("name", "dataset", "method", "minutes", "images", "size", "download")
RESUME_FIELDS = ("minutes", "images")
START_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "dataset"], "properties": {
    "name": {"type": "string", "description": "the run's folder under --runs (letters, digits, . _ -)"},
    "dataset": {"type": "string", "description": "fashion-mnist | mnist | mnist-5k | digits | emoji | folder:PATH"},
    "method": {"type": "string", "enum": ["flow", "edm", "gan", "vae"], "default": "flow"},
    "minutes": {"type": "number", "description": "training time budget (give this or images)"},
    "images": {"type": "integer", "description": "budget in training images (give this or minutes)"},
    "size": {"type": "integer", "description": "folder and emoji datasets: image side, a multiple of 8"},
    "download": {"type": "boolean", "default": False, "description": "download the dataset if it is not found"}}}
RESUME_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "minutes": {"type": "number", "description": "a new total budget in minutes (default: the run's own)"},
    "images": {"type": "integer", "description": "a new total budget in images (default: the run's own)"}}}


def train_router(manager: TrainManager | None = None) -> APIRouter:
    """The /api/v1/train routes over `manager` (None: the app's, `manager_of(app)`)."""
    router = APIRouter(prefix=API, tags=["train"])

    def the(request: Request) -> TrainManager:
        return manager or manager_of(request.app)

    @router.post("", status_code=202, openapi_extra=_body(START_SCHEMA))
    @router.post("/", status_code=202, include_in_schema=False)
    async def start(request: Request):
        """Start a training run in a child process: {name, dataset, method, minutes | images, size?}."""
        return await _call(the(request).start, request, START_FIELDS, required=("name", "dataset"), status=202)

    @router.get("")
    @router.get("/", include_in_schema=False)
    async def trainings(request: Request):
        """Every training this server knows, newest first."""
        return {"trainings": await run_in_threadpool(the(request).list)}

    @router.get("/{id}")
    async def training(id: str, request: Request):
        """A training: state, images trained, loss curve, grids by URL, its log's last lines."""
        return await _call(the(request).get, id=id)

    @router.get("/{id}/files/{rel:path}")
    async def file(id: str, rel: str, request: Request):
        """A grid of the run: grid.png or grids/IMAGES.png."""
        try:
            return FileResponse(await run_in_threadpool(the(request).file, id, rel), media_type="image/png")
        except Refused as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)

    @router.post("/{id}/stop")
    async def stop(id: str, request: Request):
        """Stop it as Ctrl-C does: the run writes its checkpoint; the state is "stopping" until the process ends."""
        return await _call(the(request).stop, id=id)

    @router.delete("/{id}")
    async def delete(id: str, request: Request):
        """Forget a training that has no checkpoint (it failed or was stopped first), freeing its name."""
        return await _call(the(request).delete, id=id)

    @router.post("/{id}/resume", status_code=202, openapi_extra=_body(RESUME_SCHEMA, required=False))
    async def resume(id: str, request: Request):
        """Continue it from its last checkpoint, to a new total budget {minutes | images} if one is given."""
        return await _call(the(request).resume, request, RESUME_FIELDS, status=202, id=id)

    return router


_making = threading.Lock()


def manager_of(app) -> TrainManager:
    """The app's TrainManager (`app.state.train`), made from `app.state.studio` the first time it is asked for."""
    with _making:
        if getattr(app.state, "train", None) is None:
            studio = app.state.studio
            app.state.train = TrainManager(studio.runs_dir, threads=studio.train_threads, device=studio.device)
        return app.state.train


def shutdown(app) -> None:
    """At the app's end: stop its training (the run writes its checkpoint) and wait for the child to exit."""
    manager = getattr(app.state, "train", None)
    if manager is not None:
        manager.close()


async def _call(method, request: Request | None = None, allowed: tuple[str, ...] = (), *,
                required: tuple[str, ...] = (), status: int = 200, **fields):
    """`method(**fields, **the body's fields)` in a worker thread, as JSON; a refusal as {"error": ...}."""
    try:
        if request is not None:
            fields.update(await _fields(request, allowed, required))
        result = await run_in_threadpool(lambda: method(**fields))
    except Refused as e:
        return JSONResponse({"error": str(e)}, status_code=e.status)
    return JSONResponse(result, status_code=status)


async def _fields(request: Request, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    """The request's JSON object, with every `required` field and none outside `allowed`; an empty body is {}
    where nothing is required."""
    raw = await request.body()
    if not raw.strip() and not required:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise Refused("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Refused("the body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Refused(f"unknown field {unknown[0]!r}; the fields are {', '.join(allowed)}")
    missing = [k for k in required if k not in body]
    if missing:
        raise Refused(f"{missing[0]} is required")
    return body


def _body(schema: dict, *, required: bool = True) -> dict:
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


router = train_router()  # what create_app includes

"""The JSON API over runs and jobs (/api/v1): parse the body (pydantic: unknown fields are refused), call
`runs` and `jobs`, format. Progress is a server-sent-events stream written with starlette's StreamingResponse:
the stream is a few lines of text, so no library beyond starlette is needed for it."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..report import build_report
from .params import checked, checked_compare, checked_explain
from .runners import PLOTTING
from .runs import API, describe, list_runs, resolve_run, run_file
from .store import TERMINAL

router = APIRouter(prefix=API)
POLL = 0.1  # seconds between two looks at a job's change counter (Jobs.version) for its event stream
LOOK = 2.0  # seconds after which the stream reads the job even if the counter did not move
HEARTBEAT = 15.0  # seconds of silence after which the stream sends a comment line (keeps proxies from closing it)
GUIDANCE_INTERVAL = "[lo, hi] or \"LO,HI\": guide only at noise levels lo < sigma <= hi (default: the run's)"


class Body(BaseModel):
    # an unknown field is refused (422), never ignored; strict: true is no count or class index (as /train refuses
    # it), "3" no number
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerateBody(Body):
    run: str = Field(description="a run's name under --runs, as GET /api/v1/runs lists it")
    n: int = Field(1, description="images (at most the server's cap)")
    class_: int | str | None = Field(None, alias="class", description="a class index or name (default: in turn)")
    steps: int | None = Field(None, description="sampler steps (default: the run's)")
    sampler: str | None = Field(None, description="euler | heun | dpmpp-2m | ddim (default: the run's)")
    guidance: float | None = Field(None, description="classifier-free guidance scale, 1 = none (default: the run's)")
    guidance_interval: list[float | str] | str | None = Field(None, description=GUIDANCE_INTERVAL)
    eta: float | None = Field(None, description="ddim only: noise per step (default: the run's)")
    autoguidance: float | None = Field(None, description="weight of the run's guide network, 1 = none (default: "
                                                         "the run's)")
    autoguidance_interval: list[float | str] | str | None = Field(
        None, description=GUIDANCE_INTERVAL.replace("guide only", "autoguide only"))
    seed: int = Field(0, description="image i depends only on (seed, i)")
    backend: str = Field("auto", description="auto | torch | onnx | compiled | cuda-graphs")


class CompareBody(Body):
    runs: list[str] | None = Field(None, description="several runs, one row each")
    run: str | None = Field(None, description="or one run, at several steps or guidance scales")
    steps: list[int] | None = Field(None, description="step counts, one row each")
    guidance: list[float] | None = Field(None, description="guidance scales, one row each")
    seeds: list[int] = Field([0, 1, 2, 3], min_length=1, description="the columns: image 0 of each seed")
    class_: int | str | None = Field(None, alias="class", description="a class index or name (default: class 0)")
    sampler: str | None = None
    guidance_interval: list[float | str] | str | None = Field(None, description=GUIDANCE_INTERVAL)
    backend: str = "auto"


class ExplainBody(Body):
    job: str = Field(description="a finished generate job's id")
    index: int = Field(0, description="which of its images")


def studio(request: Request):
    return request.app.state.studio


# -- runs

@router.get("/runs")
def runs(request: Request) -> dict:
    """Every run and artifact under --runs."""
    return {"runs": list_runs(studio(request).runs_dir)}


@router.get("/runs/{name:path}/report")
def report(name: str, request: Request) -> FileResponse:
    """The run's `imagegen report` page; made now (from what the run holds, drawing nothing new) if missing."""
    run = resolve_run(studio(request).runs_dir, name)
    page = run / "report.html"
    if not page.is_file():
        with PLOTTING:
            build_report(run, explain=False, device=studio(request).device, log=lambda line: None)
    return FileResponse(page, media_type="text/html")


@router.get("/runs/{name:path}/files/{path:path}")
def run_files(name: str, path: str, request: Request) -> FileResponse:
    """A file of a run: grids/*.png, grid.png, its JSON files, its report."""
    return FileResponse(run_file(studio(request).runs_dir, name, path))


@router.get("/runs/{name:path}")
def run(name: str, request: Request) -> dict:
    """One run, with its config."""
    return describe(studio(request).runs_dir, name, config=True)


# -- jobs

def _accepted(job: dict, response: Response) -> dict:
    response.status_code = 202
    response.headers["Location"] = job["url"]
    return job


@router.post("/jobs", status_code=202)
def create_job(body: GenerateBody, request: Request, response: Response) -> dict:
    """Queue a generation; 202 at once with the job (its id, state and URL)."""
    st = studio(request)
    params, info = checked(st.runs_dir, body.model_dump(by_alias=True), st.device, st.max_n)
    return _accepted(st.jobs.submit("generate", params, info), response)


@router.post("/compare", status_code=202)
def compare(body: CompareBody, request: Request, response: Response) -> dict:
    """Queue a comparison: the same seeds (columns) through several runs or settings (rows), one labelled grid."""
    st = studio(request)
    params, info = checked_compare(st.runs_dir, body.model_dump(by_alias=True), st.device, st.max_cells)
    return _accepted(st.jobs.submit("compare", params, info), response)


@router.post("/explain", status_code=202)
def explain(body: ExplainBody, request: Request, response: Response) -> dict:
    """Queue an explanation of image `index` of a finished job: trajectory, guidance sweep, nearest training images."""
    st = studio(request)
    params, info = checked_explain(st.jobs, body.model_dump())
    return _accepted(st.jobs.submit("explain", params, info), response)


@router.get("/jobs")
def jobs(request: Request, limit: int = Query(50, ge=1, le=500, description="how many, newest first")) -> dict:
    """The newest jobs first (the history survives a restart)."""
    return {"jobs": studio(request).jobs.newest(limit)}


@router.get("/jobs/{id}")
def job(id: str, request: Request) -> dict:
    return studio(request).jobs.get(id)


@router.delete("/jobs/{id}")
def cancel(id: str, request: Request) -> dict:
    """Cancel a queued job, or a running one at its next sampler step; a finished job is returned as it is."""
    return studio(request).jobs.cancel(id)


@router.get("/jobs/{id}/files/{name}")
def job_file(id: str, name: str, request: Request) -> FileResponse:
    return FileResponse(studio(request).jobs.file(id, name))


@router.get("/jobs/{id}/events")
async def events(id: str, request: Request) -> StreamingResponse:
    """Server-sent events: the job JSON now, then at each change, until it is done, failed or cancelled."""
    jobs = studio(request).jobs
    first = jobs.get(id)  # an unknown id is a 404 before any stream starts
    return StreamingResponse(_stream(request, jobs, id, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(request: Request, jobs, id: str, job: dict):
    yield _event(job)
    quiet = looked = time.monotonic()
    seen = jobs.version(id)
    while job["state"] not in TERMINAL:
        await asyncio.sleep(POLL)
        if await request.is_disconnected():
            return
        version = jobs.version(id)
        if version != seen or time.monotonic() - looked > LOOK:  # else its row is unchanged: not read again
            seen, looked, now = version, time.monotonic(), jobs.get(id)
        else:
            now = jobs.progress_of(id, job)
        if now != job:
            job, quiet = now, time.monotonic()
            yield _event(job)
            continue
        if time.monotonic() - quiet > HEARTBEAT:
            quiet = time.monotonic()
            yield ": heartbeat\n\n"


def _event(job: dict) -> str:
    return f"data: {json.dumps(job)}\n\n"

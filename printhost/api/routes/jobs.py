"""Jobs: the queue and the history (`api/jobqueue.py` decides, `store/jobs.py` keeps)."""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet, query_values
from printhost.api.errors import ApiError
from printhost.api.jobqueue import JobQueue
from printhost.api.schemas import EMPTY, JOB_RECORD, RESULT_OK, Field, read_json
from printhost.api.schemas_jobs import JOB_DETAILS, JOB_LIST, JOB_SUBMIT
from printhost.store.jobs import ALL_STATES

endpoints = EndpointSet()

JOB_ID = {"job_id": Field("string", "The job's id", max_length=64)}
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)?")
LIST_PARAMS = {
    "state": Field("string", "Only jobs in this state", required=False,
                   enum=tuple(sorted(ALL_STATES))),
    "file": Field("string", "Only jobs of this file (its path)", required=False,
                  max_length=1024),
    "user": Field("string", "Only jobs of this user", required=False, max_length=128),
    "since": Field("string", "Only jobs created at or after this UTC time (`2026-01-31` or "
                   "`2026-01-31T12:00:00Z`)", required=False,
                   pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)?$"),
    "until": Field("string", "Only jobs created at or before this UTC time", required=False,
                   pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)?$"),
    "page": Field("integer", "Page, from 1", required=False, minimum=1, maximum=1000000),
    "limit": Field("integer", "Jobs per page (100 by default)", required=False, minimum=1,
                   maximum=500),
}


def _queue(request: Request) -> JobQueue:
    return request.app.state.queue


def _who(principal: Principal | None) -> str:
    assert principal is not None
    return principal.username


def _filters(request: Request) -> dict:
    out = query_values(request, LIST_PARAMS)
    for name in ("since", "until"):
        value = out.get(name)
        if value is None:
            continue
        if not _TIME.fullmatch(value):
            raise ApiError(400, "Invalid query parameter",
                           fields={name: "must be a date or UTC time, e.g. 2026-01-31T12:00:00Z"})
        if name == "until" and len(value) == 10:
            out[name] = value + "T23:59:59Z"  # the whole day
    out.setdefault("page", 1)
    out.setdefault("limit", 100)
    return out


@endpoints.route("GET", "/api/v1/jobs", summary="Jobs: the queue and the history",
                 role="viewer", response=JOB_LIST, query_params=LIST_PARAMS)
async def list_jobs(request: Request, _: Principal | None) -> dict:
    """Jobs newest first, one page at a time (`page`, `limit`; `total` and `pages` say how
    many there are), filtered by `state`, `file`, `user` and creation time (`since`,
    `until`). Queued jobs are those with state `queued`; each job's events are in
    `GET /api/v1/jobs/{job_id}`."""
    filters = _filters(request)
    return await run_in_threadpool(lambda: request.app.state.jobs.query(**filters))


@endpoints.route("POST", "/api/v1/jobs", summary="Queue a job", role="operator",
                 request=JOB_SUBMIT, response=JOB_RECORD, status=201, errors=(404, 409),
                 rate_limited=True)
async def submit(request: Request, principal: Principal | None) -> dict:
    """Queue a job for a stored file: state `queued`, started by an operator
    (`POST /api/v1/jobs/{job_id}/start`) or, with `jobs.auto_start`, by the service when
    the printer is idle (then the answer may already say `printing`). 409 (with the
    other job's `job_id`) when the same file content already has a job that is queued or
    printing; 429 beyond `jobs.max_queued_per_user` queued jobs."""
    body = await read_json(request, JOB_SUBMIT)
    return await _queue(request).submit(body["file"], _who(principal))


@endpoints.route("GET", "/api/v1/jobs/{job_id}", summary="A job with its events",
                 role="viewer", response=JOB_DETAILS, errors=(404,), path_params=JOB_ID)
async def job_details(request: Request, _: Principal | None) -> dict:
    """The job's record and its events, oldest first: who created, started, paused,
    resumed or cancelled it and when, and each state the printer reported."""
    job_id = request.path_params["job_id"]
    record = await run_in_threadpool(request.app.state.jobs.get, job_id)
    if record is None:
        raise ApiError(404, "Job not found")
    checkpoint = await run_in_threadpool(request.app.state.checkpoints.load, job_id)
    record["checkpoint"] = None if checkpoint is None else {
        k: checkpoint.get(k) for k in ("saved_at", "line", "progress", "filament_used_mm")}
    if checkpoint is not None:
        record["checkpoint"]["resume_line"] = checkpoint["resume_point"].get("line")
    return record


@endpoints.route("POST", "/api/v1/jobs/{job_id}/start", summary="Start a queued job",
                 role="operator", request=EMPTY, response=JOB_RECORD, errors=(404, 409, 503),
                 path_params=JOB_ID)
async def start(request: Request, principal: Principal | None) -> dict:
    """Hand a queued job to the printer, whatever its place in the queue. 409 when the
    printer is busy, the job is not queued, or its file is gone or was replaced since it
    was queued (re-queue it then)."""
    await read_json(request, EMPTY, allow_empty=True)
    return await _queue(request).start(request.path_params["job_id"], _who(principal))


@endpoints.route("POST", "/api/v1/jobs/{job_id}/resume",
                 summary="Resume an interrupted job from its checkpoint", role="operator",
                 request=EMPTY, response=JOB_RECORD, errors=(404, 409, 503),
                 path_params=JOB_ID)
async def resume_interrupted(request: Request, principal: Principal | None) -> dict:
    """Restart a job that a power loss, a stop of the service or a fault ended, from the
    last checkpoint saved while it printed (at most 10 s old): the heaters are brought
    back to the job's temperatures and waited for, the height the checkpoint believes is
    taken as the nozzle's (Z is never homed into the part), Z rises, X and Y are homed,
    the toolhead returns over the resume point and lowers onto it, and the file continues
    from that line with the G-code state, fan and acceleration it had there. What was
    printed after the point is printed again (at most the moves since the last Z move
    plus a few seconds). 409 when the job is not interrupted or failed, has no
    checkpoint, the printer is busy, or the file is gone or changed."""
    await read_json(request, EMPTY, allow_empty=True)
    return await _queue(request).resume_interrupted(request.path_params["job_id"],
                                                    _who(principal))


@endpoints.route("POST", "/api/v1/jobs/{job_id}/requeue", summary="Queue a finished job again",
                 role="operator", request=EMPTY, response=JOB_RECORD, status=201,
                 errors=(404, 409), path_params=JOB_ID, rate_limited=True)
async def requeue(request: Request, principal: Principal | None) -> dict:
    """A new queued job for the file of a completed, cancelled, failed or interrupted one
    (its content now). The old job keeps its history, with a `requeued` event."""
    await read_json(request, EMPTY, allow_empty=True)
    return await _queue(request).requeue(request.path_params["job_id"], _who(principal))


@endpoints.route("DELETE", "/api/v1/jobs/{job_id}", summary="Delete a job", role="operator",
                 response=RESULT_OK, errors=(404, 409), path_params=JOB_ID)
async def delete(request: Request, _: Principal | None) -> dict:
    """Remove a queued job from the queue, or a finished one from the history. 409 while
    it prints, pauses or is paused (cancel it first). The file is not touched."""
    await _queue(request).delete(request.path_params["job_id"])
    return {"result": "ok"}

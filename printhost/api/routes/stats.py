"""Statistics: jobs by state, print time, filament, success rate, storage."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet
from printhost.api.routes.files import storage_of
from printhost.api.schemas_jobs import STATS

endpoints = EndpointSet()


@endpoints.route("GET", "/api/v1/stats", summary="Jobs and storage in figures", role="viewer",
                 response=STATS)
async def stats(request: Request, _: Principal | None) -> dict:
    """Jobs by state (queued ones included), the print time and filament of all jobs in
    the store, the share of finished jobs that completed, and the storage used against
    the quota and the disk. Jobs deleted from the history no longer count."""
    state = request.app.state

    def gather() -> dict:
        return {"jobs": state.jobs.stats(), "storage": storage_of(state.files, state.settings)}
    return await run_in_threadpool(gather)

"""Maintenance for admins: files against jobs, and pruning the job history."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet
from printhost.api.schemas import read_json
from printhost.api.schemas_jobs import AUDIT, PRUNE_REQUEST, PRUNE_RESULT

endpoints = EndpointSet()

ARCHIVE_DIR = "archive"


@endpoints.route("GET", "/api/v1/admin/audit", summary="Files against jobs", role="admin",
                 response=AUDIT)
async def audit(request: Request, _: Principal | None) -> dict:
    """Stored files that no job names (`orphan_files`: candidates for
    `DELETE /api/v1/files/{path}`), and jobs whose file is gone (`missing_files`: a
    queued one cannot start; re-upload the file or delete the job). Changes nothing."""
    state = request.app.state

    def look() -> dict:
        stored = {f["path"] for f in state.files.list()}
        jobs = state.jobs.list(limit=10 ** 9)
        named = {rec.get("file") for rec in jobs}
        missing = [{"job_id": rec["id"], "file": rec.get("file"), "state": rec.get("state")}
                   for rec in jobs if rec.get("file") not in stored]
        return {"orphan_files": sorted(stored - named), "missing_files": missing,
                "files": len(stored), "jobs": len(jobs)}
    return await run_in_threadpool(look)


@endpoints.route("POST", "/api/v1/admin/prune", summary="Prune the job history", role="admin",
                 request=PRUNE_REQUEST, response=PRUNE_RESULT)
async def prune(request: Request, principal: Principal | None) -> dict:
    """Remove finished jobs (completed, cancelled, error, interrupted) created more than
    `older_than_days` ago, after writing them, with their events, to a new file in
    `<state_dir>/archive/` (one JSON document per line) unless `archive` is false.
    Queued and running jobs are never pruned; files are not touched."""
    body = await read_json(request, PRUNE_REQUEST)
    state = request.app.state
    before = (datetime.now(timezone.utc) - timedelta(days=body["older_than_days"])
              ).strftime("%Y-%m-%dT%H:%M:%SZ")
    archive_dir = state.store.state_dir / ARCHIVE_DIR if body.get("archive", True) else None
    count, archive = await run_in_threadpool(state.jobs.prune, before, archive_dir)
    return {"pruned": count,
            "archive": (archive.relative_to(state.store.state_dir).as_posix()
                        if archive is not None else None)}

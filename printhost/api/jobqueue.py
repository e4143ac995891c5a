"""The job queue: submitting, starting and re-queueing jobs, and starting the next one
by itself when configured.

Jobs wait in the store (`store/jobs.py`, state `queued`) in the order they were
submitted. A queued job is started by an operator (`POST /api/v1/jobs/{id}/start`),
or, with `jobs.auto_start = true`, by the service itself when the printer is idle:
when a job is submitted to an idle printer, and when the job before it ends
`completed` (not after an error, a cancel or an interruption: those need a person).
Starting the next print by itself is for printers that clear their bed themselves (a
belt printer, an ejection routine in the end G-code): on any other printer the next
part would be printed onto the last one, so it is off by default.

A job names a file by path and remembers the file's SHA-256 when it was submitted; it
starts only if the file still has that content (a file replaced since is refused with
409: re-queue it to print the new content). One file may have only one active job
(queued, printing, paused, ...) at a time: a second gets 409 with the first's id. A user
may have at most `jobs.max_queued_per_user` jobs queued (429 beyond).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from printhost.api.errors import ApiError
from printhost.ipc.channel import Command, ErrorKind
from printhost.ipc.link import PrinterUnavailable
from printhost.store.files import FileNameError, GCodeFiles
from printhost.store.jobs import (FINAL_STATES, IN_PROGRESS, QUEUED, JobHistory, JobNotFound,
                                  JobStateConflict)

log = logging.getLogger("printhost.api.jobqueue")

STATUS_FOR_KIND = {
    ErrorKind.CONFLICT: 409,
    ErrorKind.INVALID: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.NOT_READY: 503,
    ErrorKind.INTERNAL: 500,
}
#: Jobs that may be resumed from their checkpoint.
RESUMABLE = ("interrupted", "error")
#: Who starts a job the service started by itself.
AUTO = "auto-start"
#: Retry-After for a user at the queue limit: a job takes minutes at least.
QUEUE_FULL_RETRY_S = 60


async def command(link: Any, cmd: Command, args: dict | None = None,
                  timeout_s: float | None = None):
    """Send a command to the control process; its refusal as an ApiError."""
    try:
        reply = await link.request(cmd, args, timeout_s)
    except PrinterUnavailable as exc:
        raise ApiError(503, f"Printer not ready: {exc}") from None
    if not reply.ok:
        kind = reply.error or ErrorKind.INTERNAL
        message = reply.message if kind != ErrorKind.INTERNAL else None
        raise ApiError(STATUS_FOR_KIND[kind], message)
    return reply


class JobQueue:
    def __init__(self, link: Any, files: GCodeFiles, jobs: JobHistory, settings: Any,
                 checkpoints: Any = None) -> None:
        self.link = link
        self.checkpoints = checkpoints
        self.files = files
        self.jobs = jobs
        self.settings = settings
        # One start at a time: two starts at once must not both pass the "idle" check.
        self._starting = asyncio.Lock()

    # ------------------------------------------------------------------ helpers
    async def _file_and_hash(self, path: str) -> tuple[str, str]:
        """The stored path (NFC) and the file's SHA-256; 400/404 ApiError."""
        def look() -> tuple[str, str]:
            try:
                doc = self.files.metadata(path)
            except FileNameError as exc:
                raise ApiError(400, "Invalid request body", fields={"file": str(exc)}) from None
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise ApiError(404, "File not found") from None
            return doc["path"], doc["sha256"]
        return await asyncio.to_thread(look)

    async def _refuse_duplicate(self, sha256: str) -> None:
        """409 (with its id) when this content has a queued job, or is the job the
        printer is working on. A record that still says `printing` for a job the
        printer has finished is not one: the store learns of the end within a second."""
        live = self.link.status().get("job") or {}
        for rec in await asyncio.to_thread(self.jobs.active_with_hash, sha256):
            state = live.get("state") if rec["id"] == live.get("id") else rec.get("state")
            if state == QUEUED or state in IN_PROGRESS and rec["id"] == live.get("id"):
                raise ApiError(409, f"This file is already in job {rec['id']} ({state})",
                               extra={"job_id": rec["id"]})

    async def _record(self, job_id: str) -> dict[str, Any]:
        record = await asyncio.to_thread(self.jobs.get, job_id)
        if record is None:
            raise ApiError(404, "Job not found")
        return record

    async def _same_file(self, record: dict[str, Any], gone: str,
                         replaced: str) -> tuple[str, str]:
        """The job's stored path and hash, if its file still has the content the job
        was made for; else 409 with `gone` or `replaced`."""
        try:
            stored, sha256 = await self._file_and_hash(record["file"])
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(409, gone) from None
            raise
        if record.get("sha256") and sha256 != record["sha256"]:
            raise ApiError(409, replaced)
        return stored, sha256

    def _printer_busy(self) -> bool:
        job = self.link.status().get("job") or {}
        return job.get("state") in IN_PROGRESS

    # ------------------------------------------------------------------ requests
    async def submit(self, path: str, user: str) -> dict[str, Any]:
        """Queue a job for a stored file; started at once with auto-start on an idle
        printer with nothing queued before it."""
        stored, sha256 = await self._file_and_hash(path)
        limit = self.settings.jobs.max_queued_per_user
        async with self._starting:
            await self._refuse_duplicate(sha256)
            if await asyncio.to_thread(self.jobs.queued_by, user) >= limit:
                raise ApiError(429, f"You have {limit} jobs queued, the most allowed "
                                    "(jobs.max_queued_per_user); wait for one to start or "
                                    "delete one", retry_after=QUEUE_FULL_RETRY_S)
            job_id = uuid.uuid4().hex[:16]
            record = await asyncio.to_thread(self.jobs.create, job_id, stored, sha256, user)
        if self.settings.jobs.auto_start:
            started = await self.start_next(AUTO)
            if started is not None and started["id"] == job_id:
                return started
        return record

    async def print_now(self, path: str, user: str) -> str:
        """Start a new job for a stored file at once (`POST /api/v1/print`); its id."""
        stored, sha256 = await self._file_and_hash(path)
        async with self._starting:
            await self._refuse_duplicate(sha256)
            job_id = uuid.uuid4().hex[:16]
            await command(self.link, Command.PRINT,
                          {"job_id": job_id, "file": stored,
                           "path": str(self.files.path_for(stored))})
            await asyncio.to_thread(self.jobs.record_start, job_id, stored, user, sha256)
        return job_id

    async def requested(self, what: str, user: str) -> None:
        """Note a pause, resume or cancel that the printer accepted in the current job's
        events."""
        job = self.link.status().get("job") or {}
        if job.get("id"):
            await asyncio.to_thread(self.jobs.add_event, job["id"], f"{what} requested", user)

    async def start(self, job_id: str, user: str) -> dict[str, Any]:
        """Hand a queued job to the printer (409 when the printer is busy, the job is not
        queued, or its file changed since it was queued)."""
        async with self._starting:
            return await self._start_locked(job_id, user)

    async def _start_locked(self, job_id: str, user: str) -> dict[str, Any]:
        record = await self._record(job_id)
        if record.get("state") != QUEUED:
            raise ApiError(409, f"Job is {record.get('state')}, not queued")
        if self._printer_busy():
            raise ApiError(409, "A job is already in progress")
        stored, _ = await self._same_file(
            record, "The job's file is gone; upload it again and queue a new job",
            "The job's file was replaced since it was queued; re-queue it to print the "
            "new content")
        await command(self.link, Command.PRINT,
                      {"job_id": job_id, "file": stored,
                       "path": str(self.files.path_for(stored))})
        await asyncio.to_thread(self.jobs.mark_started, job_id, user)
        log.info("job %s (%s) started by %s", job_id, stored, user)
        started = await asyncio.to_thread(self.jobs.get, job_id)
        assert started is not None
        return started

    async def resume_interrupted(self, job_id: str, user: str) -> dict[str, Any]:
        """Restart a job that a power loss, a stop or a fault ended, from its checkpoint
        (control/checkpoint.py): heated first, X and Y homed, Z never. 409 when the job
        did not end so, has no checkpoint, the printer is busy, or its file is gone or
        was replaced since."""
        async with self._starting:
            record = await self._record(job_id)
            if record.get("state") not in RESUMABLE:
                raise ApiError(409, f"Job is {record.get('state')}; only an interrupted or "
                                    "failed job can be resumed from its checkpoint")
            checkpoint = await asyncio.to_thread(self.checkpoints.load, job_id)
            if checkpoint is None:
                raise ApiError(409, "No checkpoint of this job to resume from (it is kept "
                                    "only for the last job that printed)")
            if self._printer_busy():
                raise ApiError(409, "A job is already in progress")
            stored, _ = await self._same_file(
                record, "The job's file is gone; it cannot be resumed",
                "The job's file was replaced since it printed; it cannot be resumed")
            point = checkpoint["resume_point"]
            await command(self.link, Command.PRINT,
                          {"job_id": job_id, "file": stored,
                           "path": str(self.files.path_for(stored)), "resume": point})
            await asyncio.to_thread(self.jobs.add_event, job_id, "resumed from checkpoint",
                                    user, f"line {point.get('line')}")
            log.info("job %s (%s) resumed at line %s by %s", job_id, stored,
                     point.get("line"), user)
        resumed = await asyncio.to_thread(self.jobs.get, job_id)
        assert resumed is not None
        return resumed

    async def start_next(self, user: str = AUTO) -> dict[str, Any] | None:
        """Start the oldest queued job if the printer is idle; None if nothing started."""
        async with self._starting:
            if self._printer_busy() or self.link.status().get("state") == "error":
                return None
            record = await asyncio.to_thread(self.jobs.next_queued)
            if record is None:
                return None
            try:
                return await self._start_locked(record["id"], user)
            except ApiError as exc:
                # Left queued, with the reason in its events, for a person to look at.
                log.warning("auto-start of job %s refused: %s", record["id"], exc.message)
                await asyncio.to_thread(self.jobs.add_event, record["id"], "start refused",
                                        user, exc.message)
                return None

    async def requeue(self, job_id: str, user: str) -> dict[str, Any]:
        """A new queued job for the file of a finished one."""
        record = await self._record(job_id)
        if record.get("state") not in FINAL_STATES:
            raise ApiError(409, f"Job is {record.get('state')}; only a finished job can be "
                                "re-queued")
        new = await self.submit(record["file"], user)
        await asyncio.to_thread(self.jobs.add_event, job_id, "requeued", user,
                                f"as job {new['id']}")
        return new

    async def delete(self, job_id: str) -> None:
        try:
            await asyncio.to_thread(self.jobs.delete, job_id)
        except JobNotFound:
            raise ApiError(404, "Job not found") from None
        except JobStateConflict as exc:
            raise ApiError(409, f"Job is {exc}; cancel it first, a job is deleted only "
                                "when queued or finished") from None

    # ------------------------------------------------------------------ from the monitor
    async def job_changed(self, job: dict[str, Any], previous: str | None) -> None:
        """Told by the supervisor of each recorded state change: after a completed job,
        start the next with auto-start."""
        if (self.settings.jobs.auto_start and job.get("state") == "completed"
                and previous != "completed"):
            await self.start_next(AUTO)

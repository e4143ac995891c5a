"""Request and response schemas of the job queue, statistics, maintenance and live
status endpoints.

Declared like those in schemas.py and added to `schemas.ALL_SCHEMAS` on import, so the
OpenAPI document's components list them next to the others.
"""

from __future__ import annotations

from printhost.api.schemas import ALL_SCHEMAS, JOB_RECORD, Field, Schema, file_path_field
from printhost.api.schemas_files import STORAGE

JOB_EVENT = Schema("JobEvent", {
    "at": Field("string", "UTC ISO 8601 time"),
    "event": Field("string", "created, started, requeued, start refused, pause/resume/cancel "
                   "requested, or a state the printer reported (printing, paused, completed, "
                   "cancelled, error, interrupted, ...)"),
    "user": Field("string", "Who: a user, `api-key:<name>`, `auto-start`, or `printer` for "
                  "what the printer reported", nullable=True),
    "detail": Field("string", "More, when there is more to say (an error's reason)",
                    nullable=True),
})

CHECKPOINT = Schema("JobCheckpoint", {
    "saved_at": Field("string", "UTC ISO 8601 time it was saved"),
    "line": Field("integer", "The line the printer had read then", nullable=True),
    "progress": Field("number", "Progress then, 0..1", nullable=True),
    "filament_used_mm": Field("number", "Filament used then", nullable=True),
    "resume_line": Field("integer", "The line a resume starts from", nullable=True),
}, "The job's saved checkpoint (POST /api/v1/jobs/{job_id}/resume)")

JOB_DETAILS = Schema("JobDetails", {
    **JOB_RECORD.fields,
    "checkpoint": Field("object", "Where the job can be resumed after a power loss; null "
                        "without a saved checkpoint", nullable=True, required=False,
                        ref=CHECKPOINT),
    "events": Field("array", "What happened to the job, oldest first (at most 200)",
                    items=JOB_EVENT),
}, "A job with its events", additional=True)

JOB_LIST = Schema("JobList", {
    "jobs": Field("array", "One page of jobs, newest first, without their events",
                  items=JOB_RECORD),
    "total": Field("integer", "Jobs that match the filters"),
    "page": Field("integer", "This page, from 1"),
    "pages": Field("integer", "Pages in all (at least 1)"),
    "limit": Field("integer", "Jobs per page"),
})

STATS = Schema("Stats", {
    "jobs": Field("object", "Jobs in the store", ref=Schema("JobStats", {
        "total": Field("integer", "Every job, queued and finished included"),
        "by_state": Field("object", "Jobs in each state", values=Field("integer")),
        "print_time_s": Field("number", "Seconds printed, pauses excluded, over all jobs"),
        "filament_used_mm": Field("number", "Filament fed over all jobs"),
        "success_rate": Field("number", "Completed jobs as a share of finished ones (0..1); "
                              "null before any job finished", nullable=True),
    })),
    "storage": Field("object", "Storage used and available", ref=STORAGE),
})

AUDIT = Schema("Audit", {
    "orphan_files": Field("array", "Stored files no job in the store names (uploaded and "
                          "never queued or printed, or whose jobs were deleted)",
                          items=Field("string")),
    "missing_files": Field("array", "Jobs whose file is no longer stored",
                           items=Field("object", ref=Schema("MissingFile", {
                               "job_id": Field("string", "The job"),
                               "file": Field("string", "The path it names"),
                               "state": Field("string", "The job's state"),
                           }))),
    "files": Field("integer", "Stored files looked at"),
    "jobs": Field("integer", "Jobs looked at"),
})

PRUNE_REQUEST = Schema("PruneRequest", {
    "older_than_days": Field("integer", "Finished jobs created more than this many days ago "
                             "are removed", minimum=1, maximum=36500),
    "archive": Field("boolean", "Write them to <state_dir>/archive/ first (default true)",
                     required=False),
})

PRUNE_RESULT = Schema("PruneResult", {
    "pruned": Field("integer", "Jobs removed from the store"),
    "archive": Field("string", "The archive file, relative to the state directory; null "
                     "when nothing was archived", nullable=True),
})

JOB_SUBMIT = Schema("JobSubmit", {
    "file": file_path_field("Path of a stored G-code file"),
})

WS_TICKET = Schema("WebSocketTicket", {
    "ticket": Field("string", "Connect to /api/v1/ws?ticket=<ticket> once, within 30 s"),
    "expires_at": Field("string", "UTC ISO 8601 time the ticket expires"),
})

HEATER_HISTORY = Schema("HeaterHistory", {
    "temperature": Field("array", "°C, oldest first; null where unknown",
                         items=Field("number", nullable=True)),
    "target": Field("array", "°C", items=Field("number", nullable=True)),
    "power": Field("array", "0..1", items=Field("number", nullable=True)),
})

TEMPERATURE_HISTORY = Schema("TemperatureHistory", {
    "period_s": Field("number", "Seconds between samples (1)"),
    "times": Field("array", "Unix time of each sample, oldest first (at most 1200: 20 min)",
                   items=Field("number")),
    "heaters": Field("object", "Per heater, one value per sample in `times`",
                     values=Field("object", ref=HEATER_HISTORY)),
})


JOB_SCHEMAS = [JOB_EVENT, CHECKPOINT, JOB_DETAILS, JOB_LIST, STATS, STATS.fields["jobs"].ref, AUDIT,
               AUDIT.fields["missing_files"].items.ref, PRUNE_REQUEST, PRUNE_RESULT,
               JOB_SUBMIT, WS_TICKET, HEATER_HISTORY, TEMPERATURE_HISTORY]
_published = {s.name for s in ALL_SCHEMAS}
ALL_SCHEMAS.extend(s for s in JOB_SCHEMAS if s.name not in _published)

"""Job history: one record per print, kept up to date from the control process's status.

The control process never touches the store; the supervisor copies each job's state
changes from the status block into the `jobs` table, so the history survives restarts
and a job that was running when the control process died is recorded as `interrupted`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from tinydb import Query

from printhost.store.db import Store

FINAL_STATES = frozenset({"completed", "cancelled", "error", "interrupted"})
_COPIED = ("state", "progress", "print_duration", "total_duration", "filament_used_mm", "line",
           "error", "started_at", "ended_at")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class JobHistory:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record_start(self, job_id: str, file: str, user: str) -> None:
        """Record who started a job; the status copier may already have inserted it."""
        with self.store.transaction() as db:
            table = db.table("jobs")
            q = Query()
            if table.contains(q.id == job_id):
                table.update({"file": file, "user": user}, q.id == job_id)
            else:
                table.insert({"id": job_id, "file": file, "user": user,
                              "state": "printing", "created_at": _now(),
                              "progress": 0.0, "error": None})

    def update(self, job: dict[str, Any]) -> None:
        """Copy a job snapshot from status into its record (inserting it if unknown)."""
        fields = {k: job.get(k) for k in _COPIED if k in job}
        with self.store.transaction() as db:
            table = db.table("jobs")
            q = Query()
            if table.contains(q.id == job["id"]):
                table.update(fields, q.id == job["id"])
            else:
                table.insert({"id": job["id"], "file": job.get("file"), "created_at": _now(),
                              **fields})

    def mark_unfinished_interrupted(self, reason: str) -> int:
        """At start-up and after a crash: jobs left active can never resume by themselves."""
        with self.store.transaction() as db:
            table = db.table("jobs")
            q = Query()
            ids = table.update({"state": "interrupted", "error": reason,
                                "ended_at": _now()},
                               ~q.state.one_of(list(FINAL_STATES)))
            return len(ids)

    def get(self, job_id: str) -> dict[str, Any] | None:
        for rec in self.store.table_snapshot("jobs"):
            if rec.get("id") == job_id:
                return rec
        return None

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        # Records are kept in insertion order, which is creation order.
        records = self.store.table_snapshot("jobs")
        return records[::-1][:limit]

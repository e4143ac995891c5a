"""Jobs: the queue and the history, one record per job with its events.

A job is created `queued` (`POST /api/v1/jobs`) or straight away `printing`
(`POST /api/v1/print`), and from the moment it prints the control process owns its
state: the supervisor copies each state change and its progress (in steps of 5 %)
from the status block into the `jobs` table, so the history survives restarts, and a
job that was running when the service or the control process died is recorded as
`interrupted`. Queued jobs survive restarts as they are.

Every record carries `events`, who did what and when: `created`, `started`, the
states the printer reported (`paused`, `completed`, `error`, ...), `requeued`. The
control process never touches the store.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tinydb import Query

from printhost.store.atomic import replace_file
from printhost.store.db import Store

QUEUED = "queued"
FINAL_STATES = frozenset({"completed", "cancelled", "error", "interrupted"})
# A job in one of these holds the printer or waits for it: a second job of the same
# file is a duplicate.
# The printer is working on a job in one of these.
IN_PROGRESS = frozenset({"printing", "pausing", "paused", "cancelling"})
ACTIVE_STATES = frozenset({QUEUED}) | IN_PROGRESS
# A job may be deleted from the history only when it is not printing.
DELETABLE_STATES = frozenset({QUEUED}) | FINAL_STATES
ALL_STATES = ACTIVE_STATES | FINAL_STATES
_COPIED = ("state", "progress", "print_duration", "total_duration", "filament_used_mm", "line",
           "error", "started_at", "ended_at")
# Who an event is by when nobody asked for it: the printer reported it.
PRINTER = "printer"
# At most this many events per job (a job paused and resumed all night stays bounded).
MAX_EVENTS = 200


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(event: str, user: str | None, detail: str | None = None) -> dict[str, Any]:
    return {"at": _now(), "event": event, "user": user, "detail": detail}


def _add_event(record: dict[str, Any], event: dict[str, Any]) -> list[dict[str, Any]]:
    events = list(record.get("events") or [])
    events.append(event)
    return events[-MAX_EVENTS:]


class JobNotFound(Exception):
    pass


class JobStateConflict(Exception):
    """The job is not in a state that allows this; the message says which it is in."""


class JobHistory:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------ creating
    def create(self, job_id: str, file: str, sha256: str | None, user: str, *,
               state: str = QUEUED) -> dict[str, Any]:
        record = {"id": job_id, "file": file, "sha256": sha256, "user": user,
                  "state": state, "created_at": _now(), "started_at": None,
                  "ended_at": None, "progress": 0.0, "error": None,
                  "events": [_event("created", user)]}
        if state != QUEUED:
            record["events"].append(_event("started", user))
        with self.store.transaction() as db:
            table = db.table("jobs")
            q = Query()
            existing = table.get(q.id == job_id)
            if existing is not None:
                # The status copier saw the job first: keep what it recorded.
                merged = {**record, **{k: v for k, v in existing.items() if k in _COPIED}}
                merged["events"] = record["events"] + list(existing.get("events") or [])
                table.update(merged, q.id == job_id)
                return merged
            table.insert(record)
        return record

    def record_start(self, job_id: str, file: str, user: str,
                     sha256: str | None = None) -> None:
        """A job started at once (`POST /print`): created and started by `user`."""
        self.create(job_id, file, sha256, user, state="printing")

    def mark_started(self, job_id: str, user: str) -> None:
        """A queued job was handed to the printer."""
        if not self._with_event(job_id, _event("started", user), {"state": "printing"}):
            raise JobNotFound(job_id)

    def add_event(self, job_id: str, event: str, user: str | None,
                  detail: str | None = None) -> None:
        """Note something that happened to a job (nothing if the job is gone)."""
        self._with_event(job_id, _event(event, user, detail))

    def _with_event(self, job_id: str, event: dict[str, Any],
                    fields: dict[str, Any] | None = None) -> bool:
        """Add `event` (and set `fields`) in one transaction; False if no such job."""
        with self.store.transaction() as db:
            table = db.table("jobs")
            q = Query()
            record = table.get(q.id == job_id)
            if record is None:
                return False
            table.update({**(fields or {}), "events": _add_event(record, event)},
                         q.id == job_id)
            return True

    # ------------------------------------------------------------------ from the printer
    def update(self, job: dict[str, Any]) -> str | None:
        """Copy a job snapshot from status into its record (inserting it if unknown);
        a changed state is added to the events. The previous state, if it changed."""
        fields = {k: job.get(k) for k in _COPIED if k in job}
        with self.store.transaction() as db:
            table = db.table("jobs")
            q = Query()
            record = table.get(q.id == job["id"])
            if record is None:
                table.insert({"id": job["id"], "file": job.get("file"), "user": None,
                              "sha256": None, "created_at": _now(), **fields,
                              "events": [_event(str(fields.get("state")), PRINTER)]})
                return None
            previous = record.get("state")
            new_state = fields.get("state", previous)
            if new_state != previous:
                fields["events"] = _add_event(
                    record, _event(str(new_state), PRINTER, fields.get("error")))
            table.update(fields, q.id == job["id"])
            return previous if new_state != previous else None

    def mark_unfinished_interrupted(self, reason: str) -> int:
        """At start-up and after a crash: jobs that were printing can never resume by
        themselves. Queued jobs stay queued."""
        with self.store.transaction() as db:
            table = db.table("jobs")
            q = Query()
            hit = table.search(~q.state.one_of(list(FINAL_STATES | {QUEUED})))
            for record in hit:
                table.update({"state": "interrupted", "error": reason, "ended_at": _now(),
                              "events": _add_event(record, _event("interrupted", PRINTER,
                                                                  reason))},
                             q.id == record["id"])
            return len(hit)

    # ------------------------------------------------------------------ queries
    def get(self, job_id: str) -> dict[str, Any] | None:
        for rec in self.store.table_snapshot("jobs"):
            if rec.get("id") == job_id:
                return rec
        return None

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        # Records are kept in insertion order, which is creation order.
        records = self.store.table_snapshot("jobs")
        return records[::-1][:limit]

    def query(self, *, state: str | None = None, file: str | None = None,
              user: str | None = None, since: str | None = None, until: str | None = None,
              page: int = 1, limit: int = 20) -> dict[str, Any]:
        """One page of the jobs that match every filter given, newest first, without
        their events; with `total`, `page`, `pages` and `limit`. `since`/`until` compare
        the creation time (ISO 8601 UTC strings compare in time order)."""
        out = []
        for rec in reversed(self.store.table_snapshot("jobs")):
            if state is not None and rec.get("state") != state:
                continue
            if file is not None and rec.get("file") != file:
                continue
            if user is not None and rec.get("user") != user:
                continue
            created = rec.get("created_at") or ""
            if since is not None and created < since:
                continue
            if until is not None and created > until:
                continue
            out.append({k: v for k, v in rec.items() if k != "events"})
        total = len(out)
        pages = max(1, math.ceil(total / limit))
        start = (page - 1) * limit
        return {"jobs": out[start:start + limit], "total": total, "page": page,
                "pages": pages, "limit": limit}

    def stats(self) -> dict[str, Any]:
        """Jobs by state, print time and filament over all jobs, and the share of
        finished jobs that completed (None before any finished)."""
        by_state = {state: 0 for state in sorted(ALL_STATES)}
        print_s = filament = 0.0
        for rec in self.store.table_snapshot("jobs"):
            state = rec.get("state")
            by_state[state] = by_state.get(state, 0) + 1
            print_s += float(rec.get("print_duration") or 0.0)
            filament += float(rec.get("filament_used_mm") or 0.0)
        finished = sum(by_state[s] for s in FINAL_STATES)
        return {"total": sum(by_state.values()), "by_state": by_state,
                "print_time_s": round(print_s, 1), "filament_used_mm": round(filament, 1),
                "success_rate": (round(by_state["completed"] / finished, 4)
                                 if finished else None)}

    def active_with_hash(self, sha256: str) -> list[dict[str, Any]]:
        """The jobs of this file content that are queued or, as last recorded, in
        progress (a record may lag the printer by the copier's second)."""
        return [rec for rec in self.store.table_snapshot("jobs")
                if rec.get("sha256") == sha256 and rec.get("state") in ACTIVE_STATES]

    def queued_by(self, user: str) -> int:
        return sum(1 for rec in self.store.table_snapshot("jobs")
                   if rec.get("user") == user and rec.get("state") == QUEUED)

    def next_queued(self) -> dict[str, Any] | None:
        """The oldest queued job."""
        for rec in self.store.table_snapshot("jobs"):
            if rec.get("state") == QUEUED:
                return rec
        return None

    # ------------------------------------------------------------------ changes
    def prune(self, before: str, archive_dir: Path | None) -> tuple[int, Path | None]:
        """Remove finished jobs created before `before` (ISO 8601 UTC). With
        `archive_dir`, they are first written there, one JSON document per line, to a
        new file (written and fsynced before the store changes: a crash between the two
        leaves them in both places, never in neither). The count and the archive."""
        with self.store.transaction() as db:
            table = db.table("jobs")
            q = Query()
            old = table.search(q.state.one_of(list(FINAL_STATES))
                               & q.created_at.test(lambda v: isinstance(v, str) and v < before))
            if not old:
                return 0, None
            archive = None
            if archive_dir is not None:
                archive_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
                stamp = _now().replace(":", "").replace("-", "")
                archive = archive_dir / f"jobs-{stamp}-{len(old)}.jsonl"
                n = 1
                while archive.exists():
                    n += 1
                    archive = archive_dir / f"jobs-{stamp}-{len(old)}-{n}.jsonl"
                data = "".join(json.dumps(dict(rec), separators=(",", ":")) + "\n"
                               for rec in old).encode()
                replace_file(archive, data, 0o640)
            ids = {rec["id"] for rec in old}
            table.remove(q.id.one_of(list(ids)))
            return len(old), archive

    def delete(self, job_id: str) -> None:
        """Remove a job that is queued or finished (JobStateConflict otherwise)."""
        with self.store.transaction() as db:
            table = db.table("jobs")
            q = Query()
            record = table.get(q.id == job_id)
            if record is None:
                raise JobNotFound(job_id)
            if record.get("state") not in DELETABLE_STATES:
                raise JobStateConflict(str(record.get("state")))
            table.remove(q.id == job_id)

"""The record of every printer command an operator sent: who, when, what, and how it
ended.

A command (heat, home, jog, raw G-code, ...) is recorded `pending` when the API has
checked it, `acknowledged` once the control process has queued it (or `failed` with its
refusal), then `completed` or `failed` with a message when the control process reports
the end. The control process runs them (`control/console.py`) and lists the results in
its status document, numbered; `observe`, called with every status sample, copies them
here and tells WebSocket clients (`command` and `gcode_response` events).

Records are kept in memory (the last `KEEP` of them, for `GET /api/v1/commands`) and
appended to `<state_dir>/commands.jsonl` as they change, the audit of raw G-code
included; the file is rotated at `MAX_LOG_BYTES` (one old file kept), and the recent
records are read back from it when the service starts. A command that had not ended
when the service or the control process stopped is recorded `failed` with that reason:
nobody can say how far it got.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Callable

import orjson

from printhost.api.errors import ApiError
from printhost.api.jobqueue import STATUS_FOR_KIND
from printhost.ipc.channel import Command, ErrorKind
from printhost.ipc.link import PrinterUnavailable

log = logging.getLogger("printhost.api.commands")

KEEP = 500
MAX_LOG_BYTES = 4 * 1024 * 1024
LOG_NAME = "commands.jsonl"
OPEN_STATES = ("pending", "acknowledged", "running")
ALL_STATES = ("pending", "acknowledged", "running", "completed", "failed")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class CommandLog:
    def __init__(self, link: Any, state_dir: Path,
                 broadcast: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.link = link
        self.path = Path(state_dir) / LOG_NAME
        self.broadcast = broadcast
        self._records: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._last_seq = 0
        self._load()

    # ------------------------------------------------------------------ persistence
    def _load(self) -> None:
        """The recent records from the log; those still open end `failed`."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - MAX_LOG_BYTES))
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("command log %s not read: %s", self.path, exc)
            return
        for line in lines:
            try:
                record = orjson.loads(line)
                self._keep(record)
            except (orjson.JSONDecodeError, TypeError, KeyError):
                continue   # a line cut by a crash or by the seek above
        for record in self._records.values():
            if record.get("state") in OPEN_STATES:
                self._set(record, "failed", "printhost restarted before the command ended",
                          write=True)

    def _keep(self, record: dict[str, Any]) -> None:
        self._records[record["id"]] = record
        self._records.move_to_end(record["id"])
        while len(self._records) > KEEP:
            self._records.popitem(last=False)

    def _append(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        try:
            if self.path.exists() and self.path.stat().st_size > MAX_LOG_BYTES:
                os.replace(self.path, self.path.with_suffix(".jsonl.1"))
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line     # after a line a crash cut short
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("command %s not written to %s: %s", record.get("id"), self.path, exc)

    def _write(self, record: dict[str, Any]) -> None:
        """Append without blocking the event loop (a worker thread writes the line)."""
        snapshot = dict(record)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._append(snapshot)
            return
        loop.run_in_executor(None, self._append, snapshot)

    def _set(self, record: dict[str, Any], state: str, message: str | None,
             write: bool = True, responses: list[str] | None = None) -> None:
        record["state"] = state
        if message is not None:
            record["message"] = message
        if responses is not None:
            record["responses"] = responses
        record["updated_at"] = _now()
        if write:
            self._write(record)

    def _emit(self, record: dict[str, Any]) -> None:
        if self.broadcast is not None:
            self.broadcast({"type": "event", "event": "command", "data": dict(record)})

    # ------------------------------------------------------------------ sending
    async def submit(self, kind: str, args: dict[str, Any], user: str) -> dict[str, Any]:
        """Record and send one command; its record (acknowledged, or already ended).
        A refusal is recorded `failed` and raised as ApiError with `command_id`."""
        now = _now()
        record: dict[str, Any] = {
            "id": "cmd_" + secrets.token_hex(8), "kind": kind, "args": args, "user": user,
            "state": "pending", "message": None, "responses": [], "created_at": now,
            "updated_at": now,
        }
        self._keep(record)
        if kind == "gcode":
            log.info("raw G-code from %s (%s): %s", user, record["id"],
                     str(args.get("script", ""))[:500].replace("\n", " | "))
        try:
            reply = await self.link.request(
                Command.CONSOLE, {"id": record["id"], "kind": kind, "args": args, "by": user})
        except PrinterUnavailable as exc:
            self._set(record, "failed", f"Printer not ready: {exc}")
            self._emit(record)
            raise ApiError(503, f"Printer not ready: {exc}",
                           extra={"command_id": record["id"]}) from None
        if not reply.ok:
            kind_ = reply.error or ErrorKind.INTERNAL
            message = reply.message if kind_ != ErrorKind.INTERNAL else "Internal error"
            self._set(record, "failed", message)
            self._emit(record)
            raise ApiError(STATUS_FOR_KIND[kind_], message,
                           extra={"command_id": record["id"]})
        if record["state"] == "pending":   # `observe` may have seen the end already
            self._take(record, reply.result)
        return dict(record)

    def _take(self, record: dict[str, Any], result: dict[str, Any]) -> None:
        """A state the printer reported: recorded, and told with the new responses."""
        responses = list(result.get("responses") or [])
        new = responses[len(record.get("responses") or []):]
        self._set(record, str(result.get("state") or "acknowledged"),
                  result.get("message") or None, responses=responses)
        if self.broadcast is not None:
            for text in new:
                self.broadcast({"type": "event", "event": "gcode_response",
                                "data": {"command_id": record["id"], "response": text}})
        self._emit(record)

    # ------------------------------------------------------------------ observing
    def observe(self, doc: dict[str, Any]) -> None:
        """Take the results the control process lists in its status."""
        console = ((doc.get("printer") or {}).get("console")) or None
        if not isinstance(console, dict):
            return
        seq = int(console.get("seq") or 0)
        if seq < self._last_seq:
            # A new control process (restarted after a crash or a kill): what the old one
            # had queued will never be reported.
            self._fail_open("the control process restarted before the command ended")
            self._last_seq = 0
        for result in console.get("results") or ():
            if int(result.get("seq", 0)) <= self._last_seq:
                continue
            record = self._records.get(str(result.get("id")))
            if record is not None:
                self._take(record, result)
        self._last_seq = seq
        current = console.get("current")
        if current is not None:
            record = self._records.get(str(current))
            if record is not None and record["state"] == "acknowledged":
                self._set(record, "running", None, write=False)
                self._emit(record)

    def _fail_open(self, reason: str) -> None:
        for record in self._records.values():
            if record["state"] in ("acknowledged", "running"):
                self._set(record, "failed", reason)
                self._emit(record)

    # ------------------------------------------------------------------ reading
    def get(self, command_id: str) -> dict[str, Any] | None:
        record = self._records.get(command_id)
        return dict(record) if record is not None else None

    def list(self, *, state: str | None = None, kind: str | None = None,
             user: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for record in reversed(self._records.values()):
            if ((state and record["state"] != state) or (kind and record["kind"] != kind)
                    or (user and record["user"] != user)):
                continue
            out.append(dict(record))
            if len(out) >= limit:
                break
        return out


__all__ = ["ALL_STATES", "CommandLog"]

"""The command channel: typed requests with ids, replies, and timeouts.

It runs over one `multiprocessing` duplex pipe. The API side (`CommandClient`) lives
on the asyncio loop and is woken by the pipe's file descriptor, so waiting for a reply
never blocks the event loop. The control side (`CommandServer`) only ever polls with a
zero timeout: the control loop must never wait for the API.

Messages cross the pipe as plain dicts (`to_wire`/`from_wire`), so either end can be
restarted or replaced without sharing Python classes by pickle.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import select
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)


class Command(str, enum.Enum):
    """Everything the supervisor may ask of the control process."""
    PRINT = "print"          # args: job_id, file (display name), path (absolute)
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"        # also stops a running PID tune
    PID_TUNE = "pid_tune"    # args: heater (name), target (C); relay autotune on that heater
    SET_TARGET = "set_target"  # args: heater (name), target (C, 0 = off)
    EMERGENCY_STOP = "emergency_stop"  # args: by (who asked); heaters off, motion stopped,
                                       # printer latched in error (as M112)
    FIRMWARE_RESTART = "firmware_restart"  # restart and reconfigure the MCU, back to ready;
                                           # answered when the restart has ended
    CONSOLE = "console"      # args: id, kind, args, by; an operator's command (control/console.py)
    SHUTDOWN = "shutdown"    # heaters off, motion stopped, then exit
    PING = "ping"


class ErrorKind(str, enum.Enum):
    """Why a command was refused; the API maps each kind to one HTTP status."""
    CONFLICT = "conflict"    # the printer's state does not allow it (409)
    INVALID = "invalid"      # bad arguments (400)
    NOT_FOUND = "not_found"  # a named resource does not exist (404)
    NOT_READY = "not_ready"  # the printer cannot act now, e.g. after a fault (503)
    INTERNAL = "internal"    # a bug; details only in the control process log (500)


@dataclass(frozen=True)
class Request:
    id: int
    command: Command
    args: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.command.value, "args": self.args}

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> "Request":
        return cls(int(msg["id"]), Command(msg["command"]), dict(msg.get("args") or {}))


@dataclass(frozen=True)
class Reply:
    id: int
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: ErrorKind | None = None
    message: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "ok": self.ok, "result": self.result,
                "error": self.error.value if self.error else None, "message": self.message}

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> "Reply":
        err = msg.get("error")
        return cls(int(msg["id"]), bool(msg["ok"]), dict(msg.get("result") or {}),
                   ErrorKind(err) if err else None, str(msg.get("message") or ""))


class ChannelClosed(Exception):
    """The other end of the channel has gone away."""


class CommandTimeout(Exception):
    """No reply arrived within the timeout."""


class CommandClient:
    """API-side end: `await request(...)` from any coroutine on the owning loop."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                reply = Reply.from_wire(self._conn.recv())
                fut = self._pending.pop(reply.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(reply)
        except (EOFError, OSError):
            self._fail_all()
        except Exception:
            log.exception("malformed message on the command channel")

    def _fail_all(self) -> None:
        if self._loop is not None and not self.closed:
            try:
                self._loop.remove_reader(self._conn.fileno())
            except (ValueError, OSError):
                pass
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ChannelClosed("control process channel closed"))
        self._pending.clear()

    async def request(self, command: Command, args: dict[str, Any] | None = None,
                      timeout_s: float = 5.0) -> Reply:
        if self.closed or self._loop is None:
            raise ChannelClosed("control process channel closed")
        req = Request(next(self._ids), command, args or {})
        fut: asyncio.Future[Reply] = self._loop.create_future()
        self._pending[req.id] = fut
        try:
            self._conn.send(req.to_wire())
        except (OSError, ValueError) as exc:
            self._pending.pop(req.id, None)
            self._fail_all()
            raise ChannelClosed("control process channel closed") from exc
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise CommandTimeout(f"no reply to {command.value} within {timeout_s:g} s") from None
        finally:
            self._pending.pop(req.id, None)

    def send_nowait(self, command: Command, args: dict[str, Any] | None = None) -> bool:
        """Fire a command without waiting for its reply (used from signal handlers)."""
        if self.closed:
            return False
        try:
            self._conn.send(Request(next(self._ids), command, args or {}).to_wire())
            return True
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self._fail_all()
        try:
            self._conn.close()
        except OSError:
            pass


class CommandServer:
    """Control-side end: non-blocking polling and replies."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.closed = False

    def poll(self, limit: int = 32) -> list[Request]:
        """Return the requests that have arrived, without waiting."""
        out: list[Request] = []
        try:
            while len(out) < limit and self._readable():
                msg = self._conn.recv()
                try:
                    out.append(Request.from_wire(msg))
                except (KeyError, ValueError, TypeError):
                    log.error("dropping malformed request %r", msg)
        except (EOFError, OSError, ValueError):   # ValueError: select() on a closed end
            self.closed = True
        return out

    def _readable(self) -> bool:
        # select() directly: Connection.poll(0) builds a selector on every call, which
        # was 8 % of the control loop's own work at 50 passes a second.
        return bool(select.select([self._conn], [], [], 0)[0])

    def wait(self, timeout_s: float, *others: Any) -> list[Any]:
        """Wait up to `timeout_s` for a request (or the channel's end) or for one of
        `others` (objects with a `fileno()`) to become readable; returns what is ready,
        the channel as this server.

        What the control loop does between passes: it sleeps, yet answers a command at
        once instead of at the next pass."""
        if timeout_s <= 0.0:
            return []
        watched = list(others) if self.closed else [self._conn, *others]
        if not watched:
            return []
        try:
            # select() rather than multiprocessing's wait(): poll() takes whole
            # milliseconds and rounds up, so every pass would start up to 1 ms late.
            ready, _, _ = select.select(watched, [], [], timeout_s)
        except (OSError, ValueError):
            self.closed = True
            return [self]
        return [self if r is self._conn else r for r in ready]

    def reply(self, reply: Reply) -> None:
        if self.closed:
            return
        try:
            self._conn.send(reply.to_wire())
        except (OSError, ValueError):
            self.closed = True

    def ok(self, req: Request, **result: Any) -> None:
        self.reply(Reply(req.id, True, result))

    def fail(self, req: Request, kind: ErrorKind, message: str) -> None:
        self.reply(Reply(req.id, False, {}, kind, message))

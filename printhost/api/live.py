"""Live status for WebSocket clients, and the temperature history a chart starts from.

One task in the API process (`LiveStatus.run`) reads the control process's status
block (`ControlLink.status()`, a copy from shared memory) `SAMPLE_HZ` times a second,
and from that

* sends every connected client, at `server.ws_status_hz` (4 by default), what changed
  since the last send as one JSON merge patch (RFC 7386: members that changed, nested
  objects merged, arrays and other values replaced whole, null for a member that is
  now null or gone), the same message for every client, encoded once (a client that
  joined since the last send starts from a snapshot read when it joined, and gets its
  own first patch against that);
* notices job changes (a new job, a new state) and sends them as events at once;
* keeps the last `HISTORY_S` seconds of every heater's temperature, target and power
  at 1 Hz (`history()`), so a chart has a past the moment it opens.

Clients never slow anything down: each has a bounded queue that the task fills
without waiting, and its own sender that writes to the socket. A client whose queue
is full (it reads too slowly, or its network stalled) is dropped, with close code
1013; the control process is never involved in any of this, and a WebSocket client
costs the printer nothing but the API process's CPU.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable

import orjson

log = logging.getLogger("printhost.api.live")

#: How often the status block is read (the control process publishes 10 times a second).
SAMPLE_HZ = 10.0
#: Temperature history: this long, one sample a second.
HISTORY_S = 20 * 60
#: Messages a client may have waiting before it counts as too slow and is dropped.
CLIENT_QUEUE = 16
#: Close code for a client dropped for reading too slowly ("try again later").
CLOSE_TOO_SLOW = 1013


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 patch that turns `old` into `new`; `_UNCHANGED` when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        patch: dict[str, Any] = {}
        for key, value in new.items():
            if key not in old:
                patch[key] = value
            else:
                sub = merge_patch(old[key], value)
                if sub is not _UNCHANGED:
                    patch[key] = sub
        for key in old:
            if key not in new:
                patch[key] = None
        return patch if patch else _UNCHANGED
    if old == new and type(old) is type(new):
        return _UNCHANGED
    # Arrays, numbers, strings, a dict where there was none: sent whole. A null tells
    # the client the member is now null (RFC 7386 reads it as "remove the member").
    return new


class _Unchanged:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


_UNCHANGED = _Unchanged()


def apply_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, for tests and for clients written in Python."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_patch(out.get(key), value)
    return out


def _next_due(due: float, period: float, now: float) -> float:
    """The next due time: one period on, or one period from now when far behind (a
    stalled loop does not send a burst to catch up)."""
    return due + period if now - due < period else now + period


class Client:
    """One connected WebSocket: its queue and the sender task that drains it."""

    def __init__(self, name: str, send: Callable[[bytes], Any], close: Callable[[int, str], Any]):
        self.name = name
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self._send = send
        self._close = close
        self.dropped: str | None = None
        self.close_code = 1000
        self.sent = 0

    def offer(self, message: bytes) -> bool:
        """Queue a message without waiting; False (and the client is dropped) if full."""
        if self.dropped is not None:
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.drop(CLOSE_TOO_SLOW, "client reads too slowly")
            return False
        return True

    def drop(self, code: int, reason: str) -> None:
        if self.dropped is None:
            self.dropped = reason
            log.info("websocket %s closed: %s", self.name, reason)
            # Wake the sender, which closes the socket.
            while True:
                try:
                    self.queue.put_nowait(None)
                    break
                except asyncio.QueueFull:
                    self.queue.get_nowait()
            self.close_code = code

    async def run_sender(self) -> None:
        """Send queued messages until dropped; then close the socket."""
        try:
            while True:
                message = await self.queue.get()
                if message is None:
                    break
                await self._send(message)
                self.sent += 1
        finally:
            if self.dropped is not None:
                await self._close(self.close_code, self.dropped)


class LiveStatus:
    def __init__(self, status: Callable[[], dict[str, Any]], rate_hz: float,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._status = status
        self.rate_hz = rate_hz
        self._clock = clock
        self._wall = wall
        self.clients: set[Client] = set()
        # The document of the last send: what every client but the newcomers holds.
        self.last_sent: dict[str, Any] | None = None
        # Clients that joined since the last send, with the snapshot each was given.
        self._newcomers: dict[Client, dict[str, Any]] = {}
        self._last_job: tuple[str | None, str | None] = (None, None)
        self._next_send = 0.0
        self._next_history = 0.0
        self._history_times: deque[float] = deque(maxlen=HISTORY_S)
        self._history: dict[str, dict[str, deque[float | None]]] = {}
        self.messages_sent = 0
        # Called with every sample (the command log takes the console's results).
        self.observers: list[Callable[[dict[str, Any]], None]] = []

    # ------------------------------------------------------------------ clients
    def join(self, client: Client) -> dict[str, Any]:
        """Add a client; the snapshot it starts from, read now. Its first patch is made
        against that snapshot, the next ones with everybody else's."""
        fresh = self._status()
        self._newcomers[client] = fresh
        self.clients.add(client)
        return fresh

    def leave(self, client: Client) -> None:
        self.clients.discard(client)
        self._newcomers.pop(client, None)

    @staticmethod
    def encode(message: dict[str, Any]) -> bytes:
        return orjson.dumps(message)

    def broadcast(self, message: dict[str, Any], to: Any = None) -> None:
        """Queue one message (encoded once) for every client, or for those in `to`."""
        data = self.encode(message)
        for client in list(self.clients if to is None else to):
            if not client.offer(data):
                self.leave(client)
        self.messages_sent += 1

    # ------------------------------------------------------------------ sampling
    def sample(self) -> None:
        """One look at the status: job events, history, and the patch when it is due."""
        now = self._clock()
        doc = self._status()
        self._job_events(doc)
        for observe in self.observers:
            observe(doc)
        if now >= self._next_history:
            self._next_history = _next_due(self._next_history, 1.0, now)
            self._record_history(doc)
        if now >= self._next_send:
            self._next_send = _next_due(self._next_send, 1.0 / self.rate_hz, now)
            newcomers, self._newcomers = self._newcomers, {}
            regulars = [c for c in self.clients if c not in newcomers]
            if regulars and self.last_sent is not None:
                patch = merge_patch(self.last_sent, doc)
                if patch is not _UNCHANGED:
                    self.broadcast({"type": "status", "patch": patch}, to=regulars)
            for client, base in newcomers.items():
                patch = merge_patch(base, doc)
                if patch is not _UNCHANGED and client in self.clients:
                    self.broadcast({"type": "status", "patch": patch}, to=[client])
            self.last_sent = doc

    def _job_events(self, doc: dict[str, Any]) -> None:
        job = doc.get("job") or {}
        current = (job.get("id"), job.get("state"))
        if current != self._last_job and current[0] is not None:
            previous = self._last_job[1] if self._last_job[0] == current[0] else None
            self.broadcast({"type": "event", "event": "job",
                            "data": {"id": job.get("id"), "file": job.get("file"),
                                     "state": job.get("state"), "previous_state": previous,
                                     "error": job.get("error")}})
        self._last_job = current

    def _record_history(self, doc: dict[str, Any]) -> None:
        heaters = ((doc.get("printer") or {}).get("heaters")) or {}
        self._history_times.append(round(self._wall(), 1))
        filled = len(self._history_times)
        for name, h in heaters.items():
            series = self._history.get(name)
            if series is None:
                # A heater seen for the first time: its past is unknown (null).
                series = self._history[name] = {
                    k: deque([None] * (filled - 1), maxlen=HISTORY_S)
                    for k in ("temperature", "target", "power")}
            for key in ("temperature", "target", "power"):
                value = h.get(key) if isinstance(h, dict) else None
                series[key].append(round(value, 2) if isinstance(value, (int, float)) else None)
        for name, series in self._history.items():
            if name not in heaters:
                for values in series.values():
                    values.append(None)

    def history(self) -> dict[str, Any]:
        return {"period_s": 1.0, "times": list(self._history_times),
                "heaters": {name: {k: list(v) for k, v in series.items()}
                            for name, series in self._history.items()}}

    async def run(self) -> None:
        period = 1.0 / SAMPLE_HZ
        while True:
            try:
                self.sample()
            except Exception:  # a bad snapshot must not end live status for everyone
                log.exception("live status sample failed")
            await asyncio.sleep(period)

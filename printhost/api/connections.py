"""Connection limits for the API's HTTP server: how many, and how slow.

uvicorn counts connections but has no limit on how many it accepts, nor a time limit
for a client to send its request head or the next piece of a body. A LAN client that
opens a thousand idle connections (or sends a header a byte a minute) would otherwise
use up the process's file descriptors, and with them every other client's requests.

`ConnectionGuard` holds the limits and the connections; `guarded_protocol(guard)` is
uvicorn's h11 protocol with them applied (pass it as `uvicorn.Config(http=...)`):

- at most `max_connections` open connections. A connection beyond that replaces the
  one that has waited longest without sending a request (an idle keep-alive
  connection or one that never sent anything); when every connection is busy with a
  request, the new one is answered 503 and closed at once. File descriptors are
  therefore never used up by clients, so the accept loop never fails with EMFILE;
- `header_timeout_s` to send a complete request head, counted from the connection or
  from the first byte of a later request on it (408 and closed if part of a head came,
  just closed if nothing did);
- `body_idle_timeout_s` between two pieces of a request body (not counted while the
  application is not reading);
- between requests, uvicorn's keep-alive timeout applies.

A connection upgraded to a WebSocket leaves the guard: the app counts and limits those
(`server.max_websockets`), and uvicorn's pings find dead ones.

One sweep timer per server checks every connection a few times a second (at most
`max_connections` of them); nothing is scheduled per request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from printhost.logfilter import RepeatFilter

log = logging.getLogger("printhost.api.connections")
# A flood of connections must not become a flood of log lines.
log.addFilter(RepeatFilter(level=logging.DEBUG))


def _raw_response(status: int, reason: str, error: str) -> bytes:
    body = ('{"error":"%s"}' % error).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


REFUSED = _raw_response(503, "Service Unavailable",
                        "Too many open connections; try again shortly")
HEAD_TIMEOUT = _raw_response(408, "Request Timeout", "Request head not received in time")


class ConnectionGuard:
    """The limits, the open connections and counters (for logs and tests)."""

    def __init__(self, max_connections: int, header_timeout_s: float,
                 body_idle_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.body_idle_timeout_s = body_idle_timeout_s
        self.open: set[GuardedH11Protocol] = set()
        self.refused = 0
        self.evicted = 0
        self.head_timeouts = 0
        self.body_timeouts = 0
        self._sweep: asyncio.TimerHandle | None = None
        # Check often enough that a timeout is acted on within a quarter of itself.
        self.sweep_period_s = min(1.0, max(0.05, min(header_timeout_s,
                                                     body_idle_timeout_s) / 4))

    def counters(self) -> dict[str, int]:
        return {"open": len(self.open), "refused": self.refused, "evicted": self.evicted,
                "head_timeouts": self.head_timeouts, "body_timeouts": self.body_timeouts}

    def ensure_sweeping(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweep is None:
            self._sweep = loop.call_later(self.sweep_period_s, self._run_sweep, loop)

    def _run_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        now = loop.time()
        for conn in list(self.open):
            try:
                conn.check_deadlines(now)
            except Exception:  # one broken connection must not stop the others' checks
                log.exception("connection check failed")
        if self.open:
            self.ensure_sweeping(loop)

    def oldest_waiting(self) -> GuardedH11Protocol | None:
        """The connection that has waited longest without a request in progress."""
        waiting = [c for c in self.open if c.waiting_for_request()]
        return min(waiting, key=lambda c: c.waiting_since, default=None)


class GuardedH11Protocol(H11Protocol):
    guard: ConnectionGuard  # set on the subclass made by guarded_protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = False
        self.waiting_since = 0.0         # when it last started waiting for a request
        self.head_since: float | None = None   # head deadline counts from here
        self.head_bytes = 0
        self.last_data = 0.0

    # -- state

    def waiting_for_request(self) -> bool:
        return (not self.refused and self.conn.their_state is h11.IDLE
                and self.conn.our_state is h11.IDLE)

    # -- protocol events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        now = self.loop.time()
        if len(guard.open) >= guard.max_connections:
            victim = guard.oldest_waiting()
            if victim is None:
                self.refused = True
                guard.refused += 1
                log.warning("connection limit (%d) reached with every connection busy: "
                            "refusing new connections with 503", guard.max_connections)
                self.transport = transport
                transport.write(REFUSED)
                transport.close()
                return
            guard.evicted += 1
            log.info("connection limit (%d) reached: closing the connection that waited "
                     "longest for a request", guard.max_connections)
            victim.drop()
        super().connection_made(transport)
        guard.open.add(self)
        self.waiting_since = self.head_since = self.last_data = now
        guard.ensure_sweeping(self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self.guard.open.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        now = self.loop.time()
        self.last_data = now
        if self.waiting_for_request():
            if self.head_since is None:
                self.head_since = now   # a new request on a kept-alive connection
                self.head_bytes = 0
            self.head_bytes += len(data)
        super().data_received(data)
        if not self.waiting_for_request():
            self.head_since = None

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """The connection becomes a WebSocket: uvicorn hands the transport to its
        WebSocket protocol, and this one never hears of the connection again. It leaves
        the guard now (or it would hold a slot forever, and the sweep would apply HTTP's
        deadlines to a WebSocket); the app limits WebSocket clients itself
        (`server.max_websockets`)."""
        self.guard.open.discard(self)
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.waiting_since = self.loop.time()
        if self.waiting_for_request():
            # Until its next request starts, uvicorn's keep-alive timeout applies; a
            # pipelined request already partly received has its head deadline from now.
            if self.conn.trailing_data[0]:
                self.head_since = self.waiting_since
                self.head_bytes = len(self.conn.trailing_data[0])
            else:
                self.head_since = None

    # -- limits

    def drop(self) -> None:
        """Close now, to make room for a new connection."""
        self.guard.open.discard(self)
        self.connections.discard(self)
        if not self.transport.is_closing():
            self.transport.close()

    def check_deadlines(self, now: float) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        guard = self.guard
        if self.waiting_for_request():
            if self.head_since is not None and now - self.head_since > guard.header_timeout_s:
                guard.head_timeouts += 1
                log.info("closing a connection from %s: no complete request head within "
                         "%.1f s", self._peer(), guard.header_timeout_s)
                if self.head_bytes:
                    self.transport.write(HEAD_TIMEOUT)
                self.transport.close()
            return
        if self.conn.their_state is h11.SEND_BODY:
            if self.flow.read_paused:
                # The application is not reading: the client is not the slow one.
                self.last_data = now
            elif now - self.last_data > guard.body_idle_timeout_s:
                guard.body_timeouts += 1
                log.info("closing a connection from %s: no request body data for %.1f s",
                         self._peer(), guard.body_idle_timeout_s)
                self.transport.close()

    def _peer(self) -> str:
        return self.client[0] if self.client else "?"


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """The protocol class for one server, bound to its guard."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})

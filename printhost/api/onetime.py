"""One-time tokens: download links for stored files, and WebSocket tickets for browsers.

A browser's `<a href>`, a slicer or a phone's share sheet cannot send an
`Authorization` header, and a browser's WebSocket cannot send one on its upgrade
request either; a long-lived token must never travel in a URL (it lands in proxy logs,
browser history and Referer headers). So an authenticated client asks for a token that
works once, for a short time, for one purpose, and puts that in the URL instead:

* `POST /api/v1/files/{path}/download-token`: a link to one file, for
  `server.download_token_ttl_s` (5 minutes by default), only for that file as it was
  when the link was made (same size and modification time);
* `POST /api/v1/ws/ticket`: a ticket for one WebSocket connection within 30 s, which
  then carries the credential of the request that asked for it (and is closed when
  that credential is revoked or expires).

Tokens live in the API process's memory: a restart invalidates them, which for
short-lived one-time tokens is what a user expects. At most `MAX_TOKENS` are
outstanding per kind; the oldest is dropped for a new one. A token is 32 random bytes.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Generic, TypeVar

MAX_TOKENS = 1024

T = TypeVar("T")


class OneTimeTokens(Generic[T]):
    def __init__(self, ttl_s: float, clock=time.monotonic, wall=time.time) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._wall = wall
        self._grants: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, grant: T) -> tuple[str, float]:
        """A new token for `grant`, and when it expires (wall clock, seconds)."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            while len(self._grants) >= MAX_TOKENS:
                self._grants.popitem(last=False)
            self._grants[token] = (self._clock() + self.ttl_s, grant)
        return token, self._wall() + self.ttl_s

    def redeem(self, token: Any) -> T | None:
        """The grant of a valid token, which is used up; None for an unknown, used or
        expired one."""
        if not isinstance(token, str):
            return None
        with self._lock:
            entry = self._grants.pop(token, None)
        if entry is None or self._clock() >= entry[0]:
            return None
        return entry[1]

    def outstanding(self) -> int:
        with self._lock:
            self._prune()
            return len(self._grants)

    def _prune(self) -> None:
        now = self._clock()
        for token in [t for t, (deadline, _) in self._grants.items() if deadline <= now]:
            del self._grants[token]

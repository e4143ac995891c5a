"""Login throttling: lock out a user name or a client address after repeated failures.

Both keys are counted so that guessing many passwords for one user from many
addresses, and guessing many users from one address, are both slowed down. State is
in memory: a restart clears it, which is acceptable for a LAN device and keeps the
store free of write traffic on every failed login.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable


class LoginThrottle:
    def __init__(self, max_failures: int, window_s: float, lockout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    @staticmethod
    def keys(username: str, client: str) -> list[str]:
        return [f"user:{username.lower()}", f"addr:{client}"]

    def retry_after(self, keys: list[str]) -> int | None:
        """Seconds until these keys may try again, or None if not locked."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            until = self._locked_until.get(key)
            if until is not None:
                if until > now:
                    wait = max(wait, until - now)
                else:
                    del self._locked_until[key]
        return max(1, math.ceil(wait)) if wait > 0 else None

    def record_failure(self, keys: list[str]) -> None:
        now = self._clock()
        for key in keys:
            q = self._failures.setdefault(key, deque())
            q.append(now)
            while q and q[0] < now - self.window_s:
                q.popleft()
            if len(q) >= self.max_failures:
                self._locked_until[key] = now + self.lockout_s
                q.clear()
        self._prune(now)

    def record_success(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _prune(self, now: float) -> None:
        """Bound memory: drop counters whose failures have all left the window."""
        if len(self._failures) > 10000:
            for key in [k for k, q in self._failures.items() if not q or q[-1] < now - self.window_s]:
                del self._failures[key]
        if len(self._locked_until) > 10000:
            for key in [k for k, until in self._locked_until.items() if until <= now]:
                del self._locked_until[key]

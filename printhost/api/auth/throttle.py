"""Login throttling: lock out a user name at an address, or an address, after repeated failures.

Both keys are counted so that guessing one user's password and guessing many users'
passwords from one address are both slowed down. State is
in memory: a restart clears it, which is acceptable for a LAN device and keeps the
store free of write traffic on every failed login.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable


# An address may fail this many times more often than one user name at that address.
ADDRESS_FACTOR = 4


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
        """The user-at-address pair first, then the address alone.

        Locking the pair (not the user name everywhere) keeps a stranger from locking
        the real admin out by guessing its password from elsewhere; the address key,
        with a higher threshold, stops one address from trying many user names.
        """
        return [f"pair:{username.lower()}@{client}", f"addr:{client}"]

    def _limit(self, key: str) -> int:
        return self.max_failures * ADDRESS_FACTOR if key.startswith("addr:") else self.max_failures

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
            if len(q) >= self._limit(key):
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

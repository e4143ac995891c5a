"""Login throttling: lock out a user name at an address, a user name, or an address after
repeated failures, for exponentially growing periods.

Three keys are counted for every login (`login_keys`):

* `pair:<user>@<address>`: one user name guessed from one address, locked after
  `max_failures`;
* `acct:<user>`: one user name guessed from anywhere (a distributed attack), locked
  after `ADDRESS_FACTOR * max_failures`;
* `addr:<address>`: many user names guessed from one address, locked after
  `ADDRESS_FACTOR * max_failures`.

Each lockout of a key lasts twice as long as the one before (`lockout_s`, then 2x,
4x, ...) up to `max_lockout_s`; a key that has had no failure for `max_lockout_s`
after its last lockout ended starts again from `lockout_s`, and a successful login clears the strikes of the
pair and of the user name. Counting is the same whether the user exists or not, so
lockouts do not reveal which names exist.

State is in memory: a restart clears it, which is acceptable for a LAN device and
keeps the store free of write traffic on every failed login. Everything here runs on
the event loop thread without awaiting, so concurrent logins see consistent counts.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable


# An address (or a user name from anywhere) may fail this many times more often than
# one user name at one address.
ADDRESS_FACTOR = 4
_MAX_KEYS = 10000


class LoginThrottle:
    def __init__(self, max_failures: int, window_s: float, lockout_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 max_lockout_s: float | None = None) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        # None: every lockout lasts lockout_s (no growth).
        self.max_lockout_s = max_lockout_s if max_lockout_s is not None else lockout_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        # key -> (lockouts so far, end of the last lockout or time of a later failure)
        self._strikes: dict[str, tuple[int, float]] = {}
        # attempts admitted by `begin` and not yet ended
        self._pending: dict[str, int] = {}

    @staticmethod
    def keys(username: str, client: str) -> list[str]:
        """The user-at-address pair first, then the address alone.

        Locking the pair (not only the user name everywhere) keeps a stranger from
        locking the real admin out quickly by guessing its password from elsewhere;
        the address key, with a higher threshold, stops one address from trying many
        user names.
        """
        return [f"pair:{username.lower()}@{client}", f"addr:{client}"]

    @classmethod
    def login_keys(cls, username: str, client: str) -> list[str]:
        """`keys` plus the user name from anywhere (`acct:`), as the login route counts."""
        pair, addr = cls.keys(username, client)
        return [pair, f"acct:{username.lower()}", addr]

    def _limit(self, key: str) -> int:
        if key.startswith(("addr:", "acct:")):
            return self.max_failures * ADDRESS_FACTOR
        return self.max_failures

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

    def _recent(self, key: str, now: float) -> int:
        q = self._failures.get(key)
        if not q:
            return 0
        while q and q[0] < now - self.window_s:
            q.popleft()
        return len(q)

    def begin(self, keys: list[str]) -> int | None:
        """Admit one attempt: None if it may go ahead (it is then counted as in flight
        until `end`), else the seconds to wait.

        Attempts in flight count against the limits as if they had failed, so a burst
        of concurrent guesses cannot get more than the allowed number checked before
        the first of them is recorded; an attempt refused only because others are
        still in flight is told to retry after 1 s.
        """
        wait = self.retry_after(keys)
        if wait is not None:
            return wait
        now = self._clock()
        for key in keys:
            if self._recent(key, now) + self._pending.get(key, 0) >= self._limit(key):
                return 1
        for key in keys:
            self._pending[key] = self._pending.get(key, 0) + 1
        return None

    def end(self, keys: list[str], success: bool, clear: list[str] | None = None) -> None:
        """Finish an attempt admitted by `begin`: a failure is recorded on every key; a
        success clears the keys in `clear` (default: the first one)."""
        for key in keys:
            left = self._pending.get(key, 0) - 1
            if left > 0:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)
        if success:
            self.record_success(keys[:1] if clear is None else clear)
        else:
            self.record_failure(keys)

    def _lockout_for(self, key: str, now: float) -> float:
        strikes, _ = self._strikes.get(key, (0, now))
        duration = min(self.lockout_s * (2 ** min(strikes, 32)), self.max_lockout_s)
        self._strikes[key] = (strikes + 1, now + duration)
        return duration

    def record_failure(self, keys: list[str]) -> None:
        now = self._clock()
        for key in keys:
            q = self._failures.setdefault(key, deque())
            q.append(now)
            while q and q[0] < now - self.window_s:
                q.popleft()
            if key in self._strikes:
                strikes, last = self._strikes[key]
                # Quiet for max_lockout_s since the last failure or the end of the
                # last lockout: start again from the first lockout.
                self._strikes[key] = (0 if now - last >= self.max_lockout_s else strikes,
                                      max(last, now))
            if len(q) >= self._limit(key):
                self._locked_until[key] = now + self._lockout_for(key, now)
                q.clear()
        self._prune(now)

    def record_success(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)
            self._strikes.pop(key, None)

    def _prune(self, now: float) -> None:
        """Bound memory: drop counters whose failures have all left the window."""
        if len(self._failures) > _MAX_KEYS:
            for key in [k for k, q in self._failures.items() if not q or q[-1] < now - self.window_s]:
                del self._failures[key]
        if len(self._locked_until) > _MAX_KEYS:
            for key in [k for k, until in self._locked_until.items() if until <= now]:
                del self._locked_until[key]
        if len(self._strikes) > _MAX_KEYS:
            for key in [k for k, (_, last) in self._strikes.items()
                        if now - last >= self.max_lockout_s]:
                del self._strikes[key]

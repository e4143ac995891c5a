"""Per-client rate limits for expensive endpoints: a token bucket per (client, endpoint).

Each bucket holds up to `burst` tokens and refills at `per_min` tokens a minute; a
request takes one token or is refused with the number of whole seconds until one is
available again. The limiter is only ever used from the event loop thread (the
dispatcher calls it before a handler starts), so it needs no lock. State is in memory
and bounded: once there are many buckets, those that have refilled completely (they
carry no information) are dropped, and if that is not enough, the least recently used
half.
"""

from __future__ import annotations

import math
import time
from typing import Callable

# Above this many buckets, full ones are pruned (a full bucket equals no bucket).
MAX_BUCKETS = 10000


class RateLimiter:
    def __init__(self, per_min: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_min / 60.0          # tokens per second; 0 disables the limiter
        self.burst = float(burst)
        self._clock = clock
        # key -> (tokens left, time they were counted)
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, client: str, endpoint: str) -> int | None:
        """Take a token for `client` at `endpoint`; None if granted, else seconds to wait."""
        if not self.enabled:
            return None
        now = self._clock()
        key = (client, endpoint)
        tokens, since = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - since) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._prune(now)
            return None
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _prune(self, now: float) -> None:
        full = [key for key, (tokens, since) in self._buckets.items()
                if tokens + (now - since) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) > MAX_BUCKETS // 2:
            # Still crowded (many clients mid-burst): forget the least recently seen half,
            # which at worst hands those clients a fresh burst.
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for key in by_age[:len(by_age) // 2]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

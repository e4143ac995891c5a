"""`RepeatFilter`: a log line that repeats is logged once per interval, with a count.

A failure that repeats in a tight loop (asyncio's "socket.accept() out of system
resource" once per accept attempt, a client that reconnects as fast as it can) must
not fill the disk with identical lines. The first line of a kind is logged; identical
lines (same logger, level and text) within `interval_s` after it are counted, not
logged, and the next one logged after the interval says how many were left out:
"... [247 identical lines suppressed in the last 10 s]".

`configure_logging` installs one on the root handlers for WARNING and above; loggers
that may repeat at INFO (printhost.api.connections) add their own for every level.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

INTERVAL_S = 10.0
# Kinds of lines remembered at most; older ones are forgotten first.
MAX_KINDS = 512
KEY_CHARS = 300


class RepeatFilter(logging.Filter):
    def __init__(self, interval_s: float = INTERVAL_S, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.level = level
        self.clock = clock
        # kind -> [when it was last logged, how many were left out since]
        self._seen: dict[tuple, list] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        try:
            text = record.getMessage()
        except Exception:
            return True
        key = (record.name, record.levelno, text[:KEY_CHARS])
        now = self.clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            since = now - entry[0]
            # The text is final here: the arguments are merged in, so a % in the note
            # cannot break formatting.
            record.msg = (f"{text} [{entry[1]} identical line{'s' if entry[1] > 1 else ''} "
                          f"suppressed in the last {since:.0f} s]")
            record.args = None
        if len(self._seen) >= MAX_KINDS and key not in self._seen:
            oldest = min(self._seen, key=lambda k: self._seen[k][0])
            del self._seen[oldest]
        self._seen[key] = [now, 0]
        return True

"""The control loop's deadlines: when each pass is due, how late it ran, and why.

The control loop is periodic: every `period_s` it answers the API, polls the MCU, runs
the heaters and feeds motion. Sleeping a fixed interval *after* each pass would stretch
the period by the pass's own duration (188 passes a second instead of 250 at 4 ms),
so the loop sleeps until the next *due* time instead, and `LoopTiming` keeps the
books:

* a pass is due every `period_s`; its *tick time* is how long its work took and its
  *latency* how long after its due time it finished (waking late plus working);
* a pass that finishes after the next pass was due is an *overrun*: that deadline was
  missed. The next pass then starts at once, and the schedule restarts from there
  rather than running a burst of passes to catch up;
* tick times and latencies go into fixed histograms (0.1 ms buckets up to 10 ms, then
  coarser up to 1 s), from which `get_status()` reports p50/p99/p99.9 and the exact
  maximum, for `status.printer.control`;
* each pass's work is split into named phases (`mark`), so an overrun can name its
  cause: the process woke late (it was not scheduled: CPU contention without real-time
  priority) or one phase took long (a big chunk of step generation, say). When overruns
  are sustained (at least `SUSTAINED_SHARE` of the passes of a one-second window) the
  loop logs that once, with the cause, and again only after a clean window.

It costs a few clock reads per pass and no allocation.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("printhost.control")

_FINE_S = 0.0001
_FINE_BUCKETS = 100                     # 0 .. 10 ms in 0.1 ms steps
_COARSE_EDGES_S = (0.012, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
                   float("inf"))
#: Overruns in at least this share of a window's passes are "sustained".
SUSTAINED_SHARE = 0.05
WINDOW_S = 1.0
#: A pass that woke later than this share of the period did not get the CPU in time.
LATE_WAKE_SHARE = 0.5


class Histogram:
    """Counts of durations in fixed buckets; percentiles are bucket upper edges."""

    __slots__ = ("counts", "total", "max_s")

    def __init__(self) -> None:
        self.counts = [0] * (_FINE_BUCKETS + len(_COARSE_EDGES_S))
        self.total = 0
        self.max_s = 0.0

    @staticmethod
    def upper_edge(index: int) -> float:
        if index < _FINE_BUCKETS:
            return (index + 1) * _FINE_S
        return _COARSE_EDGES_S[index - _FINE_BUCKETS]

    def add(self, seconds: float) -> None:
        if seconds < 0.0:
            seconds = 0.0
        if seconds < _FINE_BUCKETS * _FINE_S:
            index = int(seconds / _FINE_S)
        else:
            index = _FINE_BUCKETS + bisect.bisect_left(_COARSE_EDGES_S, seconds)
        self.counts[index] += 1
        self.total += 1
        if seconds > self.max_s:
            self.max_s = seconds

    def percentile(self, q: float) -> float | None:
        """The upper edge of the bucket holding the q-quantile (capped at the maximum)."""
        return self.percentiles((q,))[0]

    def percentiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """`percentile` of each of `qs` (ascending), in one scan of the buckets: status
        asks for several with each snapshot, and each scan walks over a hundred buckets."""
        if not self.total:
            return [None] * len(qs)
        out: list[float | None] = []
        ranks = [q * self.total for q in qs]
        seen = 0
        for index, count in enumerate(self.counts):
            if not count:
                continue
            seen += count
            while len(out) < len(ranks) and seen >= ranks[len(out)]:
                out.append(min(self.upper_edge(index), self.max_s))
            if len(out) == len(ranks):
                return out
        return out + [self.max_s] * (len(ranks) - len(out))

    def buckets_ms(self) -> list[list[float]]:
        """Non-empty buckets as [upper edge in ms, count]."""
        return [[_EDGES_MS[i], c] for i, c in enumerate(self.counts) if c]


# Each bucket's upper edge in ms, as status lists them (None: the open-ended last one).
_EDGES_MS = tuple([round(Histogram.upper_edge(i) * 1000.0, 3)
                   for i in range(_FINE_BUCKETS + len(_COARSE_EDGES_S) - 1)] + [None])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


class LoopTiming:
    """Due times, overruns and latency histograms of one periodic loop."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.period_s = float(period_s)
        self._clock = clock
        self.passes = 0
        self.overruns = 0
        self.late_wakes = 0
        self.tick = Histogram()
        self.latency = Histogram()
        self.realtime: dict[str, Any] | None = None
        self._due = clock()
        self._start = self._due
        self._mark_at = self._due
        self._phases: dict[str, float] = {}
        self._window_end = self._due + WINDOW_S
        self._window_passes = 0
        self._window_overruns = 0
        self._window_causes: dict[str, int] = {}
        self._warned = False
        self.last_cause: str | None = None
        self._derived: dict[str, Any] | None = None
        self._derived_key: tuple[int, bool] = (0, False)
        self._derived_at = 0.0

    def restart(self) -> None:
        """The first pass is due now (start-up work before the loop is not lateness)."""
        self._due = self._clock()
        self._window_end = self._due + WINDOW_S

    def start_pass(self) -> float:
        """Call at the top of each pass; returns the clock."""
        now = self._clock()
        self._start = self._mark_at = now
        self._phases.clear()
        return now

    def mark(self, phase: str) -> None:
        """The work since the previous mark (or the pass's start) was `phase`."""
        now = self._clock()
        self._phases[phase] = self._phases.get(phase, 0.0) + (now - self._mark_at)
        self._mark_at = now

    def end_pass(self) -> float:
        """Book the pass; returns how long to sleep until the next one is due."""
        now = self._clock()
        due = self._due
        work = now - self._start
        wake_late = self._start - due
        self.passes += 1
        self.tick.add(work)
        self.latency.add(now - due)
        next_due = due + self.period_s
        if now > next_due:
            self.overruns += 1
            self._note_overrun(wake_late, work)
            next_due = now
        self._due = next_due
        self._window_passes += 1
        if now >= self._window_end:
            self._close_window(now)
        return max(0.0, next_due - now)

    def _note_overrun(self, wake_late: float, work: float) -> None:
        if wake_late > LATE_WAKE_SHARE * self.period_s and wake_late >= work:
            self.late_wakes += 1
            sched = ("real-time priority: yes" if self.realtime and self.realtime.get("realtime")
                     else "no real-time priority")
            cause = (f"woke {wake_late * 1000.0:.1f} ms late: the process was not scheduled "
                     f"in time (CPU contention; {sched})")
            key = "late wake-up"
        else:
            phase, spent = max(self._phases.items(), key=lambda kv: kv[1],
                               default=("pass", work))
            cause = (f"a pass took {work * 1000.0:.1f} ms, {spent * 1000.0:.1f} ms of it in "
                     f"{phase}")
            key = phase
        self.last_cause = cause
        self._window_overruns += 1
        self._window_causes[key] = self._window_causes.get(key, 0) + 1

    def _close_window(self, now: float) -> None:
        passes, overruns = self._window_passes, self._window_overruns
        if overruns and overruns >= SUSTAINED_SHARE * passes:
            if not self._warned:
                self._warned = True
                main = max(self._window_causes.items(), key=lambda kv: kv[1])[0]
                log.warning("control loop overrunning: %d of %d passes missed their %.1f ms "
                            "deadline in the last second, mostly %s (latest: %s)", overruns,
                            passes, self.period_s * 1000.0, main, self.last_cause)
        elif not overruns and self._warned:
            self._warned = False
            log.info("control loop keeps its deadlines again (%d overruns since start)",
                     self.overruns)
        self._window_passes = self._window_overruns = 0
        self._window_causes.clear()
        self._window_end = now + WINDOW_S

    def get_status(self) -> dict[str, Any]:
        """JSON-ready snapshot for `status.printer.control`.

        Counters and maxima are current; the percentiles and the histogram are worked
        out again only when a second has passed or a pass overran since the last time:
        status was published 20 to 25 times a second, and walking the buckets each time
        was a tenth of what publishing cost."""
        now = self._clock()
        key = (self.overruns, self.tick.total > 0)
        if self._derived is None or key != self._derived_key or now >= self._derived_at + 1.0:
            tick_p50, tick_p99, tick_p999 = self.tick.percentiles((0.5, 0.99, 0.999))
            latency_p50, latency_p99 = self.latency.percentiles((0.5, 0.99))
            self._derived = {
                "tick_p50_ms": _ms(tick_p50),
                "tick_p99_ms": _ms(tick_p99),
                "tick_p999_ms": _ms(tick_p999),
                "latency_p50_ms": _ms(latency_p50),
                "latency_p99_ms": _ms(latency_p99),
                "latency_histogram_ms": self.latency.buckets_ms(),
            }
            self._derived_key, self._derived_at = key, now
        d = self._derived
        return {
            "period_ms": _ms(self.period_s),
            "passes": self.passes,
            "overruns": self.overruns,
            "late_wakes": self.late_wakes,
            "tick_p50_ms": d["tick_p50_ms"],
            "tick_p99_ms": d["tick_p99_ms"],
            "tick_p999_ms": d["tick_p999_ms"],
            "tick_max_ms": _ms(self.tick.max_s if self.tick.total else None),
            "latency_p50_ms": d["latency_p50_ms"],
            "latency_p99_ms": d["latency_p99_ms"],
            "latency_max_ms": _ms(self.latency.max_s if self.latency.total else None),
            "latency_histogram_ms": d["latency_histogram_ms"],
            "last_overrun_cause": self.last_cause,
            "realtime": self.realtime,
        }

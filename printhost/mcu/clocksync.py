"""Mapping between host time and an MCU's clock, learnt from `get_clock` round trips.

Every scheduled MCU command names the MCU clock tick at which it must act, so the
host has to know which tick corresponds to which moment of its own time. It learns
this from samples: it notes its time when it sends `get_clock` and when the `clock`
response arrives, and the tick in the response was read somewhere in between.

* Both the rate and the offset are estimated: a crystal is off by tens of parts per
  million and drifts with temperature, and in a simulation the MCU clock may run many
  times faster than host seconds. Nothing here assumes the nominal rate.
* The estimate is a linear regression of clock against the midpoint of each round
  trip, with exponentially decaying weights (about the last 30 samples count), so it
  follows drift without being thrown about by one noisy sample.
* A round trip much longer than the recent minimum brackets the tick loosely (it sat
  in a queue on the way out or back), so such samples do not enter the regression.
* Ticks arrive as 32-bit values and wrap (every 59.65 s at 72 MHz); each is extended
  to 64 bits as the value nearest the current prediction, so gaps between samples
  may be long as long as the prediction is good to half a wrap. While the rate is
  being learnt there is no such prediction, and a simulation at 20x wraps every 2.98
  host seconds: samples taken then are full 64-bit clocks (`get_uptime`), so a host
  stalled between two of them cannot put one on the wrong wrap.
* The first estimate comes from a burst of such samples at connect time
  (`add_burst`). Until it exists there is no recent minimum to judge a round trip by,
  so the burst is judged as a whole: only the samples whose round trip is close to the
  burst's fastest enter the regression. On a loaded host one stalled sample among
  eleven over a quarter second put the rate 7 % off (at 20x, a third of a second of
  print time per host second).
* A sample far from the prediction means the MCU restarted (its clock began again at
  zero); that is reported as `ClockJump` and the sample is not used.

Print time follows Klipper: the MCU clock divided by the nominal CLOCK_FREQ, so print
time 0 is clock 0 and a print-time interval always means the same number of ticks.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["ClockJump", "ClockSync", "burst_usable"]

DECAY = 1.0 / 30.0            # weight lost by the older samples at each new one
MIN_SAMPLES = 4               # accepted samples before the estimates count as ready
RTT_HISTORY = 16              # recent round trips the minimum is taken over
RTT_FACTOR = 2.0              # a sample is used if rtt <= RTT_FACTOR * min + RTT_SLACK_S
RTT_SLACK_S = 0.001
JUMP_MARGIN_S = 0.050         # tolerated prediction error beyond the round trip ...
JUMP_DRIFT = 0.005            # ... plus this fraction of the time since the samples' mean,
JUMP_RATE_SIGMAS = 3.0        # ... plus the rate's uncertainty (few, close samples) times that
_WRAP = 1 << 32
_HALF_WRAP = 1 << 31


class ClockJump(Exception):
    """A clock sample inconsistent with the MCU clock seen so far: the MCU restarted."""


class ClockSync:
    """Estimates of one MCU's clock against host time; see the module docstring."""

    def __init__(self, clock_freq_hz: float) -> None:
        if not clock_freq_hz > 0:
            raise ValueError("clock_freq_hz must be positive")
        self.clock_freq_hz = float(clock_freq_hz)
        self.freq_hz = self.clock_freq_hz      # until there is an estimate of our own
        self.ready = False
        self.samples = 0           # samples offered (first one included)
        self.used = 0              # samples that entered the regression
        self.rejected = 0          # samples dropped for a slow round trip
        self.last_clock: int | None = None     # 64-bit clock of the latest sample
        self._rtts: deque[float] = deque(maxlen=RTT_HISTORY)
        self._t_mean = 0.0
        self._c_mean = 0.0
        self._t_var = 0.0
        self._tc_cov = 0.0

    @property
    def min_rtt_s(self) -> float | None:
        return min(self._rtts) if self._rtts else None

    # ------------------------------------------------------------------ samples
    def add_sample(self, clock: int, sent_s: float, received_s: float, *,
                   full: bool = False) -> None:
        """One `get_clock` (or `get_uptime`) answer and the round trip around it.

        The clock is taken as a 32-bit value and extended, or with `full` as the whole
        64-bit clock (get_uptime's `high << 32 | clock`). The first sample may be either.
        """
        if received_s < sent_s:
            raise ValueError("a response cannot arrive before its request was sent")
        rtt = received_s - sent_s
        mid = 0.5 * (sent_s + received_s)
        self.samples += 1
        if self.last_clock is None:
            self.last_clock = int(clock)
            self._rtts.append(rtt)
            self._regress(mid, float(clock))
            return
        clock = self._checked(int(clock) if full else int(clock) % _WRAP, mid, rtt, full)
        self.last_clock = clock
        self._rtts.append(rtt)
        if self.ready and rtt > RTT_FACTOR * min(self._rtts) + RTT_SLACK_S:
            self.rejected += 1
            return
        self._regress(mid, float(clock))

    def add_burst(self, samples: list[tuple[int, float, float]]) -> int:
        """The first samples, (64-bit clock, sent, received) each, in the order taken.

        Those whose round trip exceeds RTT_FACTOR x the burst's fastest + RTT_SLACK_S
        are left out (a stall on either side while the tick was read makes the midpoint
        a poor guess of when it was); the rest enter the regression in order. Returns
        how many were used; ready only if at least MIN_SAMPLES were.
        """
        used = 0
        for (clock, sent, received), kept in zip(samples, _burst_kept(samples)):
            if not kept:
                self.samples += 1
                self.rejected += 1
                continue
            self.add_sample(clock, sent, received, full=True)
            used += 1
        return used

    def _checked(self, clock: int, mid: float, rtt: float, full: bool) -> int:
        """The sample's 64-bit clock (extended unless `full`), or ClockJump."""
        assert self.last_clock is not None
        if self._t_var <= 0.0:
            # No rate known yet: all that can be checked is that time did not run back.
            if not full:
                clock = _nearest(clock, self.last_clock)
            if clock < self.last_clock:
                raise ClockJump(f"MCU clock went backwards ({clock} after {self.last_clock})")
            return clock
        predicted = self.clock_at(mid)
        if not full:
            clock = _nearest(clock, round(predicted))
        # The rate is known to about (timing uncertainty) / (time spread of the samples),
        # which is loose right after connecting and tight once samples span minutes.
        rate_error = JUMP_RATE_SIGMAS * max(self._rtts) / math.sqrt(self._t_var)
        tolerance_s = (0.5 * rtt + JUMP_MARGIN_S
                       + (JUMP_DRIFT + rate_error) * abs(mid - self._t_mean))
        error_s = (clock - predicted) / self.freq_hz
        if abs(error_s) > tolerance_s:
            raise ClockJump(f"MCU clock {error_s * 1e3:+.1f} ms away from its prediction "
                            f"(tolerance {tolerance_s * 1e3:.1f} ms): the MCU restarted")
        return clock

    def _regress(self, t: float, clock: float) -> None:
        # Weighted incremental mean/variance/covariance; the first samples are weighted
        # equally (alpha = 1/n) until the decay takes over.
        self.used += 1
        alpha = max(1.0 / self.used, DECAY)
        dt = t - self._t_mean
        dc = clock - self._c_mean
        self._t_mean += alpha * dt
        self._c_mean += alpha * dc
        self._t_var = (1.0 - alpha) * (self._t_var + alpha * dt * dt)
        self._tc_cov = (1.0 - alpha) * (self._tc_cov + alpha * dt * dc)
        if self._t_var > 0.0:
            self.freq_hz = self._tc_cov / self._t_var
        self.ready = self.used >= MIN_SAMPLES and self._t_var > 0.0 and self.freq_hz > 0.0

    # ------------------------------------------------------------------ conversions
    def extend(self, clock32: int) -> int:
        """The 64-bit clock with these low 32 bits nearest the latest sample.

        Good for any clock within half a wrap (2**31 ticks, ~29.8 s at 72 MHz) of the
        latest sample, which covers what an MCU reports and what the host schedules.
        """
        if self.last_clock is None:
            return int(clock32)
        return _nearest(int(clock32) % _WRAP, self.last_clock)

    def clock_at(self, host_s: float) -> float:
        """Estimated MCU clock at a host time."""
        self._require_sample()
        return self._c_mean + (host_s - self._t_mean) * self.freq_hz

    def host_time_at(self, clock: float) -> float:
        """Estimated host time at which the MCU clock reads `clock`."""
        self._require_sample()
        return self._t_mean + (clock - self._c_mean) / self.freq_hz

    def print_time_at(self, host_s: float) -> float:
        return self.clock_at(host_s) / self.clock_freq_hz

    def clock_of(self, print_time_s: float) -> int:
        return int(print_time_s * self.clock_freq_hz)

    def print_time_of(self, clock: int) -> float:
        return clock / self.clock_freq_hz

    def _require_sample(self) -> None:
        if self.last_clock is None:
            raise RuntimeError("no clock sample yet: nothing is known about the MCU clock")


def _burst_kept(samples: list[tuple[int, float, float]]) -> list[bool]:
    """For each sample of a burst, whether its round trip is within RTT_FACTOR x the
    burst's fastest + RTT_SLACK_S."""
    if not samples:
        return []
    limit = RTT_FACTOR * min(received - sent for _clock, sent, received in samples) \
        + RTT_SLACK_S
    return [received - sent <= limit for _clock, sent, received in samples]


def burst_usable(samples: list[tuple[int, float, float]]) -> int:
    """How many of a connect burst's samples `ClockSync.add_burst` would use."""
    return sum(_burst_kept(samples))


def _nearest(clock32: int, reference: int) -> int:
    """The value congruent to clock32 modulo 2**32 nearest to reference."""
    delta = (clock32 - reference) % _WRAP
    if delta >= _HALF_WRAP:
        delta -= _WRAP
    return reference + delta

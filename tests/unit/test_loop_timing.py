"""The control loop's deadline book-keeping (`LoopTiming`) on a clock the test moves."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from printhost.control.looptiming import Histogram, LoopTiming

PERIOD = 0.004


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def run_pass(timing: LoopTiming, clock: Clock, work: float, phase: str = "work",
             wake_late: float = 0.0) -> float:
    clock.t += wake_late
    timing.start_pass()
    clock.t += work
    timing.mark(phase)
    sleep = timing.end_pass()
    clock.t += sleep
    return sleep


def test_the_loop_sleeps_to_its_due_time_not_a_fixed_interval():
    clock = Clock()
    timing = LoopTiming(PERIOD, clock)
    timing.restart()
    start = clock.t
    for _ in range(250):
        sleep = run_pass(timing, clock, 0.001)
        assert sleep == pytest.approx(0.003)
    # 250 passes of 1 ms work each take exactly one second: 250 passes a second.
    assert clock.t - start == pytest.approx(1.0)
    assert timing.overruns == 0 and timing.passes == 250


def test_an_overrun_is_counted_and_the_schedule_restarts_without_a_burst():
    clock = Clock()
    timing = LoopTiming(PERIOD, clock)
    timing.restart()
    run_pass(timing, clock, 0.001)
    assert run_pass(timing, clock, 0.010) == 0.0     # missed the next due time
    assert timing.overruns == 1
    # The next pass is due at once, and the one after a full period later.
    assert run_pass(timing, clock, 0.001) == pytest.approx(0.003)
    assert timing.overruns == 1


def test_the_cause_names_a_late_wake_up_or_the_slow_phase():
    clock = Clock()
    timing = LoopTiming(PERIOD, clock)
    timing.restart()
    run_pass(timing, clock, 0.0005, wake_late=0.020)
    assert timing.late_wakes == 1
    assert "not scheduled in time" in timing.last_cause and "no real-time" in timing.last_cause
    timing.realtime = {"realtime": True}
    run_pass(timing, clock, 0.012, phase="step generation")
    assert timing.late_wakes == 1
    assert "step generation" in timing.last_cause and "12.0 ms" in timing.last_cause


def test_sustained_overruns_are_logged_once_until_a_clean_window(caplog):
    clock = Clock()
    timing = LoopTiming(PERIOD, clock)
    timing.restart()
    caplog.set_level(logging.INFO, logger="printhost.control")
    for _ in range(3):                       # three windows of constant overruns
        for _ in range(100):
            run_pass(timing, clock, 0.011, phase="heaters")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "heaters" in warnings[0].getMessage()
    for _ in range(600):                     # a clean second (and more)
        run_pass(timing, clock, 0.001)
    assert any("keeps its deadlines again" in r.getMessage() for r in caplog.records)
    for _ in range(100):
        run_pass(timing, clock, 0.011, phase="heaters")
    run_pass(timing, clock, 0.001)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_percentiles_match_the_samples_within_a_bucket():
    rng = np.random.default_rng(7)
    samples = np.concatenate([rng.gamma(2.0, 0.0005, 20_000), rng.uniform(0.01, 0.2, 200)])
    hist = Histogram()
    for s in samples:
        hist.add(float(s))
    for q in (0.5, 0.99, 0.999):
        exact = float(np.quantile(samples, q))
        got = hist.percentile(q)
        # A percentile is its bucket's upper edge: at most one bucket above the sample.
        assert exact <= got + 1e-12
        width = 0.0001 if exact < 0.01 else 0.5 * exact
        assert got - exact <= width
    assert hist.max_s == pytest.approx(samples.max())
    assert sum(c for _, c in hist.buckets_ms()) == len(samples)


def test_status_is_json_ready():
    import json
    clock = Clock()
    timing = LoopTiming(PERIOD, clock)
    assert timing.get_status()["tick_p99_ms"] is None
    timing.restart()
    run_pass(timing, clock, 2.0)              # lands in the open-ended bucket
    doc = json.loads(json.dumps(timing.get_status(), allow_nan=False))
    assert doc["period_ms"] == 4.0 and doc["passes"] == 1 and doc["overruns"] == 1
    assert doc["tick_max_ms"] == 2000.0


def test_several_percentiles_in_one_scan_equal_each_asked_alone():
    import random
    rng = random.Random(3)
    for _ in range(200):
        hist = Histogram()
        for _ in range(rng.randint(0, 200)):
            hist.add(rng.choice([rng.lognormvariate(-8, 2), 0.0, 5.0, rng.random() * 0.02]))
        qs = (0.0, 0.5, 0.9, 0.99, 0.999, 1.0)
        one_by_one = []
        for q in qs:
            if not hist.total:
                one_by_one.append(None)
                continue
            rank, seen = q * hist.total, 0
            for i, c in enumerate(hist.counts):
                seen += c
                if seen >= rank and c:
                    one_by_one.append(min(hist.upper_edge(i), hist.max_s))
                    break
        assert hist.percentiles(qs) == one_by_one
        assert [e for e, _ in hist.buckets_ms()] == [
            round(hist.upper_edge(i) * 1000.0, 3) if i < len(hist.counts) - 1 else None
            for i, c in enumerate(hist.counts) if c]

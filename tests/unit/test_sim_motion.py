import pytest

from printhost.control.clock import ManualClock
from printhost.control.executor import TimelineExecutor
from printhost.control.motion import PlannedMove

ORIGIN = (0.0, 0.0, 0.0, 0.0)


def trapezoid(start, end, distance, v=10.0, a=100.0):
    """start -> end from rest to rest: 0.1 s ramps (0.5 mm each) around a cruise."""
    ramp_t = v / a
    ramp_d = 0.5 * v * ramp_t
    cruise_t = (distance - 2 * ramp_d) / v
    return PlannedMove(start, end, distance, 0.0, v, 0.0, a, ramp_t, cruise_t, ramp_t)


MOVE_X = trapezoid(ORIGIN, (10.0, 0.0, 0.0, 1.0), 10.0)          # 1.1 s long
MOVE_Y = trapezoid((10.0, 0.0, 0.0, 1.0), (10.0, 5.0, 0.0, 1.5), 5.0)   # 0.6 s long


def make(start=0.0, **kw):
    clock = ManualClock(start)
    started = []
    ex = TimelineExecutor(clock, lead_time_s=0.1, start_position=ORIGIN,
                                 on_move_started=lambda t, m: started.append((t, m)), **kw)
    return clock, ex, started


def test_first_move_starts_after_lead_time_and_moves_follow_back_to_back():
    clock, ex, _ = make(start=5.0)
    assert ex.is_idle() and ex.position() == ORIGIN
    ex.schedule(MOVE_X)
    ex.schedule(MOVE_Y)
    assert ex.queue_end_time() == pytest.approx(5.1 + 1.1 + 0.6)
    assert not ex.is_idle()
    assert ex.now() == 5.0


def test_positions_inside_each_phase():
    clock, ex, _ = make()
    ex.schedule(MOVE_X)
    clock.advance(0.1)                      # move starts now
    assert ex.position() == ORIGIN
    clock.advance(0.05)                     # halfway up the ramp: 0.5*a*t^2 = 0.125 mm
    assert ex.position()[0] == pytest.approx(0.125)
    assert ex.position()[3] == pytest.approx(0.0125)   # E follows proportionally
    clock.advance(0.05 + 0.3)               # 0.3 s into cruise: 0.5 + 3.0 mm
    assert ex.position()[0] == pytest.approx(3.5)
    clock.advance(0.6 + 0.05)               # 0.05 s into the decel ramp
    assert ex.position()[0] == pytest.approx(9.5 + 0.5 - 0.5 * 100 * 0.05 ** 2)
    clock.advance(1.0)
    assert ex.position() == MOVE_X.end
    assert ex.is_idle()


def test_position_in_second_move_and_callbacks_in_order():
    clock, ex, started = make()
    ex.schedule(MOVE_X)
    ex.schedule(MOVE_Y)
    clock.advance(0.1 + 1.1 + 0.3)          # middle of MOVE_Y (symmetric: 2.5 mm)
    ex.update()
    assert ex.position() == pytest.approx((10.0, 2.5, 0.0, 1.25))
    assert [m for _, m in started] == [MOVE_X, MOVE_Y]
    assert [t for t, _ in started] == pytest.approx([0.1, 1.2])
    clock.advance(10.0)
    ex.update()
    assert len(started) == 2                # each move reported once


def test_moves_skipped_over_in_one_update_are_still_reported():
    clock, ex, started = make()
    ex.schedule(MOVE_X)
    ex.schedule(MOVE_Y)
    clock.advance(100.0)
    ex.update()
    assert [m for _, m in started] == [MOVE_X, MOVE_Y]
    assert ex.position() == MOVE_Y.end


def test_queue_running_dry_restarts_after_lead_time():
    clock, ex, _ = make()
    ex.schedule(MOVE_X)
    clock.advance(5.0)
    ex.schedule(MOVE_Y)
    assert ex.queue_end_time() == pytest.approx(5.0 + 0.1 + 0.6)


def test_dwell_holds_position():
    clock, ex, _ = make()
    ex.schedule(MOVE_X)
    ex.schedule(PlannedMove.dwell(MOVE_X.end, 2.0))
    clock.advance(0.1 + 1.1 + 1.0)
    assert ex.position() == MOVE_X.end
    assert not ex.is_idle()
    clock.advance(1.0)
    assert ex.is_idle()


def test_abort_lets_running_move_finish_and_drops_the_rest():
    clock, ex, started = make()
    ex.schedule(MOVE_X)
    ex.schedule(MOVE_Y)
    clock.advance(0.5)                      # inside MOVE_X
    stop = ex.abort()
    assert stop == MOVE_X.end
    assert ex.queue_end_time() == pytest.approx(1.2)
    clock.advance(5.0)
    assert ex.position() == MOVE_X.end
    assert [m for _, m in started] == [MOVE_X]   # MOVE_Y never happened


def test_abort_before_anything_started_stays_put():
    clock, ex, started = make()
    ex.schedule(MOVE_X)
    stop = ex.abort()
    assert stop == ORIGIN
    assert ex.is_idle() and ex.queue_end_time() == 0.0
    clock.advance(3.0)
    assert ex.position() == ORIGIN and started == []
    ex.schedule(MOVE_X)                     # usable again afterwards
    assert ex.queue_end_time() == pytest.approx(3.0 + 0.1 + 1.1)


def test_abort_when_idle_returns_current_position():
    clock, ex, _ = make()
    ex.schedule(MOVE_X)
    clock.advance(2.0)
    assert ex.abort() == MOVE_X.end


def test_set_position_only_when_idle():
    clock, ex, _ = make()
    ex.schedule(MOVE_X)
    with pytest.raises(RuntimeError):
        ex.set_position((1.0, 2.0, 3.0, 4.0))
    clock.advance(2.0)
    ex.set_position((1.0, 2.0, 3.0, 4.0))
    assert ex.position() == (1.0, 2.0, 3.0, 4.0)


def test_negative_lead_time_is_refused():
    with pytest.raises(ValueError):
        TimelineExecutor(ManualClock(), lead_time_s=-1.0)

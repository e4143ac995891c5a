import math
from dataclasses import replace

import pytest

from printhost.config import AxesSettings, AxisSettings, ExtruderSettings, PrinterSettings
from printhost.control.clock import ManualClock
from printhost.control.executor import TimelineExecutor
from printhost.control.toolhead import MoveError, Toolhead

START = (117.5, 117.5, 10.0, 0.0)


def make(printer=None, extruder=None):
    clock = ManualClock()
    started = []
    ex = TimelineExecutor(clock, lead_time_s=0.1, start_position=START,
                                 on_move_started=lambda t, m: started.append(m))
    return clock, Toolhead(printer or PrinterSettings(), ex, extruder), started


def run_until_idle(clock, th, step=0.05, limit_s=120.0):
    t0 = clock.now()
    while not th.is_idle():
        th.update()
        clock.advance(step)
        assert clock.now() - t0 < limit_s, "toolhead never became idle"
    th.update()


def test_initial_state():
    clock, th, _ = make()
    assert th.commanded_position == START
    assert th.homed_axes == ""
    assert th.is_idle()
    assert th.get_status() == {"position": list(START), "live_position": list(START),
                               "homed_axes": ""}


def test_moving_unhomed_axis_is_refused():
    _, th, _ = make()
    with pytest.raises(MoveError, match=r"^must home axis first: X$"):
        th.move_to((100.0, 117.5, 10.0, 0.0), 50.0)
    with pytest.raises(MoveError, match=r"^must home axis first: Z$"):
        th.move_to((117.5, 117.5, 11.0, 0.0), 5.0)
    assert th.commanded_position == START and th.is_idle()


def test_extrude_only_move_needs_no_homing():
    clock, th, started = make()
    th.move_to((117.5, 117.5, 10.0, -1.0), 30.0)
    th.flush()
    run_until_idle(clock, th)
    assert th.live_position() == (117.5, 117.5, 10.0, -1.0)
    assert len(started) == 1


def test_home_all_moves_to_endstops_in_order():
    clock, th, started = make()
    th.home("")
    assert th.homed_axes == "xyz"
    assert th.commanded_position == (0.0, 0.0, 0.0, 0.0)
    th.flush()
    run_until_idle(clock, th)
    assert th.live_position() == (0.0, 0.0, 0.0, 0.0)
    # One move per axis, X then Y then Z, each at that axis' homing speed.
    assert [m.end for m in started] == [(0.0, 117.5, 10.0, 0.0), (0.0, 0.0, 10.0, 0.0),
                                        (0.0, 0.0, 0.0, 0.0)]
    assert started[0].cruise_v == pytest.approx(50.0)
    assert started[2].cruise_v == pytest.approx(10.0)
    assert all(m.end_v == 0.0 for m in started)    # each stops at its endstop


def test_homed_axes_are_reported_in_xyz_order():
    _, th, _ = make()
    th.home("Z")
    assert th.homed_axes == "z"
    th.home("yx")
    assert th.homed_axes == "xyz"


def test_home_unknown_axis_is_refused():
    _, th, _ = make()
    with pytest.raises(MoveError, match="unknown axis: E"):
        th.home("xe")
    assert th.homed_axes == ""


def test_homing_uses_configured_endstop_and_speed():
    axes = AxesSettings(x=AxisSettings(position_min=-5.0, position_max=200.0,
                                       position_endstop=200.0, homing_speed=20.0))
    clock, th, started = make(replace(PrinterSettings(), axes=axes))
    th.home("x")
    th.flush()
    run_until_idle(clock, th)
    assert th.live_position()[0] == 200.0
    assert started[0].cruise_v == pytest.approx(20.0)
    th.move_to((-5.0, 117.5, 10.0, 0.0), 100.0)
    with pytest.raises(MoveError, match=r"X=-5\.100 is outside -5\.000\.\.200\.000"):
        th.move_to((-5.1, 117.5, 10.0, 0.0), 100.0)


def test_out_of_range_message_and_nothing_queued():
    _, th, _ = make()
    th.home("xyz")
    before = th.buffered_time()
    with pytest.raises(MoveError) as info:
        th.move_to((300.0, 0.0, 0.0, 0.0), 100.0)
    assert str(info.value) == "move out of range: X=300.000 is outside 0.000..235.000"
    with pytest.raises(MoveError, match=r"^move out of range: Z=-0\.500 is outside 0\.000\.\.250\.000$"):
        th.move_to((0.0, 0.0, -0.5, 0.0), 5.0)
    assert th.commanded_position == (0.0, 0.0, 0.0, 0.0)
    assert th.buffered_time() == before


def test_range_tolerance_and_unlimited_e():
    _, th, _ = make(extruder=ExtruderSettings(max_extrude_only_distance=2e6))
    th.home()
    th.move_to((235.0 + 5e-7, 0.0, 0.0, 0.0), 100.0)       # within 1e-6
    th.move_to((235.0, -5e-7, 0.0, 0.0), 100.0)
    th.move_to((235.0, -5e-7, 0.0, 1e6), 100.0)             # E has no range limits
    with pytest.raises(MoveError):
        th.move_to((235.0 + 2e-6, 0.0, 0.0, 0.0), 100.0)


def test_extruder_limits_are_move_errors_and_queue_nothing():
    _, th, _ = make()
    th.home()
    th.flush()
    with pytest.raises(MoveError, match=r"^Move exceeds maximum extrusion \(0\.722mm\^2 vs 0\.640mm\^2\)"):
        th.move_to((10.0, 0.0, 0.0, 3.0), 50.0)
    with pytest.raises(MoveError, match=r"^Extrude only move too long \(60\.000mm vs 50\.000mm\)"):
        th.move_to((0.0, 0.0, 0.0, 60.0), 5.0)
    assert th.commanded_position == (0.0, 0.0, 0.0, 0.0)
    assert th._planner.queued_moves == 0


def test_m204_accel_is_used_and_capped():
    clock, th, started = make()
    th.home()
    assert th.accel == 3000.0
    assert th.set_accel(500.0) == 500.0
    th.move_to((100.0, 0.0, 0.0, 0.0), 100.0)
    th.flush()
    assert th.set_accel(50_000.0) == 3000.0            # the configured limit is hard
    th.move_to((100.0, 100.0, 0.0, 0.0), 100.0)
    th.flush()
    run_until_idle(clock, th)
    assert [m.accel for m in started[-2:]] == [500.0, 3000.0]
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(MoveError):
            th.set_accel(bad)
    assert th.accel == 3000.0


def test_motors_off_unhomes_after_queued_motion():
    clock, th, started = make()
    th.home()
    th.move_to((50.0, 0.0, 0.0, 0.0), 100.0)
    th.motors_off()
    assert th.homed_axes == ""
    assert th._planner.queued_moves == 0               # queued motion still runs
    with pytest.raises(MoveError, match="must home axis first: X"):
        th.move_to((60.0, 0.0, 0.0, 0.0), 100.0)
    th.move_to((50.0, 0.0, 0.0, -1.0), 20.0)           # the extruder needs no homing
    run_until_idle(clock, th)
    assert th.live_position() == (50.0, 0.0, 0.0, -1.0)
    th.home("x")
    th.move_to((60.0, 0.0, 0.0, -1.0), 100.0)


@pytest.mark.parametrize("target,speed", [((math.nan, 0.0, 0.0, 0.0), 10.0),
                                          ((1.0, 0.0, 0.0, math.inf), 10.0),
                                          ((1.0, 0.0, 0.0, 0.0), 0.0),
                                          ((1.0, 0.0, 0.0, 0.0), math.nan)])
def test_invalid_moves_are_refused(target, speed):
    _, th, _ = make()
    th.home()
    with pytest.raises(MoveError):
        th.move_to(target, speed)
    assert th.commanded_position == (0.0, 0.0, 0.0, 0.0)


def test_moves_execute_and_buffered_time_drains():
    clock, th, started = make()
    th.home()
    th.move_to((100.0, 0.0, 0.0, 0.0), 100.0)
    th.move_to((100.0, 100.0, 0.0, 2.0), 100.0)
    assert th.buffered_time() > 2.0
    assert not th.is_idle()
    run_until_idle(clock, th)
    assert th.buffered_time() == 0.0
    assert th.live_position() == (100.0, 100.0, 0.0, 2.0)
    assert started[-1].end == (100.0, 100.0, 0.0, 2.0) and started[-1].end_v == 0.0


def test_update_releases_held_moves_before_the_executor_runs_dry():
    clock, th, started = make()
    th.home()
    th.flush()
    run_until_idle(clock, th)
    th.move_to((50.0, 0.0, 0.0, 0.0), 100.0)   # held: a straight move may follow
    assert th._planner.queued_moves == 1
    th.update()                                 # executor is empty: release it now
    assert th._planner.queued_moves == 0
    # Buffered is what lies beyond the executor's lead (commit) horizon: the move itself.
    assert th.buffered_time() == pytest.approx(50.0 / 100.0 + 100.0 / 3000.0)
    assert not th.is_idle()
    run_until_idle(clock, th)
    assert th.live_position()[0] == 50.0


def test_update_keeps_moves_for_lookahead_while_enough_is_scheduled():
    clock, th, started = make()
    th.home()
    run_until_idle(clock, th)
    th.move_to((200.0, 0.0, 0.0, 0.0), 20.0)    # 10 s of motion
    th.move_to((200.0, 200.0, 0.0, 0.0), 20.0)  # the corner releases the first move
    th.update()
    held_before = th.buffered_time()
    clock.advance(1.0)
    th.update()
    # The second move is still held: the executor has seconds of work left.
    assert th._planner.queued_moves == 1
    assert th.buffered_time() == pytest.approx(held_before - 1.0)
    clock.advance(8.5)
    th.update()
    assert th._planner.queued_moves == 1        # 0.6 s left: still enough
    clock.advance(0.5)
    th.update()                                 # 0.1 s left: about to run dry
    assert th._planner.queued_moves == 0
    run_until_idle(clock, th)
    assert th.live_position() == (200.0, 200.0, 0.0, 0.0)


def test_dwell_waits_at_commanded_position():
    clock, th, _ = make()
    th.move_to((117.5, 117.5, 10.0, 1.0), 10.0)
    th.dwell(2.0)
    assert th.buffered_time() > 2.0
    run_until_idle(clock, th)
    assert clock.now() > 2.0


def test_abort_stops_after_running_move_and_updates_commanded_position():
    clock, th, _ = make()
    th.home()
    th.flush()
    run_until_idle(clock, th)
    th.move_to((100.0, 0.0, 0.0, 0.0), 50.0)
    th.move_to((100.0, 100.0, 0.0, 0.0), 50.0)
    th.move_to((0.0, 100.0, 0.0, 0.0), 50.0)
    th.update()
    clock.advance(0.5)
    th.update()
    stop = th.abort()
    assert stop == (100.0, 0.0, 0.0, 0.0)
    assert th.commanded_position == stop
    assert th.get_status()["position"] == list(stop)
    run_until_idle(clock, th)
    assert th.live_position() == stop
    th.move_to((100.0, 10.0, 0.0, 0.0), 50.0)           # planning restarts from the stop
    th.flush()
    run_until_idle(clock, th)
    assert th.live_position() == (100.0, 10.0, 0.0, 0.0)

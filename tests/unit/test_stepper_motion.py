"""The simulated toolhead follows the steps generated for its steppers."""

from __future__ import annotations

import pytest

from printhost.config import parse_settings
from printhost.control.clock import ManualClock
from printhost.control.executor import TimelineExecutor
from printhost.control.executor import StepFollowingExecutor
from printhost.control.toolhead import Toolhead


def rig(kinematics: str = "cartesian", **extra):
    settings = parse_settings({"printer": {"kinematics": kinematics}, **extra})
    clock = ManualClock()
    stepped = StepFollowingExecutor(clock, settings, start_position=(100.0, 100.0, 10.0, 0.0))
    model = TimelineExecutor(clock, start_position=(100.0, 100.0, 10.0, 0.0))
    heads = [Toolhead(settings.printer, ex, settings.extruder) for ex in (stepped, model)]
    return settings, clock, stepped, model, heads


def drive(heads, *moves):
    for head in heads:
        head.home("xyz")
        for target, speed in moves:
            head.move_to(target, speed)
        head.flush()


@pytest.mark.parametrize("kinematics", ["cartesian", "corexy"])
def test_positions_follow_the_steps_within_one_step(kinematics):
    settings, clock, stepped, model, heads = rig(kinematics)
    drive(heads, ((50.0, 80.0, 0.4, 0.0), 200.0), ((120.0, 30.0, 0.4, 2.0), 60.0),
          ((120.5, 30.2, 0.4, 1.5), 20.0))
    step = settings.steppers.x.step_distance_mm
    for _ in range(2000):
        clock.advance(0.01)
        a, b = stepped.position(), model.position()
        # The motors are always within a step (and a rounding) of the planned path.
        assert abs(a[0] - b[0]) <= step * 1.01 and abs(a[1] - b[1]) <= step * 1.01
        assert abs(a[3] - b[3]) <= settings.steppers.extruder.step_distance_mm * 1.01
    assert stepped.is_idle()
    # At rest, the steppers stand on the target rounded to whole steps.
    e_step = settings.steppers.extruder.step_distance_mm
    assert stepped.position() == pytest.approx((120.5, 30.2, 0.4, round(1.5 / e_step) * e_step),
                                               abs=1e-9)
    assert stepped.queue_steps > 0


def test_input_shaping_still_ends_on_target():
    settings, clock, stepped, model, heads = rig(
        input_shaper={"shaper_freq_x": 45.0, "shaper_freq_y": 40.0})
    drive(heads, ((10.0, 10.0, 1.0, 0.0), 150.0), ((200.0, 150.0, 1.0, 0.0), 250.0))
    for _ in range(2000):
        clock.advance(0.01)
        stepped.position()
    assert stepped.is_idle()
    assert stepped.position() == pytest.approx((200.0, 150.0, 1.0, 0.0), abs=1e-9)


def test_abort_keeps_what_was_already_stepped_and_agrees_with_the_toolhead():
    settings, clock, stepped, model, heads = rig()
    head = heads[0]
    head.home("xyz")
    for i in range(40):
        head.move_to((20.0 + (i % 2) * 150.0, 20.0 + i * 4.0, 1.0, 0.0), 150.0)
    head.flush()
    clock.advance(1.0)
    stepped.update()
    end = head.abort()
    for _ in range(300):
        clock.advance(0.02)
        stepped.position()
    assert stepped.is_idle()
    assert stepped.position() == pytest.approx(end, abs=1e-9)
    assert head.commanded_position == end


def test_moves_after_an_abort_continue_seamlessly():
    """Cancel: abort mid-print, then the park moves; the stream must stay consistent."""
    settings, clock, stepped, model, heads = rig()
    head = heads[0]
    head.home("xyz")
    for i in range(60):
        head.move_to((20.0 + (i % 2) * 150.0, 20.0 + i * 3.0, 1.0, 0.0), 120.0)
    head.flush()
    for stop_at in (0.8, 0.37):
        clock.advance(stop_at)
        stepped.update()
        head.abort()
        head.move_to((head.commanded_position[0], head.commanded_position[1], 6.0, 0.0), 10.0)
        head.move_to((10.0, 200.0, 6.0, 0.0), 100.0)
        head.flush()
        for _ in range(1500):
            clock.advance(0.01)
            stepped.position()
        assert stepped.is_idle()
        assert stepped.position() == pytest.approx((10.0, 200.0, 6.0, 0.0), abs=1e-9)
        for i in range(10):
            head.move_to((50.0 + i * 10.0, 50.0, 6.0, 0.0), 150.0)
        head.flush()


@pytest.mark.parametrize("which", ["stepped", "model"])
def test_abort_ends_a_running_dwell_at_once_and_motion_resumes_after_it(which):
    """A cancel during a long G4 must not wait for the dwell: it holds no motion, so its
    remainder is dropped like any move not started; moves queued afterwards run."""
    settings, clock, stepped, model, heads = rig()
    head, ex = (heads[0], stepped) if which == "stepped" else (heads[1], model)
    head.home("xyz")
    head.move_to((110.0, 100.0, 10.0, 0.0), 100.0)
    head.dwell(600.0)
    head.flush()
    for _ in range(300):                 # homing (to 0, 0, 0), the move, then into the dwell
        clock.advance(0.1)
        ex.position()
    assert ex.position() == pytest.approx((110.0, 100.0, 10.0, 0.0), abs=1e-9)
    assert not ex.is_idle()
    end = head.abort()
    assert end == pytest.approx((110.0, 100.0, 10.0, 0.0))
    assert ex.queue_end_time() <= clock.now() + 1e-9
    assert ex.is_idle()
    head.move_to((120.0, 100.0, 10.0, 0.0), 100.0)
    head.flush()
    for _ in range(300):
        clock.advance(0.01)
        ex.position()
    assert ex.is_idle()
    assert ex.position() == pytest.approx((120.0, 100.0, 10.0, 0.0), abs=1e-9)


def _homed_follower(lead_s: float):
    """A homed toolhead on a step-following executor whose lead is asked of `lead[0]`."""
    settings = parse_settings({})
    clock = ManualClock()
    lead = [lead_s]
    sent: list = []
    ex = StepFollowingExecutor(clock, settings, lead_time_s=lead_s,
                               start_position=(100.0, 100.0, 10.0, 0.0),
                               on_commands=sent.append, lead_source=lambda: lead[0])
    head = Toolhead(settings.printer, ex, settings.extruder)
    head.home("xyz")
    return clock, lead, sent, ex, head


def test_a_lead_that_follows_the_link_widens_and_narrows_the_committed_motion():
    # On a printer the lead is asked of the MCU on every update (a noisy line widens the
    # schedule margin); commands always cover motion up to now + the current lead, and a
    # lead that narrows never takes back what was made.
    clock, lead, sent, ex, head = _homed_follower(1.0)
    for i in range(60):
        head.move_to((20.0 + (i % 2) * 150.0, 20.0 + i * 2.0, 1.0, 0.0), 100.0)
    head.flush()

    def generated() -> float:
        return ex._generated_until

    clock.advance(0.5)
    ex.update()
    assert generated() == pytest.approx(clock.now() + 1.0)
    lead[0] = 3.0
    clock.advance(0.01)
    ex.update()
    assert ex.lead_time_s == 3.0 and generated() == pytest.approx(clock.now() + 3.0)
    assert max(int(c.clock.max()) for c in sent) / 72e6 > clock.now() + 2.0
    made = generated()
    lead[0] = 1.0
    for _ in range(400):
        clock.advance(0.01)
        ex.update()
        assert generated() >= made
        if generated() > made:
            break
    else:
        pytest.fail("generation never resumed")
    # Once now + lead has passed what was made, slices follow the narrower lead again.
    assert generated() == pytest.approx(clock.now() + 1.0)
    assert clock.now() + 1.0 - made <= ex._slice_s + 0.01 + 1e-9


def test_a_move_after_the_lead_narrowed_never_starts_inside_the_committed_motion():
    # The queue ran dry while the lead was wide, so steps (standing still) were already
    # made up to the old now + lead. A move scheduled after the lead narrowed must start
    # after them: placed at now + the narrower lead, its first part would never be
    # stepped and the steppers would end short of the target (before the fix: about
    # 2 s of this move lost, the toolhead left at (7.6, 6.2, 0.5)).
    clock, lead, sent, ex, head = _homed_follower(3.0)
    while not ex.is_idle():
        clock.advance(0.05)
        ex.update()
    made = ex._generated_until
    assert clock.now() + 3.0 - ex._slice_s - 1e-9 <= made <= clock.now() + 3.0 + 1e-9
    lead[0] = 1.0
    clock.advance(0.01)
    ex.update()
    head.move_to((160.0, 130.0, 10.0, 0.0), 100.0)
    head.flush()
    assert ex._moves[0][0] >= made
    while not ex.is_idle():
        clock.advance(0.05)
        ex.update()
    clock.advance(1.0)
    assert ex.position() == pytest.approx((160.0, 130.0, 10.0, 0.0), abs=0.0126)
    stepped = {name: ch.position for name, ch in
               ((ch.name, ch) for ch in ex._stream.channels)}
    assert stepped["x"] == 12800 and stepped["y"] == 10400 and stepped["z"] == 4000

"""Simulated endstops and trsync: sampling, triggering, reports, timeouts."""

from __future__ import annotations

from tests.unit.test_sim_fw_support import MS, US, Harness

REST = 1 * MS
SAMPLE = 15 * US
ENDSTOP_AT = -300  # the switch closes once the carriage is 300 steps toward it


def homing_harness(report_ticks: int = 0) -> Harness:
    h = Harness()
    h.configure("config_stepper oid=0 step_pin=PA1 dir_pin=PA2 invert_step=0"
                " step_pulse_ticks=144",
                "config_stepper oid=1 step_pin=PA3 dir_pin=PA4 invert_step=0"
                " step_pulse_ticks=144",
                "config_endstop oid=2 pin=PC0 pull_up=1",
                "config_trsync oid=3")
    h.board.endstops["PC0"] = lambda clock, pos: int(pos["PA1"] <= ENDSTOP_AT)
    h.cmd(f"trsync_start oid=3 report_clock={2 * MS} report_ticks={report_ticks}"
          " expire_reason=4", MS)
    h.cmd("stepper_stop_on_trigger oid=0 trsync_oid=3", MS)
    h.cmd("stepper_stop_on_trigger oid=1 trsync_oid=3", MS)
    h.cmd(f"endstop_home oid=2 clock={2 * MS} sample_ticks={SAMPLE} sample_count=4"
          f" rest_ticks={REST} pin_value=1 trsync_oid=3 trigger_reason=1", MS)
    for oid in (0, 1):  # 1000 steps each, one every 10 us, starting at 2 ms
        h.cmd(f"reset_step_clock oid={oid} clock={2 * MS}", MS)
        h.cmd(f"queue_step oid={oid} interval={10 * US} count=1000 add=0", MS)
    return h


def expected_trigger(h: Harness) -> tuple[int, int]:
    """(first matching sample, trigger clock) from the motor's step clocks."""
    steps = [c for c, _ in h.fw.step_clocks("PA1", 0, 10**9)]
    first_hit = steps[-ENDSTOP_AT - 1]  # clock of the 300th step
    sample = 2 * MS + -(-(first_hit - 2 * MS) // REST) * REST
    return sample, sample + 3 * SAMPLE


def test_homing_stops_every_registered_stepper_at_the_trigger() -> None:
    h = homing_harness()
    sample, trigger = expected_trigger(h)
    h.fw.advance(100 * MS)
    reports = h.take("trsync_state")
    assert [(p, clock) for _, p, clock in reports] == [
        ({"oid": 3, "can_trigger": 0, "trigger_reason": 1, "clock": trigger}, trigger)]
    positions = h.fw.stepper_positions(100 * MS)
    expected = -len([c for c, _ in h.fw.step_clocks("PA1", 0, trigger + 1)])
    assert positions == {"PA1": expected, "PA3": expected}
    assert expected < ENDSTOP_AT
    assert h.fw.queued_moves() == 0
    h.cmd("endstop_query_state oid=2", 100 * MS)
    state = h.last("endstop_state")
    # Klipper's host reads the trigger time as next_clock - rest_ticks.
    assert state == {"oid": 2, "homing": 1, "next_clock": sample + REST, "pin_value": 1}
    h.cmd("stepper_get_position oid=1", 100 * MS)
    assert h.last("stepper_position")["pos"] == expected


def test_a_bouncing_switch_needs_sample_count_matches_in_a_row() -> None:
    h = homing_harness()
    sample, _ = expected_trigger(h)
    bounce = {sample + SAMPLE}  # one open reading inside the first run
    level = h.board.endstops["PC0"]
    h.board.endstops["PC0"] = lambda clock, pos: 0 if clock in bounce else level(clock, pos)
    h.fw.advance(100 * MS)
    ((_, report, _),) = h.take("trsync_state")
    assert report["clock"] == sample + REST + 3 * SAMPLE
    h.cmd("endstop_query_state oid=2", 100 * MS)
    assert h.last("endstop_state")["next_clock"] == sample + 2 * REST


def test_trsync_reports_periodically_before_and_after_the_trigger() -> None:
    h = homing_harness(report_ticks=MS)
    _, trigger = expected_trigger(h)
    h.fw.advance(10 * MS)
    reports = [(p["can_trigger"], p["trigger_reason"], p["clock"])
               for _, p, _ in h.take("trsync_state")]
    ticks = [2 * MS + i * MS for i in range(9)]
    assert reports == ([(1, 0, t) for t in ticks if t < trigger] + [(0, 1, trigger)]
                       + [(0, 1, t) for t in ticks if t > trigger])
    # The reports go on until the host ends the session with trsync_trigger.
    h.cmd("trsync_trigger oid=3 reason=0", 10 * MS + 1)
    assert h.last("trsync_state") == {"oid": 3, "can_trigger": 0, "trigger_reason": 1,
                                      "clock": 0}
    h.take()
    h.fw.advance(20 * MS)
    assert h.take("trsync_state") == []


def test_trsync_timeout_triggers_with_the_expire_reason() -> None:
    h = homing_harness()
    h.board.endstops["PC0"] = lambda clock, pos: 0  # the switch never closes
    h.cmd(f"trsync_set_timeout oid=3 clock={7 * MS}", 5 * MS)
    h.fw.advance(50 * MS)
    assert h.last("trsync_state") == {"oid": 3, "can_trigger": 0, "trigger_reason": 4,
                                      "clock": 7 * MS}
    steps = [c for c, _ in h.fw.step_clocks("PA1", 0, 7 * MS + 1)]
    assert len(steps) == 500  # stopped halfway through the move
    assert h.fw.stepper_positions(50 * MS) == {"PA1": -500, "PA3": -500}
    # Once triggered, a new timeout is ignored and the endstop keeps sampling harmlessly.
    h.cmd(f"trsync_set_timeout oid=3 clock={60 * MS}", 55 * MS)
    h.take()
    h.fw.advance(70 * MS)
    assert h.take("trsync_state") == []


def test_trsync_trigger_command_reports_once() -> None:
    h = homing_harness(report_ticks=5 * MS)
    h.cmd("trsync_trigger oid=3 reason=7", 4 * MS)
    states = [p for _, p, _ in h.take("trsync_state")]
    assert states == [{"oid": 3, "can_trigger": 1, "trigger_reason": 0, "clock": 2 * MS},
                      {"oid": 3, "can_trigger": 0, "trigger_reason": 7, "clock": 0}]
    # A second trigger keeps the first reason.
    h.cmd("trsync_trigger oid=3 reason=9", 5 * MS)
    assert h.last("trsync_state")["trigger_reason"] == 7


def test_endstop_home_with_no_samples_switches_homing_off() -> None:
    h = homing_harness()
    h.cmd("endstop_home oid=2 clock=0 sample_ticks=0 sample_count=0 rest_ticks=0"
          " pin_value=0 trsync_oid=0 trigger_reason=0", 1500 * US)
    h.fw.advance(100 * MS)
    assert h.take("trsync_state") == []  # nothing watches the pin any more
    h.cmd("endstop_query_state oid=2", 100 * MS)
    assert h.last("endstop_state") == {"oid": 2, "homing": 0, "next_clock": 0, "pin_value": 1}


def test_endstop_home_in_the_past_is_timer_too_close() -> None:
    h = homing_harness()
    h.cmd(f"endstop_home oid=2 clock={MS} sample_ticks={SAMPLE} sample_count=4"
          f" rest_ticks={REST} pin_value=1 trsync_oid=3 trigger_reason=1", 2 * MS)
    assert h.fw.shutdown_reason == "Timer too close"


def _counted_levels(h: Harness) -> list[int]:
    """Record the clock of every endstop level the firmware asks the board for."""
    asked: list[int] = []
    level = h.board.endstops["PC0"]

    def counted(clock: int, pos) -> int:
        asked.append(clock)
        return level(clock, pos)

    h.board.endstops["PC0"] = counted
    return asked


def test_samples_that_cannot_match_are_skipped_with_the_same_outcome() -> None:
    # Sampled one by one (no kinematics known) and with the coordinate known to follow
    # PA1 step for step: the same trigger, the same stop, far fewer level readings.
    outcomes = []
    for gradient in ({}, {"PA1": 1.0, "PA3": 0.0}):
        h = homing_harness()
        h.board.gradients["PC0"] = gradient
        asked = _counted_levels(h)
        h.fw.advance(100 * MS)
        reports = [(p, clock) for _, p, clock in h.take("trsync_state")]
        h.cmd("endstop_query_state oid=2", 100 * MS)
        outcomes.append((reports, h.fw.stepper_positions(100 * MS), h.last("endstop_state"),
                         len(asked)))
    (one_by_one, skipping) = outcomes
    assert skipping[:3] == one_by_one[:3]
    sample, trigger = expected_trigger(homing_harness())
    assert one_by_one[0][0][0]["clock"] == trigger
    assert one_by_one[3] >= (sample - 2 * MS) // REST        # every sample up to the hit
    assert skipping[3] < 20                                  # a bisection and the run


def test_a_move_queued_later_wakes_an_endstop_that_saw_no_motion() -> None:
    h = Harness()
    h.configure("config_stepper oid=0 step_pin=PA1 dir_pin=PA2 invert_step=0"
                " step_pulse_ticks=144",
                "config_endstop oid=2 pin=PC0 pull_up=1",
                "config_trsync oid=3")
    h.board.endstops["PC0"] = lambda clock, pos: int(pos["PA1"] <= ENDSTOP_AT)
    h.board.gradients["PC0"] = {"PA1": 1.0}
    asked = _counted_levels(h)
    h.cmd(f"trsync_start oid=3 report_clock={2 * MS} report_ticks=0 expire_reason=4", MS)
    h.cmd("stepper_stop_on_trigger oid=0 trsync_oid=3", MS)
    h.cmd(f"endstop_home oid=2 clock={2 * MS} sample_ticks={SAMPLE} sample_count=4"
          f" rest_ticks={REST} pin_value=1 trsync_oid=3 trigger_reason=1", MS)
    h.fw.advance(20 * MS)
    assert len(asked) == 1           # nothing moves: one look, then wait for motion
    h.cmd(f"reset_step_clock oid=0 clock={20 * MS}", 20 * MS)
    h.cmd(f"queue_step oid=0 interval={10 * US} count=1000 add=0", 20 * MS)
    h.fw.advance(100 * MS)
    ((_, report, _),) = h.take("trsync_state")
    steps = [c for c, _ in h.fw.step_clocks("PA1", 0, 10**9)]
    first_hit = steps[-ENDSTOP_AT - 1]
    sample = 2 * MS + -(-(first_hit - 2 * MS) // REST) * REST
    assert report["clock"] == sample + 3 * SAMPLE


def test_motors_pulling_the_coordinate_both_ways_are_sampled_one_by_one() -> None:
    # A coordinate made of two motors turning opposite ways is not monotonic.
    h = homing_harness()
    h.board.gradients["PC0"] = {"PA1": 1.0, "PA3": -1.0}
    asked = _counted_levels(h)
    sample, trigger = expected_trigger(h)
    h.fw.advance(100 * MS)
    ((_, report, _),) = h.take("trsync_state")
    assert report["clock"] == trigger
    assert len(asked) >= (sample - 2 * MS) // REST

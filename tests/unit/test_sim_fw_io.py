"""Simulated analog inputs, digital outputs, soft and hard PWM, and their safety limits."""

from __future__ import annotations

import pytest

from tests.unit.test_sim_fw_support import MS, US, Harness

CYCLE = 100 * MS  # a heater's soft PWM cycle
LIMIT = 100 * MS  # max_duration


def adc_harness(**query: int) -> Harness:
    h = Harness()
    h.configure("config_analog_in oid=0 pin=PA0",
                "config_digital_out oid=1 pin=PB0 value=1 default_value=0 max_duration=0")
    args = {"clock": 10 * MS, "sample_ticks": 100 * US, "sample_count": 4,
            "rest_ticks": 50 * MS, "bytes_per_report": 2, "min_value": 0,
            "max_value": 65535, "range_check_count": 1, **query}
    h.board.adc["PA0"] = lambda clock: (clock // 1000) % 4096
    h.cmd("query_analog_in oid=0 " + " ".join(f"{k}={v}" for k, v in args.items()), 0)
    return h


def burst_sum(begin: int, count: int = 4) -> int:
    return sum(((begin + i * 100 * US) // 1000) % 4096 for i in range(count)) & 0xFFFF


def values(report: dict) -> list[int]:
    data = report["values"]
    return [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)]


def test_analog_reports_sum_each_burst() -> None:
    h = adc_harness()
    h.fw.advance(200 * MS)
    reports = h.take("analog_in_state")
    begins = [10 * MS + k * 50 * MS for k in range(4)]
    assert [(p["oid"], p["next_clock"], values(p), clock) for _, p, clock in reports] == [
        (0, b + 50 * MS, [burst_sum(b)], b + 300 * US) for b in begins]
    assert h.board.adc_log[:4] == [("PA0", 10 * MS + i * 100 * US) for i in range(4)]


@pytest.mark.parametrize("nbytes, per_report", [(6, 3), (5, 2), (0, 1), (48, 24)])
def test_analog_reports_pack_several_sums(nbytes: int, per_report: int) -> None:
    h = adc_harness(bytes_per_report=nbytes, rest_ticks=MS)
    h.fw.advance(10 * MS + 48 * MS)
    reports = [p for _, p, _ in h.take("analog_in_state")]
    assert reports and all(len(values(p)) == per_report for p in reports)
    first = reports[0]
    assert values(first) == [burst_sum(10 * MS + k * MS) for k in range(per_report)]
    assert first["next_clock"] == 10 * MS + per_report * MS


def test_analog_sums_wrap_at_16_bits() -> None:
    h = adc_harness(sample_count=20, sample_ticks=10 * US)
    h.board.adc["PA0"] = lambda clock: 4095
    h.fw.advance(20 * MS)
    assert values(h.last("analog_in_state")) == [(20 * 4095) & 0xFFFF]


def test_analog_range_check_shuts_down_and_sampling_goes_on() -> None:
    h = adc_harness(sample_count=1, min_value=1000, max_value=3000, range_check_count=3)
    bad_bursts = {2, 3, 5, 6, 7}
    h.board.adc["PA0"] = lambda clock: 0 if (clock - 10 * MS) // (50 * MS) in bad_bursts else 2000
    h.fw.advance(10 * MS + 7 * 50 * MS - 1)
    assert not h.fw.is_shutdown  # bursts 2 and 3 were bad, but 4 was fine again
    h.fw.advance(10 * MS + 7 * 50 * MS)
    assert h.fw.shutdown_reason == "ADC out of range"
    assert h.last("shutdown")["clock"] == 10 * MS + 7 * 50 * MS
    assert h.board.outputs_of("PB0")[-1] == (0.0, 10 * MS + 7 * 50 * MS)
    h.take()
    h.fw.advance(10 * MS + 10 * 50 * MS)
    reports = h.take("analog_in_state")
    assert [clock for _, _, clock in reports] == [10 * MS + k * 50 * MS for k in (8, 9, 10)]
    h.cmd("query_analog_in oid=0 clock=0 sample_ticks=0 sample_count=0 rest_ticks=0"
          " bytes_per_report=0 min_value=0 max_value=0 range_check_count=0", 600 * MS)
    assert h.take("is_shutdown")


def test_analog_bytes_per_report_limit() -> None:
    h = adc_harness(bytes_per_report=49)
    assert h.fw.shutdown_reason == "Invalid analog_in bytes_per_report"


def out_harness(value: int = 0, default: int = 0, limit: int = LIMIT, **kw: int) -> Harness:
    h = Harness(**kw)
    h.configure(f"config_digital_out oid=0 pin=PB0 value={value} default_value={default}"
                f" max_duration={limit}",
                f"config_pwm_out oid=1 pin=PA8 cycle_ticks=7200 value=0 default_value=0"
                f" max_duration={limit}",
                "config_stepper oid=2 step_pin=PA1 dir_pin=PA2 invert_step=0"
                " step_pulse_ticks=144")
    h.cmd(f"set_digital_out_pwm_cycle oid=0 cycle_ticks={CYCLE}", 0)
    return h


def test_soft_pwm_values_apply_at_their_clocks() -> None:
    h = out_harness(limit=0)
    for clock, on in ((10, CYCLE // 4), (20, CYCLE), (30, 0), (40, CYCLE * 2)):
        h.cmd(f"queue_digital_out oid=0 clock={clock * MS} on_ticks={on}", 5 * MS)
    h.fw.advance(10_000 * MS)
    assert h.board.outputs_of("PB0") == [(0.0, 0), (0.25, 10 * MS), (1.0, 20 * MS),
                                         (0.0, 30 * MS), (1.0, 40 * MS)]
    assert not h.fw.is_shutdown  # no max_duration: may stay on for ever
    assert h.fw.snapshot(10_000 * MS)["outputs"]["PB0"] == 1.0


def test_heater_left_on_without_a_refresh_shuts_down() -> None:
    h = out_harness()
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS} on_ticks={CYCLE // 2}", 0)
    h.fw.advance(10 * MS + LIMIT - 1)
    assert not h.fw.is_shutdown
    h.fw.advance(10 * MS + LIMIT)
    assert h.fw.shutdown_reason == "Missed scheduling of next digital out event"
    assert h.board.outputs_of("PB0")[-2:] == [(0.5, 10 * MS), (0.0, 10 * MS + LIMIT)]


def test_refreshed_heater_and_default_values_never_time_out() -> None:
    h = out_harness()
    for clock, on in ((10, CYCLE), (60, CYCLE // 3), (110, 0)):
        h.cmd(f"queue_digital_out oid=0 clock={clock * MS} on_ticks={on}", 5 * MS)
    h.fw.advance(10_000 * MS)
    assert not h.fw.is_shutdown
    # An output whose default is on may stay on; off is what has to be refreshed.
    h = out_harness(value=1, default=1)
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS} on_ticks={CYCLE}", 0)
    h.fw.advance(10_000 * MS)
    assert not h.fw.is_shutdown
    h.cmd(f"queue_digital_out oid=0 clock={10_010 * MS} on_ticks=0", 10_000 * MS)
    h.fw.advance(10_010 * MS + LIMIT)
    assert h.fw.shutdown_reason == "Missed scheduling of next digital out event"
    assert h.board.outputs_of("PB0")[-1] == (1.0, 10_010 * MS + LIMIT)


def test_digital_out_gap_longer_than_max_duration() -> None:
    # Both queued early: refused when the first loads.
    h = out_harness()
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS} on_ticks={CYCLE}", 0)
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS + LIMIT + 1} on_ticks=0", 0)
    h.fw.advance(10 * MS)
    assert h.fw.shutdown_reason == "Scheduled digital out event will exceed max_duration"
    assert h.board.outputs_of("PB0")[-2:] == [(1.0, 10 * MS), (0.0, 10 * MS)]
    # Queued while the first is running: refused at once.
    h = out_harness()
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS} on_ticks={CYCLE}", 0)
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS + LIMIT} on_ticks=0", 50 * MS)
    assert not h.fw.is_shutdown  # exactly at the limit is still allowed
    h = out_harness()
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS} on_ticks={CYCLE}", 0)
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS + LIMIT + 1} on_ticks=0", 50 * MS)
    assert h.fw.shutdown_reason == "Scheduled digital out event will exceed max_duration"
    assert h.last("shutdown")["clock"] == 50 * MS


def test_update_digital_out_rules() -> None:
    h = out_harness()
    h.cmd("update_digital_out oid=0 value=1", 5 * MS)
    assert h.board.outputs_of("PB0")[-1] == (1.0, 5 * MS)
    h.fw.advance(5 * MS + LIMIT)
    assert h.fw.shutdown_reason == "Missed scheduling of next digital out event"
    h = out_harness()
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS} on_ticks=0", 0)
    h.cmd("update_digital_out oid=0 value=1", 5 * MS)
    assert h.fw.shutdown_reason == "update_digital_out not valid with active queue"
    h = out_harness()
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS} on_ticks=0", 0)
    h.cmd("set_digital_out_pwm_cycle oid=0 cycle_ticks=1000", 5 * MS)
    assert h.fw.shutdown_reason == "Can not set soft pwm cycle ticks while updates pending"


def test_output_changes_in_the_past_are_timer_too_close() -> None:
    h = out_harness()
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS} on_ticks=0", 11 * MS)
    assert h.fw.shutdown_reason == "Timer too close"
    h = out_harness()
    h.cmd(f"queue_pwm_out oid=1 clock={10 * MS} value=1", 11 * MS)
    assert h.fw.shutdown_reason == "Timer too close"


def test_output_queues_share_the_move_pool() -> None:
    h = out_harness(move_count=3)
    h.cmd("reset_step_clock oid=2 clock=0", 0)
    h.cmd(f"queue_step oid=2 interval={MS} count=5 add=0", 0)  # loads at once
    h.cmd(f"queue_step oid=2 interval={MS} count=5 add=0", 0)  # waits: 1 in the pool
    h.cmd(f"queue_digital_out oid=0 clock={10 * MS} on_ticks=0", 0)
    h.cmd("queue_pwm_out oid=1 clock=%d value=0" % (10 * MS), 0)
    assert not h.fw.is_shutdown and h.fw.queued_moves() == 3
    h.cmd("queue_pwm_out oid=1 clock=%d value=0" % (20 * MS), 0)
    assert h.fw.shutdown_reason == "Move queue overflow"


def test_hard_pwm_values_and_max_duration() -> None:
    h = out_harness()
    h.cmd(f"queue_pwm_out oid=1 clock={10 * MS} value=16384", 0)
    h.cmd(f"queue_pwm_out oid=1 clock={60 * MS} value=40000", 0)  # above PWM_MAX
    h.fw.advance(60 * MS + LIMIT - 1)
    assert h.board.outputs_of("PA8") == [(0.0, 0), (0.5, 10 * MS), (1.0, 60 * MS)]
    assert not h.fw.is_shutdown
    h.fw.advance(60 * MS + LIMIT)
    assert h.fw.shutdown_reason == "Missed scheduling of next hard pwm event"
    assert h.board.outputs_of("PA8")[-1] == (0.0, 60 * MS + LIMIT)
    assert h.board.outputs_of("PB0")[-1] == (0.0, 60 * MS + LIMIT)


def test_hard_pwm_gaps_and_default_value() -> None:
    h = out_harness()
    h.cmd(f"queue_pwm_out oid=1 clock={10 * MS} value=100", 0)
    h.cmd(f"queue_pwm_out oid=1 clock={10 * MS + LIMIT + 1} value=0", 0)
    h.fw.advance(20 * MS)
    assert h.fw.shutdown_reason == "Scheduled pwm event will exceed max_duration"
    assert h.last("shutdown")["clock"] == 10 * MS
    h = out_harness()
    h.cmd(f"queue_pwm_out oid=1 clock={10 * MS} value=100", 0)
    h.cmd(f"queue_pwm_out oid=1 clock={10 * MS + LIMIT + 1} value=0", 50 * MS)
    assert h.fw.shutdown_reason == "Scheduled pwm event will exceed max_duration"
    assert h.last("shutdown")["clock"] == 50 * MS
    h = out_harness()
    h.cmd(f"queue_pwm_out oid=1 clock={10 * MS} value=100", 0)
    h.cmd(f"queue_pwm_out oid=1 clock={10 * MS + LIMIT} value=0", 50 * MS)
    h.fw.advance(10_000 * MS)  # back at the default: no limit applies
    assert not h.fw.is_shutdown
    h.cmd("set_pwm_out pin=PA9 cycle_ticks=7200 value=8192", 10_000 * MS)
    assert h.board.outputs_of("PA9") == [(0.25, 10_000 * MS)]

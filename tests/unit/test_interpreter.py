"""G-code coordinate state: modes, G92 offsets, feed rate and factors."""

from __future__ import annotations

import math

import pytest

from printhost.config import parse_settings
from printhost.control.clock import ManualClock
from printhost.control.gcode import parse_line
from printhost.control.interpreter import CommandError
from printhost.control.kernels.lookahead import planned_moves
from printhost.control.printer import Printer


@pytest.fixture
def printer():
    return Printer.simulated(parse_settings({}), clock=ManualClock())


def run(printer, *lines: str):
    waits = []
    for n, text in enumerate(lines, 1):
        cmd = parse_line(text, n)
        if cmd is not None:
            w = printer.interp.execute(cmd)
            if w is not None:
                waits.append(w)
    return waits


def pos(printer):
    return printer.toolhead.commanded_position


def test_absolute_and_relative_moves(printer):
    run(printer, "G28", "G90", "G1 X10 Y20 Z5 F6000", "G91", "G1 X5 Y-5 Z1")
    assert pos(printer)[:3] == (15.0, 15.0, 6.0)
    run(printer, "G90", "G1 X1")
    assert pos(printer)[:3] == (1.0, 15.0, 6.0)


def test_e_is_relative_when_either_mode_is_relative(printer):
    run(printer, "G28", "M82", "G1 E5", "G1 E7")
    assert pos(printer)[3] == 7.0
    run(printer, "M83", "G90", "G1 E2")        # M83 survives a later G90
    assert pos(printer)[3] == 9.0
    run(printer, "M82", "G91", "G1 E1")        # G91 makes E relative too
    assert pos(printer)[3] == 10.0
    assert printer.interp.filament_used_mm == 10.0


def test_g92_offsets_and_e_reset(printer):
    run(printer, "G28", "G1 X10 Y10", "G92 X0 Y0", "G1 X5 Y5")
    assert pos(printer)[:2] == (15.0, 15.0)
    run(printer, "M82", "G1 E10", "G92 E0", "G1 E3")
    # G92 E0 only renames the extruder position: the machine moved 10 then 3 more.
    assert pos(printer)[3] == 13.0
    run(printer, "G28 X")                        # homing clears the X offset
    run(printer, "G1 X5")
    assert pos(printer)[0] == 5.0


def test_feed_rate_and_speed_factor(printer):
    run(printer, "G28", "G1 X100 F600")
    assert printer.interp.state.speed_mm_s == 10.0
    run(printer, "M220 S50")
    assert printer.interp.state.speed_factor == 0.5
    with pytest.raises(CommandError, match="speed factor"):
        run(printer, "M220 S0")
    with pytest.raises(CommandError, match="feed rate"):
        run(printer, "G1 X1 F0")


def test_extrude_factor_scales_new_extrusion_only(printer):
    run(printer, "G28", "M83", "G1 E10", "M221 S50", "G1 E10")
    assert pos(printer)[3] == 15.0
    assert printer.interp.state.extrude_factor == 0.5


def test_heaters_and_waits(printer):
    waits = run(printer, "M104 S200", "M140 S60")
    assert waits == []
    assert printer.heaters["extruder"].target_c == 200.0
    assert printer.heaters["heater_bed"].target_c == 60.0
    (wait,) = run(printer, "M109 S210")
    assert printer.heaters["extruder"].target_c == 210.0
    assert wait() is False                       # cold: the job must wait
    with pytest.raises(CommandError, match="max_temp"):
        run(printer, "M104 S400")
    with pytest.raises(CommandError, match="max_temp"):
        run(printer, "M140 S200")


def test_fan(printer):
    run(printer, "M106 S127.5")
    assert printer.fan.speed == pytest.approx(0.5)
    run(printer, "M106")
    assert printer.fan.speed == 1.0
    run(printer, "M107")
    assert printer.fan.speed == 0.0
    with pytest.raises(CommandError):
        run(printer, "M106 S-1")


def test_dwell_and_m400(printer):
    run(printer, "G28")
    (wait,) = run(printer, "G1 X50 F3000", "G4 P500", "M400")
    assert wait() is False                      # moves still queued
    clock = printer.clock
    for _ in range(200):
        clock.advance(0.05)
        printer.tick()
    assert wait() is True
    with pytest.raises(CommandError, match="negative"):
        run(printer, "G4 S-1")


# ---------------------------------------------------------------- dialect additions

def make(settings: dict | None = None):
    return Printer.simulated(parse_settings(settings or {}), clock=ManualClock())


def record_moves(printer):
    """Wrap the toolhead so every accepted move target and speed is recorded."""
    calls = []
    original = printer.toolhead.move_to

    def move_to(target, speed):
        original(target, speed)
        calls.append((tuple(target), speed))

    printer.toolhead.move_to = move_to
    return calls


def klipper_arc(cur, target, i, j, clockwise, resolution):
    """Klipper's planArc for the XY plane, restated: the XYZ of each generated G1."""
    r_p, r_q = -i, -j
    cp, cq = cur[0] - r_p, cur[1] - r_q
    ra, rb = target[0] - cp, target[1] - cq
    ang = math.atan2(r_p * rb - r_q * ra, r_p * ra + r_q * rb)
    if ang < 0:
        ang += 2 * math.pi
    if clockwise:
        ang -= 2 * math.pi
    if ang == 0 and cur[0] == target[0] and cur[1] == target[1]:
        ang = 2 * math.pi
    lin = target[2] - cur[2]
    flat = math.hypot(r_p, r_q) * ang
    travel = math.hypot(flat, lin) if lin else abs(flat)
    segs = max(1., math.floor(travel / resolution))
    theta, rise = ang / segs, lin / segs
    out = []
    for k in range(1, int(segs) + 1):
        c = k * theta
        pt = (cp + (-i * math.cos(c) + j * math.sin(c)), cq + (-i * math.sin(c) - j * math.cos(c)),
              cur[2] + k * rise)
        out.append(tuple(target) if k == segs else pt)
    return out


def test_g2_g3_follow_klipper_segments(printer):
    run(printer, "G28", "G1 X50 Y50 Z1 F6000", "G92 X10 Y10")     # machine = gcode + 40
    calls = record_moves(printer)
    run(printer, "G3 X0 Y20 I-10 J0")
    expected = klipper_arc((10, 10, 1), (0, 20, 1), -10, 0, False, 1.0)
    assert len(expected) == 15                                  # quarter of r=10: 15.7 mm
    assert [c[0][:3] for c in calls] == [(x + 40, y + 40, z) for x, y, z in expected]
    calls.clear()
    run(printer, "G2 X10 Y10 Z3 I10 J-10 F1200")                 # clockwise back, helical
    expected = klipper_arc((0, 20, 1), (10, 10, 3), 10, -10, True, 1.0)
    assert [c[0][:3] for c in calls] == [(x + 40, y + 40, z) for x, y, z in expected]
    assert all(speed == 20.0 for _, speed in calls)
    assert printer.interp.state.gcode_pos[:3] == (10.0, 10.0, 3.0)
    assert printer.interp.state.speed_mm_s == 20.0


def test_full_circle_when_end_equals_start(printer):
    run(printer, "G28", "G1 X100 Y100 F6000")
    calls = record_moves(printer)
    run(printer, "G2 I10")                                       # clockwise, X/Y omitted
    assert len(calls) == math.floor(2 * math.pi * 10)
    assert calls[-1][0][:2] == (100.0, 100.0)
    assert min(c[0][0] for c in calls) > 100.0 - 1e-9          # the circle is on +X side
    assert max(c[0][0] for c in calls) == pytest.approx(120.0, abs=0.01)
    calls.clear()
    run(printer, "G3 I-5 J0")
    assert len(calls) == math.floor(2 * math.pi * 5)
    assert min(c[0][0] for c in calls) == pytest.approx(90.0, abs=0.05)
    assert calls[-1][0][:2] == (100.0, 100.0)


def test_arc_extrusion_absolute_and_relative(printer):
    run(printer, "G28", "G1 X100 Y100 F6000", "M82", "G92 E5")
    calls = record_moves(printer)
    run(printer, "G2 X120 Y100 I10 J0 E9")                      # half circle, 31 segments
    e = [c[0][3] for c in calls]
    steps = [b - a for a, b in zip([0.0] + e, e)]
    assert len(steps) == 31 and all(s == pytest.approx(4 / 31) for s in steps)
    assert printer.interp.state.gcode_pos[3] == pytest.approx(9.0)
    calls.clear()
    run(printer, "M83", "G3 X100 Y100 I-10 J0 E2")
    steps = [b[0][3] - a[0][3] for a, b in zip(calls, calls[1:])]
    assert len(calls) == 31 and all(s == pytest.approx(2 / 31) for s in steps)
    assert printer.interp.filament_used_mm == pytest.approx(6.0)


def test_arc_resolution_setting():
    printer = make({"gcode": {"arc_resolution": 0.25}})
    run(printer, "G28", "G1 X100 Y100 F6000")
    calls = record_moves(printer)
    run(printer, "G2 I10")
    assert len(calls) == math.floor(2 * math.pi * 10 / 0.25)


def test_arc_r_form(printer):
    run(printer, "G28", "G1 X100 Y100 F6000")
    calls = record_moves(printer)
    run(printer, "G2 X120 Y100 R10")                             # half circle, centre (110,100)
    with_r = [c[0] for c in calls]
    run(printer, "G1 X100 Y100")
    calls.clear()
    run(printer, "G2 X120 Y100 I10 J0")
    assert len(calls) == len(with_r) == 31
    for (got, _), want in zip(calls, with_r):
        assert got == pytest.approx(want, abs=1e-12)
    assert max(p[1] for p in with_r) == pytest.approx(110.0, abs=0.02)    # clockwise: above
    run(printer, "G1 X100 Y100")
    calls.clear()
    run(printer, "G3 X110 Y110 R-10")                            # long way round: 270 degrees
    pts = [c[0] for c in calls]
    assert len(pts) == math.floor(1.5 * math.pi * 10)
    for x, y, *_ in pts:
        assert math.hypot(x - 110.0, y - 100.0) == pytest.approx(10.0, abs=1e-9)


@pytest.mark.parametrize("line,fragment", [
    ("G2 X120 Y100 R3", "too small"),
    ("G2 X120 Y100 R10 I10", "either R or I/J"),
    ("G2 X100 Y100 R10", "full circle needs I/J"),
    ("G2 X120 Y100 R0", "must not be zero"),
    ("G2 X120 Y100", "requires I and J"),
    ("G3 X120 Y100 I0 J0", "requires I and J"),
    ("G2 I0.0001", "segments"),
])
def test_bad_arcs_are_refused(printer, line, fragment):
    run(printer, "G28", "G1 X100 Y100 F6000")
    if fragment == "segments":
        printer.interp.gcode_settings = type(printer.interp.gcode_settings)(arc_resolution=1e-12)
        line = "G2 I50"
    with pytest.raises(CommandError, match=fragment):
        run(printer, line)
    assert pos(printer)[:2] == (100.0, 100.0)


def test_arc_rules_relative_mode_and_planes(printer):
    run(printer, "G28", "G1 X100 Y100 F6000", "G91")
    with pytest.raises(CommandError, match="relative move mode"):
        run(printer, "G2 X10 I5")
    run(printer, "G90", "G17")
    with pytest.raises(CommandError, match="only the XY arc plane"):
        run(printer, "G18")
    with pytest.raises(CommandError, match="only the XY arc plane"):
        run(printer, "G19")


def test_arc_out_of_range_stops_at_the_edge(printer):
    run(printer, "G28", "G1 X5 Y100 F6000")
    calls = record_moves(printer)
    with pytest.raises(CommandError, match="out of range: X=-"):
        run(printer, "G2 I-10")                                  # the circle reaches X=-15
    # Like Klipper, the segments before the boundary were run; the G-code state
    # still agrees with the toolhead, so the error leaves nothing inconsistent.
    assert 0 < len(calls) < 62
    assert all(c[0][0] >= 0.0 for c in calls)
    st = printer.interp.state
    assert tuple(a + b for a, b in zip(st.gcode_pos[:3], st.offset[:3])) == pos(printer)[:3]


# ---------------------------------------------------------------- firmware retraction

RETRACT = {"firmware_retraction": {"retract_length": 0.8, "retract_speed": 35.0,
                                   "unretract_extra_length": 0.1, "unretract_speed": 12.345}}


def test_g10_g11_retract_once_and_unretract_with_extra():
    printer = make(RETRACT)
    run(printer, "G28", "G1 X10 Y10 F6000", "M83", "G1 X20 E1")
    calls = record_moves(printer)
    run(printer, "G10", "G10")                                   # the second is a no-op
    assert len(calls) == 1
    (target, speed), = calls
    assert target == (20.0, 10.0, 0.0, pytest.approx(0.2))
    assert speed == 35.0
    assert printer.interp.retracted
    assert printer.interp.state.gcode_pos[3] == 1.0              # G-code E unchanged
    run(printer, "G11", "G11")
    assert len(calls) == 2
    target, speed = calls[1]
    assert target[3] == pytest.approx(1.1)
    assert speed == int(12.345 * 60) / 60                         # whole mm/min, as Klipper
    assert not printer.interp.retracted
    assert printer.interp.filament_used_mm == pytest.approx(1.1)
    run(printer, "G11")                                          # not retracted: nothing
    assert len(calls) == 2


def test_retraction_uses_extrude_and_speed_factors_and_needs_no_homing():
    printer = make(RETRACT)
    run(printer, "M221 S50", "M220 S200")
    calls = record_moves(printer)
    run(printer, "G10")
    (target, speed), = calls
    assert target[3] == pytest.approx(-0.4)
    assert speed == 70.0
    assert printer.toolhead.homed_axes == ""
    run(printer, "G11")
    assert calls[1][0][3] == pytest.approx(0.05)


def test_zero_retract_length_is_harmless(printer):
    run(printer, "G28")
    calls = record_moves(printer)
    run(printer, "G10", "G11")
    assert pos(printer) == (0.0, 0.0, 0.0, 0.0)
    assert printer.interp.retracted is False and len(calls) == 2


# ---------------------------------------------------------------- units, M204, M84, M114

def test_g20_inches_and_g21(printer):
    run(printer, "G28", "G20", "G1 X1 Y2 Z0.5 F60")
    assert pos(printer)[:3] == pytest.approx((25.4, 50.8, 12.7))
    assert printer.interp.state.speed_mm_s == pytest.approx(25.4)
    run(printer, "M83", "G1 X2 E0.01")
    assert pos(printer)[3] == pytest.approx(0.254)
    run(printer, "G92 X0")                                      # offsets in inches too
    run(printer, "G1 X1")
    assert pos(printer)[0] == pytest.approx(50.8 + 25.4)
    run(printer, "G90", "G1 X0 Y2", "G2 X0 Y2 I0.5 J0")          # arc radius 12.7 mm
    assert printer.interp.state.gcode_pos[:2] == pytest.approx((0.0, 50.8))
    run(printer, "G21", "G1 X10")
    assert pos(printer)[0] == pytest.approx(50.8 + 10.0)
    assert printer.interp.state.inch_units is False


def test_units_are_saved_with_the_state(printer):
    run(printer, "G20")
    saved = printer.interp.save_state()
    run(printer, "G21")
    printer.interp.restore_state(saved)
    assert printer.interp.state.inch_units


@pytest.mark.parametrize("line,accel", [("M204 S1200", 1200.0), ("M204 P500 T1000", 500.0),
                                        ("M204 P900 R1000 T700", 700.0),
                                        ("M204 S20000", 3000.0)])
def test_m204_sets_the_acceleration(printer, line, accel):
    run(printer, line)
    assert printer.toolhead.accel == accel


def test_m204_without_usable_values(printer):
    run(printer, "M204 S800", "M204 P500", "M204 R100", "M204")
    assert printer.toolhead.accel == 800.0                      # ignored, like Klipper
    run(printer, "M204 S900 P0")                                # P is not read when S is there
    assert printer.toolhead.accel == 900.0
    run(printer, "M204 S800")
    for line in ("M204 S0", "M204 P-1 T100", "M204 P100 T0"):
        with pytest.raises(CommandError, match="above 0"):
            run(printer, line)
    assert printer.toolhead.accel == 800.0


def test_m84_and_m18_unhome_every_axis(printer):
    for cmd in ("M84", "M18", "M84 X"):
        run(printer, "G28", "G1 X10 F6000", cmd)
        assert printer.toolhead.homed_axes == ""
        with pytest.raises(CommandError, match="must home axis first: Y"):
            run(printer, "G1 Y10")
    run(printer, "G28", "G1 Y10")
    assert pos(printer)[1] == 10.0


def test_m114_reports_gcode_position(printer):
    run(printer, "G28", "G1 X10 Y20 Z5 F6000", "G92 X0 E3", "M114")
    assert printer.interp.last_report == "X:0.000 Y:20.000 Z:5.000 E:3.000"
    assert printer.interp.unknown_commands == 0


def test_bare_g92_zeroes_every_axis(printer):
    run(printer, "G28", "G1 X10 Y20 Z5 F6000", "M82", "G1 E3", "G92", "G1 X1 Y1 Z1 E0.05")
    # Every axis now counts from where it was: the machine moved 1 mm further on each.
    assert pos(printer) == (11.0, 21.0, 6.0, 3.05)


def test_homing_starts_from_a_standstill(printer):
    moves = []
    printer.toolhead.planner._emit = lambda rows, _orig=printer.toolhead.planner._emit: (
        moves.extend(planned_moves(rows)), _orig(rows))
    run(printer, "G28", "G1 X150 Y100 F6000", "G1 X100 Y100", "G28 X")
    homing = moves[-1]
    assert homing.end[0] == 0.0 and homing.start_v == 0.0

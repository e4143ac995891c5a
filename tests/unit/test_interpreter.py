"""G-code coordinate state: modes, G92 offsets, feed rate and factors."""

from __future__ import annotations

import pytest

from printhost.config import parse_settings
from printhost.control.gcode import parse_line
from printhost.control.interpreter import CommandError
from printhost.control.printer import Printer
from printhost.sim.clock import ManualClock


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

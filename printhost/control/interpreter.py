"""Executes parsed G-code commands against the toolhead, heaters and fan.

The interpreter owns the G-code *coordinate state* (absolute/relative modes, G92
offsets, feed rate, speed and flow factors) and translates G-code positions into
machine positions for the toolhead. It never blocks: a command that must wait (M109,
M190, M400) returns a `Wait` that the job runner polls on every control-loop tick, so
pause, cancel and status keep working while the printer heats.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable

from printhost.control.gcode import GCodeCommand
from printhost.control.heaters import HeaterBank
from printhost.control.motion import Vec4
from printhost.control.toolhead import MoveError, Toolhead

log = logging.getLogger(__name__)

# Marlin and Klipper start with a feed rate of 25 mm/s until the file sets one.
DEFAULT_SPEED_MM_S = 25.0
# M220/M221 accept a percentage; anything outside this range is almost surely a typo.
MAX_FACTOR_PERCENT = 1000.0


class CommandError(Exception):
    """A G-code command cannot be executed; the message is shown to the user with the line."""


Wait = Callable[[], bool]


@dataclass(frozen=True)
class GCodeState:
    """Everything a pause must save and a resume must restore."""
    absolute_coords: bool = True
    absolute_extrude: bool = True
    speed_mm_s: float = DEFAULT_SPEED_MM_S
    speed_factor: float = 1.0
    extrude_factor: float = 1.0
    # Position in G-code coordinates (after G92), and the offset machine - gcode.
    gcode_pos: Vec4 = (0.0, 0.0, 0.0, 0.0)
    offset: Vec4 = (0.0, 0.0, 0.0, 0.0)


class PartFan:
    """The part-cooling fan (M106/M107); its speed feeds the hotend thermal model."""

    def __init__(self, on_change: Callable[[float], None] | None = None) -> None:
        self.speed = 0.0
        self._on_change = on_change

    def set_speed(self, speed: float) -> None:
        self.speed = min(1.0, max(0.0, speed))
        if self._on_change is not None:
            self._on_change(self.speed)


class GCodeInterpreter:
    def __init__(self, toolhead: Toolhead, heaters: HeaterBank, fan: PartFan,
                 now: Callable[[], float]) -> None:
        self.toolhead = toolhead
        self.now = now
        self.heaters = heaters
        self.fan = fan
        self.state = GCodeState()
        self.filament_used_mm = 0.0
        self.unknown_commands = 0
        self.sync_from_toolhead()
        self._handlers: dict[str, Callable[[GCodeCommand], Wait | None]] = {
            "G0": self._move, "G1": self._move, "G4": self._dwell, "G28": self._home,
            "G90": self._absolute, "G91": self._relative, "G92": self._set_position,
            "M82": self._e_absolute, "M83": self._e_relative,
            "M104": self._set_hotend, "M109": self._set_hotend_wait,
            "M140": self._set_bed, "M190": self._set_bed_wait,
            "M106": self._fan_on, "M107": self._fan_off,
            "M220": self._speed_factor, "M221": self._extrude_factor,
            "M400": self._wait_moves, "M84": self._ignore, "M18": self._ignore,
            "M114": self._ignore,
        }

    # ----------------------------------------------------------------- state
    def sync_from_toolhead(self) -> None:
        """Make the G-code position agree with the machine (after homing or an abort)."""
        m = self.toolhead.commanded_position
        off = self.state.offset
        self.state = replace(self.state, gcode_pos=(m[0] - off[0], m[1] - off[1],
                                                    m[2] - off[2], self.state.gcode_pos[3]))

    def save_state(self) -> GCodeState:
        return self.state

    def restore_state(self, saved: GCodeState) -> None:
        self.state = saved

    # ----------------------------------------------------------------- dispatch
    def execute(self, cmd: GCodeCommand) -> Wait | None:
        """Run one command; returns a condition to wait for, or None when done."""
        handler = self._handlers.get(cmd.name) if cmd.known else None
        if handler is None:
            self.unknown_commands += 1
            log.info("line %d: skipping unsupported command %s", cmd.lineno, cmd.raw.strip()[:80])
            return None
        try:
            return handler(cmd)
        except MoveError as exc:
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    # ----------------------------------------------------------------- motion
    def _move(self, cmd: GCodeCommand) -> None:
        p = cmd.params
        st = self.state
        gpos = list(st.gcode_pos)
        for i, axis in enumerate("XYZ"):
            if axis in p:
                gpos[i] = p[axis] if st.absolute_coords else gpos[i] + p[axis]
        e_delta = 0.0
        if "E" in p:
            new_e = p["E"] if (st.absolute_coords and st.absolute_extrude) else gpos[3] + p["E"]
            e_delta = (new_e - gpos[3]) * st.extrude_factor
            gpos[3] = new_e
        speed = st.speed_mm_s
        if "F" in p:
            if p["F"] <= 0.0:
                raise CommandError(f"invalid feed rate F{p['F']:g}: must be positive")
            speed = p["F"] / 60.0
        cur = self.toolhead.commanded_position
        target = (gpos[0] + st.offset[0], gpos[1] + st.offset[1], gpos[2] + st.offset[2],
                  cur[3] + e_delta)
        self.toolhead.move_to(target, speed * st.speed_factor)
        self.filament_used_mm += e_delta
        self.state = replace(st, gcode_pos=(gpos[0], gpos[1], gpos[2], gpos[3]), speed_mm_s=speed)

    def _dwell(self, cmd: GCodeCommand) -> None:
        p = cmd.params
        seconds = p["S"] if "S" in p else p.get("P", 0.0) / 1000.0
        if seconds < 0.0:
            raise CommandError("dwell time must not be negative")
        self.toolhead.dwell(seconds)

    def _home(self, cmd: GCodeCommand) -> None:
        axes = "".join(a.lower() for a in "XYZ" if a in cmd.params)
        self.toolhead.home(axes)
        # Homing resets the G-code offsets of the homed axes (as G28 does everywhere).
        off = list(self.state.offset)
        for i, a in enumerate("xyz"):
            if not axes or a in axes:
                off[i] = 0.0
        self.state = replace(self.state, offset=(off[0], off[1], off[2], off[3]))
        self.sync_from_toolhead()

    # G90/G91 change only the XYZ mode; E is relative when either mode is relative,
    # so "M83" followed by "G90" (as many slicers emit) keeps relative extrusion.
    def _absolute(self, cmd: GCodeCommand) -> None:
        self.state = replace(self.state, absolute_coords=True)

    def _relative(self, cmd: GCodeCommand) -> None:
        self.state = replace(self.state, absolute_coords=False)

    def _e_absolute(self, cmd: GCodeCommand) -> None:
        self.state = replace(self.state, absolute_extrude=True)

    def _e_relative(self, cmd: GCodeCommand) -> None:
        self.state = replace(self.state, absolute_extrude=False)

    def _set_position(self, cmd: GCodeCommand) -> None:
        p = cmd.params
        st = self.state
        gpos = list(st.gcode_pos)
        off = list(st.offset)
        machine = self.toolhead.commanded_position
        if not any(a in p for a in "XYZE"):
            p = {"X": gpos[0], "Y": gpos[1], "Z": gpos[2], "E": 0.0}
        for i, axis in enumerate("XYZ"):
            if axis in p:
                gpos[i] = p[axis]
                off[i] = machine[i] - p[axis]
        if "E" in p:
            gpos[3] = p["E"]
        self.state = replace(st, gcode_pos=(gpos[0], gpos[1], gpos[2], gpos[3]),
                             offset=(off[0], off[1], off[2], off[3]))

    def _wait_moves(self, cmd: GCodeCommand) -> Wait:
        self.toolhead.flush()
        return self.toolhead.is_idle

    # ----------------------------------------------------------------- heaters and fan
    def _target(self, cmd: GCodeCommand) -> float:
        value = cmd.params.get("S", cmd.params.get("R", 0.0))
        if not math.isfinite(value):
            raise CommandError("temperature must be a finite number")
        return value

    def _set_hotend(self, cmd: GCodeCommand) -> None:
        self.heaters["extruder"].set_target(self._target(cmd))

    def _set_bed(self, cmd: GCodeCommand) -> None:
        self.heaters["heater_bed"].set_target(self._target(cmd))

    def _wait_heater(self, name: str) -> Wait:
        heater = self.heaters[name]
        # Like M400, a heating wait first lets the queued moves finish.
        self.toolhead.flush()
        return lambda: self.toolhead.is_idle() and heater.wait_reached(self.now())

    def _set_hotend_wait(self, cmd: GCodeCommand) -> Wait:
        self._set_hotend(cmd)
        return self._wait_heater("extruder")

    def _set_bed_wait(self, cmd: GCodeCommand) -> Wait:
        self._set_bed(cmd)
        return self._wait_heater("heater_bed")

    def _fan_on(self, cmd: GCodeCommand) -> None:
        value = cmd.params.get("S", 255.0)
        if not 0.0 <= value <= 255.0:
            raise CommandError(f"fan speed S{value:g} is outside 0..255")
        self.fan.set_speed(value / 255.0)

    def _fan_off(self, cmd: GCodeCommand) -> None:
        self.fan.set_speed(0.0)

    def _factor(self, cmd: GCodeCommand, what: str) -> float:
        value = cmd.params.get("S", 100.0)
        if not 0.0 < value <= MAX_FACTOR_PERCENT:
            raise CommandError(f"{what} S{value:g} must be above 0 and at most "
                               f"{MAX_FACTOR_PERCENT:g} percent")
        return value / 100.0

    def _speed_factor(self, cmd: GCodeCommand) -> None:
        self.state = replace(self.state, speed_factor=self._factor(cmd, "speed factor"))

    def _extrude_factor(self, cmd: GCodeCommand) -> None:
        self.state = replace(self.state, extrude_factor=self._factor(cmd, "extrude factor"))

    def _ignore(self, cmd: GCodeCommand) -> None:
        return None

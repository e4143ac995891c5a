"""Executes parsed G-code commands against the toolhead, heaters and fan.

The interpreter owns the G-code *coordinate state* (absolute/relative modes, G92
offsets, units, feed rate, speed and flow factors) and translates G-code positions
into machine positions for the toolhead. It never blocks: a command that must wait
(M109, M190, M400) returns a `Wait` that the job runner polls on every control-loop
tick, so pause, cancel and status keep working while the printer heats.

The dialect is Klipper's, with two additions Klipper refuses: G20 (inches) and the R
form of G2/G3. Deliberate details:

* G20 switches lengths and feed rates of G0-G3 and G92 (X Y Z E F I J R) to inches;
  M114 still reports millimetres and M204 stays in mm/s^2, as both are about the
  machine rather than the drawing.
* G2/G3 need absolute coordinates (G90), as in Klipper; E may be absolute (M82) or
  relative (M83) and is spread evenly over the segments.
* G10/G11 retract and unretract once each (a second G10 does nothing) by an
  extrude-only move; there is no Z lift, Klipper has none. As in Klipper the length
  is scaled by M221 and the speed by M220, and the G-code E position is unchanged.
* M84/M18 release all motors whatever axes are named, so every axis needs homing
  again, as in Klipper.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable

from printhost.config import FirmwareRetractionSettings, GCodeSettings
from printhost.control.arcs import ArcError, arc_points, centre_offset_from_radius
from printhost.control.gcode import GCodeCommand
from printhost.control.heaters import HeaterBank
from printhost.control.motion import Vec4
from printhost.control.toolhead import MoveError, Toolhead

log = logging.getLogger(__name__)

# Marlin and Klipper start with a feed rate of 25 mm/s until the file sets one.
DEFAULT_SPEED_MM_S = 25.0
# M220/M221 accept a percentage; anything outside this range is almost surely a typo.
MAX_FACTOR_PERCENT = 1000.0
MM_PER_INCH = 25.4
# Parameters that are lengths or feed rates, converted under G20.
_LENGTH_PARAMS = frozenset("XYZEFIJR")


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
    # Both are in millimetres whatever the units mode.
    gcode_pos: Vec4 = (0.0, 0.0, 0.0, 0.0)
    offset: Vec4 = (0.0, 0.0, 0.0, 0.0)
    inch_units: bool = False          # G20 in force (G21 turns it off)


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
                 now: Callable[[], float], gcode: GCodeSettings | None = None,
                 retraction: FirmwareRetractionSettings | None = None) -> None:
        self.toolhead = toolhead
        self.now = now
        self.heaters = heaters
        self.fan = fan
        self.gcode_settings = gcode if gcode is not None else GCodeSettings()
        self.retraction = retraction if retraction is not None else FirmwareRetractionSettings()
        self.state = GCodeState()
        self.filament_used_mm = 0.0
        self.unknown_commands = 0
        self._unknown_seen: set[str] = set()
        # True between a G10 and the next G11. Deliberately not part of GCodeState: a
        # resume restores the filament position of the pause, so the flag stays right.
        self.retracted = False
        # The answer of the last reporting command (M114), also logged.
        self.last_report: str | None = None
        self.sync_from_toolhead()
        self._handlers: dict[str, Callable[[GCodeCommand], Wait | None]] = {
            "G0": self._move, "G1": self._move, "G2": self._arc_cw, "G3": self._arc_ccw,
            "G4": self._dwell, "G10": self._retract, "G11": self._unretract,
            "G17": self._xy_plane, "G18": self._other_plane, "G19": self._other_plane,
            "G20": self._inches, "G21": self._millimetres, "G28": self._home,
            "G90": self._absolute, "G91": self._relative, "G92": self._set_position,
            "M82": self._e_absolute, "M83": self._e_relative,
            "M104": self._set_hotend, "M109": self._set_hotend_wait,
            "M140": self._set_bed, "M190": self._set_bed_wait,
            "M106": self._fan_on, "M107": self._fan_off, "M204": self._set_accel,
            "M220": self._speed_factor, "M221": self._extrude_factor,
            "M400": self._wait_moves, "M84": self._motors_off, "M18": self._motors_off,
            "M114": self._report_position,
            "M141": self._set_chamber, "M191": self._set_chamber_wait,
            "M80": self._power_on, "M81": self._power_off,
        }
        # Switches the printer's power supply (a PSU relay on the Pi); returns False
        # when there is none. Set by the printer when Pi devices are attached.
        self.power: Callable[[bool], bool] | None = None
        # Told of each progress report a slicer put in the file (M73): percent done and
        # minutes remaining (either may be None), and the time it was read.
        self.on_progress: Callable[[float | None, float | None, float], None] | None = None

    # ----------------------------------------------------------------- state
    def sync_from_toolhead(self) -> None:
        """Make the G-code position agree with the machine (after homing or an abort)."""
        m = self.toolhead.commanded_position
        off = self.state.offset
        self.state = replace(self.state, gcode_pos=(m[0] - off[0], m[1] - off[1],
                                                    m[2] - off[2], self.state.gcode_pos[3]))

    def save_state(self) -> GCodeState:
        return self.state

    def restore_state(self, saved: GCodeState, machine_e: float | None = None) -> None:
        """Take `saved` as the state. With `machine_e`, the extruder stands elsewhere
        than when the state was saved (filament loaded or purged meanwhile, a resume
        after a power loss): the file's E coordinates continue from there (the E offset
        moves), so nothing pulls the filament back."""
        if machine_e is not None:
            off = saved.offset
            shift = machine_e - (saved.gcode_pos[3] + off[3])
            saved = replace(saved, offset=(off[0], off[1], off[2], off[3] + shift))
        self.state = saved

    # ----------------------------------------------------------------- dispatch
    def execute(self, cmd: GCodeCommand) -> Wait | None:
        """Run one command; returns a condition to wait for, or None when done."""
        handler = self._handlers.get(cmd.name) if cmd.known else None
        if handler is None and cmd.name == "M73":
            self._progress(cmd)
            return None
        if handler is None:
            self.unknown_commands += 1
            # Slicers repeat the same unsupported command (M73 progress) hundreds of
            # times: say it once per command, keep the rest for debugging.
            first = cmd.name not in self._unknown_seen
            if first and len(self._unknown_seen) < 256:
                self._unknown_seen.add(cmd.name)
            log.log(logging.INFO if first else logging.DEBUG,
                    "line %d: skipping unsupported command %s%s", cmd.lineno,
                    cmd.raw.strip()[:80], " (logged once)" if first else "")
            return None
        try:
            return handler(cmd)
        except MoveError as exc:
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    def _progress(self, cmd: GCodeCommand) -> None:
        """M73 P<percent> R<minutes remaining>, as PrusaSlicer, OrcaSlicer and others
        write it (Q and S, the same for a printer's quiet mode, are not used). Read
        leniently: a report the printer cannot use is never a reason to stop a print."""
        values: dict[str, float] = {}
        for token in cmd.arg_text.split():
            letter, number = token[:1].upper(), token[1:]
            try:
                value = float(number)
            except ValueError:
                continue
            if letter in "PR" and value == value and 0.0 <= value < 1e7:
                values[letter] = value
        if values and self.on_progress is not None:
            self.on_progress(values.get("P"), values.get("R"), self.now())

    # ----------------------------------------------------------------- motion
    def _params_mm(self, cmd: GCodeCommand) -> dict[str, float]:
        """The command's parameters with lengths and feed rates in millimetres."""
        if not self.state.inch_units:
            return cmd.params
        return {k: v * MM_PER_INCH if k in _LENGTH_PARAMS else v for k, v in cmd.params.items()}

    def _move(self, cmd: GCodeCommand) -> None:
        p = self._params_mm(cmd)
        st = self.state
        xyz = list(st.gcode_pos[:3])
        for i, axis in enumerate("XYZ"):
            if axis in p:
                xyz[i] = p[axis] if st.absolute_coords else xyz[i] + p[axis]
        self._linear_move(xyz[0], xyz[1], xyz[2], p.get("E"), p.get("F"))

    def _linear_move(self, x: float, y: float, z: float, e_param: float | None,
                     f_param: float | None) -> None:
        """Move to G-code position (x, y, z) in mm; E and F as a G1 would give them.

        E is absolute only when both modes are (G90 and M82); the extrude factor
        scales the filament actually pushed, not the G-code E position.
        """
        st = self.state
        gcode_e = st.gcode_pos[3]
        e_delta = 0.0
        if e_param is not None:
            new_e = e_param if (st.absolute_coords and st.absolute_extrude) else gcode_e + e_param
            e_delta = (new_e - gcode_e) * st.extrude_factor
            gcode_e = new_e
        speed = st.speed_mm_s
        if f_param is not None:
            if f_param <= 0.0:
                raise CommandError(f"invalid feed rate F{f_param:g}: must be positive")
            speed = f_param / 60.0
        cur = self.toolhead.commanded_position
        target = (x + st.offset[0], y + st.offset[1], z + st.offset[2], cur[3] + e_delta)
        self.toolhead.move_to(target, speed * st.speed_factor)
        self.filament_used_mm += e_delta
        self.state = replace(st, gcode_pos=(x, y, z, gcode_e), speed_mm_s=speed)

    def _arc_cw(self, cmd: GCodeCommand) -> None:
        self._arc(cmd, clockwise=True)

    def _arc_ccw(self, cmd: GCodeCommand) -> None:
        self._arc(cmd, clockwise=False)

    def _arc(self, cmd: GCodeCommand, clockwise: bool) -> None:
        """G2/G3: split into segments (see `arcs`) and run each as a G1 would be.

        E is divided evenly among the segments; F, if given, applies to all of them.
        """
        st = self.state
        if not st.absolute_coords:
            raise CommandError("G2/G3 does not support relative move mode (G91)")
        p = self._params_mm(cmd)
        start = st.gcode_pos[:3]
        target = (p.get("X", start[0]), p.get("Y", start[1]), p.get("Z", start[2]))
        try:
            if "R" in p:
                if "I" in p or "J" in p:
                    raise CommandError("G2/G3 takes either R or I/J, not both")
                offset = centre_offset_from_radius(start, target, p["R"], clockwise)
            else:
                offset = (p.get("I", 0.0), p.get("J", 0.0))
            points = arc_points(start, target, offset, clockwise,
                                self.gcode_settings.arc_resolution)
        except ArcError as exc:
            raise CommandError(str(exc)) from None
        # Like Klipper: in absolute E mode each segment's E is the running total from
        # the current E, in relative mode each segment carries its share.
        e_per_segment = 0.0
        e_base = 0.0
        if "E" in p:
            if st.absolute_extrude:
                e_base = st.gcode_pos[3]
            e_per_segment = (p["E"] - e_base) / len(points)
        f_param = p.get("F")
        for x, y, z in points:
            e_param = None
            if e_per_segment:
                e_param = e_base + e_per_segment
                if st.absolute_extrude:
                    e_base += e_per_segment
            self._linear_move(x, y, z, e_param, f_param)

    def _xy_plane(self, cmd: GCodeCommand) -> None:
        return None

    def _other_plane(self, cmd: GCodeCommand) -> None:
        raise CommandError(f"{cmd.name}: only the XY arc plane (G17) is supported")

    def _inches(self, cmd: GCodeCommand) -> None:
        self.state = replace(self.state, inch_units=True)

    def _millimetres(self, cmd: GCodeCommand) -> None:
        self.state = replace(self.state, inch_units=False)

    # Firmware retraction: Klipper runs "G91 / G1 E-<length> F<speed> / restore state";
    # it writes the length with 5 decimals and the feed rate as a whole number of
    # mm/min, and the G1 applies the extrude and speed factors. All of that is kept so
    # the filament moved and the time taken are the same.
    def _retract(self, cmd: GCodeCommand) -> None:
        if self.retracted:
            return
        cfg = self.retraction
        self._extrude_only(-float(f"{cfg.retract_length:.5f}"), int(cfg.retract_speed * 60.0))
        self.retracted = True

    def _unretract(self, cmd: GCodeCommand) -> None:
        if not self.retracted:
            return
        cfg = self.retraction
        length = cfg.retract_length + cfg.unretract_extra_length
        self._extrude_only(float(f"{length:.5f}"), int(cfg.unretract_speed * 60.0))
        self.retracted = False

    def _extrude_only(self, length: float, feed_mm_min: int) -> None:
        """Move the filament by `length` G-code mm, leaving the G-code E position alone."""
        st = self.state
        if feed_mm_min <= 0:
            raise CommandError(f"invalid retraction speed F{feed_mm_min}")
        e_delta = length * st.extrude_factor
        cur = self.toolhead.commanded_position
        self.toolhead.move_to((cur[0], cur[1], cur[2], cur[3] + e_delta),
                              feed_mm_min / 60.0 * st.speed_factor)
        self.filament_used_mm += e_delta

    def _dwell(self, cmd: GCodeCommand) -> None:
        p = cmd.params
        seconds = p["S"] if "S" in p else p.get("P", 0.0) / 1000.0
        if seconds < 0.0:
            raise CommandError("dwell time must not be negative")
        self.toolhead.dwell(seconds)

    def _home(self, cmd: GCodeCommand) -> Wait | None:
        axes = "".join(a.lower() for a in "XYZ" if a in cmd.params)
        pending = self.toolhead.home(axes)

        def homed() -> None:
            # Homing resets the G-code offsets of the homed axes (as G28 does everywhere).
            off = list(self.state.offset)
            for i, a in enumerate("xyz"):
                if not axes or a in axes:
                    off[i] = 0.0
            self.state = replace(self.state, offset=(off[0], off[1], off[2], off[3]))
            self.sync_from_toolhead()

        if pending is None:
            homed()
            return None

        def wait() -> bool:
            if not pending():
                return False
            homed()
            return True
        return wait

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
        p = self._params_mm(cmd)
        st = self.state
        gpos = list(st.gcode_pos)
        off = list(st.offset)
        machine = self.toolhead.commanded_position
        if not any(a in p for a in "XYZE"):
            # A bare G92 declares the current position to be zero on every axis (Klipper).
            p = {"X": 0.0, "Y": 0.0, "Z": 0.0, "E": 0.0}
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

    def _set_accel(self, cmd: GCodeCommand) -> None:
        """M204: S sets the acceleration; without S, P and T must both be given and the
        lower one is used (Klipper's reading; R, the retract acceleration, is ignored)."""
        p = cmd.params
        # Only the values that will be used are checked, in Klipper's order.
        for key in ("S",) if "S" in p else ("P", "T"):
            if key in p and not p[key] > 0.0:
                raise CommandError(f"M204 {key}{p[key]:g}: acceleration must be above 0")
        if "S" in p:
            accel = p["S"]
        elif "P" in p and "T" in p:
            accel = min(p["P"], p["T"])
        else:
            log.info("line %d: ignoring M204 without S or without both P and T: %s",
                     cmd.lineno, cmd.raw[:80])
            return
        self.toolhead.set_accel(accel)

    def _motors_off(self, cmd: GCodeCommand) -> None:
        self.toolhead.motors_off()

    def _report_position(self, cmd: GCodeCommand) -> None:
        """M114: the G-code position (after G92 offsets), in mm."""
        pos = self.state.gcode_pos
        self.last_report = f"X:{pos[0]:.3f} Y:{pos[1]:.3f} Z:{pos[2]:.3f} E:{pos[3]:.3f}"
        log.info("line %d: M114 %s", cmd.lineno, self.last_report)

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

    def _chamber(self) -> str:
        if "chamber" not in self.heaters:
            raise CommandError("no chamber heater is configured ([chamber] heater_pin)")
        return "chamber"

    def _set_chamber(self, cmd: GCodeCommand) -> None:
        self.heaters[self._chamber()].set_target(self._target(cmd))

    def _set_chamber_wait(self, cmd: GCodeCommand) -> Wait:
        self._set_chamber(cmd)
        return self._wait_heater("chamber")

    def _power_on(self, cmd: GCodeCommand) -> None:
        """M80: printer power on through the PSU relay (nothing to do without one)."""
        if self.power is None or not self.power(True):
            log.info("line %d: M80 ignored: no PSU relay is configured", cmd.lineno)

    def _power_off(self, cmd: GCodeCommand) -> Wait | None:
        """M81: heaters off, then printer power off. Queued moves finish first, as the
        relay cuts the steppers' power too."""
        self.heaters.all_off()
        if self.power is None:
            log.info("line %d: M81 turned the heaters off; no PSU relay is configured",
                     cmd.lineno)
            return None
        self.toolhead.flush()
        power = self.power
        return lambda: self.toolhead.is_idle() and (power(False) or True)

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


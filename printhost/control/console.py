"""The console: what an operator asks the printer to do outside a print file.

Typed commands from the API (heat, cool, home, move/jog, extrude, fan, speed and flow
factors, lights and the PSU, loading and unloading filament) and raw G-code all run
here, on the printer's own interpreter and toolhead, one command after the other.

Why in the control process and not in the API: whether a command is safe depends on
the printer at the moment it runs (is a job printing, is the hotend hot enough to
extrude, which axes are homed), and only the control process knows that moment. The
API checks shapes and ranges; the console decides whether the printer may do it now
(a refusal is a conflict: HTTP 409) and runs it. The rules, by kind (`KINDS`):

* while a job prints, only what does not move the toolhead: heat, cool, fan, factors,
  lights, and raw G-code made only of such commands (`M104`, `M140`, `M141`, `M106`,
  `M107`, `M220`, `M221`, `M114`); a jog would collide with the print's own moves;
* while a job is paused: also jogs, extrusion and filament changes, and raw G-code,
  but not homing, `G92`, `M84`/`M18` or `M81` (the job resumes at the position it
  paused at, which those would make wrong or unreachable), and the job resumes only
  after the console's commands have ended;
* anything that extrudes needs the hotend at `extruder.min_extrude_temp` or above,
  checked when the command is submitted and again for every line that moves E when it
  runs (the hotend may have cooled in between);
* after a fault only `cool` (turning heaters off is always allowed).

A command (`Entry`) carries an id given by the API and goes acknowledged (queued) ->
running -> completed or failed, with a message. One that moves counts as completed
once the motion has ended, so "completed" means the toolhead is there. Typed commands
leave the interpreter's modes (G90/G91, M82/M83, the feed rate) as they found them.
The last `RESULTS_KEPT` results stay in the status document, numbered (`seq`), so the
API sees every one even when several end between two snapshots.
"""

from __future__ import annotations

import collections
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from printhost.control.gcode import GCodeCommand, GCodeError, parse_script
from printhost.control.gcode import make_command as command
from printhost.control.heaters import HeaterBank, HeaterFault
from printhost.control.interpreter import CommandError, GCodeInterpreter, Wait
from printhost.control.toolhead import NotHomed, OutOfRange, Toolhead

log = logging.getLogger(__name__)

#: Commands waiting or running at once; more is a conflict (the operator is told to wait).
MAX_QUEUED = 16
#: Finished commands kept in the status document.
RESULTS_KEPT = 32
#: Lines executed per control-loop pass (a long script must not take a whole pass).
LINES_PER_PASS = 32
#: Default speeds of typed moves when none is given, mm/s.
TRAVEL_SPEED = 50.0
Z_SPEED = 10.0
EXTRUDE_SPEED = 5.0
#: Raw G-code a paused job's resume cannot survive.
_NOT_WHILE_PAUSED = frozenset({"G28", "G92", "M84", "M18", "M81"})
_E_MOVES = frozenset({"G0", "G1", "G2", "G3"})
#: Raw G-code allowed while a job prints: it changes no position and waits for nothing.
_SAFE_WHILE_PRINTING = frozenset({"M104", "M140", "M141", "M106", "M107", "M220", "M221",
                                  "M114"})


class ConsoleConflict(Exception):
    """The printer's state does not allow the command now (HTTP 409)."""


class ConsoleInvalid(Exception):
    """The command's arguments are wrong (HTTP 400)."""


@dataclass(frozen=True)
class Kind:
    """What a kind of command may do, and when."""
    while_printing: bool = False     # allowed while a job prints (does not move the toolhead)
    while_paused: bool = True
    moves: bool = False              # completed only when its motion has ended
    extrudes: bool = False           # needs the hotend at min_extrude_temp
    keep_modes: bool = False         # G90/G91, M82/M83 and the feed rate restored after
    after_fault: bool = False        # allowed while the printer is shut down


KINDS: dict[str, Kind] = {
    "heat": Kind(while_printing=True),
    "cool": Kind(while_printing=True, after_fault=True),
    "fan": Kind(while_printing=True),
    "factors": Kind(while_printing=True),
    "output": Kind(while_printing=True),
    "home": Kind(while_paused=False, moves=True),
    "move": Kind(moves=True, keep_modes=True),
    "extrude": Kind(moves=True, extrudes=True, keep_modes=True),
    "filament_load": Kind(moves=True, extrudes=True, keep_modes=True),
    "filament_unload": Kind(moves=True, extrudes=True, keep_modes=True),
    "gcode": Kind(while_printing=True, moves=True),
}

Step = GCodeCommand | Callable[[], str | None]


@dataclass
class Entry:
    id: str
    kind: str
    steps: list[Step]
    rules: Kind
    by: str = ""
    state: str = "acknowledged"
    message: str = ""
    responses: list[str] = field(default_factory=list)
    index: int = 0
    wait: Wait | None = None
    moves: bool = False
    flushed: bool = False
    saved_modes: tuple[bool, bool, float] | None = None


class Console:
    def __init__(self, interp: GCodeInterpreter, toolhead: Toolhead, heaters: HeaterBank,
                 settings: Any, *, emergency: Callable[[str], None],
                 devices: Callable[[], Any]) -> None:
        self.interp = interp
        self.toolhead = toolhead
        self.heaters = heaters
        self.settings = settings
        self._emergency = emergency
        self._devices = devices
        self._queue: collections.deque[Entry] = collections.deque()
        self._results: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=RESULTS_KEPT)
        self._seq = 0

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    # ------------------------------------------------------------------ submitting
    def submit(self, command_id: str, kind: str, args: dict[str, Any], *, printer_state: str,
               tuning: bool, by: str = "") -> dict[str, Any]:
        """Check and queue one command, and start it at once when nothing is ahead of
        it; returns its record (`state` acknowledged, or completed/failed when it ended
        already). Raises ConsoleInvalid or ConsoleConflict."""
        rules = KINDS.get(kind)
        if rules is None:
            raise ConsoleInvalid(f"unknown command kind {kind[:40]!r}")
        if printer_state == "error" and not rules.after_fault:
            raise ConsoleConflict("The printer is shut down after a fault; a firmware "
                                  "restart clears it")
        if printer_state == "printing" and not rules.while_printing:
            raise ConsoleConflict("A job is printing; pause it first")
        if printer_state == "paused" and not rules.while_paused:
            raise ConsoleConflict("A job is paused; homing would lose its position "
                                  "(cancel the job first)")
        if tuning and kind not in ("fan", "output"):
            raise ConsoleConflict("A PID tune is running")
        if len(self._queue) >= MAX_QUEUED:
            raise ConsoleConflict(f"{MAX_QUEUED} console commands are already waiting")
        steps = self._build(kind, args, printer_state)
        if any(isinstance(s, GCodeCommand) and s.name == "M112" for s in steps):
            self._emergency(f"emergency stop (M112) sent by {by or 'the console'}")
            entry = Entry(command_id, kind, [], rules, by, "completed", "emergency stop")
            return self._record(entry)
        if rules.extrudes or any(self._moves_e(s) for s in steps):
            self._check_hot()
        entry = Entry(command_id, kind, steps, rules, by)
        entry.moves = rules.moves and not all(
            isinstance(s, GCodeCommand) and s.name in _SAFE_WHILE_PRINTING for s in steps)
        self._queue.append(entry)
        log.info("console %s (%s%s): %s", command_id, kind, f" by {by}" if by else "",
                 "; ".join(s.raw if isinstance(s, GCodeCommand) else kind for s in steps)[:200])
        if len(self._queue) == 1:
            self.step()
        return self._public(entry)

    def _check_hot(self) -> None:
        hot = self.heaters["extruder"]
        limit = self.settings.extruder.min_extrude_temp
        temp = hot.temperature_c
        if not (temp >= limit):   # NaN (no reading) refuses too
            shown = f"at {temp:.0f} C" if math.isfinite(temp) else "not read yet"
            raise ConsoleConflict(f"The extruder is {shown} (min_extrude_temp "
                                  f"{limit:g} C): heat it first")

    def _moves_e(self, step: Step) -> bool:
        """Whether a G-code line would turn the extruder (checked again as it runs)."""
        if not isinstance(step, GCodeCommand):
            return False
        if step.name in ("G10", "G11"):
            return self.interp.retraction.retract_length > 0.0
        if step.name not in _E_MOVES or "E" not in step.params:
            return False
        e = step.params["E"]
        st = self.interp.state
        return e != st.gcode_pos[3] if st.absolute_extrude else e != 0.0

    # ------------------------------------------------------------------ kinds
    def _build(self, kind: str, args: dict[str, Any], printer_state: str) -> list[Step]:
        try:
            builder = getattr(self, f"_build_{kind}")
            return builder(args, printer_state)
        except GCodeError as exc:
            raise ConsoleInvalid(str(exc)) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ConsoleInvalid(f"bad arguments for {kind}: {exc}") from None

    def _heater_steps(self, targets: dict[str, float]) -> list[Step]:
        names = {"extruder": "M104", "heater_bed": "M140", "chamber": "M141"}
        steps: list[Step] = []
        for name, target in targets.items():
            if name not in self.heaters or name not in names:
                raise ConsoleInvalid(f"unknown heater {str(name)[:40]!r}")
            t = float(target)
            limit = self.heaters[name].settings.max_temp
            if not 0.0 <= t <= limit:
                raise ConsoleInvalid(f"{name}: target must be between 0 and {limit:g}")
            steps.append(command(names[name], S=t))
        return steps

    def _build_heat(self, args: dict[str, Any], _state: str) -> list[Step]:
        targets = args["targets"]
        if not isinstance(targets, dict) or not targets:
            raise ConsoleInvalid("heat needs at least one heater target")
        return self._heater_steps(targets)

    def _build_cool(self, args: dict[str, Any], _state: str) -> list[Step]:
        return self._heater_steps({h.name: 0.0 for h in self.heaters})

    def _build_fan(self, args: dict[str, Any], _state: str) -> list[Step]:
        speed = float(args["speed"])
        if not 0.0 <= speed <= 1.0:
            raise ConsoleInvalid("fan speed must be between 0 and 1")
        return [command("M106", S=round(speed * 255.0, 3)) if speed > 0 else command("M107")]

    def _build_factors(self, args: dict[str, Any], _state: str) -> list[Step]:
        steps: list[Step] = []
        for key, name in (("speed", "M220"), ("flow", "M221")):
            if args.get(key) is not None:
                steps.append(command(name, S=float(args[key])))
        if not steps:
            raise ConsoleInvalid("give speed, flow or both (percent)")
        return steps

    def _build_output(self, args: dict[str, Any], state: str) -> list[Step]:
        name = str(args["name"])
        devices = self._devices()
        if name == "light":
            value = float(args["value"])
            if not 0.0 <= value <= 1.0:
                raise ConsoleInvalid("light: value must be between 0 and 1")
            if devices is None or devices.light is None:
                raise ConsoleInvalid("no light is fitted (devices.light.pin)")

            def light() -> str:
                devices.set_light(value)
                return f"light {value:g}"
            return [light]
        if name == "psu":
            on = bool(args["value"])
            if devices is None or devices.psu is None:
                raise ConsoleInvalid("no PSU relay is fitted (devices.psu.pin)")
            if not on and state != "idle":
                raise ConsoleConflict("A job is in progress; the printer's power stays on")
            return [command("M80" if on else "M81")]
        raise ConsoleInvalid(f"unknown output {name[:40]!r} (light, psu)")

    def _build_home(self, args: dict[str, Any], _state: str) -> list[Step]:
        axes = str(args.get("axes") or "xyz").lower()
        if not axes or set(axes) - set("xyz"):
            raise ConsoleInvalid("axes: a combination of x, y and z")
        params = {a.upper(): 0.0 for a in "xyz" if a in axes}
        cmd = command("G28", **params)
        return [replace(cmd, raw="G28 " + " ".join(params))]

    def _build_move(self, args: dict[str, Any], _state: str) -> list[Step]:
        relative = bool(args.get("relative", True))
        target: dict[str, float] = {}
        for axis in "xyz":
            if args.get(axis) is not None:
                target[axis.upper()] = float(args[axis])
        e = float(args["e"]) if args.get("e") is not None else None
        if not target and e is None:
            raise ConsoleInvalid("give at least one of x, y, z, e")
        speed = args.get("speed")
        if speed is None:
            speed = Z_SPEED if "Z" in target else (TRAVEL_SPEED if target else EXTRUDE_SPEED)
        speed = float(speed)
        if not speed > 0.0:
            raise ConsoleInvalid("speed must be above 0")
        if not self._queue:
            self._check_reach(target, relative)
        params = dict(target)
        if e is not None:
            params["E"] = e
        params["F"] = speed * 60.0
        return [command("G91" if relative else "G90"), command("M83"), command("G1", **params)]

    def _check_reach(self, target: dict[str, float], relative: bool) -> None:
        """Before queueing a move, the toolhead's own checks (`Toolhead.check_target`),
        so that a jog off the bed is refused with its reason instead of failing later."""
        pos = list(self.toolhead.commanded_position)
        offset = self.interp.state.offset
        for i, axis in enumerate("XYZ"):
            if axis in target:
                pos[i] = pos[i] + target[axis] if relative else target[axis] + offset[i]
        try:
            self.toolhead.check_target((pos[0], pos[1], pos[2], pos[3]))
        except NotHomed as exc:
            raise ConsoleConflict(f"{exc}") from None
        except OutOfRange as exc:
            raise ConsoleInvalid(f"{exc}") from None

    def _build_extrude(self, args: dict[str, Any], _state: str) -> list[Step]:
        length = float(args["length"])
        limit = self.settings.extruder.max_extrude_only_distance
        if not 0.0 < abs(length) <= limit:
            raise ConsoleInvalid(f"length must be non-zero and at most {limit:g} mm "
                                 "(extruder.max_extrude_only_distance)")
        speed = float(args.get("speed") or EXTRUDE_SPEED)
        if not speed > 0.0:
            raise ConsoleInvalid("speed must be above 0")
        return [command("M83"), command("G1", E=length, F=speed * 60.0)]

    def _filament(self, script: str) -> list[Step]:
        return [command("M83"), *parse_script(script)]

    def _build_filament_load(self, args: dict[str, Any], _state: str) -> list[Step]:
        return self._filament(self.settings.filament.load_gcode)

    def _build_filament_unload(self, args: dict[str, Any], _state: str) -> list[Step]:
        return self._filament(self.settings.filament.unload_gcode)

    def _build_gcode(self, args: dict[str, Any], state: str) -> list[Step]:
        script = args["script"]
        if not isinstance(script, str) or not script.strip():
            raise ConsoleInvalid("script: G-code, one command per line")
        steps: list[Step] = list(parse_script(script))
        if not steps:
            raise ConsoleInvalid("script: no command (only comments or blank lines)")
        if state == "printing":
            for cmd in steps:
                assert isinstance(cmd, GCodeCommand)
                if cmd.name not in _SAFE_WHILE_PRINTING:
                    raise ConsoleConflict(f"line {cmd.lineno}: {cmd.name} is refused while a "
                                          "job prints (pause it first); allowed: "
                                          + ", ".join(sorted(_SAFE_WHILE_PRINTING)))
        if state == "paused":
            for cmd in steps:
                assert isinstance(cmd, GCodeCommand)
                if cmd.name in _NOT_WHILE_PAUSED:
                    raise ConsoleConflict(f"line {cmd.lineno}: {cmd.name} is refused while a "
                                          "job is paused (the job resumes at the position it "
                                          "paused at)")
        return steps

    # ------------------------------------------------------------------ running
    def step(self) -> None:
        """Run queued commands; called every pass of the control loop."""
        budget = LINES_PER_PASS
        while self._queue and budget > 0:
            entry = self._queue[0]
            if entry.state == "acknowledged":
                entry.state = "running"
                self._sync_position()
                if entry.rules.keep_modes:
                    st = self.interp.state
                    entry.saved_modes = (st.absolute_coords, st.absolute_extrude,
                                         st.speed_mm_s)
            if entry.wait is not None:
                try:
                    if not entry.wait():
                        return
                except (GCodeError, CommandError) as exc:
                    self._finish(entry, "failed", str(exc))
                    continue
                entry.wait = None
            if entry.index < len(entry.steps):
                budget -= 1
                step = entry.steps[entry.index]
                entry.index += 1
                error = self._run(entry, step)
                if error is not None:
                    self._finish(entry, "failed", error)
                continue
            if entry.moves:
                if not entry.flushed:
                    self.toolhead.flush()
                    entry.flushed = True
                if not self.toolhead.is_idle():
                    return
            self._finish(entry, "completed", "; ".join(entry.responses[-3:]) or "done")

    def _sync_position(self) -> None:
        """Make the G-code position (all four axes) agree with the toolhead before a
        command starts. A pause's retract and park are moved by the toolhead directly,
        so the interpreter still holds the print's position: without this, a jog while
        paused would be computed from the part instead of the park position, and an
        extrusion would include the pause's retract."""
        pos = self.toolhead.commanded_position
        st = self.interp.state
        off = st.offset
        self.interp.state = replace(st, gcode_pos=(pos[0] - off[0], pos[1] - off[1],
                                                   pos[2] - off[2], pos[3] - off[3]))

    def _run(self, entry: Entry, step: Step) -> str | None:
        """One step; the failure's message, or None."""
        try:
            if not isinstance(step, GCodeCommand):
                reply = step()
                if reply:
                    entry.responses.append(reply)
                return None
            if self._moves_e(step):
                self._check_hot()
            entry.wait = self.interp.execute(step)
            if step.name == "M114" and self.interp.last_report:
                entry.responses.append(self.interp.last_report)
            return None
        except ConsoleConflict as exc:
            return str(exc)
        except (CommandError, GCodeError, HeaterFault, ValueError) as exc:
            return f"{step.raw if isinstance(step, GCodeCommand) else entry.kind}: {exc}"
        except Exception:
            log.exception("console %s: %s failed", entry.id, entry.kind)
            return "internal error (see the control process log)"

    def abort(self, reason: str, stop_motion: bool = True) -> bool:
        """Fail every queued command (cancel, a fault, a stop); with `stop_motion` the
        toolhead also stops (planned moves dropped, a homing move halted). True when
        something was queued."""
        if not self._queue:
            return False
        running = self._queue[0].state == "running"
        if stop_motion and running:
            self.toolhead.abort()
            self.interp.sync_from_toolhead()
        while self._queue:
            self._finish(self._queue[0], "failed", reason)
        return True

    def _finish(self, entry: Entry, state: str, message: str) -> None:
        if entry.saved_modes is not None:
            absolute, absolute_e, speed = entry.saved_modes
            self.interp.state = replace(self.interp.state, absolute_coords=absolute,
                                        absolute_extrude=absolute_e, speed_mm_s=speed)
            entry.saved_modes = None
        entry.state, entry.message = state, message
        entry.wait = None
        if self._queue and self._queue[0] is entry:
            self._queue.popleft()
        (log.info if state == "completed" else log.warning)(
            "console %s (%s): %s: %s", entry.id, entry.kind, state, message)
        self._record(entry)

    def _record(self, entry: Entry) -> dict[str, Any]:
        self._seq += 1
        result = {"seq": self._seq, **self._public(entry)}
        self._results.append(result)
        return result

    @staticmethod
    def _public(entry: Entry) -> dict[str, Any]:
        return {"id": entry.id, "kind": entry.kind, "state": entry.state,
                "message": entry.message, "responses": list(entry.responses[-16:])}

    # ------------------------------------------------------------------ status
    def get_status(self) -> dict[str, Any]:
        return {
            "busy": bool(self._queue),
            "current": self._queue[0].id if self._queue else None,
            "queued": len(self._queue),
            "seq": self._seq,
            "results": list(self._results),
        }


__all__ = ["Console", "ConsoleConflict", "ConsoleInvalid", "KINDS", "command"]

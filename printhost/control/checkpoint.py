"""Where a print can be restarted after a power loss, and how.

The job feed starts a run of the compiled planner at every move that names Z (in
absolute coordinates), and before that run the interpreter and the toolhead hold
exactly the state the file needs to continue from that line: the G-code modes and
offsets, the feed rate, the factors, the position. Each such point is a `Boundary`.
A boundary becomes a *resume point* once the motion before it has run (its print time
has passed), so everything before it is on the bed.

Z is what must never be wrong: after a power cut the host does not know where the
nozzle is, X and Y can be homed, but homing Z would drive the nozzle into the part.
The resume therefore believes a Z height and must never believe one above the real
nozzle (it would then lower the nozzle into the print). Because runs start at every Z
move, the machine's Z between two boundaries is the Z the first of them moved to, so
the Z history is known exactly from the boundaries:

* a resume point is a boundary whose move goes up or stays level (a Z hop's lift, a
  layer change's lift): the nozzle is at or above the height before it from then on;
* the believed height is the height before the resume point, lowered to the target of
  every later boundary that has run (a file that goes lower afterwards).

Layers only go up, so a power cut after the checkpoint leaves the nozzle at or above
the believed height: the resume prints at most a little high, never into the part.
What runs between the resume point and the power cut is printed again: at most the
moves since the last Z move, plus the motion the host had queued (the buffer time) and
the age of the saved checkpoint.

`resume_steps` is the prologue a resumed job runs before its file: the temperatures
restored and waited for first, the believed Z taken as the position, a lift, homing X
and Y, the travel back and the lowering to the resume point, then the G-code state,
fan and acceleration as they were there.
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass
from typing import Any, Callable

from printhost.control.gcode import GCodeCommand
from printhost.control.gcode import make_command as _command
from printhost.control.interpreter import GCodeState

@dataclass(frozen=True)
class Boundary:
    offset: int                  # file offset where the line begins
    line: int                    # its line number
    position: tuple[float, float, float, float]   # machine position before the line
    z_target: float              # the machine Z the line moves to
    state: GCodeState
    accel: float
    fan: float
    targets: dict[str, float]
    filament_mm: float           # the job's filament before the line
    due: float                   # print time by which the motion before it has run


class Checkpoints:
    """Boundaries of one job, and its latest resume point.

    Boundaries wait until their motion has run; there are never more than the Z moves
    within the feed's buffer of motion (`control.buffer_time_s`), so none is dropped:
    each one that ran may lower the believed height."""

    def __init__(self) -> None:
        self._pending: collections.deque[Boundary] = collections.deque()
        self.point: Boundary | None = None
        self.z_belief: float | None = None
        self.count = 0
        # The status's copy, made again only when the point or the belief changed (the
        # status is published ten times a second).
        self._json: dict[str, Any] | None = None

    def add(self, boundary: Boundary) -> None:
        self._pending.append(boundary)

    def update(self, now: float) -> bool:
        """Take the boundaries whose motion has run; True when the resume point moved."""
        moved = False
        while self._pending and self._pending[0].due <= now:
            b = self._pending.popleft()
            self._json = None
            if self.z_belief is not None:
                self.z_belief = min(self.z_belief, b.z_target)
            if b.z_target >= b.position[2]:
                self.point = b
                self.z_belief = b.position[2]
                self.count += 1
                moved = True
        return moved

    def to_json(self) -> dict[str, Any] | None:
        b = self.point
        if b is None or self.z_belief is None:
            return None
        if self._json is None:
            self._json = {
                "offset": b.offset, "line": b.line, "position": list(b.position),
                "z_belief": self.z_belief, "state": state_to_json(b.state),
                "accel": b.accel, "fan": b.fan, "targets": dict(b.targets),
                "filament_used_mm": b.filament_mm, "count": self.count,
            }
        return self._json


def state_to_json(state: GCodeState) -> dict[str, Any]:
    out = asdict(state)
    out["gcode_pos"] = list(state.gcode_pos)
    out["offset"] = list(state.offset)
    return out


def state_from_json(data: dict[str, Any]) -> GCodeState:
    def vec(v: Any) -> tuple[float, float, float, float]:
        a, b, c, d = (float(x) for x in v)
        return (a, b, c, d)
    return GCodeState(absolute_coords=bool(data["absolute_coords"]),
                      absolute_extrude=bool(data["absolute_extrude"]),
                      speed_mm_s=float(data["speed_mm_s"]),
                      speed_factor=float(data["speed_factor"]),
                      extrude_factor=float(data["extrude_factor"]),
                      gcode_pos=vec(data["gcode_pos"]), offset=vec(data["offset"]),
                      inch_units=bool(data.get("inch_units", False)))


Step = GCodeCommand | Callable[[], None]


def resume_steps(point: dict[str, Any], runner: Any) -> list[Step]:
    """The prologue of a job resumed at `point` (as `Checkpoints.to_json` made it):
    commands for the interpreter and steps of our own, run in order by the job runner.
    Raises KeyError/ValueError/TypeError on a malformed point."""
    toolhead, interp = runner.toolhead, runner.interp
    pause, axes = runner.pause_cfg, runner.printer.axes
    x, y, z, e = (float(v) for v in point["position"])
    z_belief = float(point["z_belief"])
    state = state_from_json(point["state"])
    targets = {str(k): float(v) for k, v in dict(point["targets"]).items()}
    accel, fan = float(point["accel"]), float(point["fan"])
    lifted = min(max(z_belief, z) + pause.lift_z_mm, axes.z.position_max)
    steps: list[Step] = []
    # Temperatures first, waited for: nothing moves near the part before it is hot.
    heat = {"heater_bed": ("M140", "M190"), "extruder": ("M104", "M109"),
            "chamber": ("M141", "M191")}
    for name, (set_cmd, _wait) in heat.items():
        if targets.get(name, 0.0) > 0.0:
            steps.append(_command(set_cmd, S=targets[name]))
    for name, (_set, wait_cmd) in heat.items():
        if targets.get(name, 0.0) > 0.0:
            steps.append(_command(wait_cmd, S=targets[name]))

    def believe_z() -> None:
        pos = toolhead.commanded_position
        toolhead.set_position((pos[0], pos[1], z_belief, pos[3]), "z")
        interp.sync_from_toolhead()

    def lift() -> None:
        pos = toolhead.commanded_position
        if lifted > pos[2]:
            toolhead.move_to((pos[0], pos[1], lifted, pos[3]), pause.z_speed)
        toolhead.flush()

    def back() -> None:
        pos = toolhead.commanded_position
        toolhead.move_to((x, y, pos[2], pos[3]), pause.travel_speed)
        toolhead.move_to((x, y, z, pos[3]), pause.z_speed)
        toolhead.flush()

    def restore() -> None:
        # The file's E coordinates continue from wherever the extruder is now.
        interp.restore_state(state, machine_e=toolhead.commanded_position[3])
        toolhead.set_accel(accel)
        runner.fan.set_speed(fan)

    steps += [believe_z, lift, _command("G28", X=0.0, Y=0.0), back,
              _command("M400"), restore]
    return steps


__all__ = ["Boundary", "Checkpoints", "resume_steps", "state_from_json", "state_to_json"]

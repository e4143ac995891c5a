"""[stepper_x], [stepper_y], [stepper_z]: step geometry, travel, endstops and homing.

Step geometry is shared with the extruder's stepper. Old configs describe it with the
legacy `step_distance` (and sometimes keep microsteps in a TMC driver section); those
are converted to `rotation_distance` the way Klipper did, keeping the step size exact.
An axis that homes on a probe takes its endstop position from the probe's z_offset,
and its endstop pin from a probe that needs no deploying. The pins themselves are
decided together with all others by `pins`.
"""

from __future__ import annotations

from printhost.klipper_import.converter import (NO_COUNTERPART, PULSE_REASON, Converter,
                                                PinRequest, field_problem, tidy)
from printhost.klipper_import.options import KlipperSection, OptionProblem, parse_gear_ratio
from printhost.klipper_import.render import toml_value

__all__ = ["LEGACY_MICROSTEPS", "step_geometry", "stepper_axis", "stepper_pins"]

# Microsteps assumed for a legacy `step_distance` stepper that does not say.
LEGACY_MICROSTEPS = 16

_STEPPER_KEYS_NOT_CONVERTED = {
    "homing_retract_dist": NO_COUNTERPART,
    "homing_retract_speed": NO_COUNTERPART,
    "second_homing_speed": NO_COUNTERPART,
    "homing_positive_dir": NO_COUNTERPART,
    "step_pulse_duration": PULSE_REASON,
}

# Probes whose virtual endstop is a plain input that triggers without being deployed:
# Klipper's probe:z_virtual_endstop reads their `pin` like an endstop switch.
_PLAIN_PROBES = ("probe", "smart_effector")


def stepper_axis(conv: Converter, axis: str, report_missing: bool) -> None:
    sec = conv.section(f"stepper_{axis}")
    if not sec.present:
        if report_missing:
            conv.skip(sec, f"[stepper_{axis}]: section missing (Klipper requires it); "
                           "printhost's defaults are used for this axis")
        return
    step_geometry(conv, sec, f"steppers.{axis}")
    table = f"printer.axes.{axis}"
    conv.copy(sec, "position_min", f"{table}.position_min", default=0.0)
    low = sec.peek("position_min", 0.0)
    conv.copy(sec, "position_max", f"{table}.position_max", above=low)
    high = sec.peek("position_max", conv.defaults[f"{table}.position_max"])
    endstop(conv, sec, axis, low, high)
    conv.copy(sec, "homing_speed", f"{table}.homing_speed", default=5.0, above=0.0)
    stepper_pins(conv, sec, f"steppers.{axis}")
    if _homes_on_probe(sec):
        probe_pin(conv, sec, f"steppers.{axis}.endstop_pin")
    else:
        conv.want_pin(sec, "endstop_pin", f"steppers.{axis}.endstop_pin")
    conv.leftovers(sec, _STEPPER_KEYS_NOT_CONVERTED)


def stepper_pins(conv: Converter, sec: KlipperSection, table: str) -> None:
    """step_pin, dir_pin and enable_pin (decided with all other pins by `pins`)."""
    for key in ("step_pin", "dir_pin", "enable_pin"):
        conv.want_pin(sec, key, f"{table}.{key}")


def _homes_on_probe(sec: KlipperSection) -> bool:
    pin = sec.options.get("endstop_pin")
    return pin is not None and pin.value.lstrip("^~! ").startswith("probe:")


def _probe_sections(conv: Converter) -> list[str]:
    return [n for n in conv.cfg.sections
            if (n.split() or [""])[0] in ("probe", "bltouch", "smart_effector")
            or n.startswith("probe_eddy_current ")]


def probe_pin(conv: Converter, sec: KlipperSection, target: str) -> None:
    """The endstop pin of an axis that homes on the probe (probe:z_virtual_endstop)."""
    raw = sec.raw("endstop_pin")
    names = _probe_sections(conv)
    base = (names[0].split() or [""])[0] if names else ""
    if base in _PLAIN_PROBES and "pin" in conv.cfg.sections[names[0]]:
        probe = KlipperSection(names[0], conv.cfg.sections[names[0]])
        conv.want_pin(probe, "pin", target)
        conv.probe_pins_used.add(names[0])
        conv.notes.append(f"{sec.label('endstop_pin')} = {raw}: printhost does not probe; "
                          f"the axis homes on {probe.label('pin')} = {probe.raw('pin')} as on "
                          "an endstop switch, the input Klipper's virtual endstop reads")
        return
    if not names:
        why = f"homes on a probe ({raw}) but no probe section was found"
    elif base == "bltouch":
        why = (f"homes on the BLTouch ({raw}), which only triggers once its control_pin has "
               "deployed it; printhost does not probe, so the axis needs an endstop switch")
    else:
        why = (f"homes on the [{names[0]}] probe ({raw}); printhost does not probe, so the "
               "axis needs an endstop switch")
    conv.pin_requests[target] = PinRequest(sec.name, sec.label("endstop_pin"), None,
                                           sec.source("endstop_pin"), why)


def step_geometry(conv: Converter, sec: KlipperSection, table: str) -> None:
    """rotation_distance, microsteps, full_steps_per_rotation and gear_ratio."""
    if sec.has("step_distance") and not sec.has("rotation_distance"):
        legacy_step_distance(conv, sec, table)
        return
    if sec.has("step_distance"):
        sec.used.add("step_distance")
        conv.notes.append(f"{sec.label('step_distance')}: ignored because rotation_distance "
                          "is set (Klipper did the same)")
    conv.copy(sec, "rotation_distance", f"{table}.rotation_distance", above=0.0)
    conv.copy(sec, "microsteps", f"{table}.microsteps", integer=True, minval=1)
    full = conv.read(sec, "full_steps_per_rotation", f"{table}.full_steps_per_rotation",
                     default=200, integer=True, minval=1)
    if full is not None and full % 4:
        conv.skip(sec, f"{sec.label('full_steps_per_rotation')}: {full} is invalid: Klipper "
                       "requires a multiple of 4; "
                       + conv.default_note(f"{table}.full_steps_per_rotation"))
    elif full is not None:
        conv.copy(sec, "full_steps_per_rotation", f"{table}.full_steps_per_rotation",
                  default=200, integer=True)
    gear_ratio(conv, sec, table)


def gear_ratio(conv: Converter, sec: KlipperSection, table: str) -> None:
    raw = sec.raw("gear_ratio")
    if raw is None:
        conv.put(f"{table}.gear_ratio", 1.0, sec.label("gear_ratio"), None,
                 f"not set in [{sec.name}]: no gearing")
        return
    try:
        ratio = parse_gear_ratio(raw)
    except OptionProblem as exc:
        conv.skip(sec, f"{sec.label('gear_ratio')}: {exc}; "
                       + conv.default_note(f"{table}.gear_ratio"))
        return
    conv.put(f"{table}.gear_ratio", tidy(ratio), sec.label("gear_ratio"), raw,
             f"{sec.label('gear_ratio')} = {raw}")


def legacy_step_distance(conv: Converter, sec: KlipperSection, table: str) -> None:
    step = conv.read(sec, "step_distance", f"{table}.rotation_distance", above=0.0)
    micro = conv.read(sec, "microsteps", f"{table}.microsteps",
                      default=None, integer=True, minval=1)
    full = conv.read(sec, "full_steps_per_rotation", f"{table}.full_steps_per_rotation",
                     default=200, integer=True, minval=1)
    if sec.has("gear_ratio"):
        sec.used.add("gear_ratio")
        conv.notes.append(f"{sec.label('gear_ratio')}: ignored, as Klipper ignored it next "
                          "to step_distance")
    if step is None:
        return
    assumed = micro is None
    driver = driver_microsteps(conv, sec.name) if assumed else None
    if driver is not None:
        micro, assumed = driver[1], False
    full = full if full is not None else 200
    micro = micro if micro is not None else LEGACY_MICROSTEPS
    # rotation_distance is derived from the split, so a part printhost refuses is
    # replaced before the distance is computed, keeping the step size exact.
    for key, fallback in (("full_steps_per_rotation", 200), ("microsteps", LEGACY_MICROSTEPS)):
        given = full if key == "full_steps_per_rotation" else micro
        problem = field_problem(f"{table}.{key}", given)
        if problem:
            conv.skip(sec, f"{sec.label(key)} = {given}: rejected by printhost "
                           f"({table}.{key}: {problem}); {fallback} is used and "
                           "rotation_distance computed with it")
            if key == "microsteps":
                micro, assumed, driver = fallback, True, None
            else:
                full = fallback
    rotation = tidy(step * full * micro)
    raw = sec.raw("step_distance")
    conv.put(f"{table}.rotation_distance", rotation, sec.label("step_distance"), raw,
             f"from the legacy step_distance = {raw}: step_distance x "
             f"{full} full steps x {micro} microsteps")
    if driver is not None:
        conv.put(f"{table}.microsteps", micro, f"[{driver[0]}] microsteps", str(micro),
                 f"[{driver[0]}] microsteps (the stepper driver section)")
    else:
        conv.put(f"{table}.microsteps", micro, sec.label("microsteps"),
                 None if assumed else sec.raw("microsteps"),
                 "assumed for the legacy step_distance" if assumed else sec.source("microsteps"))
    conv.put(f"{table}.full_steps_per_rotation", full, sec.label("full_steps_per_rotation"),
             sec.raw("full_steps_per_rotation"),
             sec.label("full_steps_per_rotation") if sec.has("full_steps_per_rotation")
             else f"not set in [{sec.name}]: Klipper's default")
    conv.put(f"{table}.gear_ratio", 1.0, sec.label("gear_ratio"), None,
             "step_distance already includes any gearing")
    if assumed:
        how = (f"assuming {LEGACY_MICROSTEPS} microsteps, which changes only how the "
               "distance is split, not the step size")
    elif driver is not None:
        how = f"with the {micro} microsteps of [{driver[0]}]"
    else:
        how = f"with its {micro} microsteps"
    conv.notes.append(f"{sec.label('step_distance')} = {raw}: legacy key (removed from "
                      f"Klipper in 2021), converted to rotation_distance = "
                      f"{toml_value(rotation)} ({raw} x {full} x {micro}), {how}")


def driver_microsteps(conv: Converter, stepper: str) -> tuple[str, int] | None:
    """Microsteps set in a `[tmcXXXX stepper]` section (where older configs kept them)."""
    for name, options in conv.cfg.sections.items():
        words = name.split()
        if len(words) == 2 and words[0].startswith("tmc") and words[1] == stepper \
                and "microsteps" in options:
            try:
                value = int(options["microsteps"].value)
            except ValueError:
                return None
            return (name, value) if value >= 1 else None
    return None


def endstop(conv: Converter, sec: KlipperSection, axis: str, low: float, high: float) -> None:
    target = f"printer.axes.{axis}.position_endstop"
    pin = (sec.options.get("endstop_pin").value if sec.has("endstop_pin") else "")
    if pin.lstrip("^~! ").startswith("probe:"):
        if sec.has("position_endstop"):
            sec.used.add("position_endstop")
            conv.skip(sec, f"{sec.label('position_endstop')}: invalid: Klipper refuses "
                           "position_endstop when the axis homes on the probe "
                           f"(endstop_pin: {pin}); the probe's z_offset is used instead")
        probe_endstop(conv, sec, target, low, high)
        return
    value = conv.read(sec, "position_endstop", target, minval=low, maxval=high)
    if value is not None:
        conv.put(target, value, sec.label("position_endstop"), sec.raw("position_endstop"),
                 sec.source("position_endstop"))


def probe_endstop(conv: Converter, sec: KlipperSection, target: str, low: float,
                  high: float) -> None:
    names = _probe_sections(conv)
    if not names:
        conv.skip(sec, f"{sec.label('position_endstop')}: the axis homes on a probe but no "
                       f"probe section was found; {conv.default_note(target)}")
        return
    probe = KlipperSection(names[0], conv.cfg.sections[names[0]])
    value = conv.read(probe, "z_offset", target, minval=low, maxval=high)
    if value is None:
        return
    conv.probe_sections_used.add(names[0])
    conv.put(target, value, probe.label("z_offset"), probe.raw("z_offset"),
             "homes on the probe: Klipper takes the endstop position from "
             + probe.source("z_offset"))

"""Mapping Klipper's sections onto printhost's settings.

`convert()` walks the configuration in a fixed order: [printer] first, because the
other sections' limits and defaults refer to its velocity and acceleration, then the
axes, the extruder and the heaters, then the smaller sections. Anything printhost has
no counterpart for is reported with the reason rather than dropped silently. The
stepper and heater mappings live in `steppers` and `heaters`; this module holds the
order and the sections that need no more than a few lines.
"""

from __future__ import annotations

import re

from printhost.config import SHAPER_TYPES
from printhost.klipper_import.converter import NO_COUNTERPART, Converter, tidy
from printhost.klipper_import.errors import KlipperImportError
from printhost.klipper_import.heaters import extruder, heater
from printhost.klipper_import.options import KlipperSection, OptionProblem
from printhost.klipper_import.pins import assign_pins
from printhost.klipper_import.reader import KlipperConfig
from printhost.klipper_import.render import toml_value
from printhost.klipper_import.steppers import stepper_axis

__all__ = ["SHAPER_MAX_DAMPING", "convert"]

# The largest damping ratio Klipper accepts for each shaper.
SHAPER_MAX_DAMPING = {"zv": 0.99, "mzv": 0.99, "zvd": 0.99, "ei": 0.4,
                      "2hump_ei": 0.3, "3hump_ei": 0.2}

# Why whole sections are left out, by the first word of the section name.
_SECTION_REASONS = {
    "probe": "printhost does not probe",
    "bltouch": "printhost does not probe",
    "smart_effector": "printhost does not probe",
    "bed_mesh": "printhost has no bed mesh compensation",
    "safe_z_home": "printhost homes each axis at its own endstop position",
    "homing_override": "printhost homes each axis at its own endstop position",
    "gcode_macro": "printhost has no G-code macros",
    "delayed_gcode": "printhost has no G-code macros",
    "mcu": "printhost drives a single MCU",
    "heater_fan": "printhost drives only the part-cooling [fan]",
    "controller_fan": "printhost drives only the part-cooling [fan]",
    "fan_generic": "printhost drives only the part-cooling [fan]",
    "temperature_fan": "printhost drives only the part-cooling [fan]",
    "temperature_sensor": "printhost reads only the sensors of its two heaters",
    "thermistor": "printhost reads only its own sensor presets",
    "verify_heater": "printhost applies Klipper's default heater checks",
    "virtual_sdcard": "printhost stores and runs uploaded files itself",
    "extruder_stepper": "printhost drives one extruder",
}


def _section_reason(name: str) -> str:
    words = name.split()
    base = words[0] if words else name
    if base.startswith("tmc"):
        reason: str | None = ("printhost does not set up stepper drivers over UART or SPI; "
                              "its steppers use step, dir and enable pins only")
    elif re.fullmatch(r"extruder\d+", base):
        reason = "printhost drives one extruder"
    elif re.fullmatch(r"stepper_[xyz]\d+", base):
        reason = "printhost drives one motor per axis"
    else:
        reason = _SECTION_REASONS.get(base)
    return f"section not supported ({reason})" if reason else "section not supported"


def convert(cfg: KlipperConfig) -> Converter:
    """Map every section of `cfg` printhost has a counterpart for; report the rest.

    Raises KlipperImportError when there is no [printer] section, as Klipper would.
    """
    conv = Converter(cfg)
    if "printer" not in cfg.sections:
        raise KlipperImportError(
            f"{cfg.files[0]}: no [printer] section; Klipper requires one "
            "(kinematics, max_velocity, max_accel)")
    kinematics = printer(conv)
    supported = kinematics in ("cartesian", "corexy", None)
    for axis in ("x", "y", "z"):
        stepper_axis(conv, axis, report_missing=supported)
    extruder(conv)
    heater(conv, conv.section("heater_bed"), "heater_bed")
    input_shaper(conv)
    mcu(conv)
    fan(conv)
    gcode_arcs(conv)
    firmware_retraction(conv)
    assign_pins(conv)
    for name in cfg.sections:
        if name not in conv.handled:
            reason = _section_reason(name)
            offset, pin = name in conv.probe_sections_used, name in conv.probe_pins_used
            if offset and pin:
                reason += "; its z_offset and pin were used as the Z endstop position and pin"
            elif offset:
                reason += "; its z_offset was used as the Z endstop position"
            elif pin:
                reason += "; its pin was used as the Z endstop pin"
            conv.skip(name, f"[{name}]: {reason}")
    return conv


def printer(conv: Converter) -> str | None:
    sec = conv.section("printer")
    kinematics: str | None = None
    try:
        raw = sec.text("kinematics")
        if raw in ("cartesian", "corexy"):
            kinematics = raw
            conv.put("printer.kinematics", raw, sec.label("kinematics"), raw,
                     sec.label("kinematics"))
        else:
            conv.skip(sec, f"[printer] kinematics = {raw}: not supported "
                           "(printhost drives cartesian and corexy printers)")
            kinematics = raw
    except OptionProblem as exc:
        conv.skip(sec, f"[printer] kinematics: {exc}; {conv.default_note('printer.kinematics')}")
    velocity = conv.copy(sec, "max_velocity", "printer.max_velocity", above=0.0)
    accel = conv.copy(sec, "max_accel", "printer.max_accel", above=0.0)
    effective = {"max_velocity": velocity if velocity is not None
                 else conv.defaults["printer.max_velocity"],
                 "max_accel": accel if accel is not None else conv.defaults["printer.max_accel"]}
    # The limits Klipper would check the other options against (its own values when
    # they are usable at all, else the ones printhost will run with).
    klipper = {name: value if (value := sec.peek(name, effective[name])) > 0
               else effective[name] for name in effective}
    conv.copy(sec, "square_corner_velocity", "printer.square_corner_velocity",
              default=5.0, minval=0.0)
    cruise_ratio(conv, sec, klipper["max_accel"])
    for key, name in (("max_z_velocity", "max_velocity"), ("max_z_accel", "max_accel")):
        target = f"printer.{key}"
        if sec.has(key):
            conv.copy(sec, key, target, above=0.0, maxval=klipper[name])
        else:
            sec.used.add(key)
            conv.put(target, effective[name], f"[printer] {key} (Klipper's default: {name})",
                     None, f"not set in [printer]: Klipper then uses {name}")
    conv.leftovers(sec, {
        "max_stepper_error": "Klipper read max_stepper_error from [mcu], never from "
                             "[printer], not imported",
    }, NO_COUNTERPART if kinematics in ("cartesian", "corexy")
        else "belongs to an unsupported kinematics, not imported")
    return kinematics


def cruise_ratio(conv: Converter, sec: KlipperSection, accel: float) -> None:
    if sec.has("minimum_cruise_ratio"):
        conv.copy(sec, "minimum_cruise_ratio", "printer.minimum_cruise_ratio",
                  minval=0.0, below=1.0)
        if sec.has("max_accel_to_decel"):
            sec.used.add("max_accel_to_decel")
            conv.notes.append("[printer] max_accel_to_decel: ignored because "
                              "minimum_cruise_ratio is set (Klipper did the same)")
        return
    if not sec.has("max_accel_to_decel"):
        conv.copy(sec, "minimum_cruise_ratio", "printer.minimum_cruise_ratio", default=0.5)
        return
    to_decel = conv.read(sec, "max_accel_to_decel", "printer.minimum_cruise_ratio", above=0.0)
    if to_decel is None:
        return
    ratio = tidy(1.0 - min(1.0, to_decel / accel))
    raw = sec.raw("max_accel_to_decel")
    conv.put("printer.minimum_cruise_ratio", ratio, "[printer] max_accel_to_decel", raw,
             f"from the legacy max_accel_to_decel = {raw}: 1 - {raw}/max_accel, "
             "as Klipper converted it")
    conv.notes.append(f"[printer] max_accel_to_decel = {raw}: legacy key, converted to "
                      f"minimum_cruise_ratio = {toml_value(ratio)} "
                      "(1 - max_accel_to_decel / max_accel, never below 0, as Klipper "
                      "computed it)")


def input_shaper(conv: Converter) -> None:
    sec = conv.section("input_shaper")
    if not sec.present:
        return
    common = sec.text("shaper_type", "mzv")
    for axis in ("x", "y"):
        key = f"shaper_type_{axis}"
        raw = sec.text(key, common)
        label = sec.label(key if sec.has(key) else "shaper_type")
        name = raw.strip().lower()
        max_damping = 0.99
        if "(" in name:
            conv.skip(sec, f"{label} = {raw}: shaper parameters are not supported; "
                           + conv.default_note(f"input_shaper.{key}"))
        elif name not in SHAPER_TYPES:
            conv.skip(sec, f"{label} = {raw}: unknown shaper type (printhost knows "
                           f"{', '.join(SHAPER_TYPES)}); "
                           + conv.default_note(f"input_shaper.{key}"))
        else:
            max_damping = SHAPER_MAX_DAMPING.get(name, 0.99)
            given = key if sec.has(key) else "shaper_type" if sec.has("shaper_type") else None
            conv.put(f"input_shaper.{key}", name, label, raw if given else None,
                     sec.source(given) if given else "not set in [input_shaper]: Klipper's default")
            if raw.strip() != name:
                conv.notes.append(f"{label} = {raw}: written as {name!r}; Klipper itself "
                                  "accepts only lower-case shaper names in the config")
        conv.copy(sec, f"shaper_freq_{axis}", f"input_shaper.shaper_freq_{axis}",
                  default=0.0, minval=0.0)
        conv.copy(sec, f"damping_ratio_{axis}", f"input_shaper.damping_ratio_{axis}",
                  default=0.1, minval=0.0, maxval=max_damping)
    z_reason = "printhost shapes X and Y only, not imported"
    conv.leftovers(sec, {"shaper_freq_z": z_reason, "shaper_type_z": z_reason,
                         "damping_ratio_z": z_reason})


# Klipper's restart methods, and what printhost does instead of the ones it lacks.
_RESTART_METHODS = ("arduino", "cheetah", "command", "rpi_usb")


def mcu(conv: Converter) -> None:
    sec = conv.section("mcu")
    if not sec.present:
        return
    if sec.has("serial"):
        serial = sec.text("serial")
        conv.put("mcu.serial", serial, sec.label("serial"), serial, sec.source("serial"))
    elif not sec.has("canbus_uuid"):
        conv.skip(sec, "[mcu] serial: required by Klipper but missing; "
                       + conv.default_note("mcu.serial"))
    if sec.has("baud") or sec.has("serial"):
        conv.copy(sec, "baud", "mcu.baud", default=250000, integer=True, minval=2400)
    restart_method(conv, sec)
    if sec.has("max_stepper_error"):
        conv.copy(sec, "max_stepper_error", "mcu.max_stepper_error", minval=0.0)
    can = ("printhost reaches the MCU over a serial device only (no CAN bus), not imported"
           if not sec.has("serial") else "printhost uses the serial device, not imported")
    conv.leftovers(sec, {"canbus_uuid": can, "canbus_interface": can})


def restart_method(conv: Converter, sec: KlipperSection) -> None:
    if not sec.has("restart_method"):
        return
    method = sec.text("restart_method")
    label, default = sec.label("restart_method"), conv.default_note("mcu.restart_method")
    if method == "command":
        conv.put("mcu.restart_method", method, label, method, sec.source("restart_method"))
    elif method in _RESTART_METHODS:
        conv.skip(sec, f"{label} = {method}: not supported (printhost restarts the firmware "
                       "with its reset command, or with none asks for a power cycle; it "
                       f"cannot reset the board the {method} way); {default}")
    else:
        conv.skip(sec, f"{label} = {method}: invalid (Klipper accepts "
                       f"{', '.join(_RESTART_METHODS)}); {default}")


def fan(conv: Converter) -> None:
    sec = conv.section("fan")
    if not sec.present:
        conv.put("fan.pin", "", "[fan]", None,
                 "no [fan] in the Klipper config: no part-cooling fan")
        conv.notes.append("[fan]: not in the Klipper config, so there is no part-cooling "
                          "fan; fan.pin is left empty, so printhost drives no fan pin")
        return
    conv.want_pin(sec, "pin", "fan.pin")
    conv.copy(sec, "cycle_time", "fan.cycle_time", default=0.010, above=0.0)
    conv.leftovers(sec)


def gcode_arcs(conv: Converter) -> None:
    sec = conv.section("gcode_arcs")
    if not sec.present:
        conv.notes.append("[gcode_arcs]: not in the Klipper config, so Klipper would "
                          "refuse G2/G3; printhost accepts arcs (gcode.arc_resolution "
                          "keeps its default)")
        return
    conv.copy(sec, "resolution", "gcode.arc_resolution", default=1.0, above=0.0)
    conv.leftovers(sec)


def firmware_retraction(conv: Converter) -> None:
    sec = conv.section("firmware_retraction")
    if not sec.present:
        return
    table = "firmware_retraction"
    conv.copy(sec, "retract_length", f"{table}.retract_length", default=0.0, minval=0.0)
    conv.copy(sec, "retract_speed", f"{table}.retract_speed", default=20.0, minval=1.0)
    conv.copy(sec, "unretract_extra_length", f"{table}.unretract_extra_length",
              default=0.0, minval=0.0)
    conv.copy(sec, "unretract_speed", f"{table}.unretract_speed", default=10.0, minval=1.0)
    conv.leftovers(sec)

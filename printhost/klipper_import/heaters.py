"""[extruder] and [heater_bed]: filament and extrusion limits, and both heaters.

The extruder's extrude-only limits default to values Klipper derives from [printer]
and the nozzle and filament sizes, so they are computed here the same way. Heaters
carry over their temperature limits and PID gains; sensors and pins arrive with the
MCU link and are reported, not imported.
"""

from __future__ import annotations

import math

from printhost.control.heaters import DERIVATIVE_SMOOTH_S
from printhost.klipper_import.converter import MCU_LINK_REASON, SENSOR_REASON, Converter, tidy
from printhost.klipper_import.options import KlipperSection, OptionProblem, format_number
from printhost.klipper_import.steppers import step_geometry

__all__ = ["ABSOLUTE_ZERO_C", "extruder", "heater"]

# Temperatures below absolute zero are refused by Klipper.
ABSOLUTE_ZERO_C = -273.15

_SENSOR_KEYS = ("sensor_type", "sensor_pin", "pullup_resistor", "inline_resistor",
                "adc_voltage", "voltage_offset", "sensor_mcu", "pwm_cycle_time")
_SENSOR_PREFIXES = ("rtd_", "tc_", "spi_", "i2c_")


def extruder(conv: Converter) -> None:
    sec = conv.section("extruder")
    if not sec.present:
        conv.notes.append("[extruder]: not in the Klipper config; printhost's extruder and "
                          "hotend defaults are kept")
        return
    if any(sec.has(k) for k in ("step_pin", "dir_pin", "rotation_distance", "step_distance")):
        step_geometry(conv, sec, "steppers.extruder")
    else:
        conv.notes.append("[extruder]: has no stepper in Klipper; printhost's "
                          "steppers.extruder defaults are kept")
    nozzle = conv.copy(sec, "nozzle_diameter", "extruder.nozzle_diameter", above=0.0)
    nozzle_eff = nozzle if nozzle is not None else conv.defaults["extruder.nozzle_diameter"]
    filament = conv.copy(sec, "filament_diameter", "extruder.filament_diameter",
                         minval=sec.peek("nozzle_diameter", nozzle_eff))
    filament_eff = (filament if filament is not None
                    else conv.defaults["extruder.filament_diameter"])
    if sec.has("max_extrude_cross_section"):
        conv.copy(sec, "max_extrude_cross_section", "extruder.max_extrude_cross_section",
                  above=0.0)
    else:
        sec.used.add("max_extrude_cross_section")
        conv.put("extruder.max_extrude_cross_section", 0.0,
                 "[extruder] max_extrude_cross_section", None,
                 "not set in [extruder]: 0 means 4 x nozzle_diameter^2, Klipper's default")
    conv.copy(sec, "max_extrude_only_distance", "extruder.max_extrude_only_distance",
              default=50.0, minval=0.0)
    conv.copy(sec, "instantaneous_corner_velocity",
              "extruder.instantaneous_corner_velocity", default=1.0, minval=0.0)
    conv.copy(sec, "pressure_advance", "extruder.pressure_advance", default=0.0, minval=0.0)
    conv.copy(sec, "pressure_advance_smooth_time", "extruder.pressure_advance_smooth_time",
              default=0.040, above=0.0, maxval=0.200)
    # Klipper scales the extrude-only limits by the default extrusion ratio.
    ratio = 4.0 * nozzle_eff ** 2 / (math.pi * (filament_eff / 2.0) ** 2)
    for key, limit in (("max_extrude_only_velocity", "max_velocity"),
                       ("max_extrude_only_accel", "max_accel")):
        target = f"printer.{key}"
        if sec.has(key):
            conv.copy(sec, key, target, above=0.0)
            continue
        sec.used.add(key)
        base = conv.entries.get(f"printer.{limit}")
        base_value = base.value if base else conv.defaults[f"printer.{limit}"]
        conv.put(target, tidy(base_value * ratio),
                 f"[extruder] {key} (Klipper's default from {limit})", None,
                 f"not set in [extruder]: Klipper's default, {limit} x "
                 "4 x nozzle_diameter^2 / filament area")
    heater(conv, sec, "extruder")


def heater(conv: Converter, sec: KlipperSection, name: str) -> None:
    if not sec.present:
        conv.notes.append(f"[{name}]: not in the Klipper config; printhost's "
                          f"heaters.{name} defaults are kept")
        return
    table = f"heaters.{name}"
    conv.copy(sec, "min_temp", f"{table}.min_temp", minval=ABSOLUTE_ZERO_C)
    low = sec.peek("min_temp", conv.defaults[f"{table}.min_temp"])
    conv.copy(sec, "max_temp", f"{table}.max_temp", above=low)
    high = sec.peek("max_temp", conv.defaults[f"{table}.max_temp"])
    conv.copy(sec, "max_power", f"{table}.max_power", default=1.0, above=0.0, maxval=1.0)
    if name == "extruder":
        conv.copy(sec, "min_extrude_temp", "extruder.min_extrude_temp", default=170.0,
                  minval=low, maxval=high)
    control(conv, sec, table)
    smooth_opt = sec.options.get("smooth_time")
    smooth = smooth_opt.value if smooth_opt is not None else None
    reasons = {}
    if smooth is not None:
        try:
            same = float(smooth) == DERIVATIVE_SMOOTH_S
        except ValueError:
            same = False
        reasons["smooth_time"] = (
            f"printhost always smooths over {format_number(DERIVATIVE_SMOOTH_S)} s (Klipper's "
            "default); " + ("the same value" if same else f"{smooth} s is not imported"))
    reasons["max_delta"] = "only used by watermark control, not imported"
    if name == "heater_bed":
        reasons["min_extrude_temp"] = "only meaningful for an extruder, not imported"
    for key in sec.options:
        if key.endswith("_pin") or key in _SENSOR_KEYS or key.startswith(_SENSOR_PREFIXES):
            reasons[key] = SENSOR_REASON
    if name == "extruder":
        reasons["step_pulse_duration"] = MCU_LINK_REASON
    conv.leftovers(sec, reasons)


def control(conv: Converter, sec: KlipperSection, table: str) -> None:
    try:
        control = sec.text("control")
    except OptionProblem as exc:
        conv.skip(sec, f"{sec.label('control')}: {exc}; printhost's default PID gains are used")
        for key in ("pid_kp", "pid_ki", "pid_kd"):
            if sec.has(key):
                sec.used.add(key)
                conv.skip(sec, f"{sec.label(key)}: not imported because control is missing")
        return
    if control != "pid":
        what = ("printhost heaters are PID-controlled" if control == "watermark"
                else "Klipper accepts only pid or watermark")
        conv.skip(sec, f"{sec.label('control')} = {control}: not supported ({what}); "
                       "printhost's default PID gains are used")
        for key in ("pid_kp", "pid_ki", "pid_kd"):
            if sec.has(key):
                sec.used.add(key)
                conv.skip(sec, f"{sec.label(key)}: not used with control = {control}, "
                               "not imported")
        return
    for key in ("pid_kp", "pid_ki", "pid_kd"):
        conv.copy(sec, key, f"{table}.{key}")

"""[extruder] and [heater_bed]: filament and extrusion limits, and both heaters.

The extruder's extrude-only limits default to values Klipper derives from [printer]
and the nozzle and filament sizes, so they are computed here the same way. Heaters
carry over their temperature limits, control law (PID gains or watermark max_delta),
heater and sensor pins and the thermistor (a `sensor_type` printhost has a preset
for, its pull-up resistor); pins are decided together with all others by `pins`.
"""

from __future__ import annotations

import math

from printhost.control.heaters import DERIVATIVE_SMOOTH_S
from printhost.klipper_import.converter import (PULSE_REASON, SENSOR_REASON, Converter,
                                                PinRequest, tidy)
from printhost.klipper_import.options import KlipperSection, OptionProblem, format_number
from printhost.klipper_import.render import toml_value
from printhost.klipper_import.steppers import step_geometry, stepper_pins
from printhost.sensors.thermistor import PRESETS

__all__ = ["ABSOLUTE_ZERO_C", "extruder", "heater"]

# Temperatures below absolute zero are refused by Klipper.
ABSOLUTE_ZERO_C = -273.15

# The longest heater PWM period Klipper accepts: the thermistor's report time.
MAX_PWM_CYCLE_TIME = 0.3

_SENSOR_KEYS = ("inline_resistor", "adc_voltage", "voltage_offset", "sensor_mcu")
_SENSOR_PREFIXES = ("rtd_", "tc_", "spi_", "i2c_")


def extruder(conv: Converter) -> None:
    sec = conv.section("extruder")
    if not sec.present:
        conv.notes.append("[extruder]: not in the Klipper config; printhost's extruder and "
                          "hotend defaults are kept")
        return
    if any(sec.has(k) for k in ("step_pin", "dir_pin", "rotation_distance", "step_distance")):
        step_geometry(conv, sec, "steppers.extruder")
        stepper_pins(conv, sec, "steppers.extruder")
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
    conv.want_pin(sec, "heater_pin", f"{table}.heater_pin")
    conv.copy(sec, "pwm_cycle_time", f"{table}.pwm_cycle_time", default=0.1, above=0.0,
              maxval=MAX_PWM_CYCLE_TIME)
    sensor(conv, sec, table)
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
    if name == "heater_bed":
        reasons["min_extrude_temp"] = "only meaningful for an extruder, not imported"
    for key in sec.options:
        if key in _SENSOR_KEYS or key.startswith(_SENSOR_PREFIXES):
            reasons[key] = SENSOR_REASON
    if name == "extruder":
        reasons["step_pulse_duration"] = PULSE_REASON
    conv.leftovers(sec, reasons)


def sensor(conv: Converter, sec: KlipperSection, table: str) -> None:
    """sensor_type (one of printhost's presets), then its pin and pull-up resistor."""
    target = f"{table}.sensor_type"
    try:
        kind = sec.text("sensor_type")
    except OptionProblem as exc:
        conv.skip(sec, f"{sec.label('sensor_type')}: {exc}; {conv.default_note(target)}")
        kind = None
    if kind is not None and kind not in PRESETS:
        known = ", ".join(toml_value(name) for name in PRESETS)
        conv.skip(sec, f"{sec.label('sensor_type')} = {kind}: printhost has no such sensor "
                       f"(its presets: {known}); {conv.default_note(target)}")
    elif kind is not None:
        conv.put(target, kind, sec.label("sensor_type"), kind, sec.source("sensor_type"))
        conv.want_pin(sec, "sensor_pin", f"{table}.sensor_pin")
        conv.copy(sec, "pullup_resistor", f"{table}.pullup_resistor", default=4700.0,
                  above=0.0)
        return
    # Without a sensor printhost can read, its pin and resistor mean nothing here.
    why = (f"belongs to sensor_type {kind}, which printhost cannot read" if kind is not None
           else "belongs to the missing sensor_type")
    conv.pin_requests[f"{table}.sensor_pin"] = PinRequest(
        sec.name, sec.label("sensor_pin"), sec.raw("sensor_pin"), sec.source("sensor_pin"), why)
    if sec.has("pullup_resistor"):
        sec.used.add("pullup_resistor")
        conv.skip(sec, f"{sec.label('pullup_resistor')}: {why}, not imported; "
                       + conv.default_note(f"{table}.pullup_resistor"))


def control(conv: Converter, sec: KlipperSection, table: str) -> None:
    """control: pid (with its gains) or watermark (with max_delta), as in Klipper."""
    gains = ("pid_kp", "pid_ki", "pid_kd")
    default = (f"printhost's default control {toml_value(conv.defaults[table + '.control'])} "
               "with its default gains is used")
    try:
        control = sec.text("control")
    except OptionProblem as exc:
        conv.skip(sec, f"{sec.label('control')}: {exc}; {default}")
        for key in (*gains, "max_delta"):
            if sec.has(key):
                sec.used.add(key)
                conv.skip(sec, f"{sec.label(key)}: not imported because control is missing")
        return
    if control not in ("pid", "watermark"):
        conv.skip(sec, f"{sec.label('control')} = {control}: not supported (Klipper accepts "
                       f"only pid or watermark); {default}")
        for key in (*gains, "max_delta"):
            if sec.has(key):
                sec.used.add(key)
                conv.skip(sec, f"{sec.label(key)}: not imported because control is invalid")
        return
    conv.put(f"{table}.control", control, sec.label("control"), control, sec.source("control"))
    for key in (gains if control == "watermark" else ("max_delta",)):
        if sec.has(key):
            sec.used.add(key)
            conv.skip(sec, f"{sec.label(key)}: not used with control = {control}, not imported")
    if control == "watermark":
        conv.copy(sec, "max_delta", f"{table}.max_delta", default=2.0, above=0.0)
        return
    for key in gains:
        conv.copy(sec, key, f"{table}.{key}")

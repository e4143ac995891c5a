"""Reading and checking a configuration: TOML in, a validated `Settings` out.

The other modules of `printhost.config` define the sections (frozen dataclasses whose
fields carry their default, range and documentation); this module walks a TOML
document against them, coerces and range-checks every value, and applies the checks
that involve more than one key (limits that must be ordered, pins used once, devices that need each other).
Errors name the file, the dotted key and the problem. `printhost.config` re-exports
the public functions, so callers import everything from there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from printhost.config.fields import ConfigError
from printhost.config.heaters import HeaterSettings
from printhost.config.printer import SHAPER_MAX_DAMPING, AxisSettings, StepperSettings
from printhost.config.settings import Settings

def _type_name(tp: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def _resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(path: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected {_type_name(bool)}, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected {_type_name(int)}, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected {_type_name(float)}, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{path}: {str(value)[:20]}... is too large") from None
        if not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected {_type_name(str)}, got {value!r}")
    elif tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected {_type_name(list)}, got {value!r}")
        return list(value)
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("exclusive_min") and value == lo)):
        raise ConfigError(f"{path}: {value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{path}: {value!r} is above the maximum {hi}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(choices)}")
    return value


def _build(default: Any, data: dict[str, Any], prefix: str) -> Any:
    """Overlay `data` on the `default` instance, so nested sections keep their own defaults."""
    cls = type(default)
    hints = _resolved_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"[{prefix}]" if prefix else "top level"
        raise ConfigError(f"{_join(prefix, unknown[0])}: unknown key in {where} "
                          f"(known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[name]
        path = _join(prefix, name)
        value = data[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a table [{path}], got {value!r}")
            kwargs[name] = _build(getattr(default, name), value, path)
        else:
            if isinstance(tp, types.GenericAlias):
                tp = typing.get_origin(tp)
            kwargs[name] = _coerce(path, value, tp, dict(f.metadata))
    return dataclasses.replace(default, **kwargs)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# How many status snapshots `control.heartbeat_timeout_s` must span at least.
HEARTBEAT_MIN_SNAPSHOTS = 4


def _cross_check(s: Settings) -> None:
    """Constraints that involve more than one key."""
    for axis in ("x", "y", "z"):
        a: AxisSettings = getattr(s.printer.axes, axis)
        key = f"printer.axes.{axis}"
        if a.position_min >= a.position_max:
            raise ConfigError(f"{key}.position_max: must be greater than position_min")
        if not a.position_min <= a.position_endstop <= a.position_max:
            raise ConfigError(f"{key}.position_endstop: must lie between position_min and position_max")
    for name in ("extruder", "heater_bed"):
        h: HeaterSettings = getattr(s.heaters, name)
        if h.min_temp >= h.max_temp:
            raise ConfigError(f"heaters.{name}.max_temp: must be greater than min_temp")
    shaping = s.input_shaper
    for axis in ("x", "y"):
        kind = getattr(shaping, f"shaper_type_{axis}")
        damping = getattr(shaping, f"damping_ratio_{axis}")
        if damping > SHAPER_MAX_DAMPING[kind]:
            raise ConfigError(f"input_shaper.damping_ratio_{axis}: {damping!r} is above the "
                              f"{kind} shaper's maximum {SHAPER_MAX_DAMPING[kind]}")
    _check_pins(s)
    _check_filament_sequences(s)
    for key, start in (("simulation.start_position", s.simulation.start_position),
                       ("printer.power_on_position", s.printer.power_on_position)):
        if len(start) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and math.isfinite(float(v)) for v in start):
            raise ConfigError(f"{key}: expected a list of three finite numbers [x, y, z]")
    beats = s.control.heartbeat_timeout_s * s.control.status_hz
    if beats < HEARTBEAT_MIN_SNAPSHOTS:
        # The supervisor calls the control process frozen when status stops advancing
        # for heartbeat_timeout_s: that must span several snapshots, or one late pass
        # on a busy machine would look like a hang.
        raise ConfigError(f"control.heartbeat_timeout_s: {s.control.heartbeat_timeout_s!r} s "
                          f"spans {beats:.1f} status snapshots at status_hz "
                          f"{s.control.status_hz!r}; it must span at least "
                          f"{HEARTBEAT_MIN_SNAPSHOTS} (raise it to "
                          f"{HEARTBEAT_MIN_SNAPSHOTS / s.control.status_hz:g} or more)")
    if s.server.max_body_bytes > s.server.max_upload_bytes:
        raise ConfigError("server.max_body_bytes: must not exceed server.max_upload_bytes")


#: What a filament sequence may contain: moves, dwells and waiting for them.
FILAMENT_COMMANDS = frozenset({"G0", "G1", "G4", "M400"})


def _check_filament_sequences(s: Settings) -> None:
    """Each sequence must parse, and move only the extruder (it runs while a job may be
    paused above the part, so X, Y or Z there would be a crash, not a load)."""
    from printhost.control.gcode import GCodeError, parse_script
    for key in ("load_gcode", "unload_gcode"):
        try:
            commands = parse_script(getattr(s.filament, key))
        except GCodeError as exc:
            raise ConfigError(f"filament.{key}: {exc}") from None
        if not commands:
            raise ConfigError(f"filament.{key}: no command")
        for cmd in commands:
            if cmd.name not in FILAMENT_COMMANDS:
                raise ConfigError(f"filament.{key}: line {cmd.lineno}: {cmd.name} is not "
                                  f"allowed here (only {', '.join(sorted(FILAMENT_COMMANDS))})")
            if set(cmd.params) & set("XYZ"):
                raise ConfigError(f"filament.{key}: line {cmd.lineno}: only E may move "
                                  f"(X, Y and Z stay where they are)")


def _check_pins(s: Settings) -> None:
    """Pin names must parse, and every output pin may be used once (a pin shared by two
    heaters would let one turn the other on)."""
    from printhost.mcu.pins import parse_pin
    used: dict[str, str] = {}

    def check(key: str, text: str, *, required: bool, is_input: bool = False) -> None:
        if not text:
            if required:
                raise ConfigError(f"{key}: a pin is required")
            return
        try:
            pin = parse_pin(text, can_pull=is_input)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if pin.name in used:
            raise ConfigError(f"{key}: pin {pin.name} is already used by {used[pin.name]}")
        used[pin.name] = key

    for name in ("x", "y", "z", "extruder"):
        st: StepperSettings = getattr(s.steppers, name)
        key = f"steppers.{name}"
        check(f"{key}.step_pin", st.step_pin, required=True)
        check(f"{key}.dir_pin", st.dir_pin, required=True)
        check(f"{key}.enable_pin", st.enable_pin, required=False)
        check(f"{key}.endstop_pin", st.endstop_pin, required=name != "extruder", is_input=True)
    from printhost.sensors.thermistor import sensor
    for name in ("extruder", "heater_bed"):
        h: HeaterSettings = getattr(s.heaters, name)
        try:
            sensor(h.sensor_type)
        except ValueError as exc:
            raise ConfigError(f"heaters.{name}.sensor_type: {exc}") from None
        check(f"heaters.{name}.heater_pin", h.heater_pin, required=True)
        check(f"heaters.{name}.sensor_pin", h.sensor_pin, required=True, is_input=True)
    check("fan.pin", s.fan.pin, required=False)
    _check_pi_devices(s)


def _check_pi_devices(s: Settings) -> None:
    """Pi GPIO names must be valid and used once; the chamber heater needs its sensor."""
    from printhost.hw.gpio import check_pin
    d, c = s.devices, s.chamber
    used: dict[str, str] = {}
    if c.sensor != "none":
        # Bus 1's SDA and SCL; a device on them would break the chamber sensor.
        used = {"GPIO2": "the I2C bus (SDA)", "GPIO3": "the I2C bus (SCL)"}
    pins = [(f"devices.{name}.pin", getattr(d, name).pin)
            for name in ("psu", "status_led", "estop", "runout", "hotend_fan", "controller_fan",
                         "light")]
    pins.append(("chamber.heater_pin", c.heater_pin))
    for key, pin in pins:
        if not pin:
            continue
        try:
            check_pin(pin)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if pin in used:
            raise ConfigError(f"{key}: {pin} is already used by {used[pin]}")
        used[pin] = key
    if c.heater_pin and c.sensor == "none":
        raise ConfigError("chamber.heater_pin: a chamber heater needs chamber.sensor")
    if c.min_temp >= c.max_temp:
        raise ConfigError("chamber.max_temp: must be greater than min_temp")
    if c.sensor == "ads1115":
        from printhost.sensors.thermistor import sensor
        try:
            sensor(c.sensor_type)
        except ValueError as exc:
            raise ConfigError(f"chamber.sensor_type: {exc}") from None
    if c.i2c_address:
        allowed = {"aht10": (0x38, 0x39), "aht20": (0x38,), "ads1115": (0x48, 0x49, 0x4A, 0x4B),
                   "none": ()}[c.sensor]
        if c.i2c_address not in allowed:
            raise ConfigError(f"chamber.i2c_address: 0x{c.i2c_address:02x} is not an address "
                              f"of {c.sensor} ({', '.join(f'0x{a:02x}' for a in allowed) or 'no sensor'})")


def _check_devices_backend(s: Settings, data: dict[str, Any]) -> None:
    """A real printer with devices on the Pi must say which pins they are on.

    `devices.backend` defaults to "simulated" so that the simulated printer runs on a
    laptop; on a real board that default would leave an e-stop button or a PSU relay
    silently simulated, so there it must be chosen in the file."""
    if s.control.backend != "mcu":
        return
    fitted = s.pi_devices()
    devices = data.get("devices")
    if not fitted or (isinstance(devices, dict) and "backend" in devices):
        return
    raise ConfigError(
        f"devices.backend: must be set with control.backend = \"mcu\" and devices on the "
        f"Pi ({', '.join(fitted)}); hint: add backend = \"pi\" under [devices] to drive "
        f"the Pi's own pins and I2C bus, or backend = \"simulated\" to try the printer "
        f"with simulated ones")


def parse_settings(data: dict[str, Any], source: str = "<string>") -> Settings:
    """Validate a decoded TOML document; errors name `source` and the key."""
    try:
        settings = _build(Settings(), data, "")
        settings = dataclasses.replace(settings, source=source)
        _cross_check(settings)
        _check_devices_backend(settings, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return settings


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a TOML file. Raises ConfigError naming the file, key and problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_settings(data, str(p))


def with_overrides(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """Return a copy with some keys of some sections replaced (used by the CLI flags)."""
    replaced = {}
    for name, values in sections.items():
        replaced[name] = dataclasses.replace(getattr(settings, name), **values)
    return dataclasses.replace(settings, **replaced)


def describe(instance: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every key with its value (the defaults when no instance is given) and documentation."""
    if instance is None:
        instance = Settings()
    rows: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(instance):
        if f.metadata.get("internal"):
            continue
        value = getattr(instance, f.name)
        path = _join(prefix, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe(value, path))
        else:
            rows.append((path, value, f.metadata.get("doc", "")))
    return rows
